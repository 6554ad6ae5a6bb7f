"""The trainer: losses, schedules, sampling, validation, checkpoints, resume, DDP, run directory.

Every run uses a tiny ConvLSTM (hidden [8, 8], 16×16 frames, patch 2) on moving Gaussian blobs
built here, not on `stforecast.training.datasets`, so these tests pin the trainer alone. The SIGKILL
and DDP tests start subprocesses that import this module for the same data and recipe.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file
from torch.utils.data import Dataset

from stforecast import models
from stforecast.config import DataConfig, ModelConfig, Recipe, SplitConfig, TrainConfig, tomllib
from stforecast.data.contract import DataContract, Grid, Transform
from stforecast.errors import ConfigError, InputError
from stforecast.io.atomic import atomic_path
from stforecast.rundir.layout import recipe_toml
from stforecast.rundir.load import load_model
from stforecast.rundir.tomlwriter import dumps
from stforecast.training import TrainingError, order, sampling, train
from stforecast.training import step as step_mod
from stforecast.training.checkpoint import load_checkpoint, save_checkpoint
from stforecast.training.losses import loss_terms
from stforecast.training.objective import reverse_time
from stforecast.training.schedules import learning_rate
from stforecast.training.validation import validate

from runs import read_metrics

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
T_IN, T_OUT, SIZE = 3, 3, 16


# ------------------------------------------------------------------------------ tiny data
class Blobs(Dataset):
    """Gaussian blobs moving at constant speed on a periodic 16×16 grid; sequence i is fixed.

    With `coverage`, a band of columns is uncovered in every frame, and the targets there hold
    NaN, which the masked loss must ignore."""

    def __init__(self, n: int, *, seed: int = 0, coverage: bool = False, nan: bool = False):
        g = torch.Generator().manual_seed(seed)
        T = T_IN + T_OUT
        pos = torch.rand(n, 2, generator=g) * SIZE
        vel = (torch.rand(n, 2, generator=g) * 2 - 1) * 1.5
        grid = torch.arange(SIZE, dtype=torch.float32)
        yy, xx = torch.meshgrid(grid, grid, indexing="ij")
        c = pos[:, None] + vel[:, None] * torch.arange(T, dtype=torch.float32)[None, :, None]
        dy = (yy - c[..., 0, None, None] + SIZE / 2) % SIZE - SIZE / 2
        dx = (xx - c[..., 1, None, None] + SIZE / 2) % SIZE - SIZE / 2
        self.x = torch.exp(-(dy**2 + dx**2) / 8.0)[:, :, None]
        self.coverage = None
        if coverage:
            cov = torch.ones(n, T, 1, SIZE, SIZE)
            cov[..., 5:9] = 0.0
            self.coverage = cov
            if nan:
                self.x = self.x.masked_fill(cov == 0, float("nan"))
        self.epochs: list[int] = []

    def set_epoch(self, epoch: int) -> None:
        self.epochs.append(epoch)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        item = {"inputs": self.x[i, :T_IN], "targets": self.x[i, T_IN:]}
        if self.coverage is not None:
            item["coverage"] = self.coverage[i]
            item["inputs"] = torch.nan_to_num(item["inputs"])  # data fill the inputs
        return item


@dataclass
class Data:
    """Stands in for `stforecast.training.datasets.TrainingData` (same fields)."""

    train: Dataset
    validation: Dataset | None
    in_channels: int = 1
    frame_size: tuple[int, int] = (SIZE, SIZE)
    input_frames: int = T_IN
    output_frames: int = T_OUT
    contract: DataContract = field(
        default_factory=lambda: DataContract(
            variable="blobs",
            units="1",
            transform=Transform("none", {}, {}),
            grid=Grid(shape=(SIZE, SIZE)),
            time_step_seconds=None,
            input_frames=T_IN,
            output_frames=T_OUT,
        )
    )
    checksums: list[dict[str, Any]] = field(
        default_factory=lambda: [{"file": "blobs", "sha256": "0" * 64}]
    )


def blob_data(n_train: int = 32, n_val: int = 8, **kwargs: Any) -> Data:
    val = Blobs(n_val, seed=1, **kwargs) if n_val else None
    return Data(Blobs(n_train, **kwargs), val)


def small_recipe(**train: Any) -> Recipe:
    settings: dict[str, Any] = dict(
        batch_size=4,
        max_steps=8,
        lr=3e-3,
        device="cpu",
        val_every=4,
        checkpoint_every=4,
        log_every=2,
        tensorboard=False,
    )
    settings.update(train)
    return Recipe(
        data=DataConfig(input_frames=T_IN, output_frames=T_OUT),
        model=ModelConfig(name="convlstm", patch_size=2, hidden_channels=[8, 8], kernel_size=3),
        train=TrainConfig(**settings),
    )


def tiny_model(name: str = "convlstm") -> models.SequenceModel:
    return models.build(
        name, in_channels=1, frame_size=SIZE, patch_size=2, hidden_channels=[8, 8], kernel_size=3
    )


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(Path(run_dir) / "model.safetensors"))


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


@contextmanager
def threads(n: int) -> Iterator[None]:
    """Match the thread count of a subprocess so results compare bit for bit."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# ------------------------------------------------------------------------------ losses
