"""The data contract: what a model was trained on and what its inputs must therefore be.

One frozen, typed object from `prepare` to the forecast file. `prepare` writes it into the
store's manifest (`manifest["contract"]`), training carries it into the model card
(`card["input"]`), and forecasting and evaluation read it back by attribute: variable(s), units
per channel, the transform and its fitted parameters, the grid and its CRS, the time step
(`time_step_seconds`, its one name), the input and output frames, the missing-data fill and the
processing (units, crop, coarsen, resize) that new frames must go through.

The JSON forms are those of today's cards and of stores of format 1, so old run directories and
stores still load: `from_card` reads every card this package ever wrote, `from_manifest` both
store formats. A malformed card fails with `ModelMismatchError` naming the field.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from stforecast.data.units import MARSHALL_PALMER
from stforecast.data.windows import iso_duration
from stforecast.errors import InputError, ModelMismatchError

__all__ = ["Archive", "DataContract", "Grid", "Processing", "Transform"]


@dataclass(frozen=True)
class Transform:
    """The normalisation and its parameters fitted on the training split: one dict for every
    channel, or a list with one per channel."""

    name: str
    options: Mapping[str, Any]
    params: Any

    def per_channel(self, channels: int) -> list[dict[str, Any]]:
        params = self.params or {}
        return list(params) if isinstance(params, list) else [params] * channels

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "options": dict(self.options), "params": self.params}

    def levels(self, values: Any) -> tuple[float, ...]:
        """Values in data units (event thresholds) in the model's units, through the first
        channel's parameters; transforms are increasing, so an event stays the same event."""
        import numpy as np

        from stforecast.data import transforms

        params = self.per_channel(1)[0]
        transform, _ = transforms.from_dict({**self.to_dict(), "params": params})
        out = transform.forward(np.asarray(values, dtype=float), params)
        return tuple(float(v) for v in np.asarray(out).ravel())


@dataclass(frozen=True)
class Grid:
    """The model's grid: shape, CRS (WKT, empty for pixel space) and affine geotransform
    (GDAL order, empty when unknown); `x`/`y` the first and last cell centres when known."""

    shape: tuple[int, int]
    crs_wkt: str = ""
    transform: tuple[float, ...] = ()  # GDAL order
    x: tuple[float, float] | None = None
    y: tuple[float, float] | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "shape": list(self.shape),
            "crs_wkt": self.crs_wkt,
            "transform": list(self.transform),
        }
        if self.x is not None:
            out["x"] = list(self.x)
        if self.y is not None:
            out["y"] = list(self.y)
        return out


@dataclass(frozen=True)
class Processing:
    """What `prepare` did to the source frames, done again to every new input."""

    units: str | None = None
    source_units: str | None = None
    zr: tuple[float, float] = MARSHALL_PALMER
    crop_bbox: tuple[float, ...] | None = None
    crop_pixels: tuple[int, ...] | None = None
    coarsen: int = 1
    resize: tuple[int, ...] | None = None
    time_pattern: str | None = None
    spacing: float | None = None  # metres (`data.spacing`)
    pixel_size: float | None = None  # metres per pixel of a grid without coordinates

    def to_dict(self) -> dict[str, Any]:
        def listed(v: Any) -> Any:
            return None if v is None else list(v)

        extra = {k: getattr(self, k) for k in ("spacing", "pixel_size") if getattr(self, k)}
        return extra | {
            "units": self.units,
            "source_units": self.source_units,
            "zr": list(self.zr),
            "crop_bbox": listed(self.crop_bbox),
            "crop_pixels": listed(self.crop_pixels),
            "coarsen": self.coarsen,
            "resize": listed(self.resize),
            "time_pattern": self.time_pattern,
        }


@dataclass(frozen=True)
class Archive:
    """One archive of a store of several (`data.archives`): its grid at the model's spacing,
    its own grid (`native`, before the spacing), its own time step and how it was brought to
    the model's (`sum`, `subsample` or `none`), and its processing."""

    name: str
    grid: Grid
    native: Grid
    time_step_seconds: int
    time_resampling: str
    processing: Processing

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "grid": self.grid.to_dict(),
            "native_grid": self.native.to_dict(),
            "time_step_seconds": self.time_step_seconds,
            "time_resampling": self.time_resampling,
            "processing": self.processing.to_dict(),
        }


