"""Shared fixtures: small model configurations that keep the suite fast on 2 CPU cores."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from stforecast import models

SMALL = dict(
    in_channels=2, frame_size=(16, 16), patch_size=2, hidden_channels=[8, 8], kernel_size=3
)

# Every architecture and every row of CMS-LSTM's Table 3 (CE / SE in ConvLSTM, PredRNN and
# SA-ConvLSTM).
VARIANTS = [
    ("convlstm", {}),
    ("convlstm", {"ce": True}),
    ("convlstm", {"se_scales": 3}),
    ("convlstm", {"ce": True, "se_scales": 1}),
    ("convlstm", {"ce": True, "se_scales": 2}),
    ("cms_lstm", {}),
    ("predrnn", {}),
    ("predrnn", {"ce": True}),
    ("predrnn", {"se_scales": 3}),
    ("predrnn", {"ce": True, "se_scales": 3}),
    ("sa_convlstm", {}),
    ("sa_convlstm", {"ce": True}),
    ("sa_convlstm", {"se_scales": 3}),
    ("sa_convlstm", {"ce": True, "se_scales": 3}),
    ("sa_base", {}),
    ("cms_lstm", {"norm": "channel", "window": 4}),
    ("cms_lstm", {"norm": "none"}),
]


def variant_id(v: tuple[str, dict]) -> str:
    name, opts = v
    return name + "".join(f"-{k}={val}" for k, val in opts.items())


@pytest.fixture(params=VARIANTS, ids=variant_id)
def variant(request):
    return request.param


def build_small(name: str, seed: int = 0, **options) -> models.SequenceModel:
    torch.manual_seed(seed)
    return models.build(name, **{**SMALL, **options})


# Real data lives beside the checkout (../shared/data), never in the repository.
SHARED_DATA = Path(
    os.environ.get(
        "STFORECAST_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"
    )
)


def shared(folder: str) -> Path:
    """Path to a folder of ../shared/data; skips the test when it is absent (a user's clone)."""
    path = SHARED_DATA / folder
    if not path.exists():
        pytest.skip(f"real data {folder!r} not found under {SHARED_DATA}")
    return path