def _reduced(pred, target, weight, kind, reduction):
    """`loss_terms` reduced as the step and validation reduce it: the sum, or over the weight."""
    total, count = loss_terms(pred, target, weight, kind)
    return total if reduction == "sum" else total / count.clamp_min(1e-12)


def test_losses_and_reductions_by_hand():
    pred = torch.tensor([1.0, -2.0, 3.0, 0.5]).view(1, 2, 2, 1, 1)  # (B, T, C, H, W)
    target = torch.zeros_like(pred)
    # squared 1, 4, 9, 0.25 -> 14.25 ; absolute 1, 2, 3, 0.5 -> 6.5
    assert _reduced(pred, target, None, "l2", "sum").item() == pytest.approx(14.25)
    assert _reduced(pred, target, None, "l2", "mean").item() == pytest.approx(14.25 / 4)
    assert _reduced(pred, target, None, "l1", "sum").item() == pytest.approx(6.5)
    assert _reduced(pred, target, None, "l1", "mean").item() == pytest.approx(6.5 / 4)
    assert _reduced(pred, target, None, "l1+l2", "sum").item() == pytest.approx(20.75)
    assert _reduced(pred, target, None, "l1+l2", "mean").item() == pytest.approx(20.75 / 4)
    # coverage (B, T, 1, H, W) broadcast over the 2 channels: keep only time step 0
    weight = torch.tensor([1.0, 0.0]).view(1, 2, 1, 1, 1)
    assert _reduced(pred, target, weight, "l2", "sum").item() == pytest.approx(5.0)
    assert _reduced(pred, target, weight, "l2", "mean").item() == pytest.approx(2.5)
    assert _reduced(pred, target, weight, "l1", "mean").item() == pytest.approx(1.5)
    with pytest.raises(ValueError, match="unknown loss"):
        loss_terms(pred, target, None, "huber")


def test_masked_loss_ignores_uncovered_nan_targets():
    pred = torch.rand(2, 3, 1, 4, 4, requires_grad=True)
    target = torch.rand(2, 3, 1, 4, 4)
    cover = torch.ones(2, 3, 1, 4, 4)
    cover[..., :2] = 0
    poisoned = target.masked_fill(cover == 0, float("nan"))
    loss = _reduced(pred, poisoned, cover, "l1+l2", "mean")
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(pred.grad).all()
    assert (pred.grad[..., :2] == 0).all()
    keep = pred[..., 2:].detach()
    expected = ((keep - target[..., 2:]) ** 2 + (keep - target[..., 2:]).abs()).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)


# ------------------------------------------------------------------------------ schedules
def test_learning_rate_schedules():
    kw = dict(lr=1e-3, max_steps=100, min_lr=1e-5)
    assert learning_rate(0, schedule="constant", **kw) == 1e-3
    assert learning_rate(99, schedule="constant", **kw) == 1e-3
    assert learning_rate(0, schedule="cosine", **kw) == pytest.approx(1e-3)
    assert learning_rate(50, schedule="cosine", **kw) == pytest.approx((1e-3 + 1e-5) / 2)
    assert learning_rate(100, schedule="cosine", **kw) == pytest.approx(1e-5)
    assert learning_rate(25, schedule="cosine", **kw) == pytest.approx(
        1e-5 + (1e-3 - 1e-5) * 0.5 * (1 + math.cos(math.pi / 4))
    )
    # one-cycle: lr/25 -> lr over the first 30 steps, then down to min_lr
    assert learning_rate(0, schedule="onecycle", **kw) == pytest.approx(1e-3 / 25)
    assert learning_rate(15, schedule="onecycle", **kw) == pytest.approx((1e-3 / 25 + 1e-3) / 2)
    assert learning_rate(30, schedule="onecycle", **kw) == pytest.approx(1e-3)
    assert learning_rate(65, schedule="onecycle", **kw) == pytest.approx((1e-3 + 1e-5) / 2)
    assert learning_rate(100, schedule="onecycle", **kw) == pytest.approx(1e-5)


def test_sampling_probabilities():
    p = sampling.probabilities
    assert p("none", 0, 100) == (0.0, 1.0)
    assert p("linear", 0, 100) == (1.0, 1.0)
    assert p("linear", 25, 100) == (0.75, 1.0)
    assert p("linear", 100, 100) == (0.0, 1.0)
    assert p("linear", 500, 100) == (0.0, 1.0)
    assert p("reverse", 0, 100) == (0.5, 0.5)
    assert p("reverse", 49, 100) == (0.5, 0.5)
    assert p("reverse", 75, 100) == pytest.approx((0.25, 0.75))
    assert p("reverse", 100, 100) == (0.0, 1.0)
    assert sampling.default_steps(1000) == 500


