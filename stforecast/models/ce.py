"""CE block: context embedding (CMS-LSTM, Eq. 2).

    x̂   = s·σ(W_H * H + b_H) ∘ x
    Ĥ   = s·σ(W_X * x̂ + b_X) ∘ H

iterated with the same two convolutions: odd half-steps update x, even ones H (the authors' code
runs 5 half-steps: x three times, H twice). The scale s = 2 keeps repeated gating from shrinking
the signal. Each conv is bias-free and followed by the model's norm, as in the authors' code.
"""

from __future__ import annotations

import torch
from torch import nn

from stforecast.models.norm import ConvNorm


class ContextEmbedding(nn.Module):
    def __init__(
        self,
        x_channels: int,
        h_channels: int,
        kernel_size: int,
        norm: str,
        size: tuple[int, int],
        iterations: int = 5,
        scale: float = 2.0,
    ) -> None:
        super().__init__()
        self.w_h = ConvNorm(h_channels, x_channels, kernel_size, norm, size)  # W_H: H -> x weights
        self.w_x = ConvNorm(x_channels, h_channels, kernel_size, norm, size)  # W_X: x̂ -> H weights
        self.iterations = iterations
        self.scale = scale

    def forward(self, x: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        for i in range(self.iterations):
            if i % 2 == 0:
                x = self.scale * torch.sigmoid(self.w_h(h)) * x  # Eq. 2, first line
            else:
                h = self.scale * torch.sigmoid(self.w_x(x)) * h  # Eq. 2, second line
        return x, h
