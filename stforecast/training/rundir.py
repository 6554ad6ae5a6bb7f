"""The run directory a training writes (contract, see docs/architecture.md):

    recipe.toml              the resolved recipe (every field, defaults included)
    model.safetensors        final weights
    model.json               the model card (`stforecast.training.card`)
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
from stforecast.training import tomlwriter
from stforecast.training.checkpoint import atomic_write_bytes

RECIPE = "recipe.toml"
WEIGHTS = "model.safetensors"
CARD = "model.json"
METRICS = "metrics.jsonl"
CHECKPOINTS = "checkpoints"
TENSORBOARD = "tensorboard"


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


class MetricsLog:
    """`metrics.jsonl` plus, optionally, TensorBoard scalars (never a reason to fail)."""

    def __init__(self, run_dir: Path, *, enabled: bool, tensorboard: bool) -> None:
        self.path = run_dir / METRICS
        self.enabled = enabled
        self.writer = None
        if enabled and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(log_dir=str(run_dir / TENSORBOARD))
            except Exception:  # tensorboard missing or broken: the JSON log is enough
                self.writer = None

    def truncate(self, step: int) -> None:
        """Keep the records up to `step` (a resumed run repeats what came after its checkpoint)
        and drop a line cut short by a kill."""
        if not self.enabled or not self.path.exists():
            return
        kept = []
        for line in self.path.read_text(errors="replace").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict) and int(record.get("step", 0)) <= step:
                kept.append(line)
        atomic_write_bytes(self.path, "".join(f"{line}\n" for line in kept).encode())

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with open(self.path, "a") as fh:
            fh.write(dumps_json(record) + "\n")
            fh.flush()
        if self.writer is not None:
            step = int(record["step"])
            prefix = record.get("event", "train")
            for key, value in _scalars(record):
                self.writer.add_scalar(f"{prefix}/{key}", value, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def _scalars(record: dict[str, Any], prefix: str = ""):
    for key, value in record.items():
        if key in ("step", "event", "time"):
            continue
        if isinstance(value, bool):
            continue
        if isinstance(value, int | float) and math.isfinite(value):
            yield prefix + key, value
        elif isinstance(value, dict):
            yield from _scalars(value, f"{prefix}{key}/")
        elif isinstance(value, list):
            for i, v in enumerate(value):
                if isinstance(v, int | float) and math.isfinite(v):
                    yield f"{prefix}{key}/{i + 1}", v


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """The records of a run's `metrics.jsonl`."""
    path = Path(run_dir) / METRICS
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
