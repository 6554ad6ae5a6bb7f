"""Validation during training: plain rollouts (no scheduled sampling), errors per lead time.

Metrics, on the forecast frames only, in the model's (transformed) units, masked by coverage:

- `mse`, `mae`: per-frame sums of squared / absolute errors over the pixels (and channels) of a
  frame, averaged over sequences: the convention of the Moving MNIST papers' tables.
- `mse_pixel`, `mae_pixel`: the same errors averaged over valid pixels.
- `*_per_lead`: one value per forecast step; the plain names are their means over lead times.
- `loss`: the training loss (same kind and reduction) on every next-frame output; `sum` is
  expressed per global batch of `batch_size` sequences, so it reads like the training loss.
- the score that selects the run's weights, when it is not the loss (`train.select`): CSI at a
  threshold, or FSS at a threshold and a neighbourhood, over all lead times of the first channel,
  as `stforecast.evaluation.metrics` defines them (event: value >= threshold; coverage only;
  FSS fractions of the covered pixels of each n x n window). The transforms are increasing, so an
  event in data units is an event at the transformed threshold: no de-normalisation is needed.

Under data parallelism each rank scores a share of the split and the sums are all-reduced, so
every rank gets the same numbers (and so takes the same early-stopping decision).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from stforecast.training.distributed import Context
from stforecast.training.losses import loss_terms, rollout_targets

Tensor = torch.Tensor


@dataclass(frozen=True)
class Event:
    """A categorical selection score: `name` as metrics.json spells it (`csi_1.0`,
    `fss_1.0_8`), the threshold in the model's (transformed) units, the FSS window (pixels)."""

    name: str
    threshold: float
    scale: int | None = None


EVENT_SUMS = 3  # CSI: hits, misses, false alarms; FSS: sum (Pf - Po)^2, sum Pf^2 + Po^2, unused


def _batches(indices: list[int], size: int) -> list[list[int]]:
    return [indices[i : i + size] for i in range(0, len(indices), size)]


