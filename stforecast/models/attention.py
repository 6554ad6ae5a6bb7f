"""Windowed dot-product attention shared by SE, SAM and the base model's SA.

Attention runs through `torch.nn.functional.scaled_dot_product_attention`, so the flash and
memory-efficient kernels are used where the device has them. The papers use `softmax(QᵀK)V`
without the 1/√d factor, hence `scale=1`.

A window is `(wh, ww)` latent pixels; the whole grid is one window in the papers' setting, smaller
windows keep attention local and its cost linear in the grid size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def window_counts(grid: tuple[int, int], window: tuple[int, int]) -> tuple[int, int]:
    """Windows per side `(nH, nW)` of `window` on the latent `grid` (a `ValueError` when the
    grid is not divisible by it)."""
    (H, W), (wh, ww) = grid, window
    if H % wh or W % ww:
        raise ValueError(f"latent grid {H}x{W} is not divisible by attention window {wh}x{ww}")
    return H // wh, W // ww


def to_windows(x: torch.Tensor, window: tuple[int, int]) -> torch.Tensor:
    """`(B, C, H, W)` -> `(B·nH·nW, wh·ww, C)`: the tokens of each window."""
    B, C, H, W = x.shape
    wh, ww = window
    nh, nw = window_counts((H, W), window)
    x = x.reshape(B, C, nh, wh, nw, ww).permute(0, 2, 4, 3, 5, 1)
    return x.reshape(-1, wh * ww, C)


def from_windows(tokens: torch.Tensor, shape: tuple[int, int, int], window: tuple[int, int]):
    """Inverse of `to_windows`: tokens back to a `(B, C, H, W)` map with `shape = (B, H, W)`."""
    B, H, W = shape
    wh, ww = window
    C = tokens.shape[-1]
    x = tokens.reshape(B, H // wh, W // ww, wh, ww, C).permute(0, 5, 1, 3, 2, 4)
    return x.reshape(B, C, H, W)


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """`softmax(Q Kᵀ) V` over the key tokens, row by row (SA-ConvLSTM Eqs. 2-4).

    Tokens are `(N, L, E)`; a head axis is added because the fused CPU (flash) kernel only takes
    4-D input, which makes attention about twice as fast there as the 3-D fallback.
    """
    out = F.scaled_dot_product_attention(q[:, None], k[:, None], v[:, None], scale=1.0)
    return out.squeeze(1)


def resolve_window(grid: tuple[int, int], window: int | None, divisor: int = 1):
    """The `(wh, ww)` window: the whole grid (papers) or `window` latent pixels, over `divisor`."""
    wh, ww = grid if window is None else (window, window)
    if wh % divisor or ww % divisor:
        raise ValueError(f"attention window {wh}x{ww} cannot be split {divisor} times per side")
    return wh // divisor, ww // divisor
