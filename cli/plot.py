"""`stforecast plot`: a forecast file -> a quick-look animated GIF or PNG strip."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from stforecast.cli.errors import engine_errors, fail


def plot(
    forecast: Annotated[
        Path, typer.Argument(help="Forecast file written by `stforecast forecast` (.nc or .tif).")
    ],
    out: Annotated[
        Path,
        typer.Option("--out", "-o", help="Image to write: .gif (animated) or .png (a strip)."),
    ],
    variable: Annotated[
        str | None,
        typer.Option(help="Variable to draw (default: the forecast's only one)."),
    ] = None,
    max_leads: Annotated[
        int,
        typer.Option(min=1, help="Draw at most this many leads (evenly spaced, the last kept)."),
    ] = 12,
    observed: Annotated[
        str,
        typer.Option(
            help="The last observation, drawn beside the forecast: 'auto' (the forecast's input "
            "file at its reference time, named in its provenance, when still there), a file, "
            "directory or glob of the inputs, or 'none'.",
        ),
    ] = "auto",
    coastlines: Annotated[
        str | None,
        typer.Option(
            help="Coastlines and borders: a shapefile, GeoJSON file or directory of them, or "
            "'none' (default: $STFORECAST_COASTLINES, else Natural Earth files that cartopy "
            "already has; never downloaded).",
        ),
    ] = None,
) -> None:
    """Draw a forecast file as an animated GIF or a PNG strip of its leads, as maps.

    The last observation comes first; axes in km (projected grids) or degrees (lat-lon), a
    labelled graticule, coastlines where their data is on this machine. Rain gets fixed levels
    from 0.1 to 100 mm/h (white below 0.1: no rain), other quantities viridis; missing is grey;
    the colour bar names the unit. The same colours as the evaluation report's panels.

    Exit codes: 2 bad option (--out must end in .gif or .png), 3 missing or unreadable file
    (the forecast, --observed or --coastlines).

    Example: stforecast plot nowcasts/precipitation_cms_lstm_20201031T1200Z_PT1H.nc --out a.gif
    """
    if out.suffix.lower() not in (".gif", ".png"):
        raise fail(f"--out {out}: must end in .gif (an animation) or .png (a strip of leads)")
    with engine_errors():
        from stforecast.viz.quicklook import open_forecast, quicklook

        ds = open_forecast(forecast)
        source = None if observed.strip().lower() in ("none", "off", "") else observed
        path = quicklook(
            ds, out, variable=variable, max_leads=max_leads, observed=source, coastlines=coastlines
        )
    typer.echo(str(path))