def test_sampling_masks_follow_the_global_batch():
    kw = dict(sampling_steps=100, seed=3, global_batch=8, input_frames=4, output_frames=5)
    full, enc = sampling.masks("reverse", 60, rows=slice(0, 8), **kw)
    assert full.shape == (8, 4) and enc.shape == (8, 3)
    assert set(full.unique().tolist()) <= {0.0, 1.0}
    for rank in range(2):  # each rank of 2 gets its rows of the same draw
        rows = slice(rank * 4, rank * 4 + 4)
        part, part_enc = sampling.masks("reverse", 60, rows=rows, **kw)
        assert torch.equal(part, full[rows]) and torch.equal(part_enc, enc[rows])
    again, _ = sampling.masks("reverse", 60, rows=slice(0, 8), **kw)
    assert torch.equal(again, full)
    linear, none_enc = sampling.masks("linear", 0, rows=slice(0, 8), **kw)
    assert none_enc is None and torch.equal(linear, torch.ones(8, 4))  # η = 1 at step 0
    assert sampling.masks("none", 0, rows=slice(0, 8), **kw) == (None, None)


def test_reverse_rollout_matches_the_model_and_feeds_predictions():
    torch.manual_seed(0)
    net = tiny_model("predrnn")
    x = torch.rand(2, 4, 1, 16, 16)
    future = torch.rand(2, 3, 1, 16, 16)
    mask = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    with torch.no_grad():
        ref = net.rollout(x, 3, future=future, mask=mask)
        ours = sampling.rollout(net, x, 3, future, mask, input_mask=torch.ones(2, 3))
        assert torch.allclose(ours, ref, atol=1e-6)
        # all own predictions in the encoder: frames 2..4 of the input no longer matter
        free = sampling.rollout(net, x, 3, future, mask, input_mask=torch.zeros(2, 3))
        x2 = x.clone()
        x2[:, 1:] = torch.rand(2, 3, 1, 16, 16)
        free2 = sampling.rollout(net, x2, 3, future, mask, input_mask=torch.zeros(2, 3))
        assert torch.allclose(free, free2) and not torch.allclose(free, ref)


def test_reverse_time():
    x = torch.arange(5.0).view(1, 5, 1, 1, 1)
    inputs, targets = x[:, :3], x[:, 3:]
    cov = torch.arange(5.0).view(1, 5, 1, 1, 1) * 10
    r_in, r_out, r_cov = reverse_time(inputs, targets, cov)
    assert r_in.flatten().tolist() == [4.0, 3.0, 2.0] and r_out.flatten().tolist() == [1.0, 0.0]
    assert r_cov.flatten().tolist() == [40.0, 30.0, 20.0, 10.0, 0.0]


def test_data_order_is_per_epoch_and_shared_by_ranks():
    one = order.epoch_batches(10, 4, seed=1, epoch=0)
    assert len(one) == 2 and all(len(b) == 4 for b in one)  # the incomplete batch is dropped
    assert one == order.epoch_batches(10, 4, seed=1, epoch=0)
    assert one != order.epoch_batches(10, 4, seed=1, epoch=1)
    assert one != order.epoch_batches(10, 4, seed=2, epoch=0)
    r0 = order.epoch_batches(10, 4, seed=1, epoch=0, rank=0, world_size=2)
    r1 = order.epoch_batches(10, 4, seed=1, epoch=0, rank=1, world_size=2)
    assert [a + b for a, b in zip(r0, r1, strict=True)] == one


# ------------------------------------------------------------------------------ validation
class _Zeros(torch.nn.Module):
    """A 'model' that forecasts zeros: the errors are then the targets themselves."""

    def rollout(self, frames: torch.Tensor, steps: int, guide=None) -> torch.Tensor:
        B, T, C, H, W = frames.shape
        return torch.zeros(B, T - 1 + steps, C, H, W)


