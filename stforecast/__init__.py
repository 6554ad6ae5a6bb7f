"""stforecast: recurrent spatiotemporal forecasting of geoscience frame stacks.

The package root stays light (no torch import) so that `stforecast --help` is instant;
the engine lives in subpackages such as `stforecast.models`.
"""

from typing import Any

from stforecast._version import __version__

__all__ = ["__version__", "forecast", "load_model", "open_frames"]


def __getattr__(name: str) -> Any:
    """`stforecast.load_model`, `stforecast.forecast`, `stforecast.open_frames` without
    importing torch or xarray at `import stforecast`."""
    if name == "load_model":
        from stforecast.rundir.load import load_model

        return load_model
    if name == "forecast":
        from stforecast.forecasting import forecast

        return forecast
    if name == "open_frames":
        from stforecast.io import open_frames

        return open_frames
    raise AttributeError(f"module 'stforecast' has no attribute {name!r}")
