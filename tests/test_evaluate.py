"""`stforecast evaluate`: the model and the baselines scored by the same code on the test split,
in hindcast through the forecast path, and Moving MNIST in the papers' format."""

from __future__ import annotations

import json

import numpy as np
import pytest
import xarray as xr
import zarr
from typer.testing import CliRunner

import stforecast
from stforecast.cli.app import app
from stforecast.cli.evaluate import parse_duration
from stforecast.evaluation.evaluate import evaluate
from stforecast.io import open_frames

from conftest import shared
from runs import make_run


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return make_run(tmp_path_factory.mktemp("eval"))


@pytest.fixture(scope="module")
def scored(run, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    doc = evaluate(run["run"], out, device="cpu")
    return doc, out


def test_metrics_json_contract(scored):
    doc, out = scored
    on_disk = json.loads((out / "metrics.json").read_text())
    assert on_disk == json.loads(json.dumps(doc))
    assert doc["lead_minutes"] == [10, 20, 30]
    assert set(doc["methods"]) == {"model", "persistence", "extrapolation"}
    for method in doc["methods"].values():
        for key, values in method.items():
            if key == "summary":
                continue
            assert len(values) == 3, key
            finite = [v for v in values if v is not None]
            expected = np.mean(finite) if finite else None
            assert method["summary"][key] == pytest.approx(expected)
        assert {"mse", "mae", "ssim", "psnr", "csi_1.0", "fss_1.0_4"} <= set(method)
    assert set(doc["protocol"]) >= set(doc["methods"]["model"]) - {"summary"}
    assert doc["data"]["mode"] == "test split"


def test_persistence_scores_by_hand(run, scored):
    """Persistence MSE per lead from the store's test windows, de-normalised by hand."""
    doc, _ = scored
    manifest = json.loads((run["store"] / "manifest.json").read_text())
    group = zarr.open_group(str(run["store"]), mode="r")
    frames = np.expm1(np.asarray(group["frames"][:, 0], np.float64))  # log1p store
    coverage = np.asarray(group["coverage"][:], bool)
    t_in, t_out = 4, 3
    sums = np.zeros(t_out)
    counts = np.zeros(t_out)
    for s in manifest["windows"]["starts"]["test"]:
        last = frames[s + t_in - 1]
        last_cov = coverage[s + t_in - 1]
        for k in range(t_out):
            truth, cov = frames[s + t_in + k], coverage[s + t_in + k] & last_cov
            if cov.any():
                sums[k] += ((np.clip(last, 0, None) - truth) ** 2)[cov].sum()
                counts[k] += 1
    np.testing.assert_allclose(doc["methods"]["persistence"]["mse"], sums / counts, rtol=1e-4)
    assert doc["cases"] == len(manifest["windows"]["starts"]["test"])


def test_report_has_the_figures(scored):
    _, out = scored
    html = (out / "report.html").read_text()
    assert html.count('src="data:image/png;base64,') >= 8
    md = (out / "report.md").read_text()
    assert "figures/score_mse.png" in md and (out / "figures" / "score_mse.png").exists()


def test_hindcast_uses_the_forecast_path(run, tmp_path):
    ref = "2024-01-01T09:00"
    doc = evaluate(run["run"], tmp_path, sources=[str(run["archive"])], start=ref, end=ref,
                   device="cpu")  # fmt: skip
    assert doc["cases"] == 1 and doc["data"]["mode"] == "hindcast"
    da = open_frames([str(run["archive"])], variable="rainrate")
    fc = stforecast.forecast(da.sel(time=da.time <= np.datetime64(ref)), str(run["run"]),
                             device="cpu")  # fmt: skip
    truth = da.sel(time=fc["time"].values).values
    pred = np.clip(fc["rainrate"].values, 0, None)
    ok = np.isfinite(truth) & np.isfinite(pred)
    expected = [((pred[k] - truth[k]) ** 2)[ok[k]].sum() for k in range(3)]
    np.testing.assert_allclose(doc["methods"]["model"]["mse"], expected, rtol=1e-4)


def test_hindcast_every_and_range(run, tmp_path):
    doc = evaluate(run["run"], tmp_path, sources=[str(run["archive"])],
                   start="2024-01-01T08:00", end="2024-01-01T09:00", every=1800,
                   device="cpu")  # fmt: skip
    assert doc["cases"] == 3


def test_cli_baselines_option_and_errors(run, tmp_path):
    out = tmp_path / "e"
    res = CliRunner().invoke(app, ["evaluate", "--model", str(run["run"]), "--out", str(out),
                                   "--baselines", "persistence", "--quiet"])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert set(json.loads((out / "metrics.json").read_text())["methods"]) == {
        "model",
        "persistence",
    }
    res = CliRunner().invoke(app, ["evaluate", "--model", str(run["run"]), "--out",
                                   str(tmp_path / "x"), "--baselines", "nowcastnet"])  # fmt: skip
    assert res.exit_code == 2 and "unknown baseline" in res.stderr
    res = CliRunner().invoke(app, ["evaluate", "--model", str(tmp_path / "none")])
    assert res.exit_code == 3
    res = CliRunner().invoke(app, ["evaluate", str(run["archive"]), "--model",
                                   str(run["run"]), "--every", "ten"])  # fmt: skip
    assert res.exit_code == 2


def test_parse_duration():
    assert parse_duration("10min") == 600
    assert parse_duration("1h") == 3600
    assert parse_duration("PT1H30M") == 5400
    assert parse_duration("90") == 90
    with pytest.raises(ValueError):
        parse_duration("soon")


def test_moving_mnist_table(tmp_path):
    from stforecast.config import Recipe
    from stforecast.training import train
    from stforecast.training.datasets import build_datasets

    mnist = shared("mnist")
    recipe = Recipe.model_validate(
        {
            "data": {"moving_mnist": str(mnist / "t10k-images-idx3-ubyte.gz"),
                     "input_frames": 3, "output_frames": 3, "validation_sequences": 4},
            "model": {"name": "convlstm", "patch_size": 4, "hidden_channels": [8],
                      "kernel_size": 3},
            "train": {"batch_size": 2, "max_steps": 2, "val_every": 2, "checkpoint_every": 2,
                      "device": "cpu", "tensorboard": False},
            "evaluate": {"max_sequences": 4, "samples": 1},
        }
    )  # fmt: skip
    train(recipe, tmp_path / "run", data=build_datasets(recipe))
    res = CliRunner().invoke(app, ["evaluate", "--model", str(tmp_path / "run"), "--out",
                                   str(tmp_path / "e")])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "Moving MNIST (regenerated)" in res.stdout
    doc = json.loads((tmp_path / "e" / "metrics.json").read_text())
    assert doc["cases"] == 4 and doc["lead_minutes"] == [1, 2, 3]
    # a frame of zeros vs digits: per-frame MSE is a sum over 4096 pixels, not a mean
    assert doc["methods"]["model"]["mse"][0] > 1.0 > doc["methods"]["model"]["mse_pixel"][0]


def test_store_with_nan_coverage_excluded(run):
    ds = xr.open_zarr(run["store"])
    assert not bool(ds["coverage"].all())  # the fixture has a radar range: exclusions matter


def test_best_weights_are_scored_and_named(run, scored, tmp_path):
    """The run's selected weights (the best validation's) are scored by default; `weights`
    picks the final or the best ones (here: the best altered, and the card with them, so they
    differ from the final weights), and metrics.json says which; the baselines are untouched."""
    import hashlib
    import json
    import shutil

    from safetensors.torch import load_file, save_file

    assert scored[0]["model"]["weights"].startswith("best validation (step ")
    copy = tmp_path / "run"
    shutil.copytree(run["run"], copy)
    best = copy / "checkpoints" / "best.safetensors"
    save_file({k: v * 0.5 for k, v in load_file(best).items()}, best)
    card = json.loads((copy / "model.json").read_text())
    card["weights"]["best_sha256"] = hashlib.sha256(best.read_bytes()).hexdigest()
    (copy / "model.json").write_text(json.dumps(card))
    doc = evaluate(copy, tmp_path / "out", device="cpu", weights="best")
    final = evaluate(copy, tmp_path / "final", device="cpu", weights="final")
    assert final["model"]["weights"].startswith("final (step ")
    assert doc["model"]["weights"].startswith("best validation (step ")
    assert doc["model"]["weights_sha256"] == hashlib.sha256(best.read_bytes()).hexdigest()
    assert doc["methods"]["model"]["mse"] != final["methods"]["model"]["mse"]
    assert doc["methods"]["persistence"] == final["methods"]["persistence"]
