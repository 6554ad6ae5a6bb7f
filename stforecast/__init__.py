"""stforecast: recurrent spatiotemporal forecasting of geoscience frame stacks.

The package root stays light (no torch import) so that `stforecast --help` is instant;
the engine lives in subpackages such as `stforecast.models`.
"""

from typing import Any

from stforecast._version import __version__

__all__ = ["__version__", "load_model"]


def __getattr__(name: str) -> Any:
    """`stforecast.load_model` without importing torch at `import stforecast`."""
    if name == "load_model":
        from stforecast.training import load_model

        return load_model
    raise AttributeError(f"module 'stforecast' has no attribute {name!r}")
