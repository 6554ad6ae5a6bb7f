"""Other ways to combine the network with the extrapolation, scored on a leave-one-out run
without training anything.

    python bench/leave_one_out.py --work runs/loo ...                 # the runs, first
    python bench/blend_variants.py --work runs/loo --radar fmi        # to 60 min
    python bench/blend_variants.py --work runs/loo --radar knmi --steps 24   # to 4 h

The held-out radar is hindcast once with the network alone (the card's blend removed), through
the forecast path (`evaluation.cases.hindcast_cases`), and at 60 min the run's validation
ranges too: the variants that fit a weight fit it there, as `stforecast blend` does. Each
variant is then scored with `evaluation.metrics.Scores`, the code behind `evaluate`:

- `plain`: the card's least-squares blend (the same scores as `evaluate`'s model row);
- `network`: the model alone;
- `quantiles`: the blend's values replaced rank for rank by the w-weighted mean of the two
  fields' quantiles, so that the mix is not weaker than both where they place a cell apart;
- `matched`: the network's values rank-matched to the last observation's (as S-PROG matches
  its cascade to the observed distribution), then blended with weights fitted on validation;
- `smooth a`: the blend Gaussian-filtered with sigma = a × lead (cells), a stand-in for the
  loss of predictability of the small scales with lead;
- `S-PROG partner`: the network blended with pysteps' S-PROG instead of the built-in
  extrapolation, weights fitted on validation the same way (needs the pysteps extra).

To 4 h (no validation block is that long) the card's 60-min weight is kept, as the forecast
does, and the variants are for the leads beyond it: `quantiles`, `ramp` (w rising linearly to 1
at 4 h), and both. The run's S-PROG and pysteps-extrapolation rows come from its
`hindcast_60min`/`hindcast_240min` metrics (the same reference times).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
from leave_one_out import RADARS, fss_cells
from scipy.ndimage import gaussian_filter

from stforecast.config import parse_value
from stforecast.evaluation.baselines import get as baseline
from stforecast.evaluation.blending import _parts
from stforecast.evaluation.cases import hindcast_cases
from stforecast.evaluation.metrics import Scores
from stforecast.motion import extrapolate
from stforecast.rundir.load import load_run

# a case: (last observed frame, model, extrapolation, truth, S-PROG), (leads, H, W) in mm/h
Case = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]
Variant = Callable[[int, Case], np.ndarray]  # lead index, case -> forecast at that lead
SPROG = baseline("sprog")
SHOWN = (
    ("mse_pixel", "MSE per pixel"),
    ("csi_1.0", "CSI >= 1 mm/h"),
    ("fss", "FSS 1 mm/h 16 km"),
    ("csi_5.0", "CSI >= 5 mm/h"),
    ("bias", "frequency bias >= 1 mm/h"),
)


def hindcast(run, parts, steps: int, every: int | None = None) -> list[Case]:
    """The network alone at every reference time of `parts` (`evaluation.blending._parts`);
    S-PROG too to 60 min (the partner variant)."""
    cases = []
    for sources, start, end, declared in parts:
        made, _, _ = hindcast_cases(
            run, sources, start=start, end=end, steps=steps, archive=declared, every=every
        )
        for c in made:
            sprog = SPROG(c.inputs, steps) if steps <= 6 else None
            cases.append((c.inputs[-1], c.model, extrapolate(c.inputs, steps), c.truth, sprog))
    return cases


def declared(items: list[str]) -> dict | None:
    """leave_one_out's `--archive field=value` items, parsed as `evaluate` parses them."""
    pairs = (item.partition("=") for item in items)
    return {key: parse_value(value) for key, _, value in pairs} or None


def mix(m: np.ndarray, e: np.ndarray, w: float) -> np.ndarray:
    return np.where(np.isfinite(e), w * m + (1.0 - w) * e, m)


def rank_match(x: np.ndarray, target: np.ndarray) -> np.ndarray:
    """`x` with its sorted valid values replaced by `target`'s, sorted, at equal ranks."""
    valid = np.isfinite(x)
    ref = np.sort(target[np.isfinite(target)])
    if not valid.any() or not ref.size:
        return x
    n = int(valid.sum())
    values = np.empty(n)
    values[np.argsort(x[valid], kind="stable")] = np.interp(
        np.linspace(0, ref.size - 1, n), np.arange(ref.size), ref
    )
    out = x.copy()
    out[valid] = values
    return out


