"""Scoring: the model and every baseline scored on the same cases by the same `Scores`, as the
cases stream past, with the few wettest cases kept for the report's sample panels.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterator
from typing import Any

import numpy as np

from stforecast.config import EvaluateConfig
from stforecast.data import units
from stforecast.errors import InputError
from stforecast.evaluation import baselines as baselines_mod
from stforecast.evaluation.cases import Case, Progress
from stforecast.evaluation.document import METHOD
from stforecast.evaluation.metrics import Scores


class Samples:
    """The `k` wettest cases (largest mean truth), kept for the report's panels."""

    def __init__(self, k: int) -> None:
        self.k, self.heap, self.count = k, [], 0

    def offer(self, case: Case, forecasts: dict[str, np.ndarray]) -> None:
        """Keep `case` if it is among the `k` wettest seen so far."""
        if self.k == 0:
            return
        wet = float(np.nanmean(case.truth)) if np.isfinite(case.truth).any() else -math.inf
        self.count += 1
        item = (wet, -self.count, case, forecasts)
        if len(self.heap) < self.k:
            heapq.heappush(self.heap, item)
        elif wet > self.heap[0][0]:
            heapq.heapreplace(self.heap, item)

    def panels(self, lead_minutes: list[float], units_: str) -> list[dict[str, Any]]:
        """The kept cases as the report's sample panels, in title order."""
        out = []
        for _, _, case, forecasts in sorted(self.heap, key=lambda t: t[2].title):
            out.append(
                {
                    "title": case.title,
                    "inputs": case.inputs,
                    "truth": case.truth,
                    "forecasts": forecasts,
                    "lead_minutes": lead_minutes,
                    "units": units_,
                }
            )
        return out


def clip_range(opts: EvaluateConfig, units_: str, mnist: bool) -> tuple[float | None, float | None]:
    """What forecasts are clipped to before scoring: `[evaluate] clip`, else [0, 1] for Moving
    MNIST, [0, inf) for rain (a rate or an accumulation), nothing otherwise."""
    if opts.clip is not None:
        return tuple(opts.clip)  # type: ignore[return-value]
    if mnist:
        return (0.0, 1.0)
    if units.quantity(units_) in ("rate", "accumulation"):
        return (0.0, None)
    return (None, None)


def score(
    cases: Iterator[Case],
    total: int,
    *,
    leads: int,
    data_range: float,
    opts: EvaluateConfig,
    clip: tuple[float | None, float | None],
    mnist: bool = False,
    progress: Progress | None = None,
) -> tuple[dict[str, Scores], Samples, int]:
    """Score the model and each baseline on every case, streaming."""
    report = progress or (lambda stage, done, total: None)
    methods = [METHOD, *opts.baselines]
    for name in opts.baselines:
        baselines_mod.get(name)  # unknown names fail before any work
    thresholds = opts.thresholds if not mnist else [0.5]
    scores = {
        m: Scores(
            leads,
            data_range=data_range,
            thresholds=tuple(thresholds),
            scales=tuple(opts.scales),
            clip=clip,
            ssim_uint8=mnist,
        )
        for m in methods
    }
    samples = Samples(opts.samples)
    done = 0
    for case in cases:
        forecasts = {METHOD: case.model}
        for name in opts.baselines:
            forecasts[name] = baselines_mod.get(name)(case.inputs, leads)
        for m in methods:
            scores[m].update(forecasts[m], case.truth)
        samples.offer(case, forecasts)
        done += 1
        report("scoring", done, total)
    if done == 0:
        raise InputError("no case could be scored (see the skipped reference times)")
    return scores, samples, done