def test_validation_metrics_by_hand():
    data = Blobs(5, coverage=True)
    data.x = torch.nan_to_num(data.x)
    m = validate(
        _Zeros(),
        data,
        batch_size=2,
        output_frames=T_OUT,
        loss="l2",
        reduction="mean",
        device=torch.device("cpu"),
    )
    y = data.x[:, T_IN:]
    w = data.coverage[:, T_IN:]
    per_frame_sq = (w * y**2).sum((2, 3, 4)).mean(0)  # per-frame sum over pixels, mean over seqs
    per_frame_abs = (w * y.abs()).sum((2, 3, 4)).mean(0)
    pixels = w.sum((0, 2, 3, 4))
    assert m["sequences"] == 5
    assert m["mse_per_lead"] == pytest.approx(per_frame_sq.tolist(), rel=1e-5)
    assert m["mae_per_lead"] == pytest.approx(per_frame_abs.tolist(), rel=1e-5)
    assert m["mse"] == pytest.approx(per_frame_sq.mean().item(), rel=1e-5)
    expected_pixel = ((w * y**2).sum((0, 2, 3, 4)) / pixels).tolist()
    assert m["mse_pixel_per_lead"] == pytest.approx(expected_pixel, rel=1e-5)
    frames = data.x[:, 1:]
    cov = data.coverage[:, 1:]
    assert m["loss"] == pytest.approx(((cov * frames**2).sum() / cov.sum()).item(), rel=1e-5)
    capped = validate(
        _Zeros(),
        data,
        batch_size=2,
        output_frames=T_OUT,
        loss="l2",
        reduction="sum",
        device=torch.device("cpu"),
        max_batches=1,
    )
    assert capped["sequences"] == 2  # val_batches caps the batches scored
    assert capped["loss"] == pytest.approx((cov[:2] * frames[:2] ** 2).sum().item(), rel=1e-5)


# ------------------------------------------------------------------------------ TOML
def test_recipe_toml_round_trip():
    utc = dt.timezone.utc
    recipe = Recipe(
        data=DataConfig(
            sources=['/data/radar "a"/*.nc', "/données/ünï"],
            variable=["rain", "dbz"],
            transform="log1p",
            transform_options={"scale": 2.5, "name": "x\ny", "nested": {"k": [1, 2]}},
            crop_pixels=(0, 64, 10, 74),
            split=SplitConfig(
                train=(dt.datetime(2020, 1, 1, tzinfo=utc), dt.datetime(2020, 2, 1, tzinfo=utc)),
                validation=(
                    dt.datetime(2020, 2, 1, tzinfo=utc),
                    dt.datetime(2020, 3, 1, 12, 30, 15, 500, tzinfo=utc),
                ),
            ),
        ),
        model=ModelConfig(name="cms_lstm", options={"window": 4, "norm": "channel"}),
        train=TrainConfig(lr=1e-6, betas=(0.5, 0.99), max_time=3600.0, seed=-3, grad_clip=1.0),
    )
    text = recipe_toml(recipe)
    again = Recipe.model_validate(tomllib.loads(text))
    assert again == recipe
    assert dumps({"a": {"b": 1.0, "c": float("inf")}}) == "\n[a]\nb = 1.0\nc = inf\n".lstrip()


# ------------------------------------------------------------------------------ a trained run
@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict[str, Any]:
    run = tmp_path_factory.mktemp("run")
    events: list[dict] = []
    recipe = small_recipe(max_steps=10, val_every=4, checkpoint_every=4, log_every=2)
    summary = train(recipe, run, data=blob_data(), progress=events.append)
    return {"run": run, "summary": summary, "events": events, "recipe": recipe}


def test_run_directory_contents(trained):
    run = trained["run"]
    names = {p.relative_to(run).as_posix() for p in run.rglob("*")}
    assert {
        "recipe.toml",
        "model.safetensors",
        "model.json",
        "metrics.jsonl",
        "checkpoints",
        "checkpoints/last.pt",
        "checkpoints/best.safetensors",
    } <= names
    assert not [n for n in names if n.endswith(".tmp")]
    recipe = Recipe.model_validate(tomllib.loads((run / "recipe.toml").read_text()))
    assert recipe == trained["recipe"]
    records = read_metrics(run)
    train_steps = [r["step"] for r in records if r["event"] == "train"]
    val = [r for r in records if r["event"] == "validation"]
    assert train_steps == [2, 4, 6, 8, 10]
    assert [r["step"] for r in val] == [4, 8, 10]  # step 10: the final validation
    for key in ("loss", "lr", "eta", "it_s", "elapsed_s", "time"):
        assert key in records[0]
    for key in ("loss", "mse", "mae", "mse_pixel", "mae_pixel", "mse_per_lead", "mae_per_lead"):
        assert key in val[0]
    assert len(val[0]["mse_per_lead"]) == T_OUT
    summary = trained["summary"]
    assert summary["steps"] == 10 and summary["stopped"] == "max_steps"
    assert summary["val_loss"] == val[-1]["loss"]


def test_model_card_fields(trained):
    card = json.loads((trained["run"] / "model.json").read_text())
    arch = card["architecture"]
    assert arch["name"] == "convlstm" and arch["hidden_channels"] == [8, 8]
    assert arch["parameters"] == trained["summary"]["parameters"] > 0
    assert card["input"]["variable"] == "blobs" and card["input"]["units"] == "1"
    assert card["input"]["input_frames"] == T_IN and card["input"]["output_frames"] == T_OUT
    assert card["input"]["frame_size"] == [SIZE, SIZE] and card["input"]["channels"] == 1
    assert card["training"]["data_checksums"] == [{"file": "blobs", "sha256": "0" * 64}]
    assert card["training"]["steps"] == 10 and card["training"]["device"] == "cpu"
    assert card["training"]["wall_time_s"] > 0
    assert card["metrics"]["final"]["step"] == 10 and card["metrics"]["best"]["step"] in (4, 8)
    assert card["software"]["torch"] == torch.__version__
    assert card["software"]["stforecast"]
    assert card["hyperparameters"]["lr"] == 3e-3
    assert len(card["weights"]["sha256"]) == 64


