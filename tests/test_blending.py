"""The blend of the model with the extrapolation: least-squares weights by hand, the filter and
its choice by CSI by hand, the card field and its checks, a forecast (within and beyond the
training horizon) that is exactly the blend with the fitted weights and filter, the default
fitting periods of a multi-archive recipe, and the test-split evaluation of a blended run."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import numpy as np
import pytest

from stforecast.errors import ModelMismatchError
from stforecast.forecasting.blend import (
    SIGMAS,
    Blending,
    Fit,
    SmoothingFit,
    blend,
    from_card,
    keep_values,
    smooth,
)
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
    assert [b.sigma(k) for k in (1, 4, 9)] == [0.0, 0.0, 0.0]  # a card without a filter
    assert from_card({"blending": b.to_card()}) == Blending(4, (0.8, 0.5), {})
    assert "smoothing" not in b.to_card()
    s = Blending(4, (0.8, 0.5), {}, (1.0, 3.0))
    assert [s.sigma(k) for k in (1, 3, 4, 5, 9)] == [0.0, 0.0, 1.0, 3.0, 3.0]
    assert from_card({"blending": s.to_card()}) == s
    assert from_card({}) is None
    m, e = np.full(3, 2.0, np.float32), np.array([0.0, np.nan, 4.0], np.float32)
    np.testing.assert_allclose(blend(m, e, 0.25), [0.5, 2.0, 3.5])  # no extrapolation: model
    bad_entries = [
        {"first_lead": 4, "weights": [1.5]},
        {"first_lead": 0, "weights": [0.5]},
        {"first_lead": 4, "weights": []},
        {"first_lead": 4, "weights": ["x"]},
        {"first_lead": 4, "weights": [0.5], "smoothing": [1.0, 2.0]},  # not one per weight
        {"first_lead": 4, "weights": [0.5], "smoothing": [-1.0]},
        {"first_lead": 4, "weights": [0.5], "smoothing": [True]},
        {"first_lead": 4, "weights": [0.5], "smoothing": "1"},
        [1],
    ]
    for bad in bad_entries:
        with pytest.raises(ModelMismatchError, match="blending"):
            from_card({"blending": bad})


def test_the_filter_by_hand():
    field = np.zeros((21, 21), np.float32)
    field[10, 10] = 1.0
    # scipy's Gaussian of sigma 1, truncated at 4 sigma and normalised: the centre of a unit
    # impulse is (1 / sum(exp(-x²/2), x = -4..4))², the total stays 1 away from the edges
    centre = 1.0 / np.exp(-(np.arange(-4, 5) ** 2) / 2.0).sum()
    out = smooth(field, 1.0)
    assert out[10, 10] == pytest.approx(centre**2, rel=1e-5)
    assert out.sum() == pytest.approx(1.0, rel=1e-5)
    covered = np.full((9, 9), 3.0, np.float32)
    covered[:, :4] = np.nan  # a coverage edge: a constant field stays constant up to it
    out = smooth(covered, 2.0)
    assert np.isnan(out[:, :4]).all()
    np.testing.assert_allclose(out[:, 4:], 3.0, rtol=1e-6)
    m, e = np.full((9, 9), 2.0, np.float32), np.full((9, 9), 4.0, np.float32)
    np.testing.assert_allclose(blend(m, e, 0.5, 3.0), 3.0, rtol=1e-6)  # mix, then filter
    # the filter places, the mix's own values stay: the n-th smallest pixel of the filtered
    # field gets the n-th smallest value; missing stays missing
    order = np.array([[3.0, 1.0], [np.nan, 2.0]], np.float32)
    values = np.array([[10.0, 30.0], [np.nan, 20.0]], np.float32)
    np.testing.assert_array_equal(keep_values(order, values), [[30.0, 10.0], [np.nan, 20.0]])
    cell = np.zeros((15, 15), np.float32)
    cell[5:9, 6:8] = [[1, 2], [3, 9], [4, 5], [1, 1]]
    kept = blend(cell, cell, 0.5, 2.0)
    np.testing.assert_array_equal(np.sort(kept.ravel()), np.sort(cell.ravel()))  # same values
    assert kept[6, 6] == 9.0 or kept[6, 7] == 9.0  # the peak stays at the cell's centre


def test_the_filter_is_chosen_by_csi():
    rng = np.random.default_rng(1)
    truth = np.zeros((2, 40, 40), np.float32)
    truth[:, 10:30, 10:30] = 2.0
    # lead 1: the rain area right but speckled with isolated holes and false alarms, which a
    # filter of one cell or two fills in and wipes out; lead 2: exactly right, nothing to gain
    speckled = truth[0].copy()
    flip = rng.random(speckled.shape) < 0.08
    speckled[flip] = np.where(speckled[flip] > 0, 0.0, 2.0)
    fit = SmoothingFit(2, 1.0)
    fit.add(np.stack([speckled, truth[1]]), truth)
    sigmas = fit.sigmas()
    assert sigmas[0] > 0.0 and sigmas[1] == 0.0
    by_hand = []
    for sigma in SIGMAS:
        f = keep_values(smooth(speckled, sigma), speckled) if sigma else speckled
        hits, events = np.sum((f >= 1) & (truth[0] >= 1)), np.sum((f >= 1) | (truth[0] >= 1))
        by_hand.append(hits / events)
    assert sigmas[0] == SIGMAS[int(np.argmax(by_hand))]
    assert SmoothingFit(1, 1.0).sigmas() == (0.0,)  # no events at all: no filter


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_run(tmp_path_factory.mktemp("blend"), steps=4)


def test_fitted_forecast_is_the_blend_at_every_lead(tiny, tmp_path):
    from stforecast.evaluation.blending import fit_blending

    result = fit_blending(tiny["run"], [str(tiny["archive"])], steps=6, start="2024-01-01T03:00",
                          end="2024-01-01T08:00", device="cpu")  # fmt: skip
    assert result.first_lead == 1 and len(result.weights) == 6  # leads 1..6 of a 3-lead model
    assert all(0.0 <= w <= 1.0 for w in result.weights)
    card = json.loads((tiny["run"] / "model.json").read_text())
    assert card["blending"]["weights"] == list(result.weights)
    assert card["blending"]["fitted_on"]["forecasts"] > 3
    assert card["blending"]["fitted_on"]["periods"] == [["2024-01-01T03:00", "2024-01-01T08:00"]]

    run = load_run(tiny["run"], device="cpu")
    frames = open_frames([str(tiny["archive"])])
    blended = materialise(plan(frames, run, steps=6, checksums=False))
    alone = materialise(plan(frames, run, steps=6, checksums=False, blend=False))
    name = next(n for n in blended.data_vars if n != "crs")
    b, a = blended[name].values, alone[name].values
    values = frames.isel(time=slice(-4, None)).values.astype(np.float32)
    extra = extrapolate(values, 6)
    assert len(result.smoothing) == 6 and set(result.smoothing) <= set(SIGMAS)
    assert card["blending"]["smoothing"] == list(result.smoothing)
    assert card["blending"]["fitted_on"]["smoothing_threshold"] == 0.1  # the default [0.1, 1, 5]
    for k in range(1, 7):
        w, sigma = result.weights[k - 1], result.smoothing[k - 1]
        want = np.where(np.isfinite(extra[k - 1]), w * a[k - 1] + (1 - w) * extra[k - 1], a[k - 1])
        want = keep_values(smooth(want, sigma), want) if sigma else want
        np.testing.assert_allclose(b[k - 1], want, rtol=1e-5, atol=1e-5)


def test_a_card_fitted_beyond_the_horizon_only_keeps_the_model_before_it(tiny):
    run = load_run(tiny["run"], device="cpu")
    card = {**run.card, "blending": Blending(4, (0.0,), {}).to_card()}
    frames = open_frames([str(tiny["archive"])])
    later = materialise(plan(frames, dataclasses.replace(run, card=card), steps=5, checksums=False))
    alone = materialise(plan(frames, run, steps=5, checksums=False, blend=False))
    name = next(n for n in later.data_vars if n != "crs")
    np.testing.assert_array_equal(later[name].values[:3], alone[name].values[:3])
    values = frames.isel(time=slice(-4, None)).values.astype(np.float32)
    extra = extrapolate(values, 5)[3:]
    np.testing.assert_allclose(later[name].values[3:], np.where(np.isfinite(extra), extra,
                               alone[name].values[3:]), rtol=1e-5, atol=1e-5)  # fmt: skip


def test_the_forecast_filters_the_mix_over_covered_pixels_only(tiny):
    """A card with a filter: each lead is the mix filtered over the pixels the input covers
    (what the network writes outside them is not mixed in), and stays missing outside."""
    run = load_run(tiny["run"], device="cpu")
    card = {**run.card, "blending": Blending(2, (0.5,), {}, (2.0,)).to_card()}
    frames = open_frames([str(tiny["archive"])])
    got = materialise(plan(frames, dataclasses.replace(run, card=card), steps=3, checksums=False))
    alone = materialise(plan(frames, run, steps=3, checksums=False, blend=False))
    name = next(n for n in got.data_vars if n != "crs")
    g, a = got[name].values, alone[name].values
    assert np.isnan(a).any()  # the archive has pixels without coverage
    np.testing.assert_array_equal(g[0], a[0])  # before the first blended lead: the model
    values = frames.isel(time=slice(-4, None)).values.astype(np.float32)
    extra = extrapolate(values, 3)
    for k in (1, 2):
        mixed = np.where(np.isfinite(extra[k]), 0.5 * a[k] + 0.5 * extra[k], a[k])
        want = keep_values(smooth(mixed, 2.0), mixed)
        np.testing.assert_allclose(g[k], want, rtol=1e-5, atol=1e-5)
        assert np.array_equal(np.isnan(g[k]), np.isnan(a[k]))


def test_default_periods_are_each_archives_validation_range(tmp_path):
    from stforecast.evaluation.blending import _parts

    run = tmp_path / "run"
    run.mkdir()
    (run / "recipe.toml").write_text(
        """
