"""What one training step optimises: the rollout and its loss, forward in time or backwards.

`Objective` puts the rollout (with scheduled sampling) and the loss in one `forward`, which is what
DDP and `torch.compile` wrap; the loop divides the loss sum by a normaliser so that DDP's gradient
average equals the gradient of the global batch's loss. `reverse_time` gives the time-reversed
window trained on by `reverse_sequences` (CMS-LSTM authors' code).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from stforecast.errors import ConfigError
from stforecast.training import sampling
from stforecast.training.losses import BALANCE_RATES, area_bias, loss_terms, rollout_targets

Tensor = torch.Tensor


class Objective(nn.Module):
    """Rollout and loss in one `forward`, which is what DDP (and `torch.compile`) wraps: DDP
    then sees every use of the weights in the step it synchronises."""

    def __init__(
        self,
        net: nn.Module,
        kind: str,
        levels: tuple[float, ...] | None = None,
        area: Area | None = None,
    ) -> None:
        super().__init__()
        self.net = net
        self.kind = kind
        self.levels = levels  # the balanced loss's rain rates in model units, or None
        self.area = area  # the event-area term (`train.area_loss`), or None

    def forward(
        self,
        inputs: Tensor,
        targets: Tensor,
        coverage: Tensor | None,
        mask: Tensor | None,
        input_mask: Tensor | None,
        normalizer: Tensor,
        guide: Tensor | None = None,
    ) -> Tensor:
        steps = targets.shape[1]
        # Truth fed by scheduled sampling: as the data give it, but never NaN (uncovered pixels
        # of a target the data layer did not fill would otherwise poison the whole rollout).
        future = torch.nan_to_num(targets) if mask is not None else None
        out = sampling.rollout(self.net, inputs, steps, future, mask, input_mask, guide)
        ref, weight = rollout_targets(inputs, targets, coverage)
        total, _ = loss_terms(out, ref, weight, self.kind, self.levels)
        loss = total / normalizer
        if self.area is not None:  # on the forecast leads only
            t = targets.shape[1]
            cov = None if weight is None else weight[:, -t:]
            term = area_bias(out[:, -t:], ref[:, -t:], cov, self.area.levels, self.area.width)
            loss = loss + self.area.factor * term
        return loss


@dataclass(frozen=True)
class Area:
    """The event-area term of the loss: levels in the model's units, logistic width, factor."""

    levels: tuple[float, ...]
    width: float
    factor: float


#: The area term's logistic width in model units (log1p of mm/h: about ±10 % of the rate).
AREA_WIDTH = 0.1


def area_term(cfg: Any, contract: Any) -> Area | None:
    """`train.area_loss` with `train.area_thresholds` carried into the model's units by the
    data transform (increasing, so the events are the same); None when the factor is 0."""
    if not cfg.area_loss:
        return None
    levels = contract.transform.levels(cfg.area_thresholds)
    return Area(levels, AREA_WIDTH, float(cfg.area_loss))


def balance_levels(contract: Any) -> tuple[float, ...]:
    """`losses.BALANCE_RATES` (mm/h) in the model's units: converted to the data's units, then
    through the data transform. The data must be a rain rate (or reflectivity, through Z-R)."""
    import numpy as np

    from stforecast.data import units

    if units.quantity(contract.units) not in ("rate", "reflectivity", "accumulation"):
        raise ConfigError(
            f"train.balanced weighs rain rates, but the data are in {contract.units!r}; "
            "use it on precipitation (data.units = 'mm/h')"
        )
    rates = np.asarray(BALANCE_RATES)
    values = units.convert(
        rates, "mm/h", contract.units, step_seconds=contract.time_step_seconds,
        zr=contract.processing.zr if contract.processing else units.MARSHALL_PALMER,
    )  # fmt: skip
    return contract.transform.levels(values)


def check_guide(guide: Any, contract: Any) -> Any:
    """`guide` (`[model] options.guidance`), checked against the data: the S-PROG guide reads
    frames as log1p of mm/h (`motion.guidance`) and needs pysteps."""
    if guide != "sprog":
        return guide
    from stforecast.data import units

    if contract.transform.name != "log1p" or not units.equivalent(contract.units, "mm/h"):
        raise ConfigError(
            "model.options.guidance = 'sprog' needs rain rates through log1p (data.units = "
            f"'mm/h', data.transform = 'log1p'); the data are {contract.units!r} through "
            f"{contract.transform.name!r}"
        )
    from stforecast import pysteps_nowcasts

    pysteps_nowcasts.require("sprog")
    return guide


def reverse_time(
    inputs: Tensor, targets: Tensor, coverage: Tensor | None
) -> tuple[Tensor, Tensor, Tensor | None]:
    """The same window played backwards, split again into T_in inputs and T_out targets."""
    t_in = inputs.shape[1]
    frames = torch.cat([inputs, targets], dim=1).flip(1)
    cov = None if coverage is None else coverage.flip(1)
    return frames[:, :t_in], frames[:, t_in:], cov
