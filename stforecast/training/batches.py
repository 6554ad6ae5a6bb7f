"""The training split cut into steps: global and per-rank batches, and the loader of an epoch.

`order` decides which sequences make each global batch; this module checks that the split and
the batch size fit the number of processes and turns one epoch of that order, from any position,
into this rank's DataLoader, so a resumed or data-parallel run reads exactly the batches of an
uninterrupted one.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from stforecast.config import TrainConfig
from stforecast.errors import ConfigError, InputError
from stforecast.training import order, seeding
from stforecast.training.distributed import Context

Tensor = torch.Tensor


class Batches:
    """The sizes of a run's batches and the loaders that deliver them to this process."""

    def __init__(
        self, train: Dataset, cfg: TrainConfig, ctx: Context, device: torch.device
    ) -> None:
        self.train, self.ctx, self.device = train, ctx, device
        self.seed, self.num_workers = cfg.seed, cfg.num_workers
        self.global_batch = cfg.batch_size
        if cfg.batch_size % ctx.world_size:
            raise ConfigError(
                f"train.batch_size {cfg.batch_size} is the global batch and must be divisible by "
                f"the number of processes ({ctx.world_size})"
            )
        local = cfg.batch_size // ctx.world_size
        self.rows = slice(ctx.rank * local, (ctx.rank + 1) * local)  # this rank's share
        try:
            self.train_size = len(train)  # type: ignore[arg-type]
        except TypeError:
            raise ConfigError("the training split must be a map-style dataset") from None
        self.per_epoch = order.batches_per_epoch(self.train_size, cfg.batch_size)
        if self.per_epoch == 0:
            raise InputError(
                f"the training split has {self.train_size} sequences, fewer than one batch "
                f"(train.batch_size = {cfg.batch_size})"
            )

    def loader(self, epoch: int, position: int) -> DataLoader:
        """This rank's batches of `epoch`, from global batch `position` on."""
        if hasattr(self.train, "set_epoch"):
            self.train.set_epoch(epoch)
        batches = order.epoch_batches(
            self.train_size,
            self.global_batch,
            self.seed,
            epoch,
            self.ctx.rank,
            self.ctx.world_size,
        )[position:]
        return DataLoader(
            self.train,
            batch_sampler=batches,
            num_workers=self.num_workers,
            pin_memory=self.device.type == "cuda",
            generator=seeding.generator(self.seed, seeding.WORKERS, epoch),
        )

    def to_device(
        self, batch: dict[str, Any]
    ) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None]:
        """(inputs, targets, coverage or None, guide or None) as float32 on the run's device."""

        def move(t: Tensor | None) -> Tensor | None:
            return None if t is None else t.to(self.device, torch.float32, non_blocking=True)

        return (
            move(batch["inputs"]),
            move(batch["targets"]),
            move(batch.get("coverage")),
            move(batch.get("guide")),
        )  # type: ignore[return-value]
