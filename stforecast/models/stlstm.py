"""ST-LSTM core of PredRNN (Wang et al., NeurIPS 2017, Eq. 3).

    g, i, f   from W_x{g,i,f} * X + W_h{g,i,f} * H_{t-1}            -> C_t = f∘C_{t-1} + i∘g
    g', i', f' from W'_x{g,i,f} * X + W_m{g,i,f} * M^{l-1}_t        -> M_t = f'∘M^{l-1}_t + i'∘g'
    o   = σ(W_xo * X + W_ho * H_{t-1} + W_co * C_t + W_mo * M_t)
    H_t = o ∘ tanh(W_1×1 * [C_t, M_t])

M is the spatiotemporal memory: it arrives from the layer below at the same step, and the bottom
layer receives the top layer's M of the previous step (the zig-zag flow, handled by the sequence
model). Forget gates carry the usual +1 bias.
"""

from __future__ import annotations

import torch
from torch import nn

from stforecast.models.norm import ConvNorm


class SpatiotemporalLSTMCore(nn.Module):
    def __init__(
        self, x_channels: int, h_channels: int, kernel_size: int, norm: str, size: tuple[int, int]
    ) -> None:
        super().__init__()
        hc = h_channels
        self.conv_x = ConvNorm(x_channels, 7 * hc, kernel_size, norm, size)  # i f g i' f' g' o
        self.conv_h = ConvNorm(hc, 4 * hc, kernel_size, norm, size, bias=False)  # i f g o
        self.conv_m = ConvNorm(hc, 3 * hc, kernel_size, norm, size, bias=False)  # i' f' g'
        self.conv_o = ConvNorm(2 * hc, hc, kernel_size, norm, size, bias=False)  # W_co, W_mo
        self.conv_last = nn.Conv2d(2 * hc, hc, 1, bias=False)  # W_1×1

    def forward(
        self, x: torch.Tensor, h: torch.Tensor, c: torch.Tensor, m: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        xi, xf, xg, xi_m, xf_m, xg_m, xo = self.conv_x(x).chunk(7, dim=1)
        hi, hf, hg, ho = self.conv_h(h).chunk(4, dim=1)
        mi, mf, mg = self.conv_m(m).chunk(3, dim=1)
        c = torch.sigmoid(xf + hf + 1.0) * c + torch.sigmoid(xi + hi) * torch.tanh(xg + hg)
        m = torch.sigmoid(xf_m + mf + 1.0) * m + torch.sigmoid(xi_m + mi) * torch.tanh(xg_m + mg)
        cm = torch.cat([c, m], dim=1)
        o = torch.sigmoid(xo + ho + self.conv_o(cm))
        h = o * torch.tanh(self.conv_last(cm))
        return h, c, m
