"""Forecasting: a run directory and the newest frames -> a forecast dataset or file.

    ds = stforecast.forecast(frames, "runs/radar", hours=2)    # frames: open_frames(...) output

`inputs` chooses and checks the frames, `tiling` runs the model (in tiles on large grids),
`template` lays the forecast out as CF, `plan` puts them together, `job` writes the file (the
`stforecast forecast` command) and `service` keeps it all loaded between cron runs.

The names load on first use: `forecasting.client` (`forecast --socket`) must not
pay for torch and xarray.
"""

from importlib import import_module
from typing import Any

# Public name -> the module of this package that defines it.
_WHERE = {
    "Plan": "plan",
    "card_transform": "plan",
    "forecast": "regrid",
    "lead_steps": "plan",
    "materialise": "plan",
    "plan": "plan",
    "forecast_to_file": "job",
    "output_name": "job",
    "checked_inputs": "inputs",
    "processing_config": "inputs",
    "select_frames": "inputs",
    "grid_multiple": "tiling",
    "predict": "tiling",
    "tile_for": "tiling",
    "tile_starts": "tiling",
    "tile_weights": "tiling",
    "forecast_template": "template",
    "native_grid": "regrid",
    "on_input_grid": "regrid",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f"{__name__}.{module}"), name)
