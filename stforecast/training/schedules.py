"""Learning-rate schedules as pure functions of the step.

A function of the step rather than a `torch.optim.lr_scheduler` object: the rate of any step is
known without replaying the run, a resumed run cannot drift from an uninterrupted one, and the
checkpoint only needs the step. The loop sets the rate before each optimizer update.

- `constant`: `lr` throughout.
- `cosine`: from `lr` at step 0 down to `min_lr` at `max_steps` (half a cosine period; the
  CMS-LSTM script anneals to 1e-6).
- `onecycle`: warm up from `lr / 25` to `lr` over the first 30 % of the steps, then anneal to
  `min_lr`, both halves cosine-shaped (Smith's one-cycle policy, as `OneCycleLR` with its default
  `div_factor` and `pct_start`, but ending at `min_lr`).
"""

from __future__ import annotations

import math

SCHEDULES = ("constant", "cosine", "onecycle")
ONECYCLE_WARMUP = 0.3  # share of the steps spent warming up
ONECYCLE_DIV = 25.0  # the warm-up starts at lr / ONECYCLE_DIV


def _cosine(start: float, end: float, fraction: float) -> float:
    fraction = min(max(fraction, 0.0), 1.0)
    return end + (start - end) * 0.5 * (1.0 + math.cos(math.pi * fraction))


def learning_rate(
    step: int, *, lr: float, max_steps: int, schedule: str = "constant", min_lr: float = 0.0
) -> float:
    """The rate for the optimizer update that turns step `step` into `step + 1` (0-based)."""
    if schedule == "constant":
        return lr
    if schedule == "cosine":
        return _cosine(lr, min_lr, step / max(max_steps, 1))
    if schedule == "onecycle":
        warmup = max(round(ONECYCLE_WARMUP * max_steps), 1)
        if step < warmup:
            return _cosine(lr / ONECYCLE_DIV, lr, step / warmup)
        return _cosine(lr, min_lr, (step - warmup) / max(max_steps - warmup, 1))
    raise ValueError(f"unknown schedule {schedule!r}; choose one of {', '.join(SCHEDULES)}")
