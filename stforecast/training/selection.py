"""Validation during a run and what it selects: the best weights so far, saved whenever the
selection score improves (`train.select`: the validation loss, or a CSI or FSS at a threshold),
and the count of validations without improvement that early stopping reads. Its state (`best`,
`stale`, `last_validation`) goes into every checkpoint.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from stforecast.config import TrainConfig
from stforecast.models import SequenceModel
from stforecast.training import outputs
from stforecast.training.distributed import Context
from stforecast.training.metrics_log import MetricsLog, utc_now
from stforecast.training.validation import Event, validate


def selection_event(select: str, contract: Any) -> Event | None:
    """The event score `train.select` names (None for the loss), its threshold carried into
    the model's units by the data contract's transform (increasing, so events are the same)."""
    if select == "loss":
        return None
    kind, threshold, *scale = select.split("_")
    (level,) = contract.transform.levels([float(threshold)])
    return Event(select, level, int(scale[0]) if kind == "fss" else None)


class Selection:
    """The run's validations: the latest, the best (`{"loss", "step", "metrics"}`) and how many
    have passed since it."""

    def __init__(
        self,
        net: SequenceModel,
        validation: Dataset | None,
        *,
        cfg: TrainConfig,
        ctx: Context,
        device: torch.device,
        output_frames: int,
        autocast: Callable[[], contextlib.AbstractContextManager],
        run_dir: Path,
        event: Event | None = None,
    ) -> None:
        self.net, self.validation, self.cfg = net, validation, cfg
        self.ctx, self.device, self.autocast = ctx, device, autocast
        self.output_frames, self.run_dir = output_frames, run_dir
        self.event = event
        self.best: dict[str, Any] | None = None
        self.stale = 0
        self.last: dict[str, Any] | None = None
        self.seconds = 0.0  # spent validating in this session
        self.warned = False
        self.warning: str | None = None  # for the next progress event, once per session

    @property
    def enabled(self) -> bool:
        """Whether the run has a validation split at all."""
        return self.validation is not None

    def score(self, step: int) -> dict[str, Any] | None:
        """Validation metrics of the current weights (None without validation sequences)."""
        if self.validation is None:
            return None
        start = time.monotonic()
        metrics = validate(
            self.net,
            self.validation,
            batch_size=self.cfg.batch_size,
            output_frames=self.output_frames,
            loss=self.cfg.loss,
            reduction=self.cfg.reduction,
            device=self.device,
            ctx=self.ctx,
            max_batches=self.cfg.val_batches,
            num_workers=self.cfg.num_workers,
            autocast=self.autocast,
            event=self.event,
        )
        self.seconds += time.monotonic() - start
        return None if metrics is None else {"step": step, **metrics}

    def check_share(self, steps: int, seconds: float, log: MetricsLog) -> None:
        """Warn once (in the log and the next progress event) when validating has taken more
        of this session's `seconds` than its `steps` of training: typically full-size frames
        validated while the run trains on crops. The remedy is in the message."""
        training = seconds - self.seconds
        if self.warned or steps < 1 or self.seconds <= training:
            return
        self.warned = True
        per_step, per_val = training / steps, self.seconds / max(steps // self.cfg.val_every, 1)
        sequences = len(self.validation) if self.validation is not None else 0
        self.warning = (
            f"validation takes {100 * self.seconds / max(seconds, 1e-9):.0f}% of the training "
            f"time ({per_val:.1f} s per validation of {sequences} sequences against "
            f"{per_step:.2f} s per training step): bound it with train.val_batches (batches per "
            "validation) or validate less often with a larger train.val_every"
        )
        log.write({"event": "warning", "message": self.warning, "time": utc_now()})

    def _improved(self, metrics: dict[str, Any]) -> bool:
        """Lower loss, or a higher event score (an undefined one, no event anywhere, never
        improves on a defined one)."""
        if self.best is None:
            return True
        if self.event is None:
            return metrics["loss"] < self.best["loss"]
        new, old = metrics.get(self.event.name), self.best.get("score")
        return new is not None and (old is None or new > old)

    def scheduled(self, step: int, epoch: int, log: MetricsLog) -> dict[str, Any] | None:
        """A validation every `val_every` steps: keeps the best weights, counts the stale ones,
        writes the record."""
        metrics = self.score(step)
        if metrics is None:
            return None
        improved = self._improved(metrics)
        if improved:
            score = metrics["loss"] if self.event is None else metrics.get(self.event.name)
            self.best = {"loss": metrics["loss"], "score": score, "step": step, "metrics": metrics}
            self.stale = 0
            if self.ctx.main:
                outputs.save_best(self.run_dir, self.net, step, metrics["loss"])
        else:
            self.stale += 1
        self.last = metrics
        log.write(
            {
                "event": "validation",
                "step": step,
                "epoch": epoch,
                **metrics,
                "improved": improved,
                "best_loss": self.best["loss"] if self.best else None,
                "stale": self.stale,
                "time": utc_now(),
            }
        )
        return metrics

    def final(self, step: int, epoch: int, log: MetricsLog) -> dict[str, Any] | None:
        """The validation of the final weights: the latest one if it was at `step`, else a new
        one, which is reported but changes neither the best weights nor early stopping."""
        final = self.last
        if self.validation is not None and (final is None or final.get("step") != step):
            final = self.score(step)
            if final is not None:
                self.last = final
                log.write(
                    {"event": "validation", "step": step, "epoch": epoch, **final}
                    | {"final": True, "time": utc_now()}
                )
        return final

    def best_record(self) -> dict[str, Any] | None:
        """The best validation's metrics with its step, as the card and summary give it."""
        return None if self.best is None else {**self.best["metrics"], "step": self.best["step"]}

    def state(self) -> dict[str, Any]:
        """The checkpoint's `best`, `stale` and `last_validation` entries."""
        return {"best": self.best, "stale": self.stale, "last_validation": self.last}

    def load(self, state: dict[str, Any]) -> None:
        self.best, self.stale = state["best"], state["stale"]
        self.last = state["last_validation"]
