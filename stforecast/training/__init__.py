"""Training: recipe + data -> run directory (weights, model card, metrics, checkpoints).

    from stforecast.training import train, load_model
    summary = train(recipe, "runs/radar", data=build_datasets(recipe))
    model, card = load_model("runs/radar")

Modules, each named for what it holds: `loop` (the loop and `train`), `objective` (what a step
optimises), `losses`, `schedules` (learning rates), `sampling` (scheduled sampling),
`validation`, `order` (data order), `checkpoint` (atomic files, resumable state), `distributed`
(device, torchrun), `rundir` (run-directory layout, metrics log, resolved recipe), `card` (model
card, `load_model`), `tomlwriter`, `seeding`, and `data` (datasets built from a recipe).
"""

from __future__ import annotations

from typing import Any

from stforecast.training.card import load_model, read_card
from stforecast.training.loop import TrainingError, train

__all__ = ["TrainingData", "TrainingError", "build_datasets", "load_model", "read_card", "train"]


def __getattr__(name: str) -> Any:
    # The datasets module pulls in the data stack (xarray, zarr); load it only when asked.
    if name in ("TrainingData", "build_datasets"):
        from stforecast.training import data

        return getattr(data, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
