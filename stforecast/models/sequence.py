"""The sequence model every architecture shares: patch, embed, stack of cells, head, rollout.

Frames `(B, T, C, H, W)` are patched to the latent grid (space-to-depth by p), embedded by a 1×1
conv, passed through L recurrent layers (layer l reads layer l-1's hidden state) and mapped back
by a 1×1 conv. The model observes the given frames, then feeds each prediction back as the next
input for as many steps as asked, beyond the training horizon too. States start at zero.

Extrapolation guidance (`guided`): each step also reads the guide of the frame it predicts (the
last observed frame advected along the inputs' motion, `stforecast.motion.guidance`) and outputs
a correction to it, x̂_{t+1} = g_{t+1} + head(H_t). The head starts at zero, so an untrained
guided model *is* the extrapolation nowcast and training can only move it where it scores better.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from stforecast.models.cell import Cell
from stforecast.models.patch import patchify, unpatchify

Tensor = torch.Tensor


class SequenceModel(nn.Module):
    def __init__(
        self,
        cells: list[Cell],
        hidden: list[int],
        in_channels: int,
        patch_size: int,
        frame_size: tuple[int, int],
        config: dict[str, Any],
        size_free: bool,
        guided: bool = False,
    ) -> None:
        super().__init__()
        latent = in_channels * patch_size**2
        self.embed = nn.Conv2d(latent * (2 if guided else 1), hidden[0], 1)
        self.cells = nn.ModuleList(cells)
        self.head = nn.Conv2d(hidden[-1], latent, 1)
        if guided:  # the correction starts at zero: the untrained forecast is the guide
            nn.init.zeros_(self.head.weight)
            nn.init.zeros_(self.head.bias)
        self.guided = guided
        self.hidden = hidden
        self.in_channels = in_channels
        self.patch_size = patch_size
        self.frame_size = frame_size
        self.size_free = size_free
        self.config = config  # what `build` was called with: the model card's architecture

    def forward(
        self,
        frames: Tensor,
        steps: int,
        future: Tensor | None = None,
        mask: Tensor | None = None,
        guide: Tensor | None = None,
    ) -> Tensor:
        """Forecast `steps` frames after `frames`: `(B, T, C, H, W)` -> `(B, steps, C, H, W)`.

        Scheduled sampling (training only): `future` holds the true frames after `frames`
        (at least `steps - 1`), and `mask` `(B, steps - 1)` or `(B, steps - 1, C, H, W)` in [0, 1]
        says how much of the truth rather than the prediction is fed at each later step.
        A guided model needs `guide` `(B, T - 1 + steps, C, H, W)`, aligned with `rollout`'s
        outputs (`stforecast.motion.guidance`).
        """
        return self.rollout(frames, steps, future, mask, guide)[:, -steps:]

    def rollout(
        self,
        frames: Tensor,
        steps: int,
        future: Tensor | None = None,
        mask: Tensor | None = None,
        guide: Tensor | None = None,
    ) -> Tensor:
        """Every next-frame output: for frames 2..T (while observing) and the `steps` forecasts,
        `(B, T - 1 + steps, C, H, W)`; the training loss reads all of them."""
        self._check_input(frames, steps)
        g = self.latent_guide(guide, frames, steps)
        B, T, _, H, W = frames.shape
        p = self.patch_size
        x_obs = patchify(frames, p)
        fed = None
        if mask is not None:
            if future is None or future.shape[1] < steps - 1:
                raise ValueError("scheduled sampling needs `future` with at least steps-1 frames")
            fed = patchify(future[:, : steps - 1], p)
            if mask.dim() == 2:
                mask = mask[:, : steps - 1].reshape(B, steps - 1, 1, 1, 1).to(fed.dtype)
            else:
                mask = patchify(mask[:, : steps - 1].to(fed.dtype), p)
        h_lat, w_lat = H // p, W // p
        state = self.zero_state(B, h_lat, w_lat, frames)
        outputs = []
        pred = x_obs[:, 0]
        for t in range(T - 1 + steps):
            if t < T:
                x = x_obs[:, t]
            elif fed is not None:
                x = mask[:, t - T] * fed[:, t - T] + (1 - mask[:, t - T]) * pred
            else:
                x = pred
            pred = self.step(x, state, None if g is None else g[:, t])
            outputs.append(pred)
        return unpatchify(torch.stack(outputs, dim=1), p)

    def stream(self, frames: Tensor, steps: int, guide: Tensor | None = None) -> Iterator[Tensor]:
        """The forecast one lead time at a time, `(B, C, H, W)` each: `forward` without holding
        every lead in memory (operational forecasts write each lead as it comes)."""
        self._check_input(frames, steps)
        g = self.latent_guide(guide, frames, steps)
        B, T, _, H, W = frames.shape
        p = self.patch_size
        x_obs = patchify(frames, p)
        state = self.zero_state(B, H // p, W // p, frames)
        for t in range(T):
            pred = self.step(x_obs[:, t], state, None if g is None else g[:, t])
        for k in range(steps):
            yield unpatchify(pred[:, None], p)[:, 0]
            if k + 1 < steps:
                pred = self.step(pred, state, None if g is None else g[:, T + k])

    def latent_guide(self, guide: Tensor | None, frames: Tensor, steps: int) -> Tensor | None:
        """The guide on the latent grid, checked against the rollout it goes with."""
        if not self.guided:
            if guide is not None:
                raise ValueError("this model takes no guide (it was built without guidance)")
            return None
        expected = (frames.shape[0], frames.shape[1] - 1 + steps, *frames.shape[2:])
        if guide is None or tuple(guide.shape) != expected:
            got = "none" if guide is None else tuple(guide.shape)
            raise ValueError(f"a guided model needs a guide of shape {expected}, got {got}")
        return patchify(guide.to(frames.dtype), self.patch_size)

    def step(self, x: Tensor, state: list, g: Tensor | None = None) -> Tensor:
        """One time step on the latent grid; updates `state` in place and returns the output
        (for a guided model, the guide `g` of the predicted frame plus the correction)."""
        inp = self.embed(x if g is None else torch.cat([x, g], dim=1))
        m_st = state[-1]  # zig-zag: the top layer's M of the last step enters the bottom layer
        for layer, cell in enumerate(self.cells):
            h, c, m = state[layer]
            h, c, m, m_st = cell(inp, h, c, m, m_st)
            state[layer] = (h, c, m)
            inp = h
        state[-1] = m_st
        out = self.head(inp)
        return out if g is None else g + out

    def zero_state(self, batch: int, h: int, w: int, like: Tensor) -> list:
        """Zero (H, C, M_sam) per layer, then the zig-zag memory M_st (None where unused)."""

        def zeros(ch: int) -> Tensor:
            return like.new_zeros(batch, ch, h, w)

        state: list = []
        for ch, cell in zip(self.hidden, self.cells, strict=True):
            state.append((zeros(ch), zeros(ch), zeros(ch) if cell.sam is not None else None))
        state.append(zeros(self.hidden[0]) if self.cells[0].spatiotemporal else None)
        return state

    def _check_input(self, frames: Tensor, steps: int) -> None:
        if frames.dim() != 5:
            raise ValueError(f"frames must be (B, T, C, H, W), got shape {tuple(frames.shape)}")
        if frames.shape[1] < 1 or steps < 1:
            raise ValueError("need at least one input frame and one step")
        if frames.shape[2] != self.in_channels:
            raise ValueError(f"model takes {self.in_channels} channels, got {frames.shape[2]}")
        size = tuple(frames.shape[-2:])
        if not self.size_free and size != self.frame_size:
            raise ValueError(
                f"this model is tied to {self.frame_size[0]}x{self.frame_size[1]} frames "
                f"(norm='layer' or global attention); got {size[0]}x{size[1]}. "
                "Build it with norm='channel' and an attention window to run on any grid."
            )
