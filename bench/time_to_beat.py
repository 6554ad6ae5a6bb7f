"""How long a guided run trained before it beat the extrapolation on its validation split.

    python bench/time_to_beat.py runs/loo/without_bom runs/loo/without_knmi runs/loo/without_fmi

A guided model's step-0 validation (the trainer runs it) is the built-in extrapolation itself:
its zero-initialised head adds nothing. This reads the run's `metrics.jsonl` and reports, for
the validation loss and for the score the run selects by (`train.select`, e.g. `csi_1.0`), the
first validation that beats step 0 and the training seconds it took (`elapsed_s` of the nearest
training record at or before it). Runs that are not guided have no such reference.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from stforecast.config import tomllib  # tomli before Python 3.11


def first_beat(run: Path) -> dict:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    recipe = tomllib.loads((run / "recipe.toml").read_text())
    select = recipe.get("train", {}).get("select", "loss")
    vals = [r for r in rows if r.get("event") == "validation" and not r.get("final")]
    elapsed = {r["step"]: r["elapsed_s"] for r in rows if r.get("event") == "train"}
    if not vals or vals[0]["step"] != 0:
        return {"run": str(run), "error": "no step-0 validation (not a guided run)"}
    ref = vals[0]

    def seconds(step: int) -> float | None:
        before = [s for s in elapsed if s <= step]
        return elapsed[max(before)] if before else None

    out: dict = {"run": str(run), "select": select, "validations": len(vals)}
    for score, better in (("loss", lambda a, b: a < b), (select, lambda a, b: a > b)):
        if score == "loss" and select == "loss" and "loss" in out:
            continue
        known = [v for v in vals[1:] if v.get(score) is not None and ref.get(score) is not None]
        beat = next((v for v in known if better(v[score], ref[score])), None)
        out[score] = {
            "extrapolation": ref.get(score),
            "first_step": None if beat is None else beat["step"],
            "value": None if beat is None else beat[score],
            "train_seconds": None if beat is None else seconds(beat["step"]),
        }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path)
    args = ap.parse_args()
    print("| run | score | extrapolation (step 0) | first better | at step | training s |")
    print("|---|---|---:|---:|---:|---:|")
    for run in args.runs:
        r = first_beat(run)
        if "error" in r:
            print(f"| {run} | {r['error']} | | | | |")
            continue
        for score in dict.fromkeys(["loss", r["select"]]):
            s = r[score]
            value = "never" if s["value"] is None else f"{s['value']:.4f}"
            step = "—" if s["first_step"] is None else s["first_step"]
            secs = "—" if s["train_seconds"] is None else f"{s['train_seconds']:.0f}"
            ref = f"{s['extrapolation']:.4f}"
            print(f"| {run.name} | {score} | {ref} | {value} | {step} | {secs} |")


if __name__ == "__main__":
    main()