def quantile_mix(m: np.ndarray, e: np.ndarray, w: float) -> np.ndarray:
    both = np.isfinite(m) & np.isfinite(e)
    field = mix(m, e, w)
    if both.any():
        target = w * np.sort(m[both]) + (1.0 - w) * np.sort(e[both])
        inner = np.where(both, field, np.nan)
        field = np.where(both, rank_match(inner, target), field)
    return field


def smooth(x: np.ndarray, sigma: float) -> np.ndarray:
    valid = np.isfinite(x)
    num = gaussian_filter(np.where(valid, x, 0.0), sigma, mode="constant")
    den = gaussian_filter(valid.astype(float), sigma, mode="constant")
    return np.where(valid, num / np.maximum(den, 1e-6), np.nan)


def least_squares(cases: list[Case], k: int, partner: int = 2) -> float:
    """The weight `stforecast blend` fits at lead index `k` (forecasting.blend.Fit), against
    the extrapolation (`partner` 2) or S-PROG (4)."""
    num = den = 0.0
    for case in cases:
        m, e, o = case[1], case[partner], case[3]
        ok = np.isfinite(m[k]) & np.isfinite(e[k]) & np.isfinite(o[k])
        d = (m[k] - e[k])[ok]
        num, den = num + float(d @ (o[k] - e[k])[ok]), den + float(d @ d)
    return float(np.clip(num / den, 0.0, 1.0)) if den > 0 else 1.0


def matched(cases: list[Case]) -> list[Case]:
    return [(c[0], np.stack([rank_match(f, c[0]) for f in c[1]]), *c[2:]) for c in cases]


def variants(card_w: list[float], val: list[Case], steps: int, cells: int) -> dict[str, Variant]:
    w = [card_w[min(k, len(card_w) - 1)] for k in range(steps)]
    out: dict[str, Variant] = {
        "plain": lambda k, c: mix(c[1][k], c[2][k], w[k]),
        "network": lambda k, c: c[1][k],
    }
    if steps <= 6:
        out["quantiles"] = lambda k, c: quantile_mix(c[1][k], c[2][k], w[k])
        wm = [least_squares(matched(val), k) for k in range(steps)]
        out["matched"] = lambda k, c: mix(rank_match(c[1][k], c[0]), c[2][k], wm[k])
        ws = [least_squares(val, k, partner=4) for k in range(steps)]
        out["S-PROG partner"] = lambda k, c: mix(c[1][k], c[4][k], ws[k])
        print("S-PROG partner weights", [round(v, 2) for v in ws])
        for a in (0.5, 1.0, 1.5):
            out[f"smooth {a}"] = lambda k, c, a=a: smooth(mix(c[1][k], c[2][k], w[k]), a * (k + 1))
        blend = lambda k, c: mix(c[1][k], c[2][k], w[k])  # noqa: E731
        out["smooth 1.0, area kept"] = lambda k, c: rank_match(
            smooth(blend(k, c), k + 1), blend(k, c)
        )
        kept = lambda k, c, sigma: rank_match(smooth(blend(k, c), sigma), blend(k, c))  # noqa: E731
        sigmas = [
            fit_sigma(val, lambda c, k=k: blend(k, c), k, "csi_1.0", cells, keep=True)
            for k in range(steps)
        ]
        print("sigma fitted on validation csi_1.0, area kept", sigmas)
        out["smooth by val csi_1.0, area kept"] = lambda k, c, s=sigmas: kept(k, c, s[k])
        for score in ("csi_1.0", "fss", "csi_1.0+csi_5.0"):
            sigmas = [
                fit_sigma(val, lambda c, k=k: blend(k, c), k, score, cells) for k in range(steps)
            ]
            print(f"sigma fitted on validation {score}", sigmas)
            out[f"smooth by val {score}"] = lambda k, c, s=sigmas: smooth(blend(k, c), s[k])
        return out
    # beyond 1 h: the 60-min sigma fitted on validation kept, as the 60-min weight is
    blend = lambda k, c: mix(c[1][k], c[2][k], w[k])  # noqa: E731
    sigmas = [fit_sigma(val, lambda c, k=k: blend(k, c), k, "csi_1.0", cells) for k in range(6)]
    print("sigma fitted on validation csi_1.0", sigmas)
    out["smooth by val csi_1.0"] = lambda k, c: smooth(blend(k, c), sigmas[min(k, 5)])
    out["smooth growing"] = lambda k, c: smooth(blend(k, c), sigmas[5] * (k + 1) / 6)
    ramp = [w[k] + (1.0 - w[k]) * max(0, k - 5) / (steps - 6) for k in range(steps)]
    after = lambda k, c, f: mix(c[1][k], c[2][k], w[k]) if k < 6 else f(k, c)  # noqa: E731
    out["quantiles"] = lambda k, c: after(k, c, lambda k, c: quantile_mix(c[1][k], c[2][k], w[k]))
    out["ramp"] = lambda k, c: mix(c[1][k], c[2][k], ramp[k])
    out["ramp+quantiles"] = lambda k, c: after(
        k, c, lambda k, c: quantile_mix(c[1][k], c[2][k], ramp[k])
    )
    return out


