"""stforecast: learned spatiotemporal nowcasting of radar rainfall and other gridded fields.

The command line (`stforecast prepare | train | forecast | evaluate ...`) is a face over this
package; from Python or a notebook the same pipeline is three calls:

    import stforecast

    frames = stforecast.open_frames("radar/*.nc")       # or an xarray Dataset / DataArray
    model = stforecast.load_model("runs/radar")          # (network, model card), loaded once
    ds = stforecast.forecast(frames, model, hours=2)     # an xarray.Dataset, CF, input's grid

open_frames(sources, variable=None, ...)
    Files (NetCDF, GeoTIFF, ODIM HDF5, GRIB; one file or one per frame, directories, globs) or
    xarray objects -> a lazy `(time, y, x)` float32 DataArray with `units`, `crs_wkt`,
    `transform`, `time_step` attributes.
load_model(run_dir, weights="selected", device="cpu")
    A trained run directory -> `(network, card)`; the card is the model's data contract
    (variable, units, time step, grid, frames in and out).
forecast(frames, model=None, hours=None, steps=None, variable=None, device="auto", ...)
    Frames (any of the above, or paths) and a model (a run directory, a shipped model's name
    such as "radar", or `load_model`'s pair; none: the shipped radar nowcaster, for
    precipitation) -> a CF `xarray.Dataset` of the lead times on the input's own grid.

Errors are typed (`stforecast.errors`, also importable from here) and carry the command line's
one-line messages and exit codes: `ConfigError` (2), `InputError` (3), `ModelMismatch` (4),
`LockHeld` (5); all derive from `StforecastError`. Submodules: `io` (readers, writers), `data`
(prepare, synthetic data), `training`, `forecasting`, `evaluation`, `viz`, `models`,
`pretrained` (the shipped models).
See docs/python-api.md and examples/notebook.ipynb.

The package root stays light: `import stforecast` imports neither torch nor xarray (so that
`stforecast --help` is instant); the three functions load their modules on first use.
"""

from importlib import import_module

from stforecast import errors
from stforecast._version import __version__
from stforecast.errors import (
    ConfigError,
    InputError,
    LockHeld,
    ModelMismatch,
    StforecastError,
)

# Public name -> the module that defines it, imported on first use (torch, xarray).
_LAZY = {
    "forecast": "stforecast.forecasting.regrid",
    "load_model": "stforecast.rundir.load",
    "open_frames": "stforecast.io.memory",
}

__all__ = [
    "ConfigError",
    "InputError",
    "LockHeld",
    "ModelMismatch",
    "StforecastError",
    "__version__",
    "errors",
    "forecast",
    "load_model",
    "open_frames",
]


def __getattr__(name: str) -> object:
    """`stforecast.forecast`, `stforecast.load_model`, `stforecast.open_frames` without
    importing torch or xarray at `import stforecast`."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'stforecast' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value  # found directly from now on
    return value


def __dir__() -> list[str]:
    """The public names (what `dir(stforecast)`, tab completion and `help` show)."""
    return sorted(__all__)
