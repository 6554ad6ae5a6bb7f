"""Forecasts on grids larger than the model's frame: overlapping tiles, blended without seams.

A model trained on 64 x 64 crops forecasts a 512 x 512 radar composite tile by tile: tiles
overlap by a fraction of their size, run in batches (each with its own recurrent state), and are
blended per lead time with weights that fall smoothly across the shared bands. `predict` is the
one rollout of a network on normalised frames, tiled or whole, for the forecast and for
evaluation alike.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np

from stforecast.errors import ModelMismatchError

__all__ = ["WHOLE_PIXELS", "grid_multiple", "predict", "tile_for", "tile_starts", "tile_weights"]

# A size-free model runs on grids up to this many pixels whole and on larger ones in tiles of
# this side, at most this many pixels per model call: the rollout's memory is bounded by the
# tile, not the domain (a 2 x 32 CMS-LSTM: 0.9 GB at 1024 x 1024), and up to 1024 x 1024 the cost
# stays the whole grid's (no overlap).
WHOLE_SIDE = 1024
WHOLE_PIXELS = WHOLE_SIDE * WHOLE_SIDE


def tile_starts(size: int, tile: int, overlap: float) -> list[int]:
    """Tile origins along one axis: first and last flush with the edges, evenly spaced, with
    at least `overlap` (a fraction of the tile) shared by neighbours."""
    if size <= tile:
        return [0]
    stride = max(1, int(tile * (1 - overlap)))
    n = math.ceil((size - tile) / stride) + 1
    return sorted({round(i * (size - tile) / (n - 1)) for i in range(n)})


def _ramp(n: int, left: int, right: int) -> np.ndarray:
    """1-D blending weight over a tile of `n` pixels with `left`/`right` pixels shared with a
    neighbour. Across a shared band the weight falls from 1 to nearly 0 as a raised cosine over
    its middle half; the outer quarter next to the tile's own edge, where zero padding and the
    recurrent receptive field spoil the forecast, gets almost no weight (never exactly 0)."""
    w = np.ones(n, dtype=np.float64)
    for width, sl in ((left, slice(None)), (right, slice(None, None, -1))):
        if width > 0:
            margin = width // 4
            span = max(width - 2 * margin, 1)
            t = np.clip((np.arange(width) + 0.5 - margin) / span, 0.0, 1.0)
            ramp = np.maximum(0.5 - 0.5 * np.cos(np.pi * t), 1e-3)
            w[sl][:width] = np.minimum(w[sl][:width], ramp)
    return w


def tile_weights(shape: tuple[int, int], tile: tuple[int, int], rows: list[int], cols: list[int]):
    """Per tile `(r0, c0, weight)`: ramps only where a neighbour overlaps."""
    out = []
    for i, r0 in enumerate(rows):
        top = rows[i - 1] + tile[0] - r0 if i > 0 else 0
        bottom = r0 + tile[0] - rows[i + 1] if i + 1 < len(rows) else 0
        wy = _ramp(tile[0], max(top, 0), max(bottom, 0))
        for j, c0 in enumerate(cols):
            left = cols[j - 1] + tile[1] - c0 if j > 0 else 0
            right = c0 + tile[1] - cols[j + 1] if j + 1 < len(cols) else 0
            wx = _ramp(tile[1], max(left, 0), max(right, 0))
            out.append((r0, c0, np.outer(wy, wx).astype(np.float32)))
    return out


def predict(
    net: Any,
    x: np.ndarray,
    steps: int,
    *,
    tile: tuple[int, int] | None = None,
    overlap: float = 0.5,
    batch: int = 16,
    device: Any = "cpu",
) -> Iterator[np.ndarray]:
    """Normalised frames `(T, C, H, W)` -> normalised leads `(C, H, W)`, one at a time.

    `tile=None` runs the whole grid at once (padded by reflection to what the model's patching
    and attention windows divide); otherwise overlapping tiles of that size run `batch` at a
    time, each with its own recurrent state, and are blended per lead time; when they take more
    than one call, each call runs through all the leads before the next starts (the state of one
    call alive at a time) and the leads come once all are done. `net` is a PyTorch
    `SequenceModel` on `device`, or a network with numpy in and out (`numpy_io`, the ONNX
    file's `rundir.onnx_model.OnnxNet`), which never imports torch.
    """
    if getattr(net, "numpy_io", False):
        yield from _predict(net.stream, net, x, steps, tile, overlap, batch)
        return
    import torch

    # Inference mode around each lead's computation, not across the yields: a caller that
    # abandons the generator (a cancelled job) must not leave its thread with autograd off.
    leads = _predict(_torch_stream(net, device), net, x, steps, tile, overlap, batch)
    while True:
        with torch.inference_mode():
            lead = next(leads, None)
        if lead is None:
            return
        yield lead


def _torch_stream(net: Any, device: Any):
    """`net.stream` with numpy in and out: the seam between the tiling and a PyTorch model."""
    import torch

    def stream(frames: np.ndarray, steps: int, guide: np.ndarray | None = None):
        def on(a: np.ndarray):
            return torch.from_numpy(np.ascontiguousarray(a)).to(device)

        for lead in net.stream(on(frames), steps, guide=None if guide is None else on(guide)):
            yield lead.float().cpu().numpy()

    return stream


def _predict(stream, net, x, steps, tile, overlap, batch) -> Iterator[np.ndarray]:
    """The rollout of `stream(frames (B, T, C, H, W), steps, guide)`, numpy leads `(B, C, H, W)`,
    on the whole grid or in tiles."""
    _T, C, H, W = x.shape
    frames = np.ascontiguousarray(x, dtype=np.float32)
    # A guided model's guide is the extrapolation of the whole domain, cut like the frames.
    guide = None
    if getattr(net, "guided", False):
        from stforecast.motion import guidance, guide_method

        guide = guidance(x, steps, guide_method(net))
    if tile is None:
        m = grid_multiple(net)
        ph, pw = (-H) % m, (-W) % m
        if ph or pw:  # torch's `reflect` and `replicate` padding, in numpy
            mode = "reflect" if ph < H and pw < W else "edge"
            pad = ((0, 0), (0, 0), (0, ph), (0, pw))
            frames = np.pad(frames, pad, mode=mode)
            if guide is not None:
                guide = np.pad(guide, pad, mode=mode)
        whole = None if guide is None else guide[None]
        for lead in stream(frames[None], steps, whole):
            yield np.ascontiguousarray(lead[0, :, :H, :W])
        return
    batch = min(batch, max(1, WHOLE_PIXELS // (tile[0] * tile[1])))  # bounded memory per call
    rows = tile_starts(H, tile[0], overlap)
    cols = tile_starts(W, tile[1], overlap)
    boxes = tile_weights((H, W), tile, rows, cols)
    chunks = [range(i, min(i + batch, len(boxes))) for i in range(0, len(boxes), batch)]

    def crops(a: np.ndarray, chunk: range) -> np.ndarray:
        return np.stack([a[:, :, r : r + tile[0], c : c + tile[1]] for r, c, _ in
                         (boxes[i] for i in chunk)])  # fmt: skip

    def rollout(chunk: range) -> Iterator[np.ndarray]:
        return stream(crops(frames, chunk), steps, None if guide is None else crops(guide, chunk))

    def add(acc: np.ndarray, chunk: range, out: np.ndarray) -> None:
        for k, i in enumerate(chunk):
            r, c, w = boxes[i]
            acc[:, r : r + tile[0], c : c + tile[1]] += out[k] * w

    weight_sum = np.zeros((H, W), np.float32)
    for r, c, w in boxes:
        weight_sum[r : r + tile[0], c : c + tile[1]] += w
    if len(chunks) == 1:  # one call holds every tile: leads stream as they come
        for out in rollout(chunks[0]):
            acc = np.zeros((C, H, W), np.float32)
            add(acc, chunks[0], out)
            yield acc / weight_sum
        return
    # Several calls: each runs through all the leads before the next starts, so one call's
    # recurrent state is alive at a time (memory bounded by the tile), and the blended leads of
    # the domain are kept until the last call is done (the forecast itself: leads x H x W).
    total = np.zeros((steps, C, H, W), np.float32)
    for chunk in chunks:
        for lead, out in zip(total, rollout(chunk), strict=True):
            add(lead, chunk, out)
    for lead in total:
        yield lead / weight_sum


def batch_guide(net: Any, x: np.ndarray, steps: int) -> np.ndarray | None:
    """The guides of a batch `(B, T, C, H, W)` for a guided `net` (None for another)."""
    if not getattr(net, "guided", False):
        return None
    from stforecast.motion import guidance, guide_method

    method = guide_method(net)
    return np.stack([guidance(s, steps, method) for s in np.asarray(x)])


def grid_multiple(net: Any) -> int:
    """What the grid must be a multiple of: the patch size times the attention window."""
    window = (getattr(net, "config", {}).get("options") or {}).get("window") or 1
    return int(net.patch_size) * int(window)


def tile_for(net: Any, shape: tuple[int, int]) -> tuple[int, int] | None:
    """The tile size for a grid of `shape`: None when the model runs on it whole (its own frame,
    or a size-free model on at most `WHOLE_PIXELS`), else the model's frame, or for a size-free
    model on a larger grid a tile of `WHOLE_SIDE` (what the patching and windows divide)."""
    frame = tuple(int(s) for s in net.frame_size)
    if getattr(net, "size_free", False):
        if shape[0] * shape[1] <= WHOLE_PIXELS:
            return None
        m = grid_multiple(net)
        side = [max(m, min(WHOLE_SIDE, n) // m * m) for n in shape]
        return side[0], side[1]
    if tuple(shape) == frame:
        return None
    if shape[0] < frame[0] or shape[1] < frame[1]:
        raise ModelMismatchError(
            f"the grid is {shape[0]}x{shape[1]}, smaller than the model's {frame[0]}x{frame[1]} "
            "frame (only size-free models, norm='channel' with a window, run on smaller grids)"
        )
    return frame