SIGMAS = (0.0, 1.0, 2.0, 3.0, 4.0, 6.0, 8.0)


def fit_sigma(
    val: list[Case],
    field: Callable[[Case], np.ndarray],
    k: int,
    key: str,
    cells: int,
    keep: bool = False,
) -> float:
    """The smoothing (cells) of lead index `k` that scores best by `key` on validation (with
    `keep`, the filtered field rank-matched back to the unfiltered one's values)."""
    best, best_sigma = -np.inf, 0.0
    for sigma in SIGMAS:
        scores = Scores(1, data_range=1.0, thresholds=(1.0, 5.0), scales=(cells,), clip=(0.0, None))
        for c in val:
            f = field(c)
            g = smooth(f, sigma) if sigma else f
            g = rank_match(g, f) if keep and sigma else g
            scores.update(g[None], c[3][k : k + 1])
        r = scores.result()
        r["fss"] = r[f"fss_1.0_{cells}"]
        value = sum(r[part][0] for part in key.split("+"))
        if value > best:
            best, best_sigma = value, sigma
    return best_sigma


def score(cases: list[Case], variant: Variant, steps: int, cells: int) -> dict[str, list[float]]:
    scores = Scores(steps, data_range=1.0, thresholds=(1.0, 5.0), scales=(cells,), clip=(0.0, None))
    for case in cases:
        scores.update(np.stack([variant(k, case) for k in range(steps)]), case[3])
    return named(scores.result(), cells)


def named(result: dict, cells: int) -> dict[str, list[float]]:
    """The scores shown, the frequency bias POD / (1 − FAR) among them."""
    pairs = zip(result["pod_1.0"], result["far_1.0"], strict=True)
    bias = [p / (1.0 - f) if f < 1 else float("nan") for p, f in pairs]
    shown = {key: result[key] for key in ("mse_pixel", "csi_1.0", "csi_5.0")}
    return {**shown, "fss": result[f"fss_1.0_{cells}"], "bias": bias}


def main(args: argparse.Namespace) -> None:
    run_dir = args.work / f"without_{args.radar}"
    steps = args.steps
    run = load_run(run_dir, device="cpu")
    card_w = run.card["blending"]["weights"]
    run = dataclasses.replace(run, card={k: v for k, v in run.card.items() if k != "blending"})
    radar = RADARS[args.radar]
    window = dict(zip(radar["window"][::2], radar["window"][1::2], strict=True))
    held_out = [([str(s) for s in radar["sources"]], window.get("--start"), window.get("--end"),
                 declared(radar["archive"]))]  # fmt: skip
    test = hindcast(run, held_out, steps, int(radar["every"][steps].removesuffix("min")) * 60)
    val = hindcast(run, _parts(run_dir, None, None, None, None), 6)
    cells = fss_cells(run_dir)
    rows = {
        name: score(test, v, steps, cells)
        for name, v in variants(card_w, val, steps, cells).items()
    }
    metrics = json.loads((run_dir / f"hindcast_{steps * 10}min" / "metrics.json").read_text())
    for name in ("sprog", "pysteps_extrapolation"):
        rows[name] = named(metrics["methods"][name], cells)
    leads = list(range(steps)) if steps <= 6 else [0, 2, *range(5, steps, 2)]
    print(f"{radar['title']}, {len(test)} reference times; {args.work}")
    for key, label in SHOWN:
        print(f"\n| {label} | " + " | ".join(f"{(k + 1) * 10} min" for k in leads) + " |")
        print("|---|" + "---:|" * len(leads))
        for name, row in rows.items():
            print(f"| {name} | " + " | ".join(f"{row[key][k]:.3f}" for k in leads) + " |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, required=True, help="leave_one_out.py's work dir")
    parser.add_argument("--radar", choices=sorted(RADARS), required=True)
    parser.add_argument("--steps", type=int, choices=(6, 24), default=6)
    main(parser.parse_args())