[data]
spacing = 2000
[[data.archives]]
name = "a"
sources = ["/data/a"]
source_units = "mm"
pixel_size = 1000
split.train = ["2020-01-01T00:00", "2020-01-02T00:00"]
split.validation = ["2020-01-01T05:00", "2020-01-01T08:00"]
[[data.archives]]
name = "b"
sources = ["/data/b"]
split = { fractions = [1.0, 0.0, 0.0] }
[model]
name = "convlstm"
"""
    )
    parts = _parts(run, None, None, None, None)
    assert parts == [
        (["/data/a"], "2020-01-01T05:00:00Z", "2020-01-01T08:00:00Z",
         {"source_units": "mm", "pixel_size": 1000.0}),
    ]  # fmt: skip
    given = _parts(run, ["/x"], "2020-01-01T01:00", None, {"pixel_size": 500})
    assert given == [(["/x"], "2020-01-01T01:00", None, {"pixel_size": 500})]


def test_blend_command_errors(tiny):
    cli = [sys.executable, "-m", "stforecast", "blend"]
    res = subprocess.run([*cli, "-m", str(tiny["run"])], capture_output=True, text=True)
    assert res.returncode == 2 and "no validation time range" in res.stderr, res.stderr
    assert res.stderr.count("\n") == 1
    res = subprocess.run([*cli, str(tiny["archive"]), "-m", str(tiny["run"])],
                         capture_output=True, text=True)  # fmt: skip
    assert res.returncode == 2 and "--start and --end" in res.stderr, res.stderr
    assert res.stderr.count("\n") == 1


def test_the_test_split_is_scored_as_blended(tiny, tmp_path):
    """`evaluate` on the store's test split scores the forecast `forecast` gives: with a card
    weight of 0 at every lead the model's scores are the built-in extrapolation's, exactly."""
    import shutil

    from stforecast.evaluation.evaluate import evaluate

    run = tmp_path / "run"
    shutil.copytree(tiny["run"], run)
    alone = evaluate(run, tmp_path / "alone", device="cpu")["methods"]
    card = json.loads((run / "model.json").read_text())
    card["blending"] = Blending(1, (0.0,), {}).to_card()
    (run / "model.json").write_text(json.dumps(card))
    doc = evaluate(run, tmp_path / "blended", device="cpu")["methods"]
    for score in ("mse_pixel", "mae_pixel", "ssim"):
        np.testing.assert_allclose(doc["model"][score], doc["extrapolation"][score], rtol=1e-6)
    assert not np.allclose(alone["model"]["mse_pixel"], alone["extrapolation"]["mse_pixel"])
