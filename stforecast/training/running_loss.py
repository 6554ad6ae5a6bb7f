"""The training loss since the last log record, and the check that it stayed finite.

Losses are summed as tensors on the device, so a step never waits for the device to report its
loss; they are read (and all-reduced across ranks) only when a record is written or a checkpoint
or validation needs to know that training has not diverged.
"""

from __future__ import annotations

import torch

from stforecast.errors import StforecastError
from stforecast.training.distributed import Context

Tensor = torch.Tensor


class TrainingError(StforecastError):
    """Training could not go on (the loss became NaN or infinite)."""


class RunningLoss:
    """Sums of the step losses (and of the time-reversed ones) since the last record."""

    def __init__(self, device: torch.device) -> None:
        zero = torch.zeros((), device=device)
        self.loss, self.reversed = zero.clone(), zero.clone()
        self.bad = zero.clone()  # non-finite losses over the whole session: never reset
        self.steps = 0

    def add(self, loss: Tensor, loss_rev: Tensor | None) -> None:
        self.loss += loss
        self.bad += (~torch.isfinite(loss)).float()
        if loss_rev is not None:
            self.reversed += loss_rev
            self.bad += (~torch.isfinite(loss_rev)).float()
        self.steps += 1

    def check_finite(self, ctx: Context, step: int) -> None:
        """Raise `TrainingError` if any rank saw a non-finite loss."""
        bad = ctx.max(self.bad.clone())
        if float(bad) > 0:
            raise TrainingError(
                f"training diverged before step {step}: the loss is not finite. Lower "
                "train.lr, set train.grad_clip, or check the data for NaN; the last checkpoint "
                "is intact."
            )

    def take(self, ctx: Context) -> tuple[float, float]:
        """The global means (loss, reversed loss) over the steps since the last call; starts
        the next sums. Needs at least one step."""
        packed = ctx.sum(torch.stack([self.loss, self.reversed]).clone())
        packed = packed / (ctx.world_size * self.steps)
        means = float(packed[0]), float(packed[1])
        self.loss, self.reversed = torch.zeros_like(self.loss), torch.zeros_like(self.reversed)
        self.steps = 0
        return means
