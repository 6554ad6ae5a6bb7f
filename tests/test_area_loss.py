"""The event-area term of the loss (`train.area_loss`): the right area, wherever it is."""

from __future__ import annotations

import math

import pytest
import torch
from test_balanced_loss import contract

from stforecast.config import TrainConfig
from stforecast.training.losses import area_bias
from stforecast.training.objective import AREA_WIDTH, Objective, area_term


def frames(areas: list[int], value: float, size: int = 8) -> torch.Tensor:
    """(1, T, 1, size, size): lead t has its first `areas[t]` pixels (row-major) at `value`."""
    out = torch.zeros(1, len(areas), 1, size * size)
    for t, n in enumerate(areas):
        out[0, t, 0, :n] = value
    return out.reshape(1, len(areas), 1, size, size)


def test_area_term_by_hand():
    level, width = 1.0, 1e-3  # a sharp logistic: the soft area is the area
    truth = frames([10, 20], 3.0)
    forecast = frames([10, 5], 3.0) - 1.0  # 2.0 where rain, -1.0 elsewhere
    got = area_bias(forecast, truth, None, (level,), width)
    want = ((10 - 10) / 21) ** 2 / 2 + ((5 - 20) / 26) ** 2 / 2
    assert float(got) == pytest.approx(want, rel=1e-6)
    # placement is not asked for: the same area elsewhere costs nothing
    moved = torch.flip(frames([10, 20], 3.0), dims=(-1, -2))
    assert float(area_bias(moved, truth, None, (level,), width)) == pytest.approx(0.0, abs=1e-9)
    # no rain in either: nothing; uncovered pixels do not count
    dry = torch.zeros(1, 2, 1, 8, 8)
    assert float(area_bias(dry, dry, None, (level,), width)) == 0.0
    cover = torch.zeros(1, 2, 1, 8, 8)
    assert float(area_bias(forecast, truth, cover, (level,), width)) == 0.0


def test_a_too_small_area_is_pushed_up():
    truth = frames([30], 2.0)
    forecast = (frames([10], 2.0) + 0.5).requires_grad_()  # 2.5 in 10 pixels, 0.5 elsewhere
    area_bias(forecast, truth, None, (math.log1p(1.0),), AREA_WIDTH).backward()
    assert float(forecast.grad.max()) <= 0.0  # descent raises every pixel: the area grows
    assert float(forecast.grad.min()) < 0.0


def test_area_field_and_levels():
    assert area_term(TrainConfig(), contract("mm/h")) is None  # off by default
    term = area_term(TrainConfig(area_loss=0.5), contract("mm/h"))
    assert term.levels == pytest.approx((math.log1p(1.0),))
    assert term.factor == 0.5 and term.width == AREA_WIDTH
    term = area_term(TrainConfig(area_loss=1, area_thresholds=[0.5, 5]), contract("mm/h"))
    assert term.levels == pytest.approx((math.log1p(0.5), math.log1p(5.0)))
    with pytest.raises(ValueError):
        TrainConfig(area_loss=-1)
    with pytest.raises(ValueError):
        TrainConfig(area_loss=1, area_thresholds=[])


def test_objective_adds_the_term_on_the_forecast_leads_only():
    class Echo(torch.nn.Module):  # rollout outputs: the last input, at every step
        def rollout(self, inputs, steps, *args, **kwargs):
            last = inputs[:, -1:]
            return last.expand(-1, inputs.shape[1] - 1 + steps, -1, -1, -1)

    inputs, targets = frames([40, 40], 2.0), frames([40, 10], 2.0)
    norm = torch.tensor(1.0)
    term = area_term(TrainConfig(area_loss=2.0), contract("mm/h"))
    plain = Objective(Echo(), "l2")(inputs, targets, None, None, None, norm)
    with_area = Objective(Echo(), "l2", area=term)(inputs, targets, None, None, None, norm)
    extra = area_bias(frames([40, 40], 2.0), targets, None, term.levels, term.width)
    assert float(with_area - plain) == pytest.approx(2.0 * float(extra), rel=1e-5)
