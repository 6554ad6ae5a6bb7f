"""`metrics.jsonl` of a run directory, and TensorBoard scalars beside it.

Appended line by line by rank 0; a resumed run first truncates it to its checkpoint's step.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from pathlib import Path
from typing import Any

from stforecast.errors import writing
from stforecast.io.atomic import atomic_write_bytes
from stforecast.rundir.layout import METRICS, TENSORBOARD, dumps_json


def utc_now() -> str:
    """The `time` of a record: UTC, to the second."""
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


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
        with writing(self.path, "write the metrics"), open(self.path, "a") as fh:
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
