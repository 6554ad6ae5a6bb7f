"""Data order: one permutation per epoch, seeded by (seed, epoch), cut into global batches.

The loop never relies on a DataLoader's own shuffling state. Epoch `e` visits the training split
in the order `permutation(n, seed, e)`; global batch `b` is positions `b·G .. (b+1)·G` of it
(`G` = `batch_size`; an incomplete last batch is dropped so every step has the same shape), and
rank `r` of `W` takes the `r`-th slice of `G / W` samples. So the order is the same on every rank,
for any number of ranks, and a run resumed at (epoch, position) sees exactly the batches an
uninterrupted run would.
"""

from __future__ import annotations

import torch

from stforecast.training.seeding import ORDER, generator


def permutation(n: int, seed: int, epoch: int) -> list[int]:
    return torch.randperm(n, generator=generator(seed, ORDER, epoch)).tolist()


def batches_per_epoch(n: int, global_batch: int) -> int:
    return n // global_batch


def epoch_batches(
    n: int, global_batch: int, seed: int, epoch: int, rank: int = 0, world_size: int = 1
) -> list[list[int]]:
    """This rank's index list for every global batch of `epoch`."""
    perm = permutation(n, seed, epoch)
    local = global_batch // world_size
    return [
        perm[b * global_batch + rank * local : b * global_batch + (rank + 1) * local]
        for b in range(batches_per_epoch(n, global_batch))
    ]
