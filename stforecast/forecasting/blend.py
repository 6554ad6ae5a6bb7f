"""The forecast as a blend of the model and the extrapolation nowcast, lead by lead,

    F_k = w_k · M_k + (1 − w_k) · E_k,

with w_k in [0, 1] fitted by least squares on a hindcast (`stforecast blend`, on the validation
split by default) and kept in the model card as `blending`. Within the training horizon the two
forecasts err in different ways (the network smooths what it cannot place, the extrapolation
keeps every cell on its track), so a mix of them beats either on a radar the model never saw;
beyond it, a model rolled out past the lead times it was trained on drifts in ways no loss has
seen, while the extrapolation's skill decays smoothly. Fitted this way the blend is never worse
in MSE than the better of the two on the fitting period (w = 0 and w = 1 are among the
candidates), and on new data it is as good as the period is representative. Leads beyond the
last fitted one keep its weight; a card fitted before leads within the horizon were (its
`first_lead` after 1) keeps the model as trained before `first_lead`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from stforecast.errors import ModelMismatchError
from stforecast.motion import extrapolate


@dataclass(frozen=True)
class Blending:
    """The card's `blending`: `weights[i]` is w at lead `first_lead + i`."""

    first_lead: int
    weights: tuple[float, ...]
    fitted_on: dict[str, Any]

    def weight(self, lead: int) -> float:
        """w at 1-based `lead` (1, the model, before `first_lead`)."""
        if lead < self.first_lead:
            return 1.0
        return self.weights[min(lead - self.first_lead, len(self.weights) - 1)]

    def to_card(self) -> dict[str, Any]:
        return {
            "first_lead": self.first_lead,
            "weights": list(self.weights),
            "score": "mse",
            "fitted_on": self.fitted_on,
        }


def from_card(card: dict[str, Any], where: Any = "model card") -> Blending | None:
    """The card's blending, checked (exit 4 naming the field), or None when it has none."""
    entry = card.get("blending")
    if entry is None:
        return None
    if not isinstance(entry, dict):
        raise ModelMismatchError(f"{where}: field 'blending' is not a table")
    first, weights = entry.get("first_lead"), entry.get("weights")
    if not isinstance(first, int) or isinstance(first, bool) or first < 1:
        raise ModelMismatchError(f"{where}: field 'blending.first_lead' is invalid ({first!r})")
    ok = isinstance(weights, list) and weights
    ok = ok and all(isinstance(w, int | float) and not isinstance(w, bool) for w in weights)
    if not ok or not all(0.0 <= float(w) <= 1.0 for w in weights):
        raise ModelMismatchError(
            f"{where}: field 'blending.weights' must be a list of numbers in [0, 1]"
        )
    fitted = entry.get("fitted_on") if isinstance(entry.get("fitted_on"), dict) else {}
    return Blending(first, tuple(float(w) for w in weights), fitted)


def blend(model: np.ndarray, extrapolation: np.ndarray, w: float) -> np.ndarray:
    """w · model + (1 − w) · extrapolation; where the extrapolation has no value, the model."""
    if w >= 1.0:
        return model
    out = w * model + (1.0 - w) * extrapolation
    return np.where(np.isfinite(extrapolation), out, model).astype(np.float32)


def mixer(blending: Blending | None, values: np.ndarray) -> Callable[..., np.ndarray]:
    """`mix(k, lead, steps)`: lead `k` `(C, H, W)` of a forecast of `steps` leads from the
    physical inputs `values` `(T, C, H, W)`, blended as `blending` says (unchanged without it,
    and before its first lead). The extrapolation is made once, at the first lead that
    needs it."""
    made: list[list[np.ndarray]] = []

    def mix(k: int, lead: np.ndarray, steps: int) -> np.ndarray:
        if blending is None or k < blending.first_lead:
            return lead
        if not made:  # each channel's extrapolation, all leads
            made.append([extrapolate(values[:, c], steps) for c in range(values.shape[1])])
        w = blending.weight(k)
        return np.stack([blend(m, e[k - 1], w) for m, e in zip(lead, made[0], strict=True)])

    return mix


class Fit:
    """Least-squares weights per lead from (model, extrapolation, truth) triples, accumulated
    one forecast at a time: w_k = Σ(M−E)(O−E) / Σ(M−E)², clipped to [0, 1]."""

    def __init__(self, first_lead: int, steps: int) -> None:
        self.first_lead, self.steps = first_lead, steps
        n = steps - first_lead + 1
        self.num, self.den, self.count = np.zeros(n), np.zeros(n), np.zeros(n, dtype=np.int64)
        self.cases = 0

    def add(self, model: np.ndarray, extrapolation: np.ndarray, truth: np.ndarray) -> None:
        """One forecast: `(steps, H, W)` arrays in physical units, NaN where missing."""
        for i, k in enumerate(range(self.first_lead - 1, self.steps)):
            m, e, o = model[k], extrapolation[k], truth[k]
            valid = np.isfinite(m) & np.isfinite(e) & np.isfinite(o)
            d = (m - e)[valid].astype(np.float64)
            self.num[i] += float((d * (o - e)[valid]).sum())
            self.den[i] += float((d * d).sum())
            self.count[i] += int(valid.sum())
        self.cases += 1

    def weights(self) -> tuple[float, ...]:
        """w per lead; a lead where model and extrapolation agree everywhere keeps the model."""
        w = np.where(self.den > 0, self.num / np.where(self.den > 0, self.den, 1.0), 1.0)
        return tuple(float(v) for v in np.clip(w, 0.0, 1.0))
