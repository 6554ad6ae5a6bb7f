"""Which weights a run keeps (`train.select`): the validation's event scores equal the
evaluation's definitions, thresholds are carried into the model's units, and the card says
what selected the weights."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from stforecast.config import TrainConfig
from stforecast.data.contract import DataContract, Grid, Transform
from stforecast.evaluation.metrics import Scores
from stforecast.rundir.card import selected_by
from stforecast.training.selection import selection_event
from stforecast.training.validation import Event, _event_score, _event_sums


def fields(seed: int, shape=(3, 4, 20, 24)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.gamma(0.6, 2.0, shape) * (rng.random(shape) > 0.4)).astype(np.float32)


@pytest.mark.parametrize(("threshold", "scale"), [(1.0, None), (0.5, None), (1.0, 1), (1.0, 5)])
@pytest.mark.parametrize("edge", [False, True])
def test_event_scores_equal_the_evaluation_scores(threshold, scale, edge):
    """All lead times pooled, first channel, coverage only: the numbers `evaluate` reports."""
    f, o = fields(1), fields(2)
    valid = np.ones(f.shape, bool)
    if edge:  # a radar coverage edge: the fractions count covered pixels only
        valid[..., :, :5] = False
    event = Event("x", threshold, scale)
    sums = _event_sums(torch.from_numpy(f), torch.from_numpy(o), torch.from_numpy(valid), event)
    ours = _event_score(sums, event)
    scores = Scores(1, data_range=1.0, thresholds=[threshold], scales=[scale or 1])
    n, t, h, w = f.shape
    frames = lambda x: x.reshape(n * t, 1, h, w)  # noqa: E731  (every frame as lead 0)
    fv = np.where(valid, f, np.nan)
    scores.update(frames(fv), frames(o), frames(valid))
    name = f"csi_{threshold}" if scale is None else f"fss_{threshold}_{scale}"
    assert ours == pytest.approx(scores.result()[name][0], rel=1e-9)


def test_an_undefined_score_is_none():
    zero = torch.zeros(2, 3, 8, 8)
    event = Event("csi_1.0", 1.0)
    assert _event_score(_event_sums(zero, zero, zero > -1, event), event) is None


def contract(transform: Transform) -> DataContract:
    return DataContract(
        variable="rainrate", units="mm h-1", transform=transform, grid=Grid(shape=(8, 8)),
        time_step_seconds=600, input_frames=2, output_frames=2,
    )  # fmt: skip


def test_thresholds_are_carried_into_the_model_units():
    log1p = contract(Transform("log1p", {}, {}))
    assert selection_event("loss", log1p) is None
    csi = selection_event("csi_1.0", log1p)
    assert csi.name == "csi_1.0" and csi.threshold == pytest.approx(math.log1p(1.0))
    assert csi.scale is None
    zscore = contract(Transform("zscore", {}, {"mean": 2.0, "std": 4.0}))
    fss = selection_event("fss_5.0_8", zscore)
    assert fss.threshold == pytest.approx((5.0 - 2.0) / 4.0) and fss.scale == 8


def test_select_names_the_metric_and_the_card_says_it_in_words():
    assert TrainConfig().select == "loss"
    assert "lowest validation loss" in selected_by("loss")
    assert "CSI at 1.0 data units" in selected_by("csi_1.0")
    assert "FSS at 1.0 data units and 8 pixels" in selected_by("fss_1.0_8")
    with pytest.raises(ValueError):
        TrainConfig(select="csi")


def test_a_run_keeps_the_weights_with_the_best_score(tmp_path):
    """Trained with `select = "fss_0.5_3"`: every validation reports the score, the best
    weights are those of the validation with the highest one, and the card says why."""
    import json

    from stforecast.config import Recipe
    from stforecast.rundir.load import load_model
    from stforecast.training import build_datasets, train

    from runs import make_run, read_metrics

    base = make_run(tmp_path / "base", steps=1)
    recipe = Recipe.model_validate(
        {
            "data": {"store": str(base["store"])},
            "model": {
                "name": "convlstm",
                "patch_size": 2,
                "hidden_channels": [8],
                "kernel_size": 3,
            },
            "train": {
                "batch_size": 2,
                "max_steps": 6,
                "val_every": 1,
                "val_batches": 2,
                "checkpoint_every": 6,
                "device": "cpu",
                "tensorboard": False,
                "lr": 0.01,
                "select": "fss_0.5_3",
            },
        }
    )
    run = tmp_path / "run"
    train(recipe, run, data=build_datasets(recipe, cache_dir=tmp_path / "cache"))
    scores = {
        r["step"]: r["fss_0.5_3"]
        for r in read_metrics(run)
        if r["event"] == "validation" and not r.get("final")
    }
    assert len(scores) == 6 and all(v is None or 0 <= v <= 1 for v in scores.values())
    card = json.loads((run / "model.json").read_text())
    defined = {k: v for k, v in scores.items() if v is not None}
    best_step = max(defined, key=lambda k: (defined[k], -k))  # the first of equal scores
    assert card["metrics"]["best"]["step"] == best_step
    assert card["weights"]["selected"] == "best"
    assert "FSS at 0.5 data units and 3 pixels" in card["weights"]["selected_by"]
    _, loaded = load_model(run)
    assert loaded["weights"]["loaded"]["name"] == "best"
