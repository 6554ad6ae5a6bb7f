"""fp32 against bf16 autocast through the real trainer: the same recipe, the same steps, several
seeds each; prints the validation loss each run ends with, the seconds per step, and the spread.

    python bench/bench_precision.py recipes/radar_nowcast.toml --steps 150 --seeds 0 1 2

The question it answers (docs/benchmarks.md, "bf16 on the CPU"): does bf16 train as well as fp32
(the mean validation loss within the run-to-run spread of fp32) and how much faster is a step.
Each run is its own process, one at a time, so that threads do not fight.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_one(recipe: Path, steps: int, seed: int, precision: str, out: Path) -> dict:
    sets = [
        f"train.max_steps={steps}",
        f"train.val_every={steps}",
        f"train.checkpoint_every={steps}",
        "train.max_time=1000000",
        "train.tensorboard=false",
        f"train.seed={seed}",
        f"train.precision={precision}",
    ]
    cmd = [sys.executable, "-m", "stforecast", "train", str(recipe), "--out", str(out)]
    for s in sets:
        cmd += ["--set", s]
    subprocess.run(cmd, check=True, cwd=recipe.parent, capture_output=True)
    card = json.loads((out / "model.json").read_text())
    final = card["metrics"]["final"]
    return {
        "precision": card["training"]["precision"],
        "seed": seed,
        "val_loss": final["loss"],
        "val_mse_pixel": final["mse_pixel"],
        "train_s": card["training"]["wall_time_s"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("recipe", type=Path)
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--precisions", nargs="+", default=["fp32", "bf16"])
    args = ap.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for precision in args.precisions:
            for seed in args.seeds:
                out = Path(tmp) / f"{precision}-{seed}"
                r = run_one(args.recipe.resolve(), args.steps, seed, precision, out)
                results.append(r)
                print(json.dumps(r), flush=True)
    print("| precision | seeds | validation loss (mean ± sd) | wall s per run (mean) |")
    print("|---|---|---|---:|")
    for precision in args.precisions:
        rs = [r for r in results if r["precision"] == precision]
        losses = [r["val_loss"] for r in rs]
        sd = statistics.stdev(losses) if len(losses) > 1 else 0.0
        secs = statistics.mean(r["train_s"] for r in rs)
        print(
            f"| {precision} | {len(rs)} | {statistics.mean(losses):.4f} ± {sd:.4f} | {secs:.0f} |"
        )


if __name__ == "__main__":
    main()
