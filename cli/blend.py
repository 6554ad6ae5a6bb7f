"""`stforecast blend`: fit the weights of the model against the extrapolation nowcast and the
filter of the mix, lead by lead, on a hindcast, into the run's model card."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from stforecast.cli.errors import engine_errors, fail
from stforecast.cli.evaluate import archive_fields, parse_duration
from stforecast.cli.signals import checked, deferred


def blend(
    data: Annotated[
        list[str] | None,
        typer.Argument(
            help="Archive files, directories or globs (default: each archive of the recipe, "
            "over its validation range)."
        ),
    ] = None,
    model: Annotated[
        Path | None,
        typer.Option("--model", "-m", envvar="STFORECAST_MODEL", help="Run directory."),
    ] = None,
    hours: Annotated[
        float | None,
        typer.Option(help="Longest lead time to fit, in hours (default: the training horizon)."),
    ] = None,
    steps: Annotated[int | None, typer.Option(help="Longest lead time to fit, in steps.")] = None,
    start: Annotated[
        str | None,
        typer.Option(help="First reference time (default: the recipe's validation range)."),
    ] = None,
    end: Annotated[str | None, typer.Option(help="Last reference time (ISO 8601, UTC).")] = None,
    every: Annotated[
        str | None, typer.Option(help="Time between reference times (10min, 1h).")
    ] = None,
    archive: Annotated[
        list[str] | None,
        typer.Option("--archive", help="What the files do not say, as for evaluate --archive."),
    ] = None,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
) -> None:
    """Fit the blend of the model with the extrapolation, lead by lead, on a hindcast, and
    store it in the run's model card: the weights by least squares, then the filter width by
    the CSI at the recipe's lowest evaluation threshold. The period defaults to the recipe's
    validation split.

    Example: stforecast blend -m runs/radar --hours 4
    """
    if model is None:
        raise fail("no model: pass --model RUN_DIR or set STFORECAST_MODEL")
    with engine_errors():
        seconds = parse_duration(every) if every else None
        with deferred():
            from stforecast.evaluation.blending import fit_blending
        result = fit_blending(
            model, data, start=start, end=end, steps=steps, hours=hours, every=seconds,
            archive=archive_fields(archive or []), device=device, progress=checked(),
        )  # fmt: skip
    leads = range(result.first_lead, result.first_lead + len(result.weights))
    shown = ", ".join(f"{k}: {w:.2f}" for k, w in zip(leads, result.weights, strict=True))
    typer.echo(f"{model}: model weight per lead (steps): {shown}")
    sigmas = ", ".join(f"{k}: {s:g}" for k, s in zip(leads, result.smoothing, strict=True))
    typer.echo(f"filter sigma per lead (cells): {sigmas}")
    typer.echo(
        f"fitted on {result.fitted_on['forecasts']} forecasts; written to {model}/model.json"
    )