def test_progress_events(trained):
    events = trained["events"]
    steps = [e["step"] for e in events if e["event"] != "done"]
    assert steps == list(range(1, 11))
    for key in ("step", "max_steps", "loss", "lr", "it_s", "eta_s", "val", "eta"):
        assert key in events[0]
    assert events[3]["event"] == "validation" and events[3]["val"]["step"] == 4
    assert events[-1]["event"] == "done"


def test_load_model_round_trip(trained):
    run = trained["run"]
    net, card = load_model(run, weights="final")
    assert card["weights"]["loaded"]["name"] == "final"
    assert not net.training and card["architecture"]["name"] == "convlstm"
    state = load_checkpoint(run / "checkpoints" / "last.pt")
    assert state["step"] == 10
    ref = tiny_model()
    ref.load_state_dict(state["model"])
    ref.eval()
    x = torch.rand(2, T_IN, 1, SIZE, SIZE)
    with torch.no_grad():
        assert torch.equal(net(x, 4), ref(x, 4))
    best, best_card = load_model(run, weights="best")
    assert best.config == net.config
    # the run's own weights are the best validation's: what forecast, serve and export load
    assert best_card["weights"]["selected"] == "best"
    selected, card = load_model(run)
    assert card["weights"]["loaded"] == best_card["weights"]["loaded"]
    assert all(
        torch.equal(a, b) for a, b in zip(selected.parameters(), best.parameters(), strict=True)
    )
    import stforecast

    assert stforecast.load_model is load_model


def test_load_model_refuses_altered_weights(trained, tmp_path):
    import shutil

    run = tmp_path / "copy"
    shutil.copytree(trained["run"], run)
    for name in ("model.safetensors", "checkpoints/best.safetensors"):
        data = bytearray((run / name).read_bytes())
        data[-1] ^= 0xFF
        (run / name).write_bytes(bytes(data))
    with pytest.raises(InputError, match=r"model\.safetensors: sha256"):
        load_model(run, weights="final")
    with pytest.raises(InputError, match=r"best\.safetensors: sha256"):
        load_model(run)  # the selected weights: the best validation's
    with pytest.raises(InputError, match="no model card"):
        load_model(tmp_path / "nothing")


def test_engine_prints_nothing(tmp_path, capfd):
    train(small_recipe(max_steps=2, tensorboard=True), tmp_path / "r", data=blob_data(8, 4))
    out, err = capfd.readouterr()
    assert out == "" and err == ""


def test_tensorboard_missing_never_fails(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails
    summary = train(small_recipe(max_steps=2, tensorboard=True), tmp_path, data=blob_data(8, 4))
    assert summary["steps"] == 2 and not (tmp_path / "tensorboard").exists()


def test_existing_run_needs_resume(trained):
    with pytest.raises(ConfigError, match="already holds"):
        train(trained["recipe"], trained["run"], data=blob_data())


# ------------------------------------------------------------------------------ checkpoints
def test_checkpoint_loads_weights_only_and_refuses_objects(trained, tmp_path):
    path = trained["run"] / "checkpoints" / "last.pt"
    raw = torch.load(path, weights_only=True)  # what any reader may do
    assert raw["format"] == "stforecast-checkpoint" and raw["step"] == 10
    for key in ("model", "optimizer", "scheduler", "rng", "sampling", "best", "stale", "epoch"):
        assert key in raw
    evil = tmp_path / "evil.pt"
    torch.save({"format": "stforecast-checkpoint", "version": 1, "x": Blobs(1)}, evil)
    with pytest.raises(InputError, match="weights_only"):
        load_checkpoint(evil)


def test_failed_write_never_replaces_a_good_checkpoint(tmp_path):
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"step": 1, "w": torch.ones(3)})

    def broken(fh):
        fh.write(b"PK\x03\x04 half a checkpoint")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"), atomic_path(path) as tmp, open(tmp, "wb") as fh:
        broken(fh)
    assert load_checkpoint(path)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # the temp file is gone
    # a kill mid-write leaves a truncated temp file beside a good checkpoint: resume ignores it
    (tmp_path / ".last.pt.abc123.tmp").write_bytes(b"PK\x03\x04 trunc")
    assert load_checkpoint(path)["step"] == 1
    path.write_bytes(path.read_bytes()[:100])  # what a non-atomic writer could leave
    with pytest.raises(InputError, match="not a readable"):
        load_checkpoint(path)


