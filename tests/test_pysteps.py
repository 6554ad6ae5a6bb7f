"""The pysteps baselines (optional extra) and the agreement of stforecast's verification scores
with `pysteps.verification` on the same fields."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from stforecast.errors import ConfigError
from stforecast.evaluation import baselines
from stforecast.evaluation.metrics import Scores

pysteps = pytest.importorskip("pysteps", reason="pysteps is an optional extra (.[pysteps])")
pytest.importorskip("cv2", reason="pysteps' Lucas-Kanade needs OpenCV")
from pysteps.verification import detcatscores, spatialscores  # noqa: E402


def cells(seed: int, shape=(48, 56), border: int = 0) -> np.ndarray:
    """Rain-like field: smoothed noise with a few strong cores, zero near the edges if asked."""
    from scipy import ndimage as ndi

    rng = np.random.default_rng(seed)
    smooth = ndi.gaussian_filter(rng.gamma(0.4, 4.0, shape), 2.0)  # 0.6 .. 3.3, median 1.5
    x = np.maximum(smooth - 1.5, 0.0) * 6.0  # half the field dry, cores up to ~10 mm/h
    if border:
        x[:border], x[-border:], x[:, :border], x[:, -border:] = 0, 0, 0, 0
    return x.astype(np.float32)


@pytest.mark.parametrize("threshold", [0.1, 1.0, 5.0])
def test_contingency_scores_equal_pysteps(threshold):
    """The same contingency table, hence the same CSI, POD, FAR and ETS. stforecast's event is
    value >= threshold, pysteps' value > threshold: the same wherever no value equals it."""
    f, o = cells(1), cells(2)
    scores = Scores(1, data_range=10.0, thresholds=[threshold], scales=[1])
    scores.update(f[None], o[None])
    ours = scores.result()
    theirs = detcatscores.det_cat_fct(f, o, threshold, ["CSI", "POD", "FAR", "ETS"])
    for name in ("csi", "pod", "far", "ets"):
        assert ours[f"{name}_{threshold}"][0] == pytest.approx(theirs[name.upper()], rel=1e-12)


def test_missing_pixels_are_left_out_as_pysteps_scores_the_valid_ones():
    """stforecast leaves missing pixels out of the table; pysteps would count them as
    non-events, so compare with pysteps on the valid pixels alone."""
    f, o = cells(5), cells(6)
    f[3, :7] = np.nan
    o[20:30, 40:] = np.nan
    valid = np.isfinite(f) & np.isfinite(o)
    scores = Scores(1, data_range=10.0, thresholds=[1.0], scales=[1])
    scores.update(f[None], o[None])
    theirs = detcatscores.det_cat_fct(f[valid], o[valid], 1.0, ["CSI", "ETS"])
    assert scores.result()["csi_1.0"][0] == pytest.approx(theirs["CSI"], rel=1e-12)
    assert scores.result()["ets_1.0"][0] == pytest.approx(theirs["ETS"], rel=1e-12)


@pytest.mark.parametrize(("threshold", "scale"), [(1.0, 1), (1.0, 5), (0.5, 9), (5.0, 8)])
def test_fss_equals_pysteps_away_from_the_domain_edge(threshold, scale):
    """pysteps counts a neighbourhood's outside pixels as no event; stforecast counts only the
    pixels it has (radar coverage): on fields with no event within a window of the edge, and no
    missing pixel, the two are the same number."""
    f, o = cells(3, border=scale), cells(4, border=scale)
    scores = Scores(1, data_range=10.0, thresholds=[threshold], scales=[scale])
    scores.update(f[None], o[None])
    ours = scores.result()[f"fss_{threshold}_{scale}"][0]
    assert ours == pytest.approx(spatialscores.fss(f, o, threshold, scale), rel=1e-9)


def moving_cell(steps: int = 10, shape=(64, 64)) -> np.ndarray:
    """A Gaussian rain cell moving 2 px right and 1 px down per step, in mm/h."""
    rr, cc = np.mgrid[: shape[0], : shape[1]]
    frames = [
        12.0 * np.exp(-((rr - 20 - t) ** 2 + (cc - 16 - 2 * t) ** 2) / (2 * 5.0**2))
        for t in range(steps)
    ]
    return np.array(frames, dtype=np.float32)


@pytest.mark.parametrize("name", ["pysteps_extrapolation", "sprog", "steps_mean"])
def test_pysteps_baselines_follow_a_moving_cell(name):
    seq = moving_cell()
    inputs, truth = seq[:6], seq[6:]
    inputs[:, :3, :3] = np.nan  # a corner without coverage stays without
    out = baselines.get(name)(inputs, 4)
    assert out.shape == (4, 64, 64) and out.dtype == np.float32
    assert np.isnan(out[:, :3, :3]).all() and np.isfinite(out[:, 3:, 3:]).all()
    assert (out[:, 3:, 3:] >= 0).all()
    # the forecast moved with the cell: closer to the truth than persistence is
    persistence = baselines.get("persistence")(inputs, 4)
    err = np.nanmean((out - truth) ** 2)
    assert err < 0.5 * np.nanmean((persistence - truth) ** 2)
    np.testing.assert_array_equal(out, baselines.get(name)(inputs, 4))  # deterministic


def test_pysteps_baselines_refuse_negative_values():
    x = moving_cell()[:6] - 5.0
    with pytest.raises(ConfigError, match="precipitation"):
        baselines.get("sprog")(x, 2)


def test_pysteps_baselines_take_a_products_small_negative_artefacts_as_no_rain():
    """BOM's rainfall has a few pixels at -0.1 mm per 10 min (-0.6 mm/h): no rain, not a
    refusal of the whole hindcast."""
    x = moving_cell()[:6].copy()
    clean = baselines.get("sprog")(x, 2)
    x[:, 0, :3] = -0.6
    np.testing.assert_array_equal(baselines.get("sprog")(x, 2), clean)


def test_without_pysteps_the_baseline_is_one_clear_line(tmp_path):
    """With pysteps hidden from the import system, naming the baseline fails before any work."""
    code = (
        "import sys\n"
        "sys.modules['pysteps'] = None\n"
        "from stforecast.evaluation import baselines\n"
        "try:\n"
        "    baselines.get('sprog')\n"
        "except Exception as err:\n"
        "    print(type(err).__name__, err)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip().startswith("ConfigError baseline 'sprog' needs pysteps: pip install")
    assert "persistence" in baselines.available() and "sprog" in baselines.available()
