"""A split's windows as the step reads them: augmented (training only) and guided.

Rain fields have no preferred orientation and, over an hour, little preferred direction in time,
so a window flipped, rotated by a multiple of 90° or played backwards is another plausible window
(`train.augment`: "flip", "rot90", "reverse"). Each draw is a pure function of (seed, epoch,
index), so a resumed or data-parallel run sees exactly the windows of an uninterrupted one.

A guided model (`[model] options.guidance`) also reads `guide`, the extrapolation of the window's
inputs (`stforecast.motion.guidance`). It is computed on the window as drawn (after a time
reversal: the reversed inputs move the other way) and then flipped and rotated with it:
advection commutes with these symmetries of the grid. Guides are cached by the bytes of their
inputs, so epochs after the first cost no optical flow.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from stforecast.errors import ConfigError
from stforecast.motion import guidance, guide_name

Tensor = torch.Tensor

AUGMENTATIONS = ("flip", "rot90", "reverse")
CACHE_BYTES = 512 * 2**20  # the guides kept in memory per process


class TrainingWindows(Dataset):
    """`base`'s items (`inputs`, `targets`, optional `coverage`), augmented and guided."""

    def __init__(
        self,
        base: Dataset,
        *,
        output_frames: int,
        augment: tuple[str, ...] = (),
        guided: bool | str = False,
        seed: int = 0,
    ) -> None:
        """`guided`: False, or the guide by name (`motion.GUIDES`; True is the extrapolation)."""
        unknown = sorted(set(augment) - set(AUGMENTATIONS))
        if unknown:
            raise ValueError(f"unknown augmentation(s) {', '.join(unknown)}")
        self.base, self.output_frames = base, output_frames
        self.augment, self.guided, self.seed = frozenset(augment), bool(guided), seed
        self.method = guide_name(guided)
        self.epoch = 0
        self._cache: OrderedDict[bytes, np.ndarray] = OrderedDict()
        self._cached_bytes = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if hasattr(self.base, "set_epoch"):
            self.base.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = dict(self.base[index])
        reverse, flips, turns = self.draw(index, tuple(item["inputs"].shape[-2:]))
        if reverse:
            item = reversed_window(item)
        if self.guided:
            item["guide"] = torch.from_numpy(self.guide(item["inputs"]))
        for key in ("inputs", "targets", "coverage", "guide"):
            if key in item:
                item[key] = orient(item[key], flips, turns)
        return item

    def draw(self, index: int, shape: tuple[int, int]) -> tuple[bool, list[int], int]:
        """(time reversal, flipped axes, quarter turns) of item `index` this epoch; quarter
        turns only on square frames (a batch holds one shape), half turns otherwise."""
        if not self.augment:
            return False, [], 0
        state = np.random.SeedSequence((self.seed, 3, self.epoch, index)).generate_state(4)
        u = state / 2.0**32
        reverse = "reverse" in self.augment and u[0] < 0.5
        flips = (
            [d for d, v in ((-2, u[1]), (-1, u[2])) if v < 0.5] if "flip" in self.augment else []
        )
        turns = 0
        if "rot90" in self.augment:
            turns = int(u[3] * 4) if shape[0] == shape[1] else 2 * int(u[3] * 2)
        return reverse, flips, turns

    def guide(self, inputs: Tensor) -> np.ndarray:
        """The guide of `inputs` `(T, C, H, W)`, from the cache when these inputs were seen."""
        x = inputs.numpy()
        key = hashlib.blake2b(x.tobytes(), digest_size=16).digest() + bytes(str(x.shape), "ascii")
        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
            return hit.copy()
        g = guidance(x, self.output_frames, self.method)
        self._cache[key] = g
        self._cached_bytes += g.nbytes
        while self._cached_bytes > CACHE_BYTES and self._cache:
            _, old = self._cache.popitem(last=False)
            self._cached_bytes -= old.nbytes
        return g.copy()


def splits(
    train: Dataset, validation: Dataset | None, cfg: Any, guided: bool | str, output_frames: int
) -> tuple[Dataset, Dataset | None]:
    """The training split augmented as `cfg.augment` says and the validation split as it is
    (None when empty), both guided for a guided model."""
    if guided and cfg.reverse_sequences:
        raise ConfigError(
            "train.reverse_sequences does not combine with guidance (the reversed window needs "
            "its own guide): use train.augment = ['reverse'] instead"
        )
    train = TrainingWindows(
        train, output_frames=output_frames, augment=tuple(cfg.augment), guided=guided,
        seed=cfg.seed,
    )  # fmt: skip
    if validation is None or not len(validation):  # type: ignore[arg-type]
        return train, None
    if guided:
        validation = TrainingWindows(validation, output_frames=output_frames, guided=guided)
    return train, validation


def reversed_window(item: dict[str, Any]) -> dict[str, Any]:
    """The same window played backwards, split again into as many inputs and targets."""
    t_in = item["inputs"].shape[0]
    frames = torch.cat([item["inputs"], item["targets"]]).flip(0)
    out = {**item, "inputs": frames[:t_in], "targets": frames[t_in:]}
    if "coverage" in item:
        out["coverage"] = item["coverage"].flip(0)
    return out


def orient(x: Tensor, flips: list[int], turns: int) -> Tensor:
    """`x` `(..., H, W)` flipped along `flips`, then turned `turns` quarter turns."""
    if flips:
        x = x.flip(flips)
    if turns:
        x = torch.rot90(x, turns, dims=(-2, -1))
    return x.contiguous()
