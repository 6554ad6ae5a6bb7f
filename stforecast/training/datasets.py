"""What the trainer trains on: datasets built from a recipe's `[data]` section.

Three kinds of source, one interface (`TrainingData`):
- `store`: a prepared store (`stforecast prepare`), windows read lazily;
- `sources`: raw files, prepared on first use into the prepared-store cache (`data.cache`), so
  the same recipe on the same files prepares once;
- `moving_mnist`: sequences generated from an MNIST IDX file (training digits only; the test
  set of `stforecast.data.synthetic.moving_mnist_test` never appears in training or validation).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from stforecast.config import Recipe
from stforecast.data import synthetic
from stforecast.data.cache import cache_root, content_key, file_record, prepare_cached
from stforecast.data.contract import DataContract, Grid, Transform
from stforecast.data.dataset import WindowDataset
from stforecast.data.store import read_manifest
from stforecast.errors import ConfigError

VALIDATION_SEED = 20200707  # Moving MNIST validation: training digits, its own fixed seed
MNIST_EPOCH = 10000  # Moving MNIST sequences per training epoch (the papers' training set size)


@dataclass
class TrainingData:
    train: Dataset
    validation: Dataset | None
    in_channels: int
    frame_size: tuple[int, int]
    input_frames: int
    output_frames: int
    contract: DataContract
    checksums: list[dict[str, Any]] = field(default_factory=list)


class MovingMNISTSequences(Dataset):
    """Map-style Moving MNIST: sequence `i` of epoch `e` is a pure function of (seed, e, i), so
    any position can be resumed exactly and data-parallel ranks share one definition."""

    def __init__(self, digits: np.ndarray, t_in: int, t_out: int, *, seed: int, length: int):
        self.digits, self.t_in, self.t_out = digits, t_in, t_out
        self.seed, self.length, self.epoch = seed, length, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        state = np.random.SeedSequence((self.seed, 2, self.epoch, index)).generate_state(1)[0]
        seq = synthetic.moving_mnist(
            self.digits, 1, seq_len=self.t_in + self.t_out, seed=int(state)
        )[0]
        x = torch.from_numpy(seq.astype(np.float32) / 255.0)[:, None]
        return {"inputs": x[: self.t_in], "targets": x[self.t_in :]}


class FixedSequences(Dataset):
    """A fixed set of sequences `(N, T, H, W)` uint8 as inputs/targets items."""

    def __init__(self, sequences: np.ndarray, t_in: int) -> None:
        self.x = torch.from_numpy(sequences.astype(np.float32) / 255.0)[:, :, None]
        self.t_in = t_in

    def set_epoch(self, epoch: int) -> None:
        """Fixed data: nothing changes between epochs."""

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        x = self.x[index]
        return {"inputs": x[: self.t_in], "targets": x[self.t_in :]}


def _store_data(recipe: Recipe, store: Path) -> TrainingData:
    manifest = read_manifest(store)
    train_cfg = recipe.train
    train = WindowDataset(
        store, "train", crop=train_cfg.crop, flip=train_cfg.flip, seed=train_cfg.seed
    )
    has_val = manifest["windows"]["counts"]["validation"] > 0
    validation = (
        WindowDataset(store, "validation", crop=train_cfg.crop, seed=train_cfg.seed + 1)
        if has_val
        else None
    )
    contract = DataContract.from_manifest(manifest, store=str(Path(store).resolve()))
    _agree_with_store(recipe, contract, store)
    ny, nx = contract.grid.shape
    frame = (train_cfg.crop, train_cfg.crop) if train_cfg.crop else (ny, nx)
    return TrainingData(
        train=train,
        validation=validation,
        in_channels=contract.channels,
        frame_size=frame,
        input_frames=contract.input_frames,
        output_frames=contract.output_frames,
        contract=contract,
        checksums=manifest.get("sources", []),
    )


def _agree_with_store(recipe: Recipe, contract: DataContract, store: Path) -> None:
    """The window lengths come from the store: a recipe that names others contradicts it (a
    usage error), one that leaves them unset records the store's (the run's `recipe.toml`
    then says what was trained)."""
    cfg = recipe.data
    for name in ("input_frames", "output_frames"):
        mine, theirs = getattr(cfg, name), getattr(contract, name)
        if name in cfg.model_fields_set and mine != theirs:
            raise ConfigError(
                f"data.{name} = {mine} contradicts the store {store}, prepared with "
                f"{name} = {theirs}; leave it unset or prepare a new store"
            )
        setattr(cfg, name, theirs)


def _mnist_data(recipe: Recipe) -> TrainingData:
    cfg = recipe.data
    digits = synthetic.load_mnist_images(cfg.moving_mnist)
    train_pool, _ = synthetic.split_mnist_digits(digits)
    t_in, t_out = cfg.input_frames, cfg.output_frames
    train = MovingMNISTSequences(
        train_pool, t_in, t_out, seed=recipe.train.seed, length=MNIST_EPOCH
    )
    val = synthetic.moving_mnist(
        train_pool, cfg.validation_sequences, seq_len=t_in + t_out, seed=VALIDATION_SEED
    )
    contract = DataContract(
        variable="moving_mnist",
        units="1",
        transform=Transform("none", {}, {}),
        grid=Grid(shape=(64, 64)),
        time_step_seconds=None,
        input_frames=t_in,
        output_frames=t_out,
        values="pixel intensity / 255, in [0, 1]",
    )
    checksums = [file_record(cfg.moving_mnist)]
    return TrainingData(
        train, FixedSequences(val, t_in), 1, (64, 64), t_in, t_out, contract, checksums
    )


def _which_data(given: list[str]) -> str:
    """What is wrong with [data]'s choice of data, and for a recipe that names none (the papers'
    recipes ship without data) how to give it."""
    if not given:
        return (
            "the recipe names no data: give your files with "
            "--set data.sources='[\"/data/frames/*.nc\"]' (files, directories or globs), or a "
            "prepared store with --set data.store=DIR"
        )
    return (
        "[data] needs exactly one of store, sources or moving_mnist (archives count as "
        f"sources); got {', '.join(given)}"
    )


def build_datasets(
    recipe: Recipe,
    *,
    cache_dir: Path | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> TrainingData:
    """The training and validation datasets a recipe asks for (preparing raw sources if needed)."""
    cfg = recipe.data
    given = [k for k in ("store", "sources", "archives", "moving_mnist") if getattr(cfg, k)]
    if len(given) != 1:
        raise ConfigError(_which_data(given))
    if cfg.moving_mnist:
        return _mnist_data(recipe)
    if cfg.store:
        return _store_data(recipe, Path(cfg.store))
    store = (cache_dir or cache_root()) / content_key(cfg)
    prepare_cached(cfg, store, progress)
    return _store_data(recipe, store)


def describe(recipe: Recipe) -> dict[str, Any]:
    """Channels, frame size and window lengths a recipe's data will have, without preparing or
    reading data (headers only): what `train --dry-run` needs to build the model."""
    cfg = recipe.data
    crop = recipe.train.crop
    if cfg.moving_mnist:
        frame: tuple[int, int] = (64, 64)
        channels = 1
    elif cfg.store:
        contract = DataContract.from_manifest(read_manifest(cfg.store))
        frame = contract.grid.shape
        channels = contract.channels
    elif cfg.archives or (cfg.sources and cfg.spacing is not None):
        from stforecast.data.prepare_archives import processed_shape as shapes

        frame, channels = shapes(cfg)
    elif cfg.sources:
        from stforecast.data.resample import processed_shape

        frame, channels = processed_shape(cfg)
    else:
        raise ConfigError(_which_data([]))
    return {
        "in_channels": channels,
        "frame_size": (crop, crop) if crop else frame,
        "input_frames": cfg.input_frames,
        "output_frames": cfg.output_frames,
    }
