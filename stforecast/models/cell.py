"""One recurrent layer: a ConvLSTM or ST-LSTM core with the blocks that switch on around it.

    x, H  <- SA(x), SA(H)             base model (SA-ConvLSTM Sec. 3.1), optional
    x, H  <- CE(x, H)                 context embedding (CMS-LSTM Eq. 2), optional
    H, C[, M_st] <- core(x, H, C[, M_st])       ConvLSTM or ST-LSTM (PredRNN)
    H, C  <- SE(H, C)                 multi-scale expression (CMS-LSTM Eqs. 3-7), optional
    H, M  <- SAM(H, M)                self-attention memory (SA-ConvLSTM Eqs. 5-9), optional

CMS-LSTM is ConvLSTM + CE + SE; SA-ConvLSTM is ConvLSTM + SAM; every row of CMS-LSTM's Table 3
(CE and/or SE in ConvLSTM, PredRNN and SA-ConvLSTM, SE at 1-3 scales) is one combination. SE acts
on the core's (H, C), before SAM, exactly where it sits in CMS-LSTM.
"""

from __future__ import annotations

import torch
from torch import nn

from stforecast.models.ce import ContextEmbedding
from stforecast.models.convlstm import ConvLSTMCore
from stforecast.models.sam import SelfAttention, SelfAttentionMemory
from stforecast.models.se import SpatiotemporalExpression
from stforecast.models.stlstm import SpatiotemporalLSTMCore

Tensor = torch.Tensor


class Cell(nn.Module):
    def __init__(
        self,
        core: str,
        x_channels: int,
        h_channels: int,
        kernel_size: int,
        size: tuple[int, int],
        *,
        norm: str = "layer",
        ce: bool = False,
        ce_iterations: int = 5,
        se_scales: int = 0,
        se_kernel_size: int = 5,
        sam: bool = False,
        sa_input: bool = False,
        key_channels: int = 16,
        window: int | None = None,
    ) -> None:
        super().__init__()
        self.sa_x = SelfAttention(x_channels, key_channels, window) if sa_input else None
        self.sa_h = SelfAttention(h_channels, key_channels, window) if sa_input else None
        self.ce = (
            ContextEmbedding(x_channels, h_channels, kernel_size, norm, size, ce_iterations)
            if ce
            else None
        )
        cores = {"convlstm": ConvLSTMCore, "stlstm": SpatiotemporalLSTMCore}
        self.core = cores[core](x_channels, h_channels, kernel_size, norm, size)
        self.se = (
            SpatiotemporalExpression(h_channels, size, se_scales, norm, window, se_kernel_size)
            if se_scales
            else None
        )
        self.sam = (
            SelfAttentionMemory(h_channels, key_channels, kernel_size, window) if sam else None
        )
        self.spatiotemporal = core == "stlstm"

    def forward(
        self, x: Tensor, h: Tensor, c: Tensor, m: Tensor | None, m_st: Tensor | None
    ) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None]:
        """One step: returns the new (H, C, M_sam, M_st); H is also the layer's output."""
        if self.sa_x is not None:
            x, h = self.sa_x(x), self.sa_h(h)
        if self.ce is not None:
            x, h = self.ce(x, h)
        if self.spatiotemporal:
            h, c, m_st = self.core(x, h, c, m_st)
        else:
            h, c = self.core(x, h, c)
        if self.se is not None:
            h, c = self.se(h, c)
        if self.sam is not None:
            h, m = self.sam(h, m)
        return h, c, m, m_st
