"""Fit the long-lead blend of a run (`stforecast blend`): hindcast a period through the forecast
path with the model alone, and choose for each lead beyond the training horizon the weight of
the model against the extrapolation nowcast that minimises the squared error
(`forecasting.blend`). The weights go into the run's model card; `forecast`, `serve` and
`evaluate` apply them from then on.

The period defaults to the run's validation split when its recipe gives it as a time range: the
weights are then chosen on data the model was not trained on and the test split stays unseen.
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


def fit_blending(
    model: str | Path,
    sources: list[str],
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
    """Fit and store the blend of the run `model` on a hindcast of `sources`; returns it."""
    run_dir = Path(model)
    run = load_run(run_dir, device=device)
    run = dataclasses.replace(run, card={k: v for k, v in run.card.items() if k != "blending"})
    first = run.contract.output_frames + 1
    total = lead_steps(run, steps=steps, hours=hours)
    if total < first:
        raise ConfigError(
            f"the model forecasts {first - 1} leads as trained; blending starts after them: "
            f"ask for more (--hours or --steps)"
        )
    start, end = _period(run_dir, start, end)
    cases, count, _ = hindcast_cases(
        run, sources, start=start, end=end, every=every, steps=total, archive=archive
    )
    fit = Fit(first, total)
    for i, case in enumerate(cases):
        fit.add(case.model, extrapolate(case.inputs, total), case.truth)
        if progress is not None:
            progress(i + 1, count)
    if fit.cases == 0:
        raise ConfigError("no hindcast could be made in the period: nothing to fit on")
    fitted_on = {
        "sources": [Path(s).name for s in sources],
        "start": start,
        "end": end,
        "forecasts": fit.cases,
        "pixels_per_lead": [int(n) for n in fit.count],
    }
    result = Blending(first, fit.weights(), fitted_on)
    card = read_card(run_dir)
    card["blending"] = result.to_card()
    write_card(run_dir, card)
    return result


def _period(run_dir: Path, start: str | None, end: str | None) -> tuple[str | None, str | None]:
    """The fitting period: as given, else the recipe's validation time range."""
    if start is not None or end is not None:
        return start, end
    recipe = run_recipe(run_dir)
    validation = recipe.data.split.validation if recipe is not None else None
    if validation is None:
        raise ConfigError(
            "give the fitting period with --start and --end (the run's recipe has no "
            "validation time range to default to)"
        )
    return tuple(fmt(to_datetime64(t)) for t in validation)  # type: ignore[return-value]
