"""Recurrent spatiotemporal models: cells and blocks, the sequence model, the registry.

Build by name, then roll out::

    net = models.build("cms_lstm", in_channels=1, frame_size=(64, 64), patch_size=4,
                       hidden_channels=[64] * 4, kernel_size=3)
    net(frames, steps=10)  # (B, T_in, C, H, W) -> (B, 10, C, H, W)
"""

from stforecast.models.patch import patchify, unpatchify
from stforecast.models.registry import (
    OPTIONS,
    Architecture,
    available,
    build,
    build_from_config,
    describe,
    register,
)
from stforecast.models.sequence import SequenceModel

__all__ = [
    "OPTIONS",
    "Architecture",
    "SequenceModel",
    "available",
    "build",
    "build_from_config",
    "describe",
    "patchify",
    "register",
    "unpatchify",
]
