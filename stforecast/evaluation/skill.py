"""Skill of the model against a baseline, per lead time, by one convention for every score, so
that the report's tables and a Python user's numbers agree.

- lower-is-better scores (MSE, MAE, RMSE, FAR, ...; perfect score 0): the skill score
  `1 - s_model / s_ref`, which is the generic `(s - s_ref) / (s_perfect - s_ref)` with
  `s_perfect = 0`: 1 is perfect, 0 no better than the reference, negative worse;
- higher-is-better scores (CSI, POD, ETS, FSS, SSIM, PSNR): the difference `s_model - s_ref`, in
  the score's own units (dB for PSNR); positive means better than the reference. A difference stays
  defined when the reference is perfect and is comparable across PSNR (unbounded) and the bounded
  scores.

Undefined values (None or NaN in either series, or a zero reference for a ratio) give NaN.

`verdict(metrics, reference)` says it in one sentence: where the model beats the reference
(skill > 0), at which leads and by which score, and where it loses.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from stforecast.errors import ConfigError
from stforecast.evaluation.document import (
    HIGHER_IS_BETTER,
    LOWER_IS_BETTER,
    NO_FIGURE,
    check,
    direction,
    family,
    grid_spacing_km,
    is_series,
    leads_of,
    methods_of,
    series,
    series_keys,
    sort_number,
    split_fss,
    units_of,
    verdict_label,
)


def skill_table(
    metrics: dict, key: str = "mse", reference: str = "persistence"
) -> list[tuple[int, float]]:
    """Skill of "model" against `reference` for score `key`, per lead: `[(lead_minutes, skill)]`.

    Lower-is-better keys (mse, mae, rmse, far, ...): `1 - s_model / s_ref` (1 perfect, 0 as good
    as the reference, negative worse). Higher-is-better keys (csi, pod, ets, fss, ssim, psnr):
    `s_model - s_ref` (positive better). NaN where either value is undefined or a ratio's
    reference is 0. Raises `ConfigError` for a missing method or key or a key of unknown direction.
    """
    sign = direction(key)
    if sign is None:
        raise ConfigError(
            f"skill_table: no skill convention for score {key!r} (known: "
            f"{', '.join(sorted(HIGHER_IS_BETTER | LOWER_IS_BETTER))})"
        )
    check(metrics)
    leads = leads_of(metrics)
    methods = methods_of(metrics)
    for name in ("model", reference):
        if name not in methods:
            raise ConfigError(f"skill_table: metrics have no method {name!r}")
    model = series(metrics, "model", key)
    ref = series(metrics, reference, key)
    for name, values in (("model", model), (reference, ref)):
        if values is None:
            raise ConfigError(f"skill_table: method {name!r} has no score {key!r}")
    assert model is not None and ref is not None
    out: list[tuple[int, float]] = []
    for lead, m, r in zip(leads, model, ref, strict=True):
        if math.isnan(m) or math.isnan(r):
            skill = math.nan
        elif sign > 0:
            skill = float(m - r)
        else:
            skill = math.nan if r == 0 else float(1.0 - m / r)
        out.append((lead, skill))
    return out


def skill_keys(metrics: Mapping[str, Any], reference: str) -> list[str]:
    """The scores worth a skill column against `reference`: per-lead in both methods, of known
    direction, not summary-only, and no per-pixel twin of a per-frame score."""
    methods = methods_of(metrics)
    if "model" not in methods or reference not in methods:
        return []
    n = len(leads_of(metrics))
    both = [
        k
        for k in series_keys(metrics)
        if is_series(methods["model"].get(k), n) and is_series(methods[reference].get(k), n)
    ]
    keep = []
    for key in both:
        if direction(key) is None or family(key) in NO_FIGURE:
            continue
        if key.endswith("_pixel") and key[: -len("_pixel")] in both:
            continue  # same skill as the per-frame sum
        keep.append(key)
    return keep


# ------------------------------------------------------------------------------ the verdict

FSS_KM = 16.0  # the neighbourhood a verdict names for FSS (evaluation.md: "about 16 km")
TIE = 0.005  # a skill closer to 0 than this (a skill score or a difference) is a draw


def _fss_scale(metrics: Mapping[str, Any], keys: list[str], threshold: str) -> str | None:
    """The FSS key at `threshold` whose scale is nearest to 16 km (the largest in pixels
    without a known grid spacing)."""
    scales = [(k, split[1]) for k in keys if (split := split_fss(k)) and split[0] == threshold]
    if not scales:
        return None
    spacing = grid_spacing_km(metrics)

    def distance(item: tuple[str, str]) -> float:
        size = sort_number(item[1])[0]
        return abs(size * spacing - FSS_KM) if spacing else -size

    return min(scales, key=distance)[0]


def verdict_keys(metrics: Mapping[str, Any], reference: str) -> list[str]:
    """The scores a verdict against `reference` speaks of: MSE, MAE, CSI at every threshold,
    FSS at every threshold at the scale nearest 16 km; SSIM too for Moving MNIST."""
    keys = skill_keys(metrics, reference)
    chosen = [k for k in ("mse", "mae") if k in keys]
    if "mse" not in chosen and "mse_pixel" in keys:
        chosen.insert(0, "mse_pixel")
    chosen += [k for k in keys if family(k) == "csi"]
    thresholds = list(dict.fromkeys(split[0] for k in keys if (split := split_fss(k))))
    chosen += [k for t in thresholds if (k := _fss_scale(metrics, keys, t)) is not None]
    if metrics.get("lead_unit") and "ssim" in keys:
        chosen.append("ssim")
    return chosen


def lead_span(indices: list[int], leads: list[Any], unit: str = "min") -> str:
    """Which leads `indices` (positions in `leads`) are, in words: `at every lead`, `from 40
    min`, `at 10–30 min`, `at 10 and 50–60 min`, `at 9 of 24 leads` when more scattered than that
    (`frame` counts frames)."""
    if indices == list(range(len(leads))):
        return "at every lead"
    runs: list[list[int]] = []
    for i in indices:
        if runs and i == runs[-1][-1] + 1:
            runs[-1].append(i)
        else:
            runs.append([i])
    if len(runs) > 2:
        return f"at {len(indices)} of {len(leads)} leads"
    if unit == "frame":
        if len(runs) == 1 and runs[0][-1] == len(leads) - 1:
            return f"from frame {leads[runs[0][0]]}"
        unit, prefix = "", "at frames " if len(indices) > 1 else "at frame "
    else:
        if len(runs) == 1 and runs[0][-1] == len(leads) - 1:
            return f"from {leads[runs[0][0]]} {unit}"
        prefix = "at "
    parts = [
        f"{leads[r[0]]}" if len(r) == 1 else f"{leads[r[0]]}\u2013{leads[r[-1]]}" for r in runs
    ]
    listed = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    return f"{prefix}{listed}{' ' + unit if unit else ''}"


def _groups(per_key: list[tuple[str, list[int]]], leads: list[Any], unit: str) -> str:
    """`on CSI ≥1 mm/h and MAE at every lead, on MSE from 40 min`: scores with the same leads
    together, the widest first."""
    spans: dict[str, list[str]] = {}
    width: dict[str, int] = {}
    for label, indices in per_key:
        text = lead_span(indices, leads, unit)
        spans.setdefault(text, []).append(label)
        width[text] = len(indices)
    ordered = sorted(spans, key=lambda t: -width[t])
    out = []
    for text in ordered:
        labels = spans[text]
        joined = labels[0] if len(labels) == 1 else ", ".join(labels[:-1]) + " and " + labels[-1]
        out.append(f"on {joined} {text}")
    return ", ".join(out)


def verdict(metrics: Mapping[str, Any], reference: str) -> str:
    """One sentence on where the model beats `reference` (skill at least `TIE`, 0.005), at
    which leads, by which score, and where it loses (at most -0.005), from metrics.json's
    lists aligned with `lead_minutes`: "Beats extrapolation on CSI ≥1 mm/h at every lead, on
    MSE from 40 min; loses on FSS ≥1 mm/h at 16 km at 10–30 min." Closer scores are a draw
    and undefined ones count neither way."""
    leads = leads_of(metrics)
    unit = "frame" if metrics.get("lead_unit") else "min"
    units = units_of(metrics)
    wins: list[tuple[str, list[int]]] = []
    losses: list[tuple[str, list[int]]] = []
    for key in verdict_keys(metrics, reference):
        skill = [s for _lead, s in skill_table(dict(metrics), key, reference)]
        label = verdict_label(key, units, grid_spacing_km(metrics))
        better = [i for i, s in enumerate(skill) if not math.isnan(s) and s >= TIE]
        worse = [i for i, s in enumerate(skill) if not math.isnan(s) and s <= -TIE]
        if better:
            wins.append((label, better))
        if worse:
            losses.append((label, worse))
    if not wins and not losses:
        return f"No score of the model and {reference} to compare."
    if not wins:
        return f"Does not beat {reference}: loses {_groups(losses, leads, unit)}."
    text = f"Beats {reference} {_groups(wins, leads, unit)}"
    if losses:
        text += f"; loses {_groups(losses, leads, unit)}"
    return text + "."
