"""Training: recipe + data -> run directory (weights, model card, metrics, checkpoints).

    from stforecast.training import train, build_datasets
    summary = train(recipe, "runs/radar", data=build_datasets(recipe))

Modules, each named for what it holds: `loop` (the loop and `train`), `batches` (batch sizes
and loaders), `step` (one optimiser update), `objective` (what a step optimises), `losses`,
`running_loss` (the logged loss and the divergence check), `schedules` (learning rates),
`sampling` (scheduled sampling), `validation`, `selection` (best weights, early stopping),
`order` (data order), `checkpoint` (resumable state), `outputs` (the run directory's files),
`distributed` (torchrun), `metrics_log` (`metrics.jsonl`), `seeding`, and `datasets` (datasets
built from a recipe). The run directory itself (layout, card, loading) is `stforecast.rundir`.
"""

from __future__ import annotations

from typing import Any

from stforecast.training.loop import train
from stforecast.training.running_loss import TrainingError

__all__ = ["TrainingData", "TrainingError", "build_datasets", "train"]


def __getattr__(name: str) -> Any:
    # The datasets module pulls in the data stack (xarray, zarr); load it only when asked.
    if name in ("TrainingData", "build_datasets"):
        from stforecast.training import datasets

        return getattr(datasets, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