def test_resume_cleans_stale_temp_files(tmp_path):
    recipe = small_recipe(max_steps=4)
    train(recipe, tmp_path, data=blob_data(8, 0))
    stale = tmp_path / "checkpoints" / ".last.pt.x1y2.tmp"
    stale.write_bytes(b"\x00" * 10)
    more = small_recipe(max_steps=6)
    summary = train(more, tmp_path, data=blob_data(8, 0), resume=True)
    assert summary["steps"] == 6 and summary["resumed_from"] == 4 and not stale.exists()


@pytest.mark.parametrize("kind", ["linear", "reverse"])
def test_resume_is_exact(tmp_path, kind):
    common = dict(
        deterministic=True,
        scheduled_sampling=kind,
        sampling_steps=8,
        reverse_sequences=True,
        val_every=3,
        checkpoint_every=100,
        log_every=1,
        grad_clip=1.0,
    )
    data = blob_data(12, 4, coverage=True)  # 3 batches per epoch: the resume is mid-epoch
    train(small_recipe(max_steps=8, **common), tmp_path / "a", data=data)
    train(small_recipe(max_steps=4, **common), tmp_path / "b", data=data)
    summary = train(small_recipe(max_steps=8, **common), tmp_path / "b", data=data, resume=True)
    assert summary["resumed_from"] == 4
    assert_same_weights(weights(tmp_path / "a"), weights(tmp_path / "b"))
    a = load_checkpoint(tmp_path / "a" / "checkpoints" / "last.pt")
    b = load_checkpoint(tmp_path / "b" / "checkpoints" / "last.pt")
    assert (a["epoch"], a["position"]) == (b["epoch"], b["position"]) == (2, 2)
    for key, value in a["optimizer"]["state"].items():
        assert torch.equal(value["exp_avg_sq"], b["optimizer"]["state"][key]["exp_avg_sq"])
    # metrics.jsonl of the resumed run holds each step once
    steps = [r["step"] for r in read_metrics(tmp_path / "b") if r["event"] == "train"]
    assert steps == list(range(1, 9))


def test_worker_processes_do_not_change_the_order(tmp_path):
    data = blob_data(12, 4)
    recipe = small_recipe(max_steps=4, deterministic=True)
    train(recipe, tmp_path / "a", data=data)
    recipe.train.num_workers = 2
    train(recipe, tmp_path / "b", data=data)
    assert_same_weights(weights(tmp_path / "a"), weights(tmp_path / "b"))
    assert data.train.epochs == [0, 1, 0, 1]  # set_epoch before each epoch, in both runs


def test_resume_refuses_a_different_model(tmp_path):
    train(small_recipe(max_steps=2), tmp_path, data=blob_data(8, 0))
    other = small_recipe(max_steps=4)
    other.model.hidden_channels = [4, 4]
    with pytest.raises(ConfigError, match="differs"):
        train(other, tmp_path, data=blob_data(8, 0), resume=True)


# ------------------------------------------------------------------------------ stopping
def test_early_stopping(tmp_path):
    # lr so small the weights cannot change: the validation loss never improves
    recipe = small_recipe(max_steps=100, lr=1e-30, val_every=2, early_stopping=2)
    summary = train(recipe, tmp_path, data=blob_data(16, 4))
    assert summary["stopped"] == "early_stopping" and summary["steps"] == 6
    assert summary["best_step"] == 2
    events: list[dict] = []
    again = train(recipe, tmp_path, data=blob_data(16, 4), resume=True, progress=events.append)
    assert again["steps"] == 6 and again["stopped"] == "early_stopping"
    (done,) = events  # nothing left to train: one closing event, numbers a progress bar can show
    assert done["event"] == "done" and done["stopped"] == "early_stopping"
    assert isinstance(done["loss"], float) and isinstance(done["lr"], float)


def test_max_time(tmp_path):
    t0 = time.monotonic()
    summary = train(
        small_recipe(max_steps=100000, max_time=0.5, val_every=10**6), tmp_path, data=blob_data()
    )
    assert summary["stopped"] == "max_time" and 0 < summary["steps"] < 100000
    assert time.monotonic() - t0 < 10
    assert load_checkpoint(tmp_path / "checkpoints" / "last.pt")["step"] == summary["steps"]
    load_model(tmp_path)


def test_coverage_with_nan_targets_trains(tmp_path):
    data = blob_data(8, 4, coverage=True, nan=True)
    summary = train(small_recipe(max_steps=4, reduction="sum", loss="l1+l2"), tmp_path, data=data)
    assert math.isfinite(summary["loss"]) and math.isfinite(summary["val_loss"])


def test_divergence_is_an_error(tmp_path):
    data = blob_data(8, 0)
    data.train.x[:] = float("nan")
    with pytest.raises(TrainingError, match="diverged"):
        train(small_recipe(max_steps=4), tmp_path, data=data)


