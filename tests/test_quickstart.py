"""The quickstart recipe trains (about two and a half minutes on 2 CPU cores) to a model that
beats optical-flow extrapolation on CSI at 1 mm/h and FSS at every lead of its test split, and
persistence on MSE. Slow: run with `pytest -m slow`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from stforecast.config import load_recipe as recipe
from stforecast.data.synthetic import write_rain_cells
from stforecast.evaluation.evaluate import evaluate
from stforecast.training import train
from stforecast.training.datasets import build_datasets

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_quickstart_beats_extrapolation_at_every_lead(tmp_path):
    rain = write_rain_cells(tmp_path / "rain.nc")
    cfg = recipe(ROOT / "recipes" / "quickstart.toml", [f'data.sources=["{rain}"]'])
    data = build_datasets(cfg, cache_dir=tmp_path / "cache")
    train(cfg, tmp_path / "run", data=data)
    doc = evaluate(tmp_path / "run", tmp_path / "evaluation")
    model, extra = doc["methods"]["model"], doc["methods"]["extrapolation"]
    persist = doc["methods"]["persistence"]
    for score in ("csi_1.0", "fss_1.0_4"):
        gain = np.asarray(model[score]) - np.asarray(extra[score])
        assert (gain > 0).all(), (score, model[score], extra[score])
    assert model["summary"]["mse_pixel"] < 0.8 * persist["summary"]["mse_pixel"]


def test_quickstart_script_end_to_end(tmp_path):
    """The README's main job on a reduced setting: each artifact it announces is there and
    right (the forecast's lead times, the animation's frames, the report's figures, metrics)."""
    import json
    import os
    import shutil
    import subprocess
    import sys

    import xarray as xr
    from PIL import Image

    beside = Path(sys.executable).parent / "stforecast"  # the venv's entry point, as in README
    stf = str(beside) if beside.exists() else shutil.which("stforecast")
    assert stf, "the stforecast command is not installed"
    env = {
        **os.environ,
        "STFORECAST": stf,
        "TRAIN_ARGS": "--set train.max_steps=4 --set train.val_every=2 "
        "--set train.checkpoint_every=2 --quiet",
    }
    work = tmp_path / "qs"
    res = subprocess.run(
        ["bash", str(ROOT / "examples" / "quickstart.sh"), str(work)],
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    lines = dict(line.split(":", 1) for line in res.stdout.splitlines() if ":" in line)
    forecast = Path(lines["forecast"].strip())
    with xr.open_dataset(forecast) as ds:
        assert ds.sizes["time"] == 6
        assert (ds["forecast_period"].values == np.arange(600, 3601, 600)).all()
    with Image.open(work / "forecasts" / "forecast.gif") as gif:
        assert gif.n_frames == 6
    html = (work / "evaluation" / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 8
    metrics = json.loads((work / "evaluation" / "metrics.json").read_text())
    assert set(metrics["methods"]) == {"model", "persistence", "extrapolation"}
