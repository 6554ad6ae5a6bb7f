"""A torch Dataset over a prepared store: windows read lazily, one slice per item.

Each item is a dict of float32 tensors: `inputs` `(T_in, C, H, W)`, `targets` `(T_out, C, H, W)`
and `coverage` `(T_in + T_out, 1, H, W)` (1 where the data was valid, for masking the loss),
plus `start` (the window's first frame index) and `archive` (its archive's index in a store
of several archives, format 3, where each archive is a zarr group; 0 otherwise). Optional random
crops and flips are drawn from a generator seeded by (seed, epoch, index), so an epoch's
augmentation is reproducible and a resumed run sees exactly what an uninterrupted one would.
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
        starts = self.manifest["windows"]["starts"][split]
        self.groups = [a.name for a in contract.archives] if self._grouped() else [None]
        shapes = [a.grid.shape for a in contract.archives] or [contract.grid.shape]
        if self.groups == [None]:
            self.items = np.array([(0, s) for s in starts], dtype=np.int64).reshape(-1, 2)
        else:
            self.items = np.asarray(starts, dtype=np.int64).reshape(-1, 2)
        self.starts = self.items[:, 1]
        if crop is not None:
            crop = (crop, crop) if isinstance(crop, int) else tuple(crop)
            ny, nx = min(s[0] for s in shapes), min(s[1] for s in shapes)
            if crop[0] > ny or crop[1] > nx:
                smallest = "" if len(shapes) == 1 else " of the smallest archive"
                raise ConfigError(
                    f"crop {crop[0]}x{crop[1]} is larger than the grid{smallest} {ny}x{nx}"
                )
        elif len(set(shapes)) > 1:
            names = ", ".join(f"{a.name} {a.grid.shape[0]}x{a.grid.shape[1]}"
                              for a in contract.archives)  # fmt: skip
            raise ConfigError(
                f"the archives have different grid sizes ({names}): set train.crop to train "
                "on crops that fit the smallest"
            )
        self.crop = crop
        self.flip = flip
        self.seed = seed
        self.epoch = 0
        self._group = None  # opened lazily in each worker process

    def _grouped(self) -> bool:
        from stforecast.data.store import ARCHIVES_FORMAT

        return self.manifest.get("format_version") == ARCHIVES_FORMAT

    def set_epoch(self, epoch: int) -> None:
        """Draw this epoch's crops and flips (called by the training loop)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.items)

    def _arrays(self, archive: int = 0):
        if self._group is None:
            self._group = zarr.open_group(self.store, mode="r")
        name = self.groups[archive]
        node = self._group if name is None else self._group[name]
        return node["frames"], node["coverage"]

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        archive, s = (int(v) for v in self.items[index])
        frames, coverage = self._arrays(archive)
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
            "archive": torch.tensor(archive),
        }
