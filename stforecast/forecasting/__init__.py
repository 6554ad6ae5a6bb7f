"""Forecasting: a run directory and the newest frames -> a forecast dataset or file.

    ds = stforecast.forecast(frames, "runs/radar", hours=2)    # frames: open_frames(...) output

The names load on first use: `forecasting.service`'s client side (`forecast --socket`) must not
pay for torch and xarray.
"""

from typing import Any

__all__ = ["Plan", "forecast", "forecast_to_file", "output_name", "plan"]


def __getattr__(name: str) -> Any:
    from stforecast.forecasting import core

    try:
        return getattr(core, name)
    except AttributeError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
