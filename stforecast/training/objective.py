"""What one training step optimises: the rollout and its loss, forward in time or backwards.

`Objective` puts the rollout (with scheduled sampling) and the loss in one `forward`, which is what
DDP and `torch.compile` wrap; the loop divides the loss sum by a normaliser so that DDP's gradient
average equals the gradient of the global batch's loss. `reverse_time` gives the time-reversed
window trained on by `reverse_sequences` (CMS-LSTM authors' code).
"""

from __future__ import annotations

import torch
from torch import nn

from stforecast.training import sampling
from stforecast.training.losses import loss_terms, rollout_targets

Tensor = torch.Tensor


class Objective(nn.Module):
    """Rollout and loss in one `forward`, which is what DDP (and `torch.compile`) wraps: DDP
    then sees every use of the weights in the step it synchronises."""

    def __init__(self, net: nn.Module, kind: str) -> None:
        super().__init__()
        self.net = net
        self.kind = kind

    def forward(
        self,
        inputs: Tensor,
        targets: Tensor,
        coverage: Tensor | None,
        mask: Tensor | None,
        input_mask: Tensor | None,
        normalizer: Tensor,
    ) -> Tensor:
        steps = targets.shape[1]
        # Truth fed by scheduled sampling: as the data give it, but never NaN (uncovered pixels
        # of a target the data layer did not fill would otherwise poison the whole rollout).
        future = torch.nan_to_num(targets) if mask is not None else None
        out = sampling.rollout(self.net, inputs, steps, future, mask, input_mask)
        ref, weight = rollout_targets(inputs, targets, coverage)
        total, _ = loss_terms(out, ref, weight, self.kind)
        return total / normalizer


def reverse_time(
    inputs: Tensor, targets: Tensor, coverage: Tensor | None
) -> tuple[Tensor, Tensor, Tensor | None]:
    """The same window played backwards, split again into T_in inputs and T_out targets."""
    t_in = inputs.shape[1]
    frames = torch.cat([inputs, targets], dim=1).flip(1)
    cov = None if coverage is None else coverage.flip(1)
    return frames[:, :t_in], frames[:, t_in:], cov
