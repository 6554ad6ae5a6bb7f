"""`stforecast export`: a training run -> an ONNX or TorchScript file that runs on its own."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from stforecast.cli.errors import engine_errors, fail

MODEL_ENV = "STFORECAST_MODEL"


def export(
    model: Annotated[
        Path | None,
        typer.Option(
            "--model",
            "-m",
            envvar=MODEL_ENV,
            show_envvar=True,
            help="Run directory of the trained model.",
        ),
    ] = None,
    format_: Annotated[str, typer.Option("--format", "-f", help="onnx or torchscript.")] = "onnx",
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="File to write (replaced atomically).")
    ] = None,
    steps: Annotated[
        int | None,
        typer.Option(min=1, help="Frames to forecast (default: the card's output_frames)."),
    ] = None,
    weights: Annotated[
        str,
        typer.Option(
            help="selected (the run's weights: the best validation's where the run had a "
            "validation split), best or final."
        ),
    ] = "selected",
    verify: Annotated[
        bool,
        typer.Option(help="Run the file at batch sizes 1 and 3 and compare with PyTorch first."),
    ] = True,
) -> None:
    """Export a run to ONNX or TorchScript, model card inside; runs without stforecast.

    The file maps normalised frames to the normalised forecast (docs/export.md).

    Example: stforecast export --model runs/radar --format onnx --out radar.onnx
    """
    if model is None:
        raise fail(f"no model: pass --model RUN or set {MODEL_ENV}")
    if out is None:
        raise fail("no output: pass --out FILE, e.g. --out model.onnx")
    with engine_errors():
        from stforecast.export import export_run

        path = export_run(model, format_, out, weights=weights, steps=steps, verify=verify)
    typer.echo(str(path))
