"""Self-attention blocks of SA-ConvLSTM (Lin et al., AAAI 2020).

`SelfAttentionMemory` is the SAM module (Sec. 3.2, Eqs. 5-9):

    Q_h, K_h, V_h = W_q H_t, W_k H_t, W_v H_t        K_m, V_m = W_mk M_{t-1}, W_mv M_{t-1}
    Z_h = softmax(Q_hᵀ K_h) V_h,  Z_m = softmax(Q_hᵀ K_m) V_m,  Z = W_z [Z_h; Z_m]
    i' = σ(W_zi * Z + W_hi * H_t + b_i)   g' = tanh(...)   o' = σ(...)     (Eqs. 8-9)
    M_t = (1 − i') ∘ M_{t-1} + i' ∘ g',   Ĥ_t = o' ∘ M_t

The gate convolutions are depth-wise separable, as in the paper: one k×k depth-wise conv over
[Z; H_t] and a 1×1 point-wise conv to the three gates (the sum W_z* Z + W_h* H_t is one conv over
the concatenation). Q and K have `key_channels` (Ĉ) channels, V and Z have C.

Parameter count. The paper reports 10.471M for 4 layers × 64 hidden; no public code reproduces
it. Here `build("sa_convlstm", in_channels=1, frame_size=(64, 64), patch_size=4,
hidden_channels=[64] * 4, kernel_size=3)` has 2,544,400 parameters:
- embedding and head: 2,128;
- per layer, the LayerNorm ConvLSTM core: 589,824 (bias-free 3×3 convs 294,912, LayerNorm affine
  weights over [C, 16, 16] 294,912);
- per layer, the SAM: 45,744 with Ĉ = `key_channels` = 16 (Q_h, K_h, V_h 6,240; K_m, V_m 5,200;
  W_z 8,256; depth-wise 3×3 over [Z; H] 1,280; point-wise to the gates 24,768).
With `kernel_size=5` it is 4,649,744. The gap to 10.471M lies in choices the paper leaves open
(core kernel size, full rather than separable gate convolutions, the grid the LayerNorm spans),
not in the equations.

`SelfAttention` is the plain module of the paper's "base model" (Sec. 3.1): Ĥ = W_f Z + H.
"""

from __future__ import annotations

import torch
from torch import nn

from stforecast.models.attention import attend, from_windows, resolve_window, to_windows


def _attend_map(q, k, v, window: int | None) -> torch.Tensor:
    """Attention between maps `(B, ·, H, W)` inside each window; returns `(B, C_v, H, W)`."""
    B, _, H, W = q.shape
    win = resolve_window((H, W), window)
    out = attend(to_windows(q, win), to_windows(k, win), to_windows(v, win))
    return from_windows(out, (B, H, W), win)


class SelfAttention(nn.Module):
    def __init__(self, channels: int, key_channels: int, window: int | None = None) -> None:
        super().__init__()
        self.qkv = nn.Conv2d(channels, 2 * key_channels + channels, 1)
        self.w_f = nn.Conv2d(channels, channels, 1)
        self.split = (key_channels, key_channels, channels)
        self.window = window

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv(x).split(self.split, dim=1)
        return self.w_f(_attend_map(q, k, v, self.window)) + x


class SelfAttentionMemory(nn.Module):
    def __init__(
        self, channels: int, key_channels: int, kernel_size: int, window: int | None = None
    ) -> None:
        super().__init__()
        ch = channels
        self.qkv_h = nn.Conv2d(ch, 2 * key_channels + ch, 1)  # W_q, W_k, W_v
        self.kv_m = nn.Conv2d(ch, key_channels + ch, 1)  # W_mk, W_mv
        self.w_z = nn.Conv2d(2 * ch, ch, 1)  # W_z
        self.gates = nn.Sequential(  # W_m;z{i,g,o}, W_m;h{i,g,o}, depth-wise separable
            nn.Conv2d(2 * ch, 2 * ch, kernel_size, padding=kernel_size // 2, groups=2 * ch),
            nn.Conv2d(2 * ch, 3 * ch, 1),
        )
        self.split_h = (key_channels, key_channels, ch)
        self.split_m = (key_channels, ch)
        self.window = window

    def forward(self, h: torch.Tensor, m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        q, k_h, v_h = self.qkv_h(h).split(self.split_h, dim=1)
        k_m, v_m = self.kv_m(m).split(self.split_m, dim=1)
        z_h = _attend_map(q, k_h, v_h, self.window)  # Eqs. 2-4
        z_m = _attend_map(q, k_m, v_m, self.window)  # Eqs. 5-7
        z = self.w_z(torch.cat([z_h, z_m], dim=1))
        i, g, o = self.gates(torch.cat([z, h], dim=1)).chunk(3, dim=1)  # Eqs. 8-9
        i = torch.sigmoid(i)
        m = (1 - i) * m + i * torch.tanh(g)
        return torch.sigmoid(o) * m, m
