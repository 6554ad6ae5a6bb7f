"""Fit the blend of a run (`stforecast blend`): hindcast a period through the forecast path with
the model alone, and choose for each lead the weight of the model against the extrapolation
nowcast that minimises the squared error (`forecasting.blend`). The weights go into the run's
model card; `forecast`, `serve` and `evaluate` apply them from then on.

The period defaults to the run's validation split, archive by archive where the recipe has
several (each with its own sources and declarations): the weights are then chosen on data the
model was not trained on, and the test split stays unseen.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from stforecast.data.windows import fmt, to_datetime64
from stforecast.errors import ConfigError
from stforecast.evaluation.cases import hindcast_cases
from stforecast.forecasting.blend import Blending, Fit
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
    for part_sources, part_start, part_end, declared in parts:
        cases, count, _ = hindcast_cases(
            run, part_sources, start=part_start, end=part_end, every=every, steps=total,
            archive=declared,
        )  # fmt: skip
        for i, case in enumerate(cases):
            fit.add(case.model, extrapolate(case.inputs, total), case.truth)
            if progress is not None:
                progress(i + 1, count)
    if fit.cases == 0:
        raise ConfigError("no hindcast could be made in the period: nothing to fit on")
    fitted_on = {
        "sources": [Path(s).name for part in parts for s in part[0]],
        "periods": [[part[1], part[2]] for part in parts],
        "forecasts": fit.cases,
        "pixels_per_lead": [int(n) for n in fit.count],
    }
    result = Blending(1, fit.weights(), fitted_on)
    card = read_card(run_dir)
    card["blending"] = result.to_card()
    write_card(run_dir, card)
    return result


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
