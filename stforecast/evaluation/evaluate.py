"""`evaluate`: score a trained run and the baselines on the same cases, write `metrics.json`
and the report.

The steps live beside this one: `cases` (the test split, a hindcast or Moving MNIST),
`scoring` (every method by the same `Scores`, streaming), `document` (`metrics.json`) and
`report` (HTML, Markdown, figures). Memory is bounded: cases are scored as they come; only a
few sample panels are kept.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from stforecast.config import EvaluateConfig, Recipe
from stforecast.errors import InputError, writing
from stforecast.evaluation.cases import Progress, choose_cases
from stforecast.evaluation.document import lead_times, metrics_document
from stforecast.evaluation.scoring import clip_range, score


def evaluate(
    model: str | Path,
    out_dir: str | Path,
    *,
    recipe: Recipe | None = None,
    sources: list[str] | None = None,
    start: str | None = None,
    end: str | None = None,
    every: int | None = None,
    steps: int | None = None,
    device: str = "auto",
    weights: str = "selected",
    progress: Progress | None = None,
    archive: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Score `model` (a run directory) and the baselines; write `metrics.json`, `report.html`,
    `report.md` (and figures) into `out_dir`. Returns the metrics document. `weights`: the run's
    selected weights (the best validation's, where it had a validation split), `best` or `final`.

    Data: `sources` (raw files) -> hindcast; else `recipe` (or the run's own recipe) -> its
    prepared store's test split (prepared into the cache from its sources if needed), or the
    Moving MNIST test set. `archive`: for a hindcast, what the files do not say, as the
    fields of a `[[data.archives]]` entry (`source_units`, `pixel_size`, `variable`, crop; for a
    model of `data.spacing`), e.g. `{"source_units": "mm", "pixel_size": 1000}` for KNMI.
    """
    from stforecast import pretrained
    from stforecast.rundir.load import run_recipe

    run_dir = pretrained.resolve(model)  # a shipped model's name: its directory
    if not run_dir.is_dir():
        raise InputError(f"{run_dir}: no such run directory (the output of `stforecast train`)")
    recipe = recipe or run_recipe(run_dir)
    opts = recipe.evaluate if recipe is not None else EvaluateConfig()
    run = _scored_run(run_dir, device, weights)
    contract = run.contract
    mnist = contract.variable == "moving_mnist"
    skipped: list[dict[str, str]] = []
    step = contract.time_step_seconds
    source = choose_cases(
        run, recipe, opts, sources=sources, start=start, end=end, every=every, steps=steps,
        skipped=skipped, progress=progress, archive=archive,
    )  # fmt: skip
    data_range = source.data_range
    if opts.data_range is not None:
        data_range = float(opts.data_range)
    clip = clip_range(opts, contract.units, mnist)
    scores, samples, n = score(
        source.cases, source.total, leads=source.leads, data_range=data_range, opts=opts,
        clip=clip, mnist=mnist, progress=progress,
    )  # fmt: skip
    lead_minutes = lead_times(step, source.leads)
    doc = metrics_document(
        run, scores, lead_minutes=lead_minutes, cases=n, data=source.data,
        data_range=data_range, clip=clip, skipped=skipped, base=out_dir,
    )  # fmt: skip
    if not step:
        doc["lead_unit"] = "frame (Moving MNIST has no time step; lead_minutes counts frames)"
    _write(
        Path(out_dir),
        doc,
        samples.panels(lead_minutes, contract.units),
        title=f"stforecast evaluation: {run_dir.name}",
        details=_details(run, doc),
    )
    return doc


def _write(out: Path, doc: dict[str, Any], panels: Any, title: str, details: dict) -> None:
    """`metrics.json` and the report into `out`. A failed write (a read-only or full disk) is a
    `FileSystemError` naming `out`, and removes `out` when this call made it: no half report."""
    from stforecast.evaluation.report import write_report
    from stforecast.io.atomic import atomic_write_bytes

    made = not out.exists()
    try:
        with writing(out, "write the evaluation"):
            out.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(out / "metrics.json", json.dumps(doc, indent=1).encode())
            write_report(out, doc, panels, title=title, details=details)
    except BaseException:
        if made:
            shutil.rmtree(out, ignore_errors=True)
        raise


def _details(run: Any, doc: dict[str, Any]) -> dict[str, str]:
    """The report's details table: what was scored, on what, where."""
    return {
        "model run": str(run.path),
        "architecture": f"{doc['model']['architecture']} ({doc['model']['parameters']:,} "
        "parameters)",
        "data": json.dumps(doc["data"]),
        "cases scored": str(doc["cases"]),
        "skipped": str(len(doc["skipped"])),
        "device": str(run.device),
    }


def _scored_run(run_dir: Path, device: str, weights: str) -> Any:
    """The run as scored, with the weights asked for (the run's selected ones by default); the
    card says which were loaded."""
    from stforecast.devices import resolve_device
    from stforecast.rundir.load import Run, load_model

    torch_device = resolve_device(device)
    net, card = load_model(run_dir, weights=weights, device=torch_device)
    return Run(net, card, run_dir, torch_device)
