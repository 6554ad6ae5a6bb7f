"""A torch Dataset over a prepared store: windows read lazily, one slice per item.

Each item is a dict of float32 tensors: `inputs` `(T_in, C, H, W)`, `targets` `(T_out, C, H, W)`
and `coverage` `(T_in + T_out, 1, H, W)` (1 where the data was valid, for masking the loss),
plus `start` (the window's first frame index). Optional random crops and flips are drawn from a
generator seeded by (seed, epoch, index), so an epoch's augmentation is reproducible and a resumed
run sees exactly what an uninterrupted one would.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import zarr
from torch.utils.data import Dataset

from stforecast.data.contract import DataContract
from stforecast.data.store import read_manifest
from stforecast.data.windows import SPLITS
from stforecast.errors import ConfigError


class WindowDataset(Dataset):
    def __init__(
        self,
        store: str | Path,
        split: str = "train",
        *,
        crop: int | tuple[int, int] | None = None,
        flip: bool = False,
        seed: int = 0,
    ) -> None:
        if split not in SPLITS:
            raise ConfigError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
        self.store = str(store)
        self.manifest = read_manifest(store)
        contract = DataContract.from_manifest(self.manifest)
        self.t_in, self.t_out = contract.input_frames, contract.output_frames
        self.starts = np.asarray(self.manifest["windows"]["starts"][split], dtype=np.int64)
        ny, nx = contract.grid.shape
        if crop is not None:
            crop = (crop, crop) if isinstance(crop, int) else tuple(crop)
            if crop[0] > ny or crop[1] > nx:
                raise ConfigError(f"crop {crop[0]}x{crop[1]} is larger than the grid {ny}x{nx}")
        self.crop = crop
        self.flip = flip
        self.seed = seed
        self.epoch = 0
        self._group = None  # opened lazily in each worker process

    def set_epoch(self, epoch: int) -> None:
        """Draw this epoch's crops and flips (called by the training loop)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.starts)

    def _arrays(self):
        if self._group is None:
            self._group = zarr.open_group(self.store, mode="r")
        return self._group["frames"], self._group["coverage"]

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        frames, coverage = self._arrays()
        s = int(self.starts[index])
        length = self.t_in + self.t_out
        ys, xs = slice(None), slice(None)
        flips: list[int] = []
        if self.crop is not None or self.flip:
            g = torch.Generator().manual_seed(hash((self.seed, self.epoch, index)) & (2**63 - 1))
            ny, nx = frames.shape[-2:]
            if self.crop is not None:
                y0 = int(torch.randint(0, ny - self.crop[0] + 1, (1,), generator=g))
                x0 = int(torch.randint(0, nx - self.crop[1] + 1, (1,), generator=g))
                ys, xs = slice(y0, y0 + self.crop[0]), slice(x0, x0 + self.crop[1])
            if self.flip:
                flips = [d for d in (-2, -1) if torch.rand(1, generator=g) < 0.5]
        x = torch.from_numpy(np.asarray(frames[s : s + length, :, ys, xs], dtype=np.float32))
        m = torch.from_numpy(np.asarray(coverage[s : s + length, ys, xs], dtype=np.float32))
        m = m[:, None]
        if flips:
            x, m = x.flip(flips), m.flip(flips)
        return {
            "inputs": x[: self.t_in],
            "targets": x[self.t_in :],
            "coverage": m,
            "start": torch.tensor(s),
        }
