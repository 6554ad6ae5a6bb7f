"""How much of a leave-one-out score is the training seed's: one held-out radar, several seeds.

    for s in 0 1 2; do
        python bench/leave_one_out.py --work runs/loo_seed$s --radars fmi --no-long \\
            --set train.seed=$s --baselines persistence,extrapolation,pysteps_extrapolation,sprog
    done
    python bench/seed_spread.py --radar fmi runs/loo_seed0 runs/loo_seed1 runs/loo_seed2

Reads each work directory's `without_RADAR/hindcast_60min/metrics.json` (the same hindcasts,
the same baselines: only the seed differs) and prints, per lead, the model's MSE, CSI and FSS at
1 mm/h and its frequency bias there (forecast events over observed ones, POD / (1 − FAR); 1 is
unbiased, below 1 a forecast that draws the rain area too small) for each seed, their spread,
and the same scores of S-PROG and pysteps' extrapolation. Also the lowest validation loss of each
run, to see whether the training archives' validation could have chosen among the seeds.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from leave_one_out import fss_cells  # the FSS window of about 16 km at the run's spacing

SCORES = (
    ("mse_pixel", "MSE per pixel (mm/h)²"),
    ("csi_1.0", "CSI ≥ 1 mm/h"),
    ("fss_1.0_16km", "FSS ≥ 1 mm/h, 16 km"),
    ("bias_1.0", "frequency bias ≥ 1 mm/h"),
)
BASELINES = ("sprog", "pysteps_extrapolation")


def with_bias(methods: dict, cells: int) -> dict:
    """Each method's scores with the frequency bias at 1 mm/h added (POD / (1 − FAR)), and the
    16-km FSS (`cells` cells) under one name."""
    for scores in methods.values():
        scores["fss_1.0_16km"] = scores[f"fss_1.0_{cells}"]
        pod, far = scores["pod_1.0"], scores["far_1.0"]
        pairs = zip(pod, far, strict=True)
        scores["bias_1.0"] = [p / (1 - f) if f < 1 else float("nan") for p, f in pairs]
    return methods


def best_validation_loss(run: Path) -> float:
    losses = [json.loads(line)["loss"] for line in (run / "metrics.jsonl").open()
              if '"validation"' in line]  # fmt: skip
    return min(losses)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("works", nargs="+", type=Path, help="leave_one_out.py work directories")
    parser.add_argument("--radar", default="fmi", help="the held-out radar")
    args = parser.parse_args()
    runs = [w / f"without_{args.radar}" for w in args.works]
    docs = [json.loads((r / "hindcast_60min" / "metrics.json").read_text()) for r in runs]
    leads = docs[0]["lead_minutes"]
    methods = [with_bias(d["methods"], fss_cells(r)) for d, r in zip(docs, runs, strict=True)]
    head = [f"seed run {i}" for i in range(len(runs))]
    lines = []
    for key, label in SCORES:
        lines += [f"**{label}**", "",
                  "| lead (min) | " + " | ".join(head) + " | spread | S-PROG | pysteps ext. |",
                  "|---:|" + "---:|" * (len(runs) + 3)]  # fmt: skip
        for i, lead in enumerate(leads):
            vals = [m["model"][key][i] for m in methods]
            base = [methods[0][b][key][i] for b in BASELINES]
            cells = [f"{v:.3f}" for v in [*vals, max(vals) - min(vals), *base]]
            lines.append(f"| {lead} | " + " | ".join(cells) + " |")
        lines.append("")
    lines.append("Lowest validation loss (the training archives' validation blocks): "
                 + ", ".join(f"{best_validation_loss(r):.3f}" for r in runs))  # fmt: skip
    lines.append("Runs: " + ", ".join(f"`{r}`" for r in runs))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
