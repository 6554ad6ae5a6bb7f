"""`stforecast models`: the registered architectures and their size at one configuration, and
the models shipped with the package (by short name, from their cards)."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from stforecast.cli.errors import engine_errors, fail


def _parse_option(text: str) -> tuple[str, object]:
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise fail(f"--option takes key=value, got {text!r}")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw  # a bare word such as `channel`
    return key.strip(), value


def models(
    names: Annotated[
        list[str] | None, typer.Argument(help="Models to show (default: all registered).")
    ] = None,
    in_channels: Annotated[int, typer.Option(help="Channels per frame.")] = 1,
    frame_size: Annotated[int, typer.Option(help="Frame height and width in pixels.")] = 64,
    patch_size: Annotated[int, typer.Option(help="Space-to-depth patch size.")] = 4,
    hidden: Annotated[int, typer.Option(help="Hidden channels per layer.")] = 64,
    layers: Annotated[int, typer.Option(help="Number of recurrent layers.")] = 4,
    kernel_size: Annotated[int, typer.Option(help="Convolution kernel size.")] = 3,
    option: Annotated[
        list[str] | None,
        typer.Option("--option", "-o", help="Model option key=value (e.g. se_scales=2, ce=true)."),
    ] = None,
) -> None:
    """List the models with their parameter counts (defaults: the papers' Moving MNIST set-up).

    Example: stforecast models cms_lstm predrnn -o ce=true -o se_scales=3
    """
    from rich.console import Console
    from rich.table import Table

    from stforecast import models as registry

    options = dict(_parse_option(o) for o in option or [])
    table = Table(
        title=f"{layers} x {hidden} hidden, kernel {kernel_size}, "
        f"{frame_size}x{frame_size}x{in_channels} frames, patch {patch_size}"
    )
    for column in ("model", "parameters", "architecture", "paper"):
        table.add_column(column, justify="right" if column == "parameters" else "left")
    with engine_errors():
        for name in names or registry.available():
            arch = registry.describe(name)
            net = registry.build(
                name,
                in_channels=in_channels,
                frame_size=frame_size,
                patch_size=patch_size,
                hidden_channels=[hidden] * layers,
                kernel_size=kernel_size,
                **options,
            )
            count = sum(p.numel() for p in net.parameters())
            table.add_row(name, f"{count:,}", arch.description, arch.paper)
    console = Console()
    console.print(table)
    if not names:
        _shipped(console)


def _shipped(console) -> None:
    """The shipped models (`--model NAME`), one row each from its card."""
    from rich.table import Table

    from stforecast import pretrained

    table = Table(title="shipped models (--model NAME; `radar` is the default of forecast)")
    for column in ("name", "architecture", "takes", "grid", "frames", "trained on"):
        table.add_column(column)
    for name in pretrained.names():
        s = pretrained.summary(name)
        guide = f", guided by {s['guidance']}" if s["guidance"] else ""
        blended = ", blended" if s["blended"] else ""
        table.add_row(
            name,
            f"{s['architecture']} ({s['parameters']:,} parameters{guide}{blended})",
            _takes(s),
            f"{s['spacing_m']:g} m, {s['time_step_seconds'] // 60} min",
            f"{s['frames'][0]} in, {s['frames'][1]} out",
            ", ".join(s["trained_on"]),
        )
    console.print(table)


def _takes(s: dict) -> str:
    """What a shipped model forecasts: any variable of its quantities, or its own variable."""
    if s["accepts"]:
        return f"{', '.join(s['accepts'])} (any name); answers in the input's units"
    return f"{s['variable']} in {s['units']}"
