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
    is_series,
    leads_of,
    methods_of,
    series,
    series_keys,
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