def test_learns_moving_blobs(tmp_path):
    data = blob_data(64, 16)
    recipe = small_recipe(
        max_steps=100, batch_size=8, lr=1e-2, val_every=50, checkpoint_every=100, log_every=20
    )
    torch.manual_seed(recipe.train.seed)
    untrained = tiny_model()
    before = validate(
        untrained,
        data.validation,
        batch_size=8,
        output_frames=T_OUT,
        loss="l2",
        reduction="mean",
        device=torch.device("cpu"),
    )
    summary = train(recipe, tmp_path, data=data)
    after = summary["validation"]
    zeros = validate(
        _Zeros(),
        data.validation,
        batch_size=8,
        output_frames=T_OUT,
        loss="l2",
        reduction="mean",
        device=torch.device("cpu"),
    )
    assert after["mse"] < 0.5 * before["mse"], (before["mse"], after["mse"])
    assert after["mse"] < 0.5 * zeros["mse"], (zeros["mse"], after["mse"])  # it tracks the blobs
    assert after["mse_per_lead"][0] < after["mse_per_lead"][-1]  # errors grow with lead time


# ------------------------------------------------------------------------------ processes
SCRIPT = """
import sys
sys.path.insert(0, {tests!r})
import torch
torch.set_num_threads(1)
from test_training import blob_data, small_recipe
from stforecast.training import train

run_dir, kind = sys.argv[1], sys.argv[2]
if kind == "kill":
    recipe = small_recipe(max_steps=60, checkpoint_every=1, val_every=7, log_every=1,
                          deterministic=True, reverse_sequences=True)
    train(recipe, run_dir, data=blob_data(16, 4), resume=True)
else:  # two runs in one process: the second reuses the process group of the first
    for reduction in kind.split(","):
        recipe = small_recipe(max_steps=5, reduction=reduction, deterministic=True, val_every=2,
                              lr=1e-3)
        train(recipe, f"{{run_dir}}/{{reduction}}", data=blob_data(16, 4, coverage=True))
"""


def _script(tmp_path: Path) -> Path:
    path = tmp_path / "run_training.py"
    path.write_text(SCRIPT.format(tests=str(TESTS)))
    return path


def _env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    env.pop("WORLD_SIZE", None)
    return env


def test_sigkill_at_any_moment_resumes(tmp_path):
    script, run = _script(tmp_path), tmp_path / "run"
    last = run / "checkpoints" / "last.pt"
    rng = random.Random()
    delays = []
    for _ in range(3):
        proc = subprocess.Popen([sys.executable, str(script), str(run), "kill"], env=_env())
        start_step = load_checkpoint(last)["step"] if last.exists() else 0
        deadline = time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < deadline:  # wait for progress
            if last.exists() and load_checkpoint(last)["step"] > start_step:
                break
            time.sleep(0.02)
        delays.append(rng.uniform(0.0, 0.3))
        time.sleep(delays[-1])
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert last.exists(), delays
        load_checkpoint(last)  # intact after every kill
    done = subprocess.run(
        [sys.executable, str(script), str(run), "kill"], env=_env(), capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert load_checkpoint(last)["step"] == 60
    assert not list((run / "checkpoints").glob(".*.tmp")), delays
    steps = [r["step"] for r in read_metrics(run) if r["event"] == "train"]
    assert steps == list(range(1, 61)), delays
    with threads(1):  # the uninterrupted run, in this process
        recipe = small_recipe(
            max_steps=60,
            checkpoint_every=1000,
            val_every=7,
            log_every=1,
            deterministic=True,
            reverse_sequences=True,
        )
        train(recipe, tmp_path / "ref", data=blob_data(16, 4))
    assert_same_weights(weights(tmp_path / "ref"), weights(run))


def test_ddp_matches_single_process(tmp_path):
    """2 gloo processes under torchrun, global batch 4 (2 per rank), coverage-masked loss; one
    run with each reduction (DDP averages gradients: a sum is rescaled to stay a sum)."""
    script = _script(tmp_path)
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",  # rendezvous on a port the OS picks: no race for a "free" port
        "--nproc-per-node",
        "2",
        str(script),
        str(tmp_path / "ddp"),
        "mean,sum",
    ]
    done = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    for reduction in ("mean", "sum"):
        single, ddp = tmp_path / "single" / reduction, tmp_path / "ddp" / reduction
        with threads(1):
            recipe = small_recipe(
                max_steps=5, reduction=reduction, deterministic=True, val_every=2, lr=1e-3
            )
            train(recipe, single, data=blob_data(16, 4, coverage=True))
        a, b = weights(single), weights(ddp)
        diff = max((a[k] - b[k]).abs().max().item() for k in a)
        assert diff < 1e-5, (reduction, diff)
        card = json.loads((ddp / "model.json").read_text())
        assert card["training"]["world_size"] == 2
        val_single = json.loads((single / "model.json").read_text())["metrics"]["final"]
        assert card["metrics"]["final"]["mse"] == pytest.approx(val_single["mse"], rel=1e-4)
        assert card["metrics"]["final"]["sequences"] == val_single["sequences"] == 4


