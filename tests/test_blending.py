"""The long-lead blend: least-squares weights by hand, the card field and its checks, and a
forecast beyond the training horizon that is exactly the blend of the model and the
extrapolation with the fitted weights."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from stforecast.errors import ModelMismatchError
from stforecast.forecasting.blend import Blending, Fit, blend, from_card
from stforecast.forecasting.plan import materialise, plan
from stforecast.io import open_frames
from stforecast.motion import extrapolate
from stforecast.rundir.load import load_run

from runs import make_run


def test_least_squares_weights_by_hand():
    rng = np.random.default_rng(0)
    truth = rng.random((4, 8, 8)).astype(np.float32)
    cases = {
        "model is the truth": (truth, np.zeros_like(truth), 1.0),
        "extrapolation is the truth": (np.zeros_like(truth), truth, 0.0),
        "halfway": (truth + 0.5, truth - 0.5, 0.5),
        "model overshoots": (truth + 3.0, truth - 1.0, 0.25),
    }
    for name, (model, extra, w) in cases.items():
        fit = Fit(2, 4)
        fit.add(model, extra, truth)
        assert fit.weights() == pytest.approx([w, w, w]), name
    fit = Fit(2, 3)
    same = truth.copy()
    fit.add(same, same, truth)  # model and extrapolation agree: nothing to choose, the model
    assert fit.weights() == (1.0, 1.0)


def test_blend_and_card_field():
    b = Blending(4, (0.8, 0.5), {})
    assert [b.weight(k) for k in (1, 3, 4, 5, 9)] == [1.0, 1.0, 0.8, 0.5, 0.5]
    assert from_card({"blending": b.to_card()}) == Blending(4, (0.8, 0.5), {})
    assert from_card({}) is None
    m, e = np.full(3, 2.0, np.float32), np.array([0.0, np.nan, 4.0], np.float32)
    np.testing.assert_allclose(blend(m, e, 0.25), [0.5, 2.0, 3.5])  # no extrapolation: model
    bad_entries = [
        {"first_lead": 4, "weights": [1.5]},
        {"first_lead": 1, "weights": [0.5]},
        {"first_lead": 4, "weights": []},
        {"first_lead": 4, "weights": ["x"]},
        [1],
    ]
    for bad in bad_entries:
        with pytest.raises(ModelMismatchError, match="blending"):
            from_card({"blending": bad})


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_run(tmp_path_factory.mktemp("blend"), steps=4)


def test_fitted_forecast_beyond_the_horizon_is_the_blend(tiny, tmp_path):
    from stforecast.evaluation.blending import fit_blending

    result = fit_blending(tiny["run"], [str(tiny["archive"])], steps=6, start="2024-01-01T03:00",
                          end="2024-01-01T08:00", device="cpu")  # fmt: skip
    assert result.first_lead == 4 and len(result.weights) == 3  # leads 4..6 of a 3-lead model
    assert all(0.0 <= w <= 1.0 for w in result.weights)
    card = json.loads((tiny["run"] / "model.json").read_text())
    assert card["blending"]["weights"] == list(result.weights)
    assert card["blending"]["fitted_on"]["forecasts"] > 3

    run = load_run(tiny["run"], device="cpu")
    frames = open_frames([str(tiny["archive"])])
    blended = materialise(plan(frames, run, steps=6, checksums=False))
    alone = materialise(plan(frames, run, steps=6, checksums=False, blend=False))
    name = next(n for n in blended.data_vars if n != "crs")
    b, a = blended[name].values, alone[name].values
    np.testing.assert_array_equal(b[:3], a[:3])  # within the horizon: the model as trained
    values = frames.isel(time=slice(-4, None)).values.astype(np.float32)
    extra = extrapolate(values, 6)
    for k in range(4, 7):
        w = result.weights[k - 4]
        want = np.where(np.isfinite(extra[k - 1]), w * a[k - 1] + (1 - w) * extra[k - 1], a[k - 1])
        np.testing.assert_allclose(b[k - 1], want, rtol=1e-5, atol=1e-5)


def test_blend_command_errors(tiny):
    cli = [sys.executable, "-m", "stforecast", "blend", str(tiny["archive"]), "-m"]
    res = subprocess.run([*cli, str(tiny["run"])], capture_output=True, text=True)
    assert res.returncode == 2 and "--hours or --steps" in res.stderr
    res = subprocess.run([*cli, str(tiny["run"]), "--steps", "2"], capture_output=True, text=True)
    assert res.returncode == 2 and "blending starts after them" in res.stderr, res.stderr
    assert res.stderr.count("\n") == 1
