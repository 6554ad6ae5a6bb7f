"""The forecast as a blend of the model and the extrapolation nowcast, lead by lead,

    B_k = w_k · M_k + (1 − w_k) · E_k,    F_k = Q_B_k(G_σk ∗ B_k),

with w_k in [0, 1] fitted by least squares on a hindcast (`stforecast blend`, on the validation
split by default), G_σ a Gaussian filter of σ_k cells (none at σ = 0) chosen on the same
hindcast, and Q_B the values of B put back in the filtered field's rank order; the model card
keeps both as `blending`.

Within the training horizon the two forecasts err in different ways (the network smooths what
it cannot place, the extrapolation keeps every cell on its track), so a mix of them beats either
on a radar the model never saw; beyond it, a model rolled out past the lead times it was trained
on drifts in ways no loss has seen, while the extrapolation's skill decays smoothly. Fitted this
way the blend is never worse in MSE than the better of the two on the fitting period (w = 0 and
w = 1 are among the candidates), and on new data it is as good as the period is representative.
Leads beyond the last fitted one keep its weight and filter; a card fitted before leads within
the horizon were (its `first_lead` after 1) keeps the model as trained before `first_lead`.

The filter is the blend's account of predictability: what neither forecast can place at a lead
(the small scales, first) is better placed by its average over where it may be than by a sharp
guess in one place, which costs a miss and a false alarm (S-PROG removes those scales in its
cascade for the same reason). It decides where the rain is, not how much: B's own values, ranked
as the filtered field ranks its pixels, keep the mix's rain area at every threshold and its
peaks (filtered alone, the CSI at 5 mm/h fell to 0 at 50–60 min on two held-out radars, and the
area at 1 mm/h grew by 40 % on the third). Least squares would always filter more, so σ_k is the
one of `SIGMAS` with the best CSI on the hindcast, σ = 0 included, at the lowest of the recipe's
evaluation thresholds: the rain area. Cards without `smoothing` are not filtered.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from stforecast.errors import ModelMismatchError
from stforecast.motion import extrapolate

SIGMAS = (0.0, 1.0, 2.0, 3.0, 4.0, 6.0, 8.0)  # the filter widths tried, in cells


@dataclass(frozen=True)
class Blending:
    """The card's `blending`: `weights[i]` is w at lead `first_lead + i`, `smoothing[i]` its
    σ in cells of the model's grid (empty: none)."""

    first_lead: int
    weights: tuple[float, ...]
    fitted_on: dict[str, Any]
    smoothing: tuple[float, ...] = ()

    def weight(self, lead: int) -> float:
        """w at 1-based `lead` (1, the model, before `first_lead`)."""
        if lead < self.first_lead:
            return 1.0
        return self.weights[min(lead - self.first_lead, len(self.weights) - 1)]

    def sigma(self, lead: int) -> float:
        """σ at 1-based `lead` (0 before `first_lead` and without smoothing)."""
        if lead < self.first_lead or not self.smoothing:
            return 0.0
        return self.smoothing[min(lead - self.first_lead, len(self.smoothing) - 1)]

    def to_card(self) -> dict[str, Any]:
        card = {
            "first_lead": self.first_lead,
            "weights": list(self.weights),
            "score": "mse",
            "fitted_on": self.fitted_on,
        }
        if self.smoothing:
            card["smoothing"] = list(self.smoothing)
            card["smoothing_score"] = "csi"
        return card


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
    sigmas = entry.get("smoothing", [])
    ok = isinstance(sigmas, list) and len(sigmas) in (0, len(weights))
    ok = ok and all(isinstance(s, int | float) and not isinstance(s, bool) for s in sigmas)
    if not ok or not all(0.0 <= float(s) <= 64.0 for s in sigmas):
        raise ModelMismatchError(
            f"{where}: field 'blending.smoothing' must be a list of numbers in [0, 64], one per "
            "weight"
        )
    fitted = entry.get("fitted_on") if isinstance(entry.get("fitted_on"), dict) else {}
    return Blending(
        first, tuple(float(w) for w in weights), fitted, tuple(float(s) for s in sigmas)
    )


def blend(model: np.ndarray, extrapolation: np.ndarray, w: float, sigma: float = 0.0) -> np.ndarray:
    """w · model + (1 − w) · extrapolation (where the extrapolation has no value, the model),
    filtered with σ = `sigma` cells, its values kept (`keep_values`)."""
    out = model
    if w < 1.0:
        mixed = w * model + (1.0 - w) * extrapolation
        out = np.where(np.isfinite(extrapolation), mixed, model).astype(np.float32)
    return keep_values(smooth(out, sigma), out) if sigma > 0 else out


def keep_values(order: np.ndarray, values: np.ndarray) -> np.ndarray:
    """`values`' own values, placed so that they rank as `order` ranks its pixels: the n-th
    smallest pixel of `order` gets the n-th smallest of `values` (both missing alike)."""
    known = np.isfinite(order)
    out = np.full(order.shape, np.nan, np.float32)
    ranked = np.empty(int(known.sum()), np.float32)
    ranked[np.argsort(order[known], kind="stable")] = np.sort(values[known])
    out[known] = ranked
    return out


def smooth(field: np.ndarray, sigma: float) -> np.ndarray:
    """`field` (H, W) filtered by a Gaussian of σ = `sigma` cells over the pixels it has: each
    value is the weighted mean of its known neighbours (normalised convolution), so that the
    edge of the coverage neither darkens nor spreads; missing pixels stay missing."""
    from scipy.ndimage import gaussian_filter

    known = np.isfinite(field)
    total = gaussian_filter(np.where(known, field, 0.0).astype(np.float64), sigma, mode="constant")
    weight = gaussian_filter(known.astype(np.float64), sigma, mode="constant")
    out = np.where(known, total / np.maximum(weight, 1e-12), np.nan)
    return out.astype(np.float32)


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
        w, sigma = blending.weight(k), blending.sigma(k)
        pairs = zip(lead, made[0], strict=True)
        return np.stack([blend(m, e[k - 1], w, sigma) for m, e in pairs])

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


class SmoothingFit:
    """σ per lead from (blend, truth) pairs: the one of `SIGMAS` whose filtered blend (its values
    kept, `keep_values`) has the
    highest CSI at `threshold` over all pairs (hits, misses and false alarms pooled); a tie
    keeps the smaller σ."""

    def __init__(self, leads: int, threshold: float) -> None:
        self.threshold = threshold
        self.table = np.zeros((leads, len(SIGMAS), 3))  # hits, misses, false alarms

    def add(self, blended: np.ndarray, truth: np.ndarray) -> None:
        """One forecast: `(leads, H, W)` blends (unfiltered) and truth, NaN where missing."""
        for k, (f, o) in enumerate(zip(blended, truth, strict=True)):
            for j, sigma in enumerate(SIGMAS):
                g = keep_values(smooth(f, sigma), f) if sigma else f
                valid = np.isfinite(g) & np.isfinite(o)
                fe, oe = (g >= self.threshold) & valid, (o >= self.threshold) & valid
                self.table[k, j] += (np.sum(fe & oe), np.sum(~fe & oe), np.sum(fe & ~oe))

    def sigmas(self) -> tuple[float, ...]:
        events = self.table.sum(axis=-1)
        csi = np.divide(self.table[..., 0], events, out=np.zeros_like(events), where=events > 0)
        return tuple(SIGMAS[int(np.argmax(row))] for row in csi)
