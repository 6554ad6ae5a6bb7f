"""stforecast: recurrent spatiotemporal forecasting of geoscience frame stacks.

The package root stays light (no torch import) so that `stforecast --help` is instant;
the engine lives in subpackages such as `stforecast.models`.
"""

from stforecast._version import __version__

__all__ = ["__version__"]
