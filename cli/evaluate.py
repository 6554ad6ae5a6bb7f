"""`stforecast evaluate`: score a run against persistence and extrapolation; metrics.json and
a report."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

import typer

from stforecast.cli.errors import engine_errors, fail
from stforecast.cli.signals import checked, deferred, sweep_own

SHOWN = ("mse", "mse_pixel", "mae", "rmse", "ssim", "psnr", "csi_0.1", "csi_1.0", "csi_5.0",
         "fss_1.0_4")  # fmt: skip
LABELS = {"mse": "mse (sum per frame)", "mae": "mae (sum per frame)", "mse_pixel": "mse per pixel"}


def parse_duration(text: str) -> int:
    """Seconds from `600`, `10min`, `1h`, `90s` or ISO 8601 `PT10M`."""
    t = text.strip()
    iso = re.fullmatch(r"P(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+)S)?)?", t.upper())
    if iso and any(iso.groups()):
        d, h, m, s = (int(g or 0) for g in iso.groups())
        return ((d * 24 + h) * 60 + m) * 60 + s
    plain = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(s|sec|min|m|h)?", t.lower())
    if not plain:
        raise ValueError(f"--every {text!r}: give a duration like 10min, 1h, 600 or PT10M")
    factor = {"s": 1, "sec": 1, None: 1, "min": 60, "m": 60, "h": 3600}[plain.group(2)]
    return round(float(plain.group(1)) * factor)


def evaluate(
    data: Annotated[
        list[str] | None,
        typer.Argument(
            help="A recipe (.toml: its test split) or archive files/directories/globs "
            "(hindcast). Default: the run's own recipe."
        ),
    ] = None,
    model: Annotated[
        Path | None,
        typer.Option("--model", "-m", envvar="STFORECAST_MODEL", help="Run directory."),
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="Override a recipe field: dotted.key=value (repeatable)."),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Output directory (default: RUN/evaluation)."),
    ] = None,
    baselines: Annotated[
        str | None,
        typer.Option(help="Comma-separated baselines (default: persistence,extrapolation)."),
    ] = None,
    start: Annotated[
        str | None, typer.Option(help="Hindcast: first reference time (ISO 8601, UTC).")
    ] = None,
    end: Annotated[
        str | None, typer.Option(help="Hindcast: last reference time (ISO 8601, UTC).")
    ] = None,
    every: Annotated[
        str | None, typer.Option(help="Hindcast: time between reference times (10min, 1h).")
    ] = None,
    steps: Annotated[
        int | None, typer.Option(help="Hindcast: lead times (default: the model's).")
    ] = None,
    archive: Annotated[
        list[str] | None,
        typer.Option(
            "--archive",
            help="Hindcast: what the DATA files do not say, as a [[data.archives]] field: "
            "source_units=mm, pixel_size=1000, variable=band_data, crop_pixels=[r0,r1,c0,c1], "
            "crop_bbox=[...] (repeatable; a model of data.spacing).",
        ),
    ] = None,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    weights: Annotated[
        str,
        typer.Option(
            help="selected (the run's weights: the best validation's where the run had a "
            "validation split), best or final."
        ),
    ] = "selected",
    quiet: Annotated[bool, typer.Option(help="No progress bar or table.")] = False,
    log_json: Annotated[
        bool,
        typer.Option(
            "--log-json",
            help="Progress, the summary and any error as JSON lines on stdout (no bar, no table).",
        ),
    ] = False,
) -> None:
    """Score a run and the baselines by the same code: metrics.json, report.html, report.md.

    Example: stforecast evaluate recipes/radar_nowcast.toml --model runs/radar_nowcast

    Hindcast: stforecast evaluate /data/radar/ -m runs/radar --start 2020-10-31T09:00 --every 1h
    """
    from stforecast.cli.logjson import emitter

    emit = emitter(log_json, "evaluate")
    if model is None:
        raise fail("no model: pass --model RUN_DIR or set STFORECAST_MODEL")
    data = list(data or [])
    hindcast = bool(data) and not data[0].endswith(".toml")
    if steps is not None and not hindcast:
        raise fail("--steps applies to a hindcast on archive files (DATA), not to a test split")
    if archive and not hindcast:
        raise fail("--archive applies to a hindcast on archive files (DATA), not to a test split")
    with engine_errors():
        from stforecast.config import load_recipe

        recipe_path = None
        if len(data) == 1 and data[0].endswith(".toml"):
            recipe_path = data.pop()
        overrides = list(set_ or [])
        if baselines is not None:
            names = [b.strip() for b in baselines.split(",") if b.strip()]
            overrides.append("evaluate.baselines=" + repr(names).replace("'", '"'))
        recipe = None
        if recipe_path is not None:
            recipe = load_recipe(recipe_path, overrides)
        elif overrides:
            run_recipe = model / "recipe.toml"
            if not run_recipe.is_file():
                raise fail(f"--set/--baselines need a recipe; {run_recipe} is missing")
            recipe = load_recipe(run_recipe, overrides)
        declared = archive_fields(archive or [])
        seconds = parse_duration(every) if every else None
        out_dir = out or model / "evaluation"
        _sweep(out_dir)
        try:
            doc = _run(model, out_dir, recipe, data, start, end, seconds, steps, device, weights,
                       quiet, declared, emit if log_json else None)  # fmt: skip
        finally:
            sweep_own([out_dir, out_dir / "figures"])  # after a signal
    if log_json:
        methods = {name: m["summary"] for name, m in doc["methods"].items()}
        emit({"stage": "done", "out": str(out_dir), "cases": doc.get("cases"),
              "lead_minutes": doc["lead_minutes"], "summary": methods})  # fmt: skip
    elif not quiet:
        _show(doc, out_dir)


def _sweep(out_dir: Path) -> None:
    """Remove the temporary files that a killed evaluation (SIGKILL, the OOM killer) left in
    the output directories; each file is written atomically, so only those can be stale."""
    from stforecast.io.atomic import remove_stale_temps

    for directory in (out_dir, out_dir / "figures"):
        remove_stale_temps(directory / "metrics.json")


def archive_fields(items: list[str]) -> dict | None:
    """`--archive field=value` items as a dict (values parsed as `--set` values)."""
    from stforecast.config import parse_value

    fields = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise fail(f"--archive takes field=value (a [[data.archives]] field), got {item!r}")
        fields[key.strip()] = parse_value(value)
    return fields or None


def _run(model, out_dir, recipe, data, start, end, every, steps, device, weights, quiet,
         archive=None, emit=None):  # fmt: skip
    with deferred():  # a signal acts after the import (torch's C++ init aborts on one)
        from stforecast.evaluation.evaluate import evaluate as run

    kwargs = dict(
        recipe=recipe, sources=data or None, start=start, end=end, every=every, steps=steps,
        device=device, weights=weights, archive=archive,
    )  # fmt: skip
    if emit is not None:
        from stforecast.cli.logjson import progress as json_progress

        return run(model, out_dir, progress=checked(json_progress(emit)), **kwargs)
    if quiet:  # the progress callback stops the run after a swallowed signal
        return run(model, out_dir, progress=checked(), **kwargs)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        transient=True,
    ) as bar:
        tasks: dict[str, int] = {}

        def progress(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=total)
            bar.update(tasks[stage], completed=done, total=total)

        return run(model, out_dir, progress=checked(progress), **kwargs)


def _show(doc: dict, out_dir: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    from stforecast.evaluation.document import paper_table

    console = Console()
    methods = list(doc["methods"])
    if doc["data"].get("mode") == "Moving MNIST (regenerated)":
        table = Table(title=f"Moving MNIST (regenerated), {doc['cases']} sequences")
        for col in ("Method", "MSE/frame", "MAE/frame", "SSIM"):
            table.add_column(col, justify="left" if col == "Method" else "right")
        for row in paper_table(doc):
            table.add_row(*row)
        console.print(table)
    else:
        table = Table(
            title=f"{doc['cases']} forecasts, mean over leads to {doc['lead_minutes'][-1]} min "
            f"({doc.get('units') or 'data units'})"
        )
        table.add_column("score")
        for m in methods:
            table.add_column(m, justify="right")
        for key in SHOWN:
            values = [doc["methods"][m]["summary"].get(key) for m in methods]
            if all(v is None for v in values):
                continue
            row = ("-" if v is None else f"{v:.4g}" for v in values)
            table.add_row(LABELS.get(key, key), *row)
        console.print(table)
    console.print(f"metrics: {out_dir / 'metrics.json'}")
    console.print(f"report:  {out_dir / 'report.html'}")
