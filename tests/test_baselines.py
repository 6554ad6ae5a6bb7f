"""Reference nowcasts: registry, persistence, optical-flow extrapolation."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from stforecast.errors import ConfigError
from stforecast.evaluation import baselines
from stforecast.evaluation.baselines import get
from stforecast.motion import advect, estimate_motion

VROW, VCOL = 1.0, 2.0  # px per step: down, right


def blobs(t: float, size: int = 96, vr: float = VROW, vc: float = VCOL) -> np.ndarray:
    """Two gaussian cells (mm/h) translated by (vr, vc) px per step at time t."""
    r, c = np.mgrid[:size, :size].astype(np.float64)
    s = size / 96
    r0, c0 = s * 30 + vr * t, s * 20 + vc * t
    a = 8.0 * np.exp(-((r - r0) ** 2 + (c - c0) ** 2) / (2 * (5 * s) ** 2))
    b = 3.0 * np.exp(-((r - r0 - 8 * s) ** 2 + (c - c0 + 6 * s) ** 2) / (2 * (3 * s) ** 2))
    return (a + b).astype(np.float32)


def sequence(n: int, **kw) -> np.ndarray:
    return np.stack([blobs(t, **kw) for t in range(n)])


# ---------------------------------------------------------------------------- registry


def test_registry():
    assert {"persistence", "extrapolation"} <= set(baselines.available())
    assert baselines.available() == sorted(baselines.available())
    assert get("persistence") is baselines.persistence
    assert get("extrapolation") is baselines.extrapolation
    with pytest.raises(ConfigError, match="unknown baseline 'nope'; available: ") as e:
        get("nope")
    assert e.value.exit_code == 2
    assert "extrapolation" in str(e.value) and "persistence" in str(e.value)


def test_register_rejects_duplicates():
    with pytest.raises(ValueError, match="already registered"):
        baselines.register("persistence")(lambda x, n: x)


@pytest.mark.parametrize("name", ["persistence", "extrapolation"])
def test_output_shape_dtype_and_input_checks(name):
    fn = get(name)
    x = sequence(4).astype(np.float64)
    for steps in (1, 5):
        out = fn(x, steps)
        assert out.shape == (steps, 96, 96)
        assert out.dtype == np.float32
        assert np.isfinite(out).all()
    with pytest.raises(ValueError, match=r"\(T_in, H, W\)"):
        fn(x[0], 3)
    with pytest.raises(ValueError, match="steps"):
        fn(x, 0)


# ------------------------------------------------------------------------- persistence


def test_persistence_repeats_last_frame_with_nan():
    x = sequence(3)
    x[-1, :10, :10] = np.nan
    out = get("persistence")(x, 4)
    for k in range(4):
        np.testing.assert_array_equal(out[k], x[-1])
    out[0, 50, 50] = -1  # a copy, not a view of the input
    assert x[-1, 50, 50] != -1


# ----------------------------------------------------------------------- extrapolation


def test_flow_sign_convention():
    flow = estimate_motion(sequence(4))
    core = blobs(3) > 0.5
    assert flow[0][core].mean() == pytest.approx(VROW, abs=0.05)
    assert flow[1][core].mean() == pytest.approx(VCOL, abs=0.05)
    # featureless areas far from the cells still get the motion (gap filling)
    assert flow[:, 90, 5] == pytest.approx([VROW, VCOL], abs=0.1)


@pytest.mark.parametrize("size", [96, 320])  # 320: flow estimated on a 2x coarser grid
def test_extrapolation_follows_translation(size):
    x = sequence(4, size=size)
    out = get("extrapolation")(x, 6)
    for k in range(1, 7):
        truth = blobs(3 + k, size=size)
        com = np.array(ndi.center_of_mass(out[k - 1]))
        true_com = np.array(ndi.center_of_mass(truth))
        assert np.abs(com - true_com).max() < 1.0, (k, com, true_com)
        peak = np.unravel_index(np.argmax(out[k - 1]), truth.shape)
        true_peak = np.unravel_index(np.argmax(truth), truth.shape)
        assert np.abs(np.subtract(peak, true_peak)).max() <= 1, (k, peak, true_peak)
    # far better than persistence at the last lead
    err = np.abs(out[-1] - blobs(9, size=size)).mean()
    err_persistence = np.abs(x[-1] - blobs(9, size=size)).mean()
    assert err < 0.2 * err_persistence


def test_extrapolation_keeps_coverage_and_no_nan_leak():
    x = sequence(4)
    x[:, :, 70:] = np.nan  # no coverage on the right
    x[1, 40:45, 40:45] = np.nan  # a gap in an earlier frame only
    out = get("extrapolation")(x, 6)
    assert np.isnan(out[:, :, 70:]).all()
    assert np.isfinite(out[:, :, :70]).all()
    # the cells still move (NaN-filled frames give a usable motion)
    com = np.array(ndi.center_of_mass(np.nan_to_num(out[2])))
    assert np.abs(com - ndi.center_of_mass(blobs(6)[:, :70])).max() < 1.5


def test_missing_earlier_frame_is_tolerated():
    x = sequence(4)
    x[1] = np.nan  # a missing frame: only the pair (2, 3) gives motion
    out = get("extrapolation")(x, 3)
    assert np.isfinite(out).all()
    com = np.array(ndi.center_of_mass(out[2]))
    assert np.abs(com - ndi.center_of_mass(blobs(6))).max() < 1.0


def test_inflow_from_outside_is_minimum_valid_value():
    x = sequence(4) + 0.5  # background 0.5, moving right
    x[-1, 0, 0] = np.nan
    out = get("extrapolation")(x, 5)
    lo = np.nanmin(x[-1])
    # the left columns were outside the domain k steps ago
    for k in range(1, 6):
        np.testing.assert_allclose(out[k - 1][1:, : int(VCOL * k) - 1], lo, atol=1e-6)
    assert np.isnan(out[:, 0, 0]).all()


def test_single_frame_and_empty_coverage():
    x = sequence(1)
    np.testing.assert_array_equal(get("extrapolation")(x, 3), get("persistence")(x, 3))
    empty = np.full((3, 16, 16), np.nan, np.float32)
    out = get("extrapolation")(empty, 2)
    assert out.shape == (2, 16, 16) and np.isnan(out).all()


def test_advection_steps_through_varying_flow():
    # Flow of 1 px/step to the right left of column 20, 3 px/step from column 20 on. Tracing back
    # from column 30 one step at a time: 30 -> 27 -> 24 -> 21 -> 18 -> 17, whereas a single
    # 5·v(30) jump would land on column 15.
    H, W = 8, 40
    field = np.tile(np.arange(W, dtype=np.float32), (H, 1))  # value = column index
    flow = np.zeros((2, H, W))
    flow[1] = np.where(np.arange(W) < 20, 1.0, 3.0)
    out = advect(field, flow, 5, outside=-1.0)
    assert out[:, 4, 30] == pytest.approx([27, 24, 21, 18, 17])
    assert out[0, 4, 0] == -1.0  # from outside the domain
