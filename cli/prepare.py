"""`stforecast prepare`: frames on disk -> a prepared store for training."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from stforecast.cli.errors import engine_errors, fail
from stforecast.cli.signals import checked, deferred


def prepare(
    sources: Annotated[
        list[str], typer.Argument(help="A recipe (.toml), or files, directories and globs.")
    ],
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Store directory to write.")
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="Override a recipe field: dotted.key=value (repeatable)."),
    ] = None,
    variable: Annotated[
        list[str] | None, typer.Option(help="Variable to read; repeat for channels.")
    ] = None,
    time_pattern: Annotated[
        str | None, typer.Option(help="strftime pattern of the time in file names.")
    ] = None,
    time_step: Annotated[int | None, typer.Option(help="Expected time step in seconds.")] = None,
    units: Annotated[str | None, typer.Option(help="Convert to these units, e.g. mm/h.")] = None,
    input_frames: Annotated[int | None, typer.Option(help="Frames in (T_in).")] = None,
    output_frames: Annotated[int | None, typer.Option(help="Frames out (T_out).")] = None,
    stride: Annotated[int | None, typer.Option(help="Frames between window starts.")] = None,
    coarsen: Annotated[int | None, typer.Option(help="NaN-aware block mean factor.")] = None,
    transform: Annotated[
        str | None, typer.Option(help="log1p, dbr, minmax, zscore or none.")
    ] = None,
    fill_value: Annotated[
        float | None, typer.Option(help="Physical value written where data is missing.")
    ] = None,
    recursive: Annotated[
        bool, typer.Option(help="Also read subdirectories (archives in YYYY/MM/DD folders).")
    ] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing store.")] = False,
    quiet: Annotated[bool, typer.Option(help="No progress bar.")] = False,
    log_json: Annotated[
        bool,
        typer.Option(
            "--log-json", help="Progress, the summary and any error as JSON lines on stdout."
        ),
    ] = False,
) -> None:
    """Read frames, check times, convert, crop/coarsen, split, normalise and write a store.

    Examples: stforecast prepare recipes/radar_nowcast.toml --out prepared/bom ·
    stforecast prepare 'radar/*.nc' --out prepared/radar --input-frames 6 --output-frames 6
    """
    from stforecast.cli.logjson import emitter
    from stforecast.cli.logjson import progress as json_progress

    emit = emitter(log_json, "prepare")
    with deferred():  # a signal acts after the imports (C extensions' callbacks abort on one)
        from stforecast.config import apply_overrides, data_config, recipe_table
        from stforecast.data.prepare import prepare as run

    flags = {
        "variable": (variable[0] if len(variable) == 1 else variable) if variable else None,
        "time_pattern": time_pattern,
        "time_step": time_step,
        "units": units,
        "input_frames": input_frames,
        "output_frames": output_frames,
        "stride": stride,
        "coarsen": coarsen,
        "transform": transform,
        "fill_value": fill_value,
        "recursive": recursive or None,
    }
    with engine_errors():
        if len(sources) == 1 and sources[0].endswith(".toml"):
            raw = recipe_table(sources[0], set_ or [])
            cfg = data_config(raw, **flags)
        else:
            raw = apply_overrides({"data": {"sources": sources}}, set_ or [])
            raw["__file__"] = "command line"
            cfg = data_config(raw, **flags)
        target = out or (Path(cfg.store) if cfg.store else None)
        if target is None:
            raise fail("give --out DIR (or data.store in the recipe)")
        if Path(target).exists() and not overwrite:
            raise fail(f"{target} already exists; pass --overwrite to replace it")
        if quiet or log_json:  # the progress callback stops the run after a swallowed signal
            shown = json_progress(emit) if log_json else None
            manifest = run(cfg, target, overwrite=overwrite, progress=checked(shown))
        else:
            manifest = _with_progress(run, cfg, target, overwrite)
    if log_json:
        emit({"stage": "done", "store": str(target), "frames": manifest["time"],
              "windows": manifest["windows"]["counts"]})  # fmt: skip
    _summary(target, manifest, quiet or log_json)


def _with_progress(run, cfg, target, overwrite):
    from rich.progress import TimeRemainingColumn

    from stforecast.cli.progress import bar, stage_reporter

    with bar(TimeRemainingColumn()) as shown:
        return run(cfg, target, overwrite=overwrite, progress=checked(stage_reporter(shown)))


def _summary(target: Path, manifest: dict, quiet: bool) -> None:
    from rich.console import Console

    from stforecast.data.contract import DataContract

    contract = DataContract.from_manifest(manifest)
    t, w = manifest["time"], manifest["windows"]
    counts = ", ".join(f"{k} {v}" for k, v in w["counts"].items())
    console = Console(stderr=False, quiet=quiet)
    console.print(
        f"[bold]{target}[/]: {t['frames']} frames {t['start']} .. {t['end']} every "
        f"{contract.time_step_iso}, grid {contract.grid.shape[0]}x{contract.grid.shape[1]}, "
        f"transform {contract.transform.name}; windows {contract.input_frames}+"
        f"{contract.output_frames}: {counts}"
    )
    for gap in t["gaps"]:
        console.print(
            f"gap: {gap['missing_frames']} frame(s) missing between {gap['after']} and "
            f"{gap['before']}; no window spans it"
        )
    consequence = {
        "validation": "training runs without validation (no best checkpoint, no early stop)",
        "test": "`stforecast evaluate` on this store has nothing to score",
    }
    for split, what in consequence.items():
        if w["counts"].get(split, 0) == 0:  # a warning, even with --quiet: on stderr
            sys.stderr.write(
                f"warning: no {split} windows ({manifest['split']['frames'][split]} frames in "
                f"that split, {contract.input_frames + contract.output_frames} per window): "
                f"{what}\n"
            )
