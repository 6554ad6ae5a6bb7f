"""`stforecast train`: a recipe -> a run directory (weights, model card, metrics, checkpoints)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from stforecast.cli.errors import engine_errors, fail


def train(
    recipe: Annotated[Path, typer.Argument(help="Recipe TOML file.")],
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="Override a recipe field: dotted.key=value (repeatable)."),
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Run directory (default: runs/RECIPE).")
    ] = None,
    resume: Annotated[bool, typer.Option(help="Continue from the run's last checkpoint.")] = False,
    device: Annotated[
        str | None, typer.Option(help="auto, cpu, cuda or mps (overrides train.device).")
    ] = None,
    init: Annotated[
        str | None,
        typer.Option(
            help="Start from these weights (fine-tuning): a run directory or a shipped model's "
            "name, e.g. radar (overrides train.init; the recipe's [model] must match)."
        ),
    ] = None,
    dry_run: Annotated[
        bool,
        typer.Option(help="Validate, build the model, print its size and memory; no training."),
    ] = False,
    quiet: Annotated[bool, typer.Option(help="No progress bar.")] = False,
    log_json: Annotated[
        bool,
        typer.Option(
            "--log-json",
            help="Each logged step, validation, the summary and any error as JSON lines on "
            "stdout (instead of the progress bar).",
        ),
    ] = False,
) -> None:
    """Train the recipe's model on its data; resumable, and data-parallel under torchrun.

    Examples: stforecast train recipes/quickstart.toml ·
    stforecast train recipes/moving_mnist.toml --set train.max_steps=2000 --out runs/mm ·
    torchrun --nproc-per-node 4 -m stforecast train recipes/radar_nowcast.toml ·
    stforecast train my_radar.toml --init radar
    """
    from stforecast.cli.logjson import emitter
    from stforecast.config import load_recipe as load

    emit = emitter(log_json and int(os.environ.get("RANK", "0")) == 0, "train")
    overrides = list(set_ or [])
    if device:
        overrides.append(f"train.device={device}")
    if init:
        overrides.append(f"train.init={init}")
    with engine_errors():
        cfg = load(recipe, overrides)
        if dry_run:
            _dry_run(cfg)
            return
        run_dir = out or Path("runs") / recipe.stem
        if run_dir.exists() and any(run_dir.iterdir()) and not resume:
            raise fail(f"{run_dir} already holds a run; pass --resume or another --out")
        if resume and not (run_dir / "checkpoints").exists():
            raise fail(f"{run_dir} has no checkpoints to resume from")
        summary = _train(cfg, run_dir, resume, quiet, emit if log_json else None)
    emit({"stage": "done", "run": str(run_dir), **summary})
    if int(os.environ.get("RANK", "0")) == 0 and not (quiet or log_json):
        _report(run_dir, summary)


def _dry_run(cfg) -> None:
    from rich.console import Console

    from stforecast.models.memory import meta_build, training_bytes
    from stforecast.training.datasets import describe

    shape = describe(cfg)
    m = cfg.model
    net = meta_build(
        m.model_dump() | {"in_channels": shape["in_channels"], "frame_size": shape["frame_size"]}
    )
    count = sum(p.numel() for p in net.parameters())
    mem = training_bytes(net, cfg.train.batch_size, shape["input_frames"], shape["output_frames"])
    total = sum(mem.values()) / 2**20
    h, w = shape["frame_size"]
    Console().print(
        f"recipe OK: {m.name}, {count:,} parameters; frames {shape['in_channels']}x{h}x{w}, "
        f"{shape['input_frames']} in -> {shape['output_frames']} out; batch "
        f"{cfg.train.batch_size}: about {total:,.0f} MiB per training step "
        f"(activations {mem['activations'] / 2**20:,.0f}, weights, gradients and optimizer "
        f"{(mem['weights'] + mem['optimizer_and_grads']) / 2**20:,.0f})"
    )


def _train(cfg, run_dir: Path, resume: bool, quiet: bool, emit) -> dict:
    """Train; SIGINT/SIGTERM in the loop stop it after the step in progress, with a checkpoint
    (a signal mid-step would leave nothing consistent to save; a second one exits at once)."""
    from stforecast.cli import signals
    from stforecast.errors import StoppedError

    with signals.deferred():  # a signal acts after the import (torch's C++ init aborts on one)
        from stforecast.training.datasets import build_datasets
    data = build_datasets(cfg)
    try:
        with signals.deferred():
            return _run(cfg, run_dir, data, resume, quiet, emit)
    except StoppedError as err:
        raise StoppedError(f"{err} (the same command with --resume)") from None


def _run(cfg, run_dir: Path, data, resume: bool, quiet: bool, emit) -> dict:
    from stforecast.cli.signals import cancelled
    from stforecast.training import train as run

    if emit is not None:  # --log-json: the trainer's events as they come
        return run(cfg, run_dir, data=data, resume=resume, stop=cancelled,
                   progress=lambda event: emit({"stage": "training", **event}))  # fmt: skip
    if quiet or int(os.environ.get("RANK", "0")) != 0:  # warnings still reach stderr
        return run(cfg, run_dir, data=data, resume=resume, stop=cancelled, progress=_warnings)
    from rich.progress import TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from stforecast.cli.progress import bar as progress_bar

    columns = (TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn())
    with progress_bar(*columns, transient=False) as bar:
        task = bar.add_task("training", total=cfg.train.max_steps, info="")
        last_val: dict = {}

        def report(event: dict) -> None:
            nonlocal last_val
            if event.get("warning"):
                bar.console.print(f"[yellow]warning:[/] {event['warning']}", highlight=False)
            last_val = event.get("val") or last_val
            info = f"loss {event.get('loss', float('nan')):.4g} lr {event.get('lr', 0):.2g}"
            if event.get("it_s"):
                info += f" {event['it_s']:.2f} it/s"
            if last_val:
                info += f" val {last_val.get('loss', float('nan')):.4g}"
            bar.update(task, completed=event.get("step", 0), info=info)

        return run(cfg, run_dir, data=data, resume=resume, progress=report, stop=cancelled)


def _warnings(event: dict) -> None:
    if event.get("warning"):
        sys.stderr.write(f"warning: {event['warning']}\n")


def _report(run_dir: Path, summary: dict) -> None:
    from rich.console import Console

    Console().print(f"[bold]{run_dir}[/]: " + ", ".join(f"{k} {v}" for k, v in _flat(summary)))


def _flat(summary: dict):
    for key, value in summary.items():
        if isinstance(value, float):
            yield key, f"{value:.4g}"
        elif isinstance(value, (int, str)):
            yield key, value
