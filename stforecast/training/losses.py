"""Training losses on every next-frame output, masked by data coverage.

The loss reads all outputs of `model.rollout` (frames 2..T: the observed part and the forecasts),
as the papers' reference code does. Where a coverage weight is 0 (no radar, missing satellite
pixels) the error is exactly 0 and so is its gradient, even if the target holds NaN there.

Reductions: `mean` averages over the weighted elements (Σ w·e / Σ w, w broadcast over channels);
`sum` adds them up over the whole batch (`nn.MSELoss(reduction="sum")`, the CMS-LSTM script's
choice). `l1+l2` is the sum of the two with the same reduction (CMS-LSTM paper). `loss_terms`
gives the sum and the weight; the reduction is applied over the global batch by the step
(`step.Stepper.normalizer`) and by `validation`.
"""

from __future__ import annotations

import torch

Tensor = torch.Tensor

KINDS = ("l2", "l1", "l1+l2")

#: Balanced losses (Shi et al., NeurIPS 2017, Sec. 4.2): a target pixel's weight from its rain
#: rate in mm/h, 1 below 2 mm/h, then 2, 5, 10 and 30 from 2, 5, 10 and 30 mm/h on.
BALANCE_RATES = (2.0, 5.0, 10.0, 30.0)
BALANCE_WEIGHTS = (1.0, 2.0, 5.0, 10.0, 30.0)


def balance(target: Tensor, levels: tuple[float, ...]) -> Tensor:
    """The balanced loss's weight of each target element; `levels` are `BALANCE_RATES` in the
    model's units (through the data transform, which is increasing)."""
    w = torch.full_like(target, BALANCE_WEIGHTS[0])
    for level, lower, upper in zip(levels, BALANCE_WEIGHTS, BALANCE_WEIGHTS[1:], strict=False):
        w = w + (upper - lower) * (target >= level).to(target.dtype)
    return w


def elementwise(pred: Tensor, target: Tensor, kind: str) -> Tensor:
    """The unreduced error of each element for a loss kind."""
    diff = pred - target
    if kind == "l2":
        return diff.square()
    if kind == "l1":
        return diff.abs()
    if kind == "l1+l2":
        return diff.square() + diff.abs()
    raise ValueError(f"unknown loss {kind!r}; choose one of {', '.join(KINDS)}")


def loss_terms(
    pred: Tensor,
    target: Tensor,
    weight: Tensor | None,
    kind: str,
    levels: tuple[float, ...] | None = None,
) -> tuple[Tensor, Tensor]:
    """(Σ w·b·e, Σ w) over all elements, in float32 even under autocast; b is the balanced
    loss's weight when `levels` are given (`balance`), else 1.

    Split in two so that data-parallel training can normalise a masked mean by the weight of the
    global batch rather than each rank's share.
    """
    pred = pred.float()
    target = target.float()
    if weight is None:
        err = elementwise(pred, target, kind)
        if levels is not None:
            err = err * balance(target, levels)
        return err.sum(), torch.tensor(float(err.numel()), device=err.device)
    weight = weight.float().expand_as(pred)
    # Uncovered targets are replaced by the (detached) prediction: zero error, zero gradient.
    target = torch.where(weight > 0, target, pred.detach())
    err = elementwise(pred, target, kind)
    if levels is not None:
        err = err * balance(target, levels)
    return (weight * err).sum(), weight.sum()


def area_bias(
    pred: Tensor, target: Tensor, weight: Tensor | None, levels: tuple[float, ...], width: float
) -> Tensor:
    """Σ over `levels` of ((F − O) / (F + O + 1))², averaged over the leads of `(B, T, C, H, W)`
    frames: F the forecast's event area (each pixel a logistic of its distance above the level,
    in units of `width`), O the observed one, both summed over the batch and covered pixels.

    An L2 loss rewards damping what cannot be placed, and a damped field draws the rain area too
    small, more so with lead (docs/benchmarks.md: a network trained on two radars forecast 0.33
    of the third's area at 60 min). This term asks only for the right area, not where it is, so
    it does not fight the L2 loss over placement. Bounded in [0, 1); 0 where neither has rain.
    """
    pred = pred.float()
    target = target.float()
    w = torch.ones_like(pred) if weight is None else weight.float().expand_as(pred)
    target = torch.where(w > 0, target, torch.zeros_like(target))
    dims = (0, 2, 3, 4)
    total = pred.new_zeros(())
    for level in levels:
        forecast = (torch.sigmoid((pred - level) / width) * w).sum(dims)
        observed = ((target >= level).float() * w).sum(dims)
        total = total + ((forecast - observed) / (forecast + observed + 1.0)).square().mean()
    return total


def rollout_targets(
    inputs: Tensor, targets: Tensor, coverage: Tensor | None
) -> tuple[Tensor, Tensor | None]:
    """What `model.rollout` outputs are compared with: frames 2..T, and their coverage."""
    frames = torch.cat([inputs, targets], dim=1)
    return frames[:, 1:], None if coverage is None else coverage[:, 1:]
