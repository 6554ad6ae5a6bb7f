"""Patching: space-to-depth between frames and the latent grid the cells run on."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _check(H: int, W: int, p: int) -> None:
    if p < 1 or H % p or W % p:
        raise ValueError(f"frame size {H}x{W} is not divisible by patch size {p}")


def patchify(frames: torch.Tensor, p: int) -> torch.Tensor:
    """`(B, T, C, H, W)` -> `(B, T, C·p², H/p, W/p)`; each p×p block becomes channels."""
    B, T, C, H, W = frames.shape
    _check(H, W, p)
    x = F.pixel_unshuffle(frames.reshape(B * T, C, H, W), p)
    return x.reshape(B, T, C * p * p, H // p, W // p)


def unpatchify(latent: torch.Tensor, p: int) -> torch.Tensor:
    """Exact inverse of `patchify`: `(B, T, C·p², h, w)` -> `(B, T, C, h·p, w·p)`."""
    B, T, Cp, h, w = latent.shape
    if Cp % (p * p):
        raise ValueError(f"{Cp} channels cannot be unpatched with patch size {p}")
    x = F.pixel_shuffle(latent.reshape(B * T, Cp, h, w), p)
    return x.reshape(B, T, Cp // (p * p), h * p, w * p)
