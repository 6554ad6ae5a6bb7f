"""Forecasting: a run directory and the newest frames -> a forecast dataset or file.

    ds = stforecast.forecast(frames, "runs/radar", hours=2)    # frames: open_frames(...) output

The names load on first use: `forecasting.service`'s client side (`forecast --socket`) must not
pay for torch and xarray.
"""

from typing import Any

__all__ = ["Plan", "forecast", "forecast_to_file", "output_name", "plan"]


def __getattr__(name: str) -> Any:
    import importlib

    if name not in __all__:  # submodules are imported, not looked up here
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module("stforecast.forecasting.core"), name)