@dataclass(frozen=True)
class DataContract:
    """The data a model expects (see the module docstring)."""

    variable: str | tuple[str, ...]
    units: str
    transform: Transform
    grid: Grid
    time_step_seconds: int | None
    input_frames: int
    output_frames: int
    channel_units: tuple[str, ...] | None = None
    fill_value: float | tuple[float, ...] = 0.0
    fill_value_normalised: float | tuple[float, ...] = 0.0
    processing: Processing | None = None
    long_name: str = ""
    channels: int = 1
    frame_size: tuple[int, int] | None = None
    store: str | None = None
    values: str | None = None
    archives: tuple[Archive, ...] = ()
    # quantities (`units.quantity`) of any variable the model takes in place of `variable`:
    # a general model (the shipped radar nowcaster) reads a rain rate, depth or dBZ by any name
    accepts: tuple[str, ...] = ()

    # ------------------------------------------------------------------ derived

    @property
    def variables(self) -> list[str]:
        """The variable of each channel."""
        return [self.variable] if isinstance(self.variable, str) else list(self.variable)

    @property
    def selection(self) -> str | list[str] | None:
        """The variable(s) to read from new sources (`open_frames(variable=...)`); None, the
        sources' only variable, for a model that `accepts` a quantity by any name."""
        if self.accepts:
            return None
        return self.variable if isinstance(self.variable, str) else list(self.variable)

    @property
    def channel_names(self) -> list[str] | None:
        """Channel names of a multi-channel store, None for a single variable."""
        return None if isinstance(self.variable, str) else list(self.variable)

    @property
    def gridded(self) -> bool:
        """False for data without a grid or time step (Moving MNIST): such a model cannot
        forecast geographic frames."""
        return bool(self.time_step_seconds) and self.processing is not None

    @property
    def time_step_iso(self) -> str | None:
        return None if not self.time_step_seconds else iso_duration(self.time_step_seconds)

    def fills_normalised(self, channels: int) -> list[float]:
        fills = self.fill_value_normalised
        return list(fills) if isinstance(fills, tuple | list) else [fills] * channels

    def replace(self, **changes: Any) -> DataContract:
        return dataclasses.replace(self, **changes)

    # ------------------------------------------------------------------ JSON forms

    def to_card(self) -> dict[str, Any]:
        """The card's `input` section (the keys and order cards have always had)."""
        out: dict[str, Any] = {"variable": _listed(self.variable), "channels": self.channels}
        out["units"] = self.units
        if self.processing is not None:
            out["channel_units"] = _listed(self.channel_units)
        out["transform"] = self.transform.to_dict()
        if self.processing is not None:
            out["missing"] = {
                "fill_value": _listed(self.fill_value),
                "fill_value_normalised": _listed(self.fill_value_normalised),
            }
        out["grid"] = self.grid.to_dict()
        out["time_step_seconds"] = self.time_step_seconds
        if self.processing is not None:
            out["time_step_iso"] = self.time_step_iso
        out["input_frames"] = self.input_frames
        out["output_frames"] = self.output_frames
        if self.processing is not None:
            out["processing"] = self.processing.to_dict()
            out["store"] = self.store
        if self.values is not None:
            out["values"] = self.values
        if self.archives:
            out["archives"] = [a.to_dict() for a in self.archives]
        if self.frame_size is not None:
            out["frame_size"] = list(self.frame_size)
        if self.accepts:
            out["accepts"] = list(self.accepts)
        return out

    def to_manifest(self) -> dict[str, Any]:
        """The manifest's `contract` section (a store knows no frame size or store path)."""
        out = self.to_card()
        out.pop("frame_size", None)
        out.pop("store", None)
        out["channels"] = self.channel_names
        out["long_name"] = self.long_name
        return out

    @classmethod
    def from_card(cls, entry: Any, where: str = "model card") -> DataContract:
        """The contract of a card's `input` section; a missing or malformed field is a
        `ModelMismatchError` (exit 4) that names it."""
        if not isinstance(entry, Mapping):
            raise ModelMismatchError(f"{where}: field 'input' is missing or not a table")
        return _parse(entry, where, ModelMismatchError)

    @classmethod
    def from_manifest(cls, manifest: Mapping[str, Any], store: str | None = None) -> DataContract:
        """The contract of a store's manifest, format 2 (`contract`) or format 1 (the same
        facts spread over `variable`, `units`, `grid`, `time.step_seconds`, ...)."""
        entry = manifest.get("contract")
        if entry is None:  # format 1
            entry = {
                "variable": manifest["variable"],
                "channels": manifest.get("channels"),
                "units": manifest["units"],
                "channel_units": manifest.get("channel_units"),
                "long_name": manifest.get("long_name", ""),
                "transform": manifest["transform"],
                "missing": manifest["missing"],
                "grid": manifest["grid"],
                "time_step_seconds": manifest["time"]["step_seconds"],
                "input_frames": manifest["windows"]["input_frames"],
                "output_frames": manifest["windows"]["output_frames"],
                "processing": manifest["processing"],
            }
        contract = _parse(entry, "store manifest", InputError)
        names = contract.channel_names
        return contract.replace(channels=len(names) if names else 1, store=store)


