"""Tiny trained runs made through the real path (synthetic archive -> prepare -> train), shared by
the forecast, export and evaluate tests. Each is built once per test session."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import xarray as xr

from stforecast.config import Recipe, data_config
from stforecast.data.prepare import prepare
from stforecast.data.synthetic import write_rain_cells
from stforecast.training import train
from stforecast.training.datasets import build_datasets


def make_run(
    root: Path,
    *,
    model: str = "convlstm",
    options: dict[str, Any] | None = None,
    size: int = 32,
    frames: int = 72,
    crop: int | None = None,
    coverage_radius_km: float | None = 14.0,
    steps: int = 6,
    edit: Callable[[xr.Dataset], xr.Dataset] | None = None,
    data: dict[str, Any] | None = None,
) -> dict[str, Path]:
    """Archive `root/rain.nc` (size x size, 10 min, km grid), store `root/prepared`, run `root/run`.

    `crop` trains on random crops, so the model's native frame is smaller than the card's grid
    (forecasts are tiled); `options` e.g. `{"norm": "channel", "window": 4}` make it size-free.
    `edit` rewrites the archive before it is prepared; `data` adds `[data]` fields.
    """
    root.mkdir(parents=True, exist_ok=True)
    archive = write_rain_cells(
        root / "rain.nc", frames=frames, size=size, seed=3, coverage_radius_km=coverage_radius_km
    )
    if edit is not None:
        edited = edit(xr.load_dataset(archive))
        archive.unlink()
        edited.to_netcdf(archive)
    store = root / "prepared"
    cfg = data_config(
        **(data or {}),
        sources=[str(archive)],
        transform="log1p",
        input_frames=4,
        output_frames=3,
        split={"fractions": [0.6, 0.2, 0.2]},
    )
    prepare(cfg, store)
    recipe = Recipe.model_validate(
        {
            "data": {"store": str(store), "input_frames": 4, "output_frames": 3},
            "model": {
                "name": model,
                "patch_size": 2,
                "hidden_channels": [8, 8],
                "kernel_size": 3,
                "options": options or {},
            },
            "train": {
                "batch_size": 2,
                "max_steps": steps,
                "val_every": steps,
                "val_batches": 2,
                "checkpoint_every": steps,
                "crop": crop,
                "device": "cpu",
                "tensorboard": False,
            },
        }
    )
    run = root / "run"
    train(recipe, run, data=build_datasets(recipe, cache_dir=root / "cache"))
    return {"archive": archive, "store": store, "run": run}


def train_tiny(sources: list[str], root: Path) -> Path:
    """A tiny run (ConvLSTM 8, 2 steps) trained on `sources` through prepare and train, 4 frames
    in and 3 out, splits 60/20/20 %: a run of the sources' grid, CRS and units."""
    cfg = data_config(sources=sources, transform="log1p", input_frames=4, output_frames=3,
                      split={"fractions": [0.6, 0.2, 0.2]})  # fmt: skip
    prepare(cfg, root / "prepared")
    recipe = Recipe.model_validate({
        "data": {"store": str(root / "prepared"), "input_frames": 4, "output_frames": 3},
        "model": {"name": "convlstm", "patch_size": 2, "hidden_channels": [8], "kernel_size": 3},
        "train": {"batch_size": 2, "max_steps": 2, "val_every": 2, "val_batches": 1,
                  "checkpoint_every": 2, "device": "cpu", "tensorboard": False},
    })  # fmt: skip
    train(recipe, root / "run", data=build_datasets(recipe, cache_dir=root / "cache"))
    return root / "run"


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """The records of a run's `metrics.jsonl`."""
    import json

    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
