"""SE block: multi-scale spatiotemporal expression (CMS-LSTM, Eqs. 3-7).

Eq. 3   H_t and C_t are stacked and divided into windows at n scales; a window holds the H and the
        C features of the same positions (2·wh·ww tokens).
Eq. 4   per scale, ẑ = γ·softmax(QᵀK)V + z with 1×1-conv Q, K, V.
Eq. 5   the scales are concatenated and a 5×5 conv (+ norm) runs over H and C laid side by side,
        giving A_H, A_C; a 1×1 conv fuses them into Z.
Eq. 6   [i, g, o] = N(W_Z * Z) + N(W_h * H_t)
Eq. 7   Ĉ_t = N((1 − σ(i)) ∘ C_t + σ(i) ∘ tanh(g)),  Ĥ_t = σ(o) ∘ Ĉ_t

Scales follow the authors' code: windows of the whole grid, half and a quarter of it per side
(16, 8, 4 on a 16×16 grid); `window` replaces the whole grid by that many latent pixels.

γ is one learnable gain per scale, initialised to 1 so that Eq. 4 holds exactly at start. The
authors' code declares such a γ (its parameter count, 7,967,580, includes it) but never uses it;
here it scales the attention term so that every parameter is trained.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from stforecast.models.attention import attend, resolve_window, window_counts
from stforecast.models.norm import ConvNorm, make_norm


class SpatiotemporalExpression(nn.Module):
    def __init__(
        self,
        channels: int,
        size: tuple[int, int],
        scales: int,
        norm: str,
        window: int | None = None,
        kernel_size: int = 5,
    ) -> None:
        super().__init__()
        if not 1 <= scales <= 3:
            raise ValueError(f"se_scales must be 1, 2 or 3, got {scales}")
        ch, (h, w) = channels, size
        self.channels, self.scales, self.window = ch, scales, window
        for s in range(scales):  # fail at build time, not at the first forward
            resolve_window(size, window, 2**s)
        self.qkv = nn.Conv2d(ch, 3 * ch * scales, 1)  # Q, K, V of every scale (Eq. 4)
        self.gain = nn.Parameter(torch.ones(scales))  # γ (Eq. 4)
        self.fuse = ConvNorm(scales * ch, ch, kernel_size, norm, (h, 2 * w), bias=True)  # Eq. 5
        self.w_z = nn.Conv2d(2 * ch, ch, 1)  # [A_H, A_C] -> Z
        self.gates_z = ConvNorm(ch, 3 * ch, kernel_size, norm, size)  # W_Z (Eq. 6)
        self.gates_h = ConvNorm(ch, 3 * ch, kernel_size, norm, size)  # W_h (Eq. 6)
        self.norm_c = make_norm(norm, ch, size)

    def scale_attention(self, qkv: torch.Tensor, z: torch.Tensor, s: int) -> torch.Tensor:
        """Eq. 4 at scale s: ẑ = γ·softmax(QᵀK)V + z inside each window, channels last: for
        `z = [H; C]` stacked on the batch axis `(2B, H, W, C)` and its projections `qkv`
        `(2B, H, W, 3C)`."""
        n2, H, W, ch = z.shape
        wh, ww = resolve_window((H, W), self.window, 2**s)
        (nh, nw), B = window_counts((H, W), (wh, ww)), n2 // 2
        # one window's tokens: its H features, then its C features (Eq. 3); channels stay last,
        # so the permute moves whole rows of features
        t = qkv.reshape(2, B, nh, wh, nw, ww, 3 * ch).permute(1, 2, 4, 0, 3, 5, 6)
        q, k, v = t.reshape(B * nh * nw, 2 * wh * ww, 3 * ch).chunk(3, dim=-1)
        a = attend(q, k, v).reshape(B, nh, nw, 2, wh, ww, ch).permute(3, 0, 1, 4, 2, 5, 6)
        return self.gain[s] * a.reshape(n2, H, W, ch) + z

    def expression(self, h: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Eqs. 3-5: the multi-scale features A_H, A_C. Attention runs channels last: the 1×1
        Q, K, V convolutions are a linear map of each pixel's features."""
        ch = self.channels
        z = torch.cat([h, c], dim=0).permute(0, 2, 3, 1)  # Eq. 3: [H; C] on the batch axis
        qkv = F.linear(z, self.qkv.weight.flatten(1), self.qkv.bias)
        zs = [self.scale_attention(qkv[..., 3 * ch * s : 3 * ch * (s + 1)], z, s)
              for s in range(self.scales)]  # fmt: skip
        sides = torch.cat(torch.cat(zs, dim=-1).chunk(2, dim=0), dim=2)  # H and C side by side
        a = self.fuse(sides.permute(0, 3, 1, 2))  # Eq. 5
        a_h, a_c = a.chunk(2, dim=-1)
        return a_h, a_c

    def forward(self, h: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a_h, a_c = self.expression(h, c)
        z = self.w_z(torch.cat([a_h, a_c], dim=1))
        i, g, o = (self.gates_z(z) + self.gates_h(h)).chunk(3, dim=1)  # Eq. 6
        i = torch.sigmoid(i)
        c = self.norm_c((1 - i) * c + i * torch.tanh(g))  # Eq. 7
        return torch.sigmoid(o) * c, c