def _listed(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _tupled(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def _parse(entry: Mapping[str, Any], where: str, error: type[Exception]) -> DataContract:
    """Check each field of a card/manifest entry and build the contract."""

    def need(key: str, kind: type | tuple[type, ...], source: Mapping[str, Any] = entry) -> Any:
        value = source.get(key)
        if value is None or not isinstance(value, kind) or isinstance(value, bool):
            raise error(f"{where}: field '{key}' is missing or invalid ({value!r})")
        return value

    def positive(key: str) -> int:
        value = entry.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise error(f"{where}: field '{key}' must be a positive whole number, got {value!r}")
        return value

    variable = entry.get("variable")
    if not (isinstance(variable, str) and variable) and not (
        isinstance(variable, list) and variable and all(isinstance(v, str) for v in variable)
    ):
        raise error(f"{where}: field 'variable' is missing or invalid ({variable!r})")
    step = entry.get("time_step_seconds")
    if step is not None and (
        not isinstance(step, int | float)
        or isinstance(step, bool)
        or not math.isfinite(step)
        or step <= 0
        or step != int(step)
    ):
        raise error(f"{where}: field 'time_step_seconds' must be a positive number, got {step!r}")
    transform = need("transform", Mapping)
    grid = need("grid", Mapping)
    shape = grid.get("shape")
    if not isinstance(shape, list) or len(shape) != 2 or not all(isinstance(s, int) for s in shape):
        raise error(f"{where}: field 'grid.shape' is missing or invalid ({shape!r})")
    processing = entry.get("processing")
    missing = entry.get("missing") or {}
    channels = entry.get("channels")
    frame = entry.get("frame_size")
    return DataContract(
        variable=_tupled(variable),
        units=str(entry.get("units") or ""),
        transform=Transform(
            name=str(need("name", str, transform)),
            options=dict(transform.get("options") or {}),
            params=transform.get("params") or {},
        ),
        grid=Grid(
            shape=(int(shape[0]), int(shape[1])),
            crs_wkt=str(grid.get("crs_wkt") or ""),
            transform=tuple(grid.get("transform") or ()),
            x=None if grid.get("x") is None else tuple(grid["x"]),
            y=None if grid.get("y") is None else tuple(grid["y"]),
        ),
        time_step_seconds=None if step is None else int(step),
        input_frames=positive("input_frames"),
        output_frames=positive("output_frames"),
        channel_units=_tupled(entry.get("channel_units")),
        fill_value=_tupled(missing.get("fill_value", 0.0)),
        fill_value_normalised=_tupled(missing.get("fill_value_normalised", 0.0)),
        processing=None if processing is None else _processing(processing, where, error),
        long_name=str(entry.get("long_name") or ""),
        channels=channels if isinstance(channels, int) and not isinstance(channels, bool) else 1,
        frame_size=None if frame is None else (int(frame[0]), int(frame[1])),
        store=entry.get("store"),
        values=entry.get("values"),
        archives=_archives(entry.get("archives") or [], where, error),
        accepts=_accepts(entry.get("accepts") or [], where, error),
    )


ACCEPTABLE = ("rate", "accumulation", "reflectivity")


def _accepts(entries: Any, where: str, error: type[Exception]) -> tuple[str, ...]:
    if not isinstance(entries, list) or not all(e in ACCEPTABLE for e in entries):
        raise error(f"{where}: field 'accepts' must list quantities of {', '.join(ACCEPTABLE)}")
    return tuple(entries)


def _archives(entries: Any, where: str, error: type[Exception]) -> tuple[Archive, ...]:
    if not isinstance(entries, list) or not all(isinstance(a, Mapping) for a in entries):
        raise error(f"{where}: field 'archives' is not a list of tables")
    out = []
    for a in entries:
        try:
            out.append(
                Archive(
                    name=str(a["name"]),
                    grid=_grid(a["grid"]),
                    native=_grid(a["native_grid"]),
                    time_step_seconds=int(a["time_step_seconds"]),
                    time_resampling=str(a["time_resampling"]),
                    processing=_processing(a["processing"], where, error),
                )
            )
        except (KeyError, TypeError, ValueError) as err:
            raise error(f"{where}: archive {a.get('name')!r} is malformed ({err})") from None
    return tuple(out)


def _grid(grid: Mapping[str, Any]) -> Grid:
    return Grid(
        shape=(int(grid["shape"][0]), int(grid["shape"][1])),
        crs_wkt=str(grid.get("crs_wkt") or ""),
        transform=tuple(grid.get("transform") or ()),
        x=None if grid.get("x") is None else tuple(grid["x"]),
        y=None if grid.get("y") is None else tuple(grid["y"]),
    )


def _processing(entry: Any, where: str, error: type[Exception]) -> Processing:
    if not isinstance(entry, Mapping):
        raise error(f"{where}: field 'processing' is not a table ({entry!r})")
    return Processing(
        units=entry.get("units"),
        source_units=entry.get("source_units"),
        zr=tuple(entry.get("zr") or MARSHALL_PALMER),
        crop_bbox=_tupled(entry.get("crop_bbox")),
        crop_pixels=_tupled(entry.get("crop_pixels")),
        coarsen=int(entry.get("coarsen") or 1),
        resize=_tupled(entry.get("resize")),
        time_pattern=entry.get("time_pattern"),
        spacing=None if entry.get("spacing") is None else float(entry["spacing"]),
        pixel_size=None if entry.get("pixel_size") is None else float(entry["pixel_size"]),
    )
