"""Forecast from Python: open the frames, load a trained run, forecast, draw the result.

    python examples/python_api.py DATA RUN_DIR OUT.png [--hours 1]

DATA is what `stforecast forecast` takes: a file, a directory of per-frame files or a glob, e.g.
`../shared/data/radar-bom-66-20201031` with a run trained by examples/radar_walkthrough.sh. The
figure shows the newest observed frame and three lead times on one colour scale, drawn with
matplotlib's object API (`Figure`, no pyplot: works without a display). For a ready-made quick
look, `stforecast.viz.quicklook.quicklook(ds, "forecast.gif")` (or
`stforecast plot FILE --out X.gif`). The same with xarray objects in memory, in a notebook:
examples/notebook.ipynb (`stforecast.open_frames` and `stforecast.forecast` also take an
`xarray.Dataset` or `DataArray`; see docs/python-api.md).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure

import stforecast
from stforecast.data import units


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", help="frame file, directory of frames, or glob")
    parser.add_argument("run", type=Path, help="run directory (`stforecast train --out`)")
    parser.add_argument("out", type=Path, help="PNG to write")
    parser.add_argument("--hours", type=float, default=1.0, help="lead time (default 1 h)")
    args = parser.parse_args(argv)

    # The model and its card: what the model expects (variable, units, time step, frames in)
    net, card = stforecast.load_model(args.run)
    contract = card["input"]
    step = int(contract["time_step_seconds"])
    size = sum(p.numel() for p in net.parameters())
    print(
        f"{card['architecture']['name']} ({size:,} parameters): "
        f"{contract['input_frames']} frames of {contract['variable']} every {step // 60} min in"
    )

    # Frames: a lazy xarray DataArray (time, y, x); only headers are read here
    frames = stforecast.open_frames(
        [args.data],
        variable=contract["variable"],
        time_pattern=contract["processing"].get("time_pattern"),
    )
    print(f"{frames.sizes['time']} frames, newest {frames['time'].values.max()}")

    # The forecast: a CF dataset in physical units (time = valid time, forecast_period, ...)
    ds = stforecast.forecast(frames, args.run, hours=args.hours)
    name = next(n for n in ds.data_vars if n != "crs")
    fc = ds[name]
    print(f"forecast from {ds['forecast_reference_time'].values}: {fc.sizes['time']} leads")

    # The newest observed frame, in the forecast's units (e.g. mm per 10 min -> mm/h)
    newest = frames.sortby("time").isel(time=-1).load()
    observed = units.convert(
        newest.values, frames.attrs.get("units", ""), fc.attrs["units"], step_seconds=step
    )

    # Draw: newest frame + three leads, shared colour scale, missing values grey
    picks = sorted({0, fc.sizes["time"] // 2, fc.sizes["time"] - 1})
    panels = [(f"observed {_hhmm(newest['time'].values)}", observed, newest)]
    for k in picks:
        minutes = int(fc["forecast_period"].values[k] / np.timedelta64(1, "m"))
        panels.append((f"+{minutes} min", fc.isel(time=k).values, fc.isel(time=k)))
    finite = np.concatenate([p[1][np.isfinite(p[1])] for p in panels])
    vmax = max(float(np.percentile(finite, 99.5)) if finite.size else 1.0, 1e-6)

    fig = Figure(figsize=(3.2 * len(panels) + 0.8, 3.6), dpi=100, layout="constrained")
    axes = fig.subplots(1, len(panels))
    cmap = colormaps["viridis"].with_extremes(bad="0.7")
    image = None
    for ax, (title, values, da) in zip(axes, panels, strict=True):
        x, y = da["x"].values, da["y"].values
        dx, dy = x[1] - x[0], y[1] - y[0]
        extent = (x[0] - dx / 2, x[-1] + dx / 2, y[-1] + dy / 2, y[0] - dy / 2)
        image = ax.imshow(values, extent=extent, vmin=0, vmax=vmax, cmap=cmap)
        ax.set_title(title, fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(image, ax=axes, shrink=0.85, label=fc.attrs["units"])
    fig.suptitle(f"{name} forecast by {card['architecture']['name']}")
    fig.savefig(args.out)
    print(args.out)
    return args.out


def _hhmm(t: np.datetime64) -> str:
    return np.datetime_as_string(t, unit="m").replace("T", " ") + " UTC"


if __name__ == "__main__":
    main()
