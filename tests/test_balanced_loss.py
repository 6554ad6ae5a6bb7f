"""The balanced losses of Shi et al. 2017 and the recipe fields of rain training."""

from __future__ import annotations

import math

import pytest
import torch

from stforecast.config import TrainConfig
from stforecast.data.contract import DataContract, Grid, Transform
from stforecast.errors import ConfigError
from stforecast.training.losses import balance, loss_terms
from stforecast.training.objective import balance_levels


def contract(units: str, transform: str = "log1p", step: int = 600) -> DataContract:
    return DataContract(
        variable="rain", units=units, transform=Transform(transform, {}, {}),
        grid=Grid((8, 8)), time_step_seconds=step, input_frames=2, output_frames=2,
    )  # fmt: skip


def test_weights_follow_the_rain_rate():
    rates = torch.tensor([0.0, 1.9, 2.0, 4.9, 5.0, 9.9, 10.0, 29.9, 30.0, 100.0])
    got = balance(rates, (2.0, 5.0, 10.0, 30.0))
    assert got.tolist() == [1, 1, 2, 2, 5, 5, 10, 10, 30, 30]


def test_balanced_loss_terms_by_hand():
    target = torch.tensor([0.0, 3.0, 40.0])
    pred = torch.tensor([1.0, 1.0, 38.0])
    total, count = loss_terms(pred, target, None, "l2", levels=(2.0, 5.0, 10.0, 30.0))
    assert float(total) == pytest.approx(1 * 1 + 2 * 4 + 30 * 4)
    assert float(count) == 3
    weight = torch.tensor([1.0, 0.0, 1.0])  # no coverage in the middle: no error there
    total, count = loss_terms(pred, target, weight, "l1", levels=(2.0, 5.0, 10.0, 30.0))
    assert float(total) == pytest.approx(1 * 1 + 30 * 2)
    assert float(count) == 2


def test_levels_in_model_units():
    assert balance_levels(contract("mm/h")) == pytest.approx(
        [math.log1p(r) for r in (2, 5, 10, 30)]
    )
    # an accumulation per 10 minutes: 2 mm/h is 1/3 mm per step
    got = balance_levels(contract("mm", step=600))
    assert got == pytest.approx([math.log1p(r / 6) for r in (2, 5, 10, 30)])
    with pytest.raises(ConfigError, match="weighs rain rates"):
        balance_levels(contract("K", transform="none"))


def test_augment_fields():
    assert TrainConfig(flip=True).augment == ["flip"]
    assert TrainConfig(augment=["rot90", "reverse"]).augment == ["rot90", "reverse"]
    with pytest.raises(ValueError, match="twice"):
        TrainConfig(augment=["rot90", "rot90"])
    with pytest.raises(ValueError):
        TrainConfig(augment=["shear"])
