"""Fit the blend of a run (`stforecast blend`): hindcast a period through the forecast path with
the model alone, and choose for each lead the weight of the model against the extrapolation
nowcast that minimises the squared error, then (a second pass over the same hindcast) the
filter width with the best CSI at the recipe's lowest evaluation threshold (`forecasting.blend`).
Both go into the run's model card; `forecast`, `serve` and `evaluate` apply them from then on.

The period defaults to the run's validation split, archive by archive where the recipe has
several (each with its own sources and declarations): the weights are then chosen on data the
model was not trained on, and the test split stays unseen.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from stforecast.config import EvaluateConfig
from stforecast.data.windows import fmt, to_datetime64
from stforecast.errors import ConfigError
from stforecast.evaluation.cases import hindcast_cases
from stforecast.forecasting.blend import Blending, Fit, SmoothingFit, blend
from stforecast.forecasting.plan import lead_steps
from stforecast.motion import extrapolate
from stforecast.rundir.card import read_card, write_card
from stforecast.rundir.load import load_run, run_recipe

# (sources, start, end, what `evaluate --archive` would declare): one stretch to hindcast
Part = tuple[list[str], str | None, str | None, dict[str, Any] | None]


def fit_blending(
    model: str | Path,
    sources: list[str] | None = None,
    *,
    start: str | None = None,
    end: str | None = None,
    steps: int | None = None,
    hours: float | None = None,
    every: int | None = None,
    archive: dict[str, Any] | None = None,
    device: str = "auto",
    progress: Any = None,
) -> Blending:
    """Fit and store the blend of the run `model` on a hindcast of `sources` (default: the
    recipe's validation split of each archive), leads 1 to `steps`/`hours` (default: the
    training horizon); returns it."""
    run_dir = Path(model)
    run = load_run(run_dir, device=device)
    run = dataclasses.replace(run, card={k: v for k, v in run.card.items() if k != "blending"})
    total = lead_steps(run, steps=steps, hours=hours)
    parts = _parts(run_dir, sources, start, end, archive)
    fit = Fit(1, total)
    for case in _hindcast(run, parts, total, every, progress):
        fit.add(case.model, extrapolate(case.inputs, total), case.truth)
    if fit.cases == 0:
        raise ConfigError("no hindcast could be made in the period: nothing to fit on")
    weights = Blending(1, fit.weights(), {})
    event = _event(run_dir)
    sigmas = () if event is None else _sigmas(run, parts, total, every, weights, event, progress)
    fitted_on = {
        "sources": [Path(s).name for part in parts for s in part[0]],
        "periods": [[part[1], part[2]] for part in parts],
        "forecasts": fit.cases,
        "pixels_per_lead": [int(n) for n in fit.count],
        "smoothing_threshold": event,  # the CSI's event, in data units (None: no filter)
    }
    result = Blending(1, weights.weights, fitted_on, sigmas)
    card = read_card(run_dir)
    card["blending"] = result.to_card()
    write_card(run_dir, card)
    return result


def _hindcast(run, parts: list[Part], steps: int, every: int | None, progress: Any):
    """The model alone (`hindcast_cases`) over each part, one case at a time."""
    for part_sources, part_start, part_end, declared in parts:
        cases, count, _ = hindcast_cases(
            run, part_sources, start=part_start, end=part_end, every=every, steps=steps,
            archive=declared,
        )  # fmt: skip
        for i, case in enumerate(cases):
            yield case
            if progress is not None:
                progress(i + 1, count)


def _sigmas(run, parts, steps, every, weights: Blending, event: float, progress) -> tuple:
    """The filter per lead (`forecasting.blend.SmoothingFit`): a second pass over the hindcast,
    which is made again rather than held (a long fit on a large grid would not fit in memory)."""
    fit = SmoothingFit(steps, event)
    for case in _hindcast(run, parts, steps, every, progress):
        pairs = zip(case.model, extrapolate(case.inputs, steps), strict=True)
        fit.add(np.stack([blend(m, e, weights.weight(k)) for k, (m, e) in enumerate(pairs, 1)]),
                case.truth)  # fmt: skip
    return fit.sigmas()


def _event(run_dir: Path) -> float | None:
    """The event the filter is chosen for: the lowest of the recipe's `evaluate.thresholds`
    (None, no filter, where it lists none)."""
    recipe = run_recipe(run_dir)
    thresholds = (recipe.evaluate if recipe is not None else EvaluateConfig()).thresholds
    return float(min(thresholds)) if thresholds else None


def _parts(
    run_dir: Path,
    sources: list[str] | None,
    start: str | None,
    end: str | None,
    archive: dict[str, Any] | None,
) -> list[Part]:
    """What to hindcast: the sources as given (over the period given, else the recipe's
    validation time range), or each archive of the recipe over its validation time range."""
    recipe = run_recipe(run_dir)
    data = recipe.data if recipe is not None else None
    if sources:
        if start is not None or end is not None:
            return [(list(sources), start, end, archive)]
        validation = data.split.validation if data is not None else None
        if validation is None:
            raise ConfigError(
                "give the fitting period with --start and --end (the run's recipe has no "
                "validation time range to default to)"
            )
        return [(list(sources), *_range(validation), archive)]
    if data is None:
        raise ConfigError("give the archive to fit on (the run has no recipe to default to)")
    parts: list[Part] = []
    if data.sources and data.split.validation is not None:
        parts.append((list(data.sources), *_range(data.split.validation), None))
    for entry in data.archives:
        validation = (entry.split or data.split).validation
        if validation is not None:
            declared = entry.model_dump(exclude={"name", "sources", "split"}, exclude_none=True)
            parts.append((list(entry.sources), *_range(validation), declared or None))
    if not parts:
        raise ConfigError(
            "the run's recipe has no validation time range to fit on: give the archive and "
            "--start and --end"
        )
    return parts


def _range(validation: Any) -> tuple[str, str]:
    return fmt(to_datetime64(validation[0])), fmt(to_datetime64(validation[1]))