@pytest.mark.slow
def test_compile(tmp_path):
    summary = train(small_recipe(max_steps=3, compile=True), tmp_path, data=blob_data(8, 4))
    assert summary["steps"] == 3


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_on_cuda(tmp_path, precision):
    recipe = small_recipe(max_steps=20, device="cuda", precision=precision, lr=1e-2)
    summary = train(recipe, tmp_path, data=blob_data(32, 8))
    assert math.isfinite(summary["loss"]) and summary["device"].startswith("cuda")
    net, _ = load_model(tmp_path)
    assert next(net.parameters()).device.type == "cpu"


def test_cached_store_is_prepared_once_by_concurrent_callers(tmp_path, monkeypatch):
    """torchrun ranks (or two trainings) asking for the same cached store: one prepares it, the
    others wait for it instead of colliding on its temporary directory."""
    import threading

    from stforecast.config import data_config
    from stforecast.data import cache as data_mod
    from stforecast.data.synthetic import write_rain_cells

    archive = write_rain_cells(tmp_path / "r.nc", frames=24, size=16)
    cfg = data_config(sources=[str(archive)], input_frames=2, output_frames=2)
    calls = []
    real = data_mod.prepare

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(data_mod, "prepare", counting)
    store = tmp_path / "cache" / data_mod.content_key(cfg)
    errors = []

    def worker():
        try:
            data_mod.prepare_cached(cfg, store)
        except Exception as err:  # pragma: no cover - the failure being tested
            errors.append(err)

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(calls) == 1
    assert (store / "manifest.json").exists()


@pytest.mark.skipif(not step_mod.cpu_bf16(), reason="this CPU has no native bf16")
def test_bf16_on_the_cpu_trains_under_autocast(tmp_path, monkeypatch):
    """`precision = "bf16"` on the CPU autocasts the convolutions (they see bf16 inputs), trains
    to a finite loss, records bf16 in the card, and keeps fp32 weights."""
    seen: set[torch.dtype] = set()
    real = torch.nn.functional.conv2d

    def spy(x, *args, **kwargs):
        out = real(x, *args, **kwargs)
        seen.add(out.dtype)
        return out

    monkeypatch.setattr(torch.nn.functional, "conv2d", spy)
    summary = train(small_recipe(max_steps=6, precision="bf16"), tmp_path, data=blob_data(16, 4))
    assert math.isfinite(summary["loss"])
    assert torch.bfloat16 in seen
    card = json.loads((tmp_path / "model.json").read_text())
    assert card["training"]["precision"] == "bf16"
    assert all(w.dtype == torch.float32 for w in weights(tmp_path).values())


def test_bf16_refused_on_a_cpu_without_it(tmp_path, monkeypatch):
    monkeypatch.setattr(step_mod, "cpu_bf16", lambda: False)
    with pytest.raises(ConfigError, match="native bf16"):
        train(small_recipe(max_steps=2, precision="bf16"), tmp_path, data=blob_data(8, 4))
    with pytest.raises(ConfigError, match="not supported on cpu"):
        train(small_recipe(max_steps=2, precision="fp16"), tmp_path / "b", data=blob_data(8, 4))


def test_warns_once_when_validation_takes_most_of_the_time(tmp_path):
    """Validating 64 sequences after every step of a batch of 4 takes most of the time: one
    warning, in the log and in one progress event, naming the recipe fields that bound it; a
    run validating one batch every 4 steps gets none."""
    events: list[dict] = []
    recipe = small_recipe(max_steps=6, val_every=1, checkpoint_every=100)
    train(recipe, tmp_path / "slow", data=blob_data(16, 64), progress=events.append)
    warned = [e["warning"] for e in events if e.get("warning")]
    assert len(warned) == 1 and "train.val_batches" in warned[0] and "train.val_every" in warned[0]
    logged = [r for r in read_metrics(tmp_path / "slow") if r["event"] == "warning"]
    assert [r["message"] for r in logged] == warned

    events.clear()
    recipe = small_recipe(max_steps=8, val_every=4, val_batches=1, checkpoint_every=100)
    train(recipe, tmp_path / "fast", data=blob_data(64, 4), progress=events.append)
    assert not [e for e in events if e.get("warning")]


def test_a_recipe_without_data_says_how_to_give_it():
    from stforecast.config import load_recipe
    from stforecast.training.datasets import build_datasets, describe

    cfg = load_recipe(Path(__file__).parents[1] / "recipes" / "typhoon.toml")
    for call in (build_datasets, describe):
        with pytest.raises(ConfigError, match=r"--set data.sources='\[\"/data/frames/\*.nc\"\]'"):
            call(cfg)
