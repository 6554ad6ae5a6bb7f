"""Training throughput (sequences/s) and peak memory through the real trainer.

    python bench/bench_train.py                       # quickstart and the paper configuration
    python bench/bench_train.py --steps 20 --set train.precision=bf16 --set train.device=cuda

Each case runs `stforecast.training.train` for a fixed number of steps (validation and
checkpoints pushed past the end) in its own process, after one untimed warm-up step; peak memory is
that process's maximum resident set size (and the GPU's peak allocation on CUDA).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("STFORECAST_SHARED_DATA", ROOT.parent / "shared" / "data"))
CASES = {
    "quickstart": ["train.max_time=100000"],
    "moving_mnist": [f"data.moving_mnist={DATA / 'mnist' / 't10k-images-idx3-ubyte.gz'}"],
}


def run_one(case: str, steps: int, overrides: list[str]) -> dict:
    import torch

    from stforecast.config import load_recipe as recipe
    from stforecast.training import train
    from stforecast.training.datasets import build_datasets

    path = ROOT / "recipes" / f"{case}.toml"
    common = [
        f"train.max_steps={steps + 1}",
        f"train.val_every={10 * steps}",
        f"train.checkpoint_every={10 * steps}",
        "train.tensorboard=false",
        "train.val_batches=1",
        "train.sampling_steps=1000000",
    ]
    with tempfile.TemporaryDirectory() as tmp:
        extra = list(CASES.get(case, []))  # any recipe under recipes/, e.g. loo/without_knmi
        if case == "quickstart":
            from stforecast.data.synthetic import write_rain_cells

            extra.append(f'data.sources=["{write_rain_cells(Path(tmp) / "rain.nc")}"]')
        cfg = recipe(path, extra + common + overrides)
        data = build_datasets(cfg, cache_dir=Path(tmp) / "cache")
        t0 = time.perf_counter()
        first: list[float] = []

        def progress(event: dict) -> None:
            if event.get("step") == 1 and not first:
                first.append(time.perf_counter())

        summary = train(cfg, Path(tmp) / "run", data=data, progress=progress)
        end = time.perf_counter()
    start = first[0] if first else t0
    result = {
        "case": case,
        "device": cfg.train.device,
        "precision": cfg.train.precision,
        "batch": cfg.train.batch_size,
        "steps": steps,
        "step_s": (end - start) / steps,
        "sequences_per_s": steps * cfg.train.batch_size / (end - start),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "data_wait_fraction": summary["data_wait_fraction"],
    }
    if torch.cuda.is_available():
        result["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default="quickstart,moving_mnist")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--set", action="append", default=[], dest="overrides")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one, args.steps, args.overrides)))
        return
    print(
        "| case | device | precision | batch | step (s) | sequences/s | peak RSS (MB) "
        "| waiting for data |"
    )
    print("|---|---|---|---:|---:|---:|---:|---:|")
    for case in args.cases.split(","):
        cmd = [sys.executable, __file__, "--one", case, "--steps", str(args.steps)]
        for o in args.overrides:
            cmd += ["--set", o]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(
            f"| {r['case']} | {r['device']} | {r['precision']} | {r['batch']} | {r['step_s']:.2f} "
            f"| {r['sequences_per_s']:.2f} | {r['peak_rss_mb']:.0f} "
            f"| {r['data_wait_fraction']:.1%} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