@torch.no_grad()
def validate(
    net: torch.nn.Module,
    dataset: Dataset,
    *,
    batch_size: int,
    output_frames: int,
    loss: str,
    reduction: str,
    device: torch.device,
    ctx: Context | None = None,
    max_batches: int | None = None,
    num_workers: int = 0,
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
    event: Event | None = None,
) -> dict[str, Any] | None:
    """Score `net` on `dataset`; `None` if the split holds no sequence."""
    ctx = ctx or Context()
    n = len(dataset)  # type: ignore[arg-type]
    if max_batches is not None:
        n = min(n, max_batches * batch_size)
    mine = list(range(ctx.rank, n, ctx.world_size))
    local = max(batch_size // ctx.world_size, 1)
    t_out = output_frames
    # l2 sum, l1 sum, weight sum, sequences, then per lead: squared, absolute, weight
    sums = torch.zeros(4 + 3 * t_out + EVENT_SUMS, dtype=torch.float64)
    was_training = net.training
    net.eval()
    try:
        if mine:
            loader = DataLoader(
                dataset,
                batch_sampler=_batches(mine, local),
                num_workers=num_workers,
                pin_memory=device.type == "cuda",
            )
            for batch in loader:
                sums += _batch_sums(net, batch, t_out, device, autocast, event)
    finally:
        net.train(was_training)
    if ctx.distributed:
        comm = sums.to(device) if device.type == "cuda" else sums
        sums = ctx.sum(comm).cpu()
    return _metrics(sums, t_out, loss, reduction, batch_size, event)


def _batch_sums(
    net: torch.nn.Module,
    batch: dict[str, Any],
    t_out: int,
    device: torch.device,
    autocast: Callable[[], contextlib.AbstractContextManager],
    event: Event | None = None,
) -> Tensor:
    """One batch's row of the sums `validate` adds up (float64, on the CPU)."""
    inputs = batch["inputs"].to(device, non_blocking=True)
    targets = batch["targets"].to(device, non_blocking=True)
    coverage = batch.get("coverage")
    if coverage is not None:
        coverage = coverage.to(device, non_blocking=True)
    with autocast():
        guide = batch.get("guide")
        guide = None if guide is None else guide.to(device, non_blocking=True)
        out = net.rollout(inputs, t_out, guide=guide)
    out = out.float()
    ref, weight = rollout_targets(inputs, targets, coverage)
    l2, wsum = loss_terms(out, ref, weight, "l2")
    l1, _ = loss_terms(out, ref, weight, "l1")
    pred = out[:, -t_out:]
    w = torch.ones_like(pred) if coverage is None else coverage[:, -t_out:].float().expand_as(pred)
    err = torch.where(w > 0, pred - targets.float(), torch.zeros_like(pred))
    dims = (0, 2, 3, 4)
    sequences = torch.tensor(float(len(inputs)), device=device)
    row = torch.cat(
        [
            torch.stack([l2, l1, wsum, sequences]),
            (w * err.square()).sum(dims),
            (w * err.abs()).sum(dims),
            w.sum(dims),
            _event_sums(pred[:, :, 0], targets.float()[:, :, 0], w[:, :, 0] > 0, event),
        ]
    )
    return row.detach().to("cpu", torch.float64)


def _event_sums(f: Tensor, o: Tensor, valid: Tensor, event: Event | None) -> Tensor:
    """The event score's sums over frames `(B, T, H, W)` (zeros without an event score)."""
    out = torch.zeros(EVENT_SUMS, device=f.device, dtype=torch.float64)
    if event is None:
        return out
    fe = (f >= event.threshold) & valid
    oe = (o >= event.threshold) & valid
    if event.scale is None:
        hits = (fe & oe).sum()
        out[0], out[1], out[2] = hits, oe.sum() - hits, fe.sum() - hits
        return out
    n = event.scale
    flat = (-1, 1, *f.shape[-2:])

    def window_sum(x: Tensor) -> Tensor:  # n x n sums, placed as scipy's uniform_filter
        y = F.pad(x.reshape(flat).double(), (n // 2, (n - 1) // 2, n // 2, (n - 1) // 2))
        return F.avg_pool2d(y, n, stride=1) * (n * n)

    box = window_sum(valid.float())
    m = valid.reshape(flat)
    pf = torch.where(m, window_sum(fe.float()) / box.clamp_min(1e-12), 0.0).clamp(0, 1)
    po = torch.where(m, window_sum(oe.float()) / box.clamp_min(1e-12), 0.0).clamp(0, 1)
    out[0], out[1] = (pf - po).square().sum(), pf.square().sum() + po.square().sum()
    return out


def _metrics(
    sums: Tensor, t_out: int, loss: str, reduction: str, batch_size: int, event: Event | None
) -> dict[str, Any] | None:
    """The metrics of the summed rows (see the module docstring); None without sequences."""
    l2, l1, wsum, count = (float(v) for v in sums[:4])
    if count == 0:
        return None
    sq, ab, cnt = sums[4 : 4 + 3 * t_out].view(3, t_out)
    extra = {} if event is None else {event.name: _event_score(sums[-EVENT_SUMS:], event)}
    cnt = cnt.clamp_min(1e-12)
    terms = {"l2": l2, "l1": l1, "l1+l2": l1 + l2}[loss]
    value = terms / max(wsum, 1e-12) if reduction == "mean" else terms * batch_size / count
    per_lead = {
        "mse_per_lead": (sq / count).tolist(),
        "mae_per_lead": (ab / count).tolist(),
        "mse_pixel_per_lead": (sq / cnt).tolist(),
        "mae_pixel_per_lead": (ab / cnt).tolist(),
    }
    means = {k.removesuffix("_per_lead"): sum(v) / len(v) for k, v in per_lead.items()}
    return {"loss": value, **means, **per_lead, **extra, "sequences": int(count)}


def _event_score(s: Tensor, event: Event) -> float | None:
    """CSI = hits / (hits + misses + false alarms); FSS = 1 - num / den; None if undefined."""
    a, b, c = (float(v) for v in s)
    if event.scale is None:
        return a / (a + b + c) if a + b + c > 0 else None
    return 1.0 - a / b if b > 0 else None
