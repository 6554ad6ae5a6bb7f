"""Scheduled sampling: how often the model is fed the truth instead of its own prediction.

Schedules (step `k`, `S` = `train.sampling_steps`, default half of `max_steps`):

- `none`: the model always feeds back its own predictions after the `T_in` observed frames.
- `linear` (PredRNN, CMS-LSTM code): for the forecast inputs (steps `T_in+1 .. T_in+T_out-1`), the
  truth is fed with probability `η = max(0, 1 - k / S)`; the observed frames are always the truth.
- `reverse` (reverse scheduled sampling of PredRNN-V2, Wang et al., TPAMI 2022): the encoder
  also gets sampled. Observed frames 2..T_in are the truth with probability `η_in`, otherwise the
  model's own prediction of that frame; forecast inputs are the truth with probability `η`.
  Both start at 0.5 for the first `S / 2` steps; over the next `S / 2` steps `η_in` rises
  linearly to 1 and `η` falls linearly to 0; after `S` the run is plain teacher forcing on the
  inputs and free-running on the forecast. (The authors raise `η_in` exponentially; a linear ramp
  keeps a single parameter.) The model API samples only the forecast part, so for `reverse`
  this module runs the recurrence itself with the model's public `step` and `zero_state`.

At validation `η = 0` and `η_in = 1`: the plain rollout.

The per-sample Bernoulli masks of step `k` are drawn for the whole global batch from a generator
seeded by (seed, k) and each data-parallel rank takes its rows, so masks do not depend on the
number of processes, and a resumed run draws the same masks as an uninterrupted one.
"""

from __future__ import annotations

import torch

from stforecast.models.patch import patchify, unpatchify
from stforecast.training.seeding import SAMPLING, generator

Tensor = torch.Tensor
KINDS = ("none", "linear", "reverse")


def default_steps(max_steps: int) -> int:
    return max(max_steps // 2, 1)


def probabilities(kind: str, step: int, sampling_steps: int) -> tuple[float, float]:
    """(η, η_in): chance of feeding the truth at forecast inputs and at observed frames 2..T_in."""
    S = max(sampling_steps, 1)
    if kind == "none":
        return 0.0, 1.0
    if kind == "linear":
        return max(0.0, 1.0 - step / S), 1.0
    if kind == "reverse":
        half = S / 2
        if step < half:
            return 0.5, 0.5
        if step >= S:
            return 0.0, 1.0
        f = (step - half) / (S - half)
        return 0.5 * (1.0 - f), 0.5 + 0.5 * f
    raise ValueError(f"unknown scheduled sampling {kind!r}; choose one of {', '.join(KINDS)}")


def masks(
    kind: str,
    step: int,
    *,
    sampling_steps: int,
    seed: int,
    global_batch: int,
    rows: slice,
    input_frames: int,
    output_frames: int,
) -> tuple[Tensor | None, Tensor | None]:
    """(forecast mask `(b, T_out-1)`, input mask `(b, T_in-1)`) for this rank's rows `rows` of the
    global batch; 1 = feed the truth. `None` where nothing is sampled."""
    if kind == "none":
        return None, None
    eta, eta_in = probabilities(kind, step, sampling_steps)
    g = generator(seed, SAMPLING, step)
    forecast = None
    if output_frames > 1:
        forecast = (torch.rand(global_batch, output_frames - 1, generator=g) < eta).float()
        forecast = forecast[rows]
    encoder = None
    if kind == "reverse" and input_frames > 1:
        encoder = (torch.rand(global_batch, input_frames - 1, generator=g) < eta_in).float()
        encoder = encoder[rows]
    return forecast, encoder


def rollout(
    net: torch.nn.Module,
    inputs: Tensor,
    steps: int,
    future: Tensor | None = None,
    mask: Tensor | None = None,
    input_mask: Tensor | None = None,
    guide: Tensor | None = None,
) -> Tensor:
    """`net.rollout`, plus reverse scheduled sampling of the observed frames when `input_mask`
    `(B, T_in-1)` is given: frame t (t >= 2) is the truth where the mask is 1, otherwise the
    model's own prediction of it. Returns every next-frame output `(B, T_in-1+steps, C, H, W)`."""
    if input_mask is None:
        return net.rollout(inputs, steps, future=future, mask=mask, guide=guide)
    B, T, _, H, W = inputs.shape
    p = net.patch_size
    observed = patchify(inputs, p)
    fed = None
    if mask is not None and steps > 1:
        if future is None or future.shape[1] < steps - 1:
            raise ValueError("scheduled sampling needs `future` with at least steps-1 frames")
        fed = patchify(future[:, : steps - 1], p)
        mask = mask[:, : steps - 1].to(fed.dtype)
    g = net.latent_guide(guide, inputs, steps)
    state = net.zero_state(B, H // p, W // p, inputs)
    outputs = []
    pred = observed[:, 0]
    for t in range(T - 1 + steps):
        if t == 0:
            x = observed[:, 0]
        elif t < T:
            m = input_mask[:, t - 1].to(observed.dtype).view(B, 1, 1, 1)
            x = m * observed[:, t] + (1 - m) * pred
        elif fed is not None:
            m = mask[:, t - T].view(B, 1, 1, 1)
            x = m * fed[:, t - T] + (1 - m) * pred
        else:
            x = pred
        pred = net.step(x, state, None if g is None else g[:, t])
        outputs.append(pred)
    return unpatchify(torch.stack(outputs, dim=1), p)
