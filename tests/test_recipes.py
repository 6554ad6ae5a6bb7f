"""Shipped recipes validate; training data is built from a store, raw sources (cached by content
hash) or Moving MNIST; `train --dry-run` sizes the model without training."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_prepare import archive

from stforecast.config import load_recipe as recipe
from stforecast.data.cache import content_key
from stforecast.data.synthetic import load_mnist_images, moving_mnist_test, split_mnist_digits
from stforecast.errors import ConfigError
from stforecast.training.datasets import build_datasets

from conftest import shared

RECIPES = sorted((Path(__file__).resolve().parents[1] / "recipes").glob("*.toml"))


def test_every_shipped_recipe_validates():
    names = {p.stem for p in RECIPES}
    assert {
        "quickstart",
        "moving_mnist",
        "moving_mnist_sa_convlstm",
        "moving_mnist_convlstm",
        "typhoon",
        "radar_nowcast",
    } <= names
    for path in RECIPES:
        recipe(path)


def test_paper_settings_in_the_moving_mnist_recipe():
    r = recipe(next(p for p in RECIPES if p.stem == "moving_mnist"))
    assert (r.model.name, r.model.hidden_channels, r.model.kernel_size, r.model.patch_size) == (
        "cms_lstm",
        [64] * 4,
        3,
        4,
    )
    t = r.train
    assert (t.optimizer, t.lr, t.batch_size, t.loss, t.max_steps) == (
        "adamw",
        1e-3,
        8,
        "l1+l2",
        80000,
    )
    assert t.scheduled_sampling == "linear"
    typhoon = recipe(next(p for p in RECIPES if p.stem == "typhoon"))
    assert (typhoon.data.input_frames, typhoon.data.output_frames) == (8, 4)
    assert typhoon.data.resize == (64, 64) and typhoon.data.transform == "minmax"
    assert typhoon.train.max_steps == 100000


def write_recipe(tmp_path, data: str, extra: str = "") -> Path:
    path = tmp_path / "r.toml"
    path.write_text(
        f'[data]\n{data}\ninput_frames = 3\noutput_frames = 2\n\n[model]\nname = "convlstm"\n'
        f"patch_size = 2\nhidden_channels = [8]\n\n[train]\nbatch_size = 2\n{extra}"
    )
    return path


def test_sources_are_prepared_once_into_a_content_addressed_cache(tmp_path):
    archive(tmp_path / "a.nc")
    r = recipe(write_recipe(tmp_path, 'sources = ["a.nc"]'))
    data = build_datasets(r, cache_dir=tmp_path / "cache")
    (store,) = [p for p in (tmp_path / "cache").iterdir() if not p.name.startswith(".")]  # no lock
    assert store.name == content_key(r.data)
    assert data.in_channels == 1 and data.frame_size == (8, 10)
    item = data.train[0]
    assert item["inputs"].shape == (3, 1, 8, 10) and item["targets"].shape == (2, 1, 8, 10)
    assert data.contract.time_step_seconds == 600 and data.contract.units == "mm/h"
    assert len(data.checksums) == 1 and len(data.checksums[0]["sha256"]) == 64
    mtime = (store / "manifest.json").stat().st_mtime_ns
    build_datasets(r, cache_dir=tmp_path / "cache")
    assert (store / "manifest.json").stat().st_mtime_ns == mtime  # reused, not prepared again
    archive(tmp_path / "new.nc", seed=5)
    os.replace(tmp_path / "new.nc", tmp_path / "a.nc")  # new content -> new key
    assert content_key(r.data) != store.name
    r2 = recipe(write_recipe(tmp_path, 'sources = ["a.nc"]\ntransform = "log1p"'))
    assert content_key(r2.data) != content_key(r.data)


def test_exactly_one_data_source(tmp_path):
    r = recipe(write_recipe(tmp_path, 'sources = ["a.nc"]\nstore = "s"'))
    with pytest.raises(ConfigError, match="exactly one of store, sources or moving_mnist"):
        build_datasets(r)


def test_moving_mnist_training_never_sees_test_digits(tmp_path):
    mnist = shared("mnist") / "t10k-images-idx3-ubyte.gz"
    r = recipe(write_recipe(tmp_path, f'moving_mnist = "{mnist}"\nvalidation_sequences = 4'))
    data = build_datasets(r)
    assert data.frame_size == (64, 64) and data.in_channels == 1
    a, b = data.train[5], data.train[5]
    assert torch.equal(a["inputs"], b["inputs"]) and a["inputs"].shape == (3, 1, 64, 64)
    data.train.set_epoch(1)
    assert not torch.equal(data.train[5]["inputs"], a["inputs"])
    assert len(data.validation) == 4 and float(a["inputs"].max()) <= 1.0
    test = moving_mnist_test(load_mnist_images(mnist), n=4)
    _, test_pool = split_mnist_digits(load_mnist_images(mnist))
    assert test.shape == (4, 20, 64, 64) and len(test_pool) == 2000


def run_train(*args):
    return subprocess.run(
        [sys.executable, "-m", "stforecast", "train", *args], capture_output=True, text=True
    )


def test_dry_run_prints_size_and_memory(tmp_path):
    archive(tmp_path / "a.nc")
    out = run_train(str(write_recipe(tmp_path, 'sources = ["a.nc"]')), "--dry-run")
    assert out.returncode == 0, out.stderr
    assert "parameters" in out.stdout and "MiB per training step" in out.stdout
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    "extra, code, message",
    [
        ("lr = -1\n", 2, "train.lr: Input should be greater than 0"),
        ("optimiser = 'sgd'\n", 2, "train.optimiser: Extra inputs are not permitted"),
        ("loss = 'huber'\n", 2, "train.loss"),
    ],
)
def test_bad_recipe_fields_exit_2(tmp_path, extra, code, message):
    out = run_train(str(write_recipe(tmp_path, 'sources = ["a.nc"]', extra)), "--dry-run")
    assert out.returncode == code and message in out.stderr and "r.toml" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def test_set_override_is_validated(tmp_path):
    path = write_recipe(tmp_path, 'sources = ["a.nc"]')
    out = run_train(str(path), "--set", "train.batch_size=0", "--dry-run")
    assert out.returncode == 2 and "train.batch_size" in out.stderr


def test_bom_recipe_dry_run():
    shared("radar-bom-66-20201031")
    out = run_train("recipes/radar_nowcast.toml", "--dry-run")
    assert out.returncode == 0, out.stderr
    assert "frames 1x64x64, 6 in -> 6 out" in " ".join(out.stdout.split())
