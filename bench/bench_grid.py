"""Forecast cost against the grid's size: one model, the same 24 leads, on 128², 256², 512² and
1024² grids cut from (or mirrored out of) a real radar field; each size in its own process.

    python bench/bench_grid.py --model runs/loo/without_knmi \
        --data ../shared/data/radar-bom-66-20201031 --steps 24

Per size: the seconds of the model's rollout (`forecasting.tiling.predict`, as `forecast` runs
it: whole, or in tiles where `tile_for` says so; the guide replaced by zeros), of the guide
(`motion.guidance` with the model's own method, guided models only), the process's peak resident
memory above what it held before the rollout, and what the guide adds to that peak. The last
columns give each size's cost relative to 512² against the area ratio: linear cost means
1024² ≈ 4 × 512².

    python bench/bench_grid.py --model RUN --data ... --sizes 1024 2048 --steps 6

Past 1024² (`tiling.WHOLE_PIXELS`) a size-free model runs in 1024² tiles, one per call: the
2048² row shows the rollout's memory bounded by the tile, and the overlap's cost.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import numpy as np


def field(data: str, size: int, frames: int) -> np.ndarray:
    """`frames` of the radar archive's newest rain as log1p(mm/h) on a size × size grid: the
    middle of the native grid, or the grid mirrored outwards when it is larger."""
    from stforecast.io import open_frames

    da = open_frames([data]).isel(time=slice(-frames - 30, -30))  # frames while it rains
    x = np.nan_to_num(np.asarray(da.values, np.float32), nan=0.0)
    x = x.reshape(frames, 1, *x.shape[-2:]) * 6.0  # mm per 10 min -> mm/h
    h, w = x.shape[-2:]
    if size > h:
        x = np.pad(x, ((0, 0), (0, 0), (0, size - h), (0, size - w)), mode="symmetric")
    else:
        r, c = (h - size) // 2, (w - size) // 2
        x = x[..., r : r + size, c : c + size]
    return np.log1p(np.clip(x, 0.0, None)).astype(np.float32)


def one(model: str, data: str, size: int, steps: int, threads: int) -> dict:
    """One size in this process: the rollout first, with the guide replaced by zeros of its
    shape (a convolution's cost does not depend on the values), so that the peak memory is the
    rollout's own; then the guide (`motion.guidance` with the model's own method, S-PROG or the
    extrapolation), timed and measured on its own."""
    import torch

    from stforecast import motion
    from stforecast.forecasting.tiling import predict, tile_for
    from stforecast.rundir.load import load_model

    torch.set_num_threads(threads)
    net, card = load_model(model)
    x = field(data, size, int(card["input"]["input_frames"]))
    tile = tile_for(net, (size, size))
    guided = bool(getattr(net, "guided", False))
    real = motion.guidance
    if guided:
        shape = (x.shape[0] - 1 + steps, *x.shape[1:])
        motion.guidance = lambda *a, **k: np.zeros(shape, np.float32)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    for _ in predict(net, x, steps, tile=tile):
        pass
    model_s = time.perf_counter() - t0
    rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    motion.guidance = real
    guide_s, method = 0.0, None
    if guided:
        method = motion.guide_method(net)
        t0 = time.perf_counter()
        real(x, steps, method)
        guide_s = time.perf_counter() - t0
    rss2 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "size": size,
        "tile": None if tile is None else list(tile),
        "guide": method,
        "guide_s": guide_s,
        "model_s": model_s,
        "peak_rss_mb": rss2 / 1024,
        "rollout_rss_mb": max(rss1 - rss0, 0) / 1024,
        "guide_rss_above_mb": max(rss2 - rss1, 0) / 1024,  # what the guide adds to the peak
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--sizes", type=int, nargs="+", default=[128, 256, 512, 1024])
    ap.add_argument("--steps", type=int, default=24)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(one(args.model, args.data, args.one, args.steps, args.threads)))
        return
    rows = []
    for size in args.sizes:
        cmd = [sys.executable, __file__, "--model", args.model, "--data", args.data, "--steps",
               str(args.steps), "--threads", str(args.threads), "--one", str(size)]  # fmt: skip
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), flush=True)
    ref = next((r for r in rows if r["size"] == 512), rows[0])
    print("| grid | tile | model s | guide | guide s | guide / model | peak RSS MB "
          "| rollout RSS MB | guide adds MB | model s / 512² | area / 512² |")  # fmt: skip
    print("|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        tile = "whole" if r["tile"] is None else f"{r['tile'][0]}²"
        print(
            f"| {r['size']}² | {tile} | {r['model_s']:.2f} | {r['guide'] or '-'} "
            f"| {r['guide_s']:.2f} | {r['guide_s'] / max(r['model_s'], 1e-9):.0%} "
            f"| {r['peak_rss_mb']:.0f} | {r['rollout_rss_mb']:.0f} "
            f"| {r['guide_rss_above_mb']:.0f} | {r['model_s'] / ref['model_s']:.2f} "
            f"| {(r['size'] / ref['size']) ** 2:.2f} |"
        )


if __name__ == "__main__":
    main()
