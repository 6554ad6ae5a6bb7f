"""The run directory's layout (contract, see docs/architecture.md) and its JSON/TOML writers:

    recipe.toml              the resolved recipe (every field, defaults included)
    model.safetensors        final weights
    model.json               the model card (`stforecast.rundir.card`)
    metrics.jsonl            one JSON object per log or validation event
    checkpoints/last.pt      the resumable state (`stforecast.training.checkpoint`)
    checkpoints/best.safetensors   weights of the best validation so far
    tensorboard/             event files, when TensorBoard is installed and enabled

Only rank 0 writes here; every file except `metrics.jsonl` (appended line by line, repaired on
resume) is replaced atomically.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from pathlib import Path
from typing import Any

from stforecast.config import Recipe
from stforecast.io.atomic import atomic_write_bytes
from stforecast.rundir import tomlwriter

RECIPE = "recipe.toml"
WEIGHTS = "model.safetensors"
CARD = "model.json"
METRICS = "metrics.jsonl"
CHECKPOINTS = "checkpoints"
TENSORBOARD = "tensorboard"
LAST = "last.pt"  # in CHECKPOINTS: the resumable state
BEST = "best.safetensors"  # in CHECKPOINTS: weights of the best validation


def jsonable(value: Any) -> Any:
    """`json.dumps` default: datetimes, paths, numpy/torch scalars and arrays, sets."""
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, set | frozenset):
        return sorted(value)
    if hasattr(value, "tolist"):
        return value.tolist()
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def clean_floats(value: Any) -> Any:
    """NaN/inf -> None, so the files stay strict JSON that every reader accepts."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: clean_floats(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [clean_floats(v) for v in value]
    return value


def dumps_json(value: Any, **kwargs: Any) -> str:
    return json.dumps(clean_floats(value), default=jsonable, allow_nan=False, **kwargs)


def write_json(path: Path, value: Any) -> Path:
    return atomic_write_bytes(path, (dumps_json(value, indent=2) + "\n").encode())


def recipe_toml(recipe: Recipe) -> str:
    header = "# The resolved recipe of this run (defaults included), written by stforecast.\n"
    return header + tomlwriter.dumps(recipe.model_dump(mode="python"))


def write_recipe(run_dir: Path, recipe: Recipe) -> Path:
    return atomic_write_bytes(run_dir / RECIPE, recipe_toml(recipe).encode())
