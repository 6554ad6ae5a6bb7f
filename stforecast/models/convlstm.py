"""ConvLSTM core (Shi et al. 2015), in the normalised form the CMS-LSTM authors use.

    i, f, g, o = split(N(W_x * x_t) + N(W_h * H_{t-1}))
    C_t = N(σ(f + 1) ∘ C_{t-1} + σ(i) ∘ tanh(g))
    H_t = σ(o) ∘ tanh(C_t)

N is the model's norm (LayerNorm over [C, H, W] by default); with `norm="none"` N is the identity
and W_x carries the bias b of the plain equations. The +1 is the usual forget-gate bias.
"""

from __future__ import annotations

import torch
from torch import nn

from stforecast.models.norm import ConvNorm, make_norm


class ConvLSTMCore(nn.Module):
    def __init__(
        self, x_channels: int, h_channels: int, kernel_size: int, norm: str, size: tuple[int, int]
    ) -> None:
        super().__init__()
        self.conv_x = ConvNorm(x_channels, 4 * h_channels, kernel_size, norm, size)
        self.conv_h = ConvNorm(h_channels, 4 * h_channels, kernel_size, norm, size, bias=False)
        self.norm_c = make_norm(norm, h_channels, size)

    def forward(
        self, x: torch.Tensor, h: torch.Tensor, c: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        i, f, g, o = (self.conv_x(x) + self.conv_h(h)).chunk(4, dim=1)
        c = self.norm_c(torch.sigmoid(f + 1.0) * c + torch.sigmoid(i) * torch.tanh(g))
        h = torch.sigmoid(o) * torch.tanh(c)
        return h, c
