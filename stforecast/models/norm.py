"""Normalisations and the conv + norm unit every block is built from.

`layer` is the papers' LayerNorm over `[C, H, W]`: it has one affine weight per latent pixel and so
ties a model to the grid it was built for. `channel` normalises over channels at each position:
size-free and local, so a model built with it runs on any grid (and tiles without seams).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

NORMS = ("layer", "channel", "none")


class ChannelNorm(nn.Module):
    """LayerNorm over the channel axis at every position (size-free)."""

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.layer_norm(x.permute(0, 2, 3, 1), x.shape[1:2], self.weight, self.bias, self.eps)
        return y.permute(0, 3, 1, 2)


def make_norm(kind: str, channels: int, size: tuple[int, int]) -> nn.Module:
    """A norm for a `(B, channels, *size)` map."""
    if kind == "layer":
        return nn.LayerNorm([channels, *size])
    if kind == "channel":
        return ChannelNorm(channels)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm {kind!r}; choose one of {', '.join(NORMS)}")


def conv(c_in: int, c_out: int, k: int, *, bias: bool = True, groups: int = 1) -> nn.Conv2d:
    """A 'same'-padded k×k convolution."""
    return nn.Conv2d(c_in, c_out, k, padding=k // 2, bias=bias, groups=groups)


class ConvNorm(nn.Sequential):
    """`norm(W * x)`; the conv carries a bias only when there is no norm (or when asked)."""

    def __init__(
        self,
        c_in: int,
        c_out: int,
        k: int,
        norm: str,
        size: tuple[int, int],
        bias: bool | None = None,
    ) -> None:
        super().__init__(
            conv(c_in, c_out, k, bias=(norm == "none") if bias is None else bias),
            make_norm(norm, c_out, size),
        )
