"""Recipe sections, validated with pydantic: unknown keys, wrong types and out-of-range values are
errors that name the file and the field (exit 2).

A recipe is TOML with `[data]`, `[model]`, `[train]`, `[evaluate]` and `[forecast]`; `--set
dotted.key=value` overrides any field with the same validation. `prepare` reads `[data]`.
Paths in a recipe are data: they are resolved against the recipe's directory and never executed.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import sys
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from stforecast.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

SECTIONS = ("data", "model", "train", "evaluate", "forecast")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


TimeRange = tuple[dt.datetime, dt.datetime]
Name = Annotated[str, Field(pattern=r"^[A-Za-z][A-Za-z0-9_]*$")]  # NetCDF- and CF-safe


def as_utc(t: dt.datetime) -> dt.datetime:
    """Naive times are UTC; aware ones are converted, so the two can be compared."""
    return t.astimezone(dt.timezone.utc).replace(tzinfo=None) if t.tzinfo else t


class SplitConfig(_Strict):
    """Chronological split: by fractions of the frames, or by time ranges ([start, end), UTC;
    validation and test are cut out of train where inside it), which win when given."""

    fractions: tuple[
        Annotated[float, Field(ge=0, le=1)],
        Annotated[float, Field(ge=0, le=1)],
        Annotated[float, Field(ge=0, le=1)],
    ] = (0.7, 0.15, 0.15)
    train: TimeRange | None = None
    validation: TimeRange | None = None
    test: TimeRange | None = None

    @model_validator(mode="after")
    def _check(self) -> SplitConfig:
        if abs(sum(self.fractions) - 1.0) > 1e-6:
            raise ValueError(f"fractions must add up to 1, got {sum(self.fractions):g}")
        ranges = [(n, tuple(map(as_utc, r))) for n, r in self.ranges().items() if r is not None]
        if ranges and self.train is None:
            raise ValueError("time ranges need at least `train`")
        for name, (start, end) in ranges:
            if end <= start:
                raise ValueError(f"{name}: end {end} is not after start {start}")
        held = sorted((r for r in ranges if r[0] != "train"), key=lambda item: item[1][0])
        for (a, ra), (b, rb) in itertools.pairwise(held):
            if rb[0] < ra[1]:
                raise ValueError(f"time ranges of {a} and {b} overlap")
        return self

    def ranges(self) -> dict[str, TimeRange | None]:
        return {"train": self.train, "validation": self.validation, "test": self.test}

    @property
    def by_time(self) -> bool:
        return self.train is not None


class ArchiveConfig(_Strict):
    """`[[data.archives]]`: one archive of several, with what differs between archives (the
    rest of `[data]` applies to all)."""

    name: str | None = Field(
        None, pattern=r"^[A-Za-z0-9_-]+$", description="the archive's name (default: archive1, ...)"
    )
    sources: list[str] = Field(min_length=1, description="files, directories or globs")
    variable: str | list[str] | None = Field(None, description="variable name(s) in its files")
    time_pattern: str | None = Field(None, description="strftime pattern of times in file names")
    source_units: str | None = Field(None, description="its units, where the files' are free text")
    zr: tuple[Annotated[float, Field(gt=0)], Annotated[float, Field(gt=0)]] | None = Field(
        None, description="its Z = a R^b (default: data.zr)"
    )
    crop_bbox: tuple[float, float, float, float] | None = Field(
        None, description="xmin, ymin, xmax, ymax in its CRS units, before the spacing"
    )
    crop_pixels: tuple[int, int, int, int] | None = Field(
        None, description="row0, row1, col0, col1 (half-open), before the spacing"
    )
    pixel_size: Annotated[float, Field(gt=0)] | None = Field(
        None, description="metres per pixel of a grid without coordinates (KNMI: 1000)"
    )
    split: SplitConfig | None = Field(None, description="its own split (default: data.split)")


class DataConfig(_Strict):
    """`[data]`: where the frames come from and how they become training windows."""

    sources: list[str] = Field(default_factory=list, description="files, directories or globs")
    recursive: bool = Field(
        False, description="also read the subdirectories of directories (YYYY/MM/DD archives)"
    )
    store: str | None = Field(None, description="a prepared store (directory) instead of sources")
    moving_mnist: str | None = Field(
        None, description="MNIST IDX file: train on generated Moving MNIST instead of files"
    )
    validation_sequences: Annotated[int, Field(ge=1)] = Field(
        256, description="Moving MNIST: fixed validation sequences (training digits, own seed)"
    )
    variable: str | list[str] | None = Field(None, description="variable name(s); list = channels")
    time_pattern: str | None = Field(None, description="strftime pattern of times in file names")
    time_step: Annotated[int, Field(gt=0)] | None = Field(
        None,
        description="the model's time step: seconds or a duration ('10min', 'PT10M'); archives "
        "at a finer step that divides it are resampled in time (default: the archive's own, "
        "with several archives the coarsest)",
    )
    spacing: Annotated[float, Field(gt=0)] | None = Field(
        None,
        description="grid spacing in metres that every archive is brought to (block mean for "
        "whole ratios, area-weighted resampling otherwise); replaces coarsen and resize",
    )
    archives: list[ArchiveConfig] = Field(
        default_factory=list,
        description="several archives, each with its own sources, grid and CRS, prepared into "
        "one store (`[[data.archives]]` tables; instead of sources)",
    )
    units: str | None = Field(None, description="convert to these units, e.g. 'mm/h'")
    source_units: str | None = Field(
        None,
        description="the sources' units, replacing their own `units` attribute where that is "
        "free text (KNMI: 'mm' per time step; RADOLAN RW: 'mm')",
    )
    zr: tuple[Annotated[float, Field(gt=0)], Annotated[float, Field(gt=0)]] = Field(
        (200.0, 1.6), description="Z = a R^b for dBZ <-> rain rate"
    )
    crop_bbox: tuple[float, float, float, float] | None = Field(
        None, description="xmin, ymin, xmax, ymax in the data's CRS units"
    )
    crop_pixels: tuple[int, int, int, int] | None = Field(
        None, description="row0, row1, col0, col1 (half-open)"
    )
    coarsen: Annotated[int, Field(ge=1)] = Field(1, description="NaN-aware block mean factor")
    resize: tuple[Annotated[int, Field(gt=0)], Annotated[int, Field(gt=0)]] | None = Field(
        None, description="resample to exactly (ny, nx) after cropping and coarsening"
    )
    transform: str = Field("none", description="log1p, dbr, minmax, zscore, none")
    transform_options: dict[str, Any] = Field(default_factory=dict)
    fill_value: float | list[float] = Field(
        0.0,
        description="physical value written where data is missing; a list gives one per channel",
    )
    input_frames: Annotated[int, Field(ge=1)] = 10
    output_frames: Annotated[int, Field(ge=1)] = 10
    stride: Annotated[int, Field(ge=1)] = 1
    split: SplitConfig = Field(default_factory=SplitConfig)
    chunk_frames: Annotated[int, Field(ge=1, le=4096)] = Field(
        16, description="frames per chunk in the store and per streaming step"
    )

    @field_validator("time_step", mode="before")
    @classmethod
    def _step(cls, value: Any) -> Any:
        from stforecast.data.timestep import step_seconds

        return step_seconds(value)

    @model_validator(mode="after")
    def _check(self) -> DataConfig:
        if self.archives and self.sources:
            raise ValueError("give sources (one archive) or archives (several), not both")
        if self.spacing is not None and (self.coarsen > 1 or self.resize is not None):
            raise ValueError("spacing replaces coarsen and resize: give one or the other")
        names = [a.name for a in self.archives if a.name]
        if len(set(names)) != len(names):
            raise ValueError(f"archive names must differ, got {names}")
        if self.crop_bbox is not None:
            xmin, ymin, xmax, ymax = self.crop_bbox
            if xmax <= xmin or ymax <= ymin:
                raise ValueError("crop_bbox must be xmin, ymin, xmax, ymax with max > min")
        if self.crop_pixels is not None:
            r0, r1, c0, c1 = self.crop_pixels
            if min(self.crop_pixels) < 0 or r1 <= r0 or c1 <= c0:
                raise ValueError("crop_pixels must be row0 < row1, col0 < col1, all >= 0")
        if self.source_units is not None:
            from stforecast.data.units import quantity

            if quantity(self.source_units) is None:
                raise ValueError(
                    f"source_units {self.source_units!r} is not a unit stforecast can convert "
                    "(e.g. 'mm', 'mm/h', 'kg m-2 s-1', 'dBZ', 'K')"
                )
        return self

    @property
    def window(self) -> int:
        return self.input_frames + self.output_frames


def format_error(err: ValidationError, where: str) -> str:
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first["loc"]) or "(top level)"
    more = f" (and {err.error_count() - 1} more)" if err.error_count() > 1 else ""
    return f"{where}: {loc}: {first['msg']}{more}"


def parse_value(text: str) -> Any:
    """A `--set` value: JSON/TOML-like scalars and lists, else the bare string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        try:
            return tomllib.loads(f"v = {text}")["v"]
        except tomllib.TOMLDecodeError:
            return text


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `dotted.key=value` overrides to a raw recipe dictionary."""
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"an override takes dotted.key=value, got {item!r}")
        parts = key.strip().split(".")
        node = raw
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {key}: {part!r} is not a section")
        node[parts[-1]] = parse_value(value)
    return raw


def _resolve_paths(raw: dict[str, Any], base: Path) -> None:
    """Make `[data]` paths absolute against `base` (absolute ones stay as they are)."""
    data = raw.get("data")
    if not isinstance(data, dict):
        return
    if isinstance(data.get("sources"), list):
        data["sources"] = [
            str(base / s) if isinstance(s, str) and not Path(s).is_absolute() else s
            for s in data["sources"]
        ]
    for archive in data.get("archives") or []:
        if isinstance(archive, dict) and isinstance(archive.get("sources"), list):
            archive["sources"] = [
                str(base / s) if isinstance(s, str) and not Path(s).is_absolute() else s
                for s in archive["sources"]
            ]
    for key in ("store", "moving_mnist"):
        if isinstance(data.get(key), str) and not Path(data[key]).is_absolute():
            data[key] = str(base / data[key])


def recipe_table(path: str | Path, overrides: list[str] | None = None) -> dict[str, Any]:
    """Read a recipe TOML, apply overrides, check the section names; returns the raw dict.

    Paths written in the recipe are relative to the recipe's directory; paths given with `--set`
    are relative to the current directory, as anything typed on a command line."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"recipe {path} does not exist") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: not valid TOML: {err}") from None
    _resolve_paths(raw, path.resolve().parent)
    raw = apply_overrides(raw, overrides or [])
    _resolve_paths(raw, Path.cwd())
    unknown = sorted(set(raw) - set(SECTIONS))
    if unknown:
        raise ConfigError(
            f"{path}: unknown section(s) {', '.join(unknown)}; valid: {', '.join(SECTIONS)}"
        )
    raw["__file__"] = str(path)
    return raw


def data_config(raw: dict[str, Any] | None = None, where: str = "options", **fields) -> DataConfig:
    """Validate a `[data]` section (from a recipe dict, or keyword fields) -> DataConfig."""
    section = dict((raw or {}).get("data", {}))
    section.update({k: v for k, v in fields.items() if v is not None})
    where = (raw or {}).get("__file__", where)
    try:
        return DataConfig.model_validate(section)
    except ValidationError as err:
        raise ConfigError(format_error(err, f"{where} [data]")) from None


class ModelConfig(_Strict):
    """`[model]`: an architecture from the registry (`stforecast models` lists them)."""

    name: str = "cms_lstm"
    patch_size: Annotated[int, Field(ge=1)] = 4
    hidden_channels: list[Annotated[int, Field(ge=1)]] = Field(default_factory=lambda: [64] * 4)
    kernel_size: Annotated[int, Field(ge=1)] = 3
    options: dict[str, Any] = Field(
        default_factory=dict, description="ce, se_scales, norm, window, key_channels, ..."
    )


# `train.select`: the names metrics.json gives these scores (`evaluation.metrics.key`).
SELECT_PATTERN = r"^(loss|csi_\d+(\.\d+)?|fss_\d+(\.\d+)?_[1-9]\d*)$"
Beta = Annotated[float, Field(ge=0, lt=1)]


class TrainConfig(_Strict):
    """`[train]`: optimisation, schedules, sampling, validation, checkpoints, device."""

    optimizer: Literal["adamw", "adam"] = "adamw"
    lr: Annotated[float, Field(gt=0)] = 1e-3
    weight_decay: Annotated[float, Field(ge=0)] = 0.01
    betas: tuple[Beta, Beta] = (0.9, 0.999)
    schedule: Literal["constant", "cosine", "onecycle"] = "constant"
    min_lr: Annotated[float, Field(ge=0)] = 0.0
    loss: Literal["l2", "l1", "l1+l2"] = "l1+l2"
    reduction: Literal["mean", "sum"] = "mean"
    batch_size: Annotated[int, Field(ge=1)] = 8
    max_steps: Annotated[int, Field(ge=1)] = 1000
    max_time: Annotated[float, Field(gt=0)] | None = Field(None, description="seconds")
    scheduled_sampling: Literal["none", "linear", "reverse"] = "linear"
    sampling_steps: Annotated[int, Field(ge=1)] | None = Field(
        None, description="steps over which the sampling probability decays (default: half)"
    )
    reverse_sequences: bool = Field(
        False, description="also train on the time-reversed sequence (authors' code)"
    )
    grad_clip: Annotated[float, Field(gt=0)] | None = None
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    compile: bool = False
    seed: int = 0
    deterministic: bool = False
    val_every: Annotated[int, Field(ge=1)] = 500
    val_batches: Annotated[int, Field(ge=1)] | None = Field(
        None, description="cap on validation batches (default: the whole split)"
    )
    early_stopping: Annotated[int, Field(ge=1)] | None = Field(
        None, description="stop after this many validations without improvement"
    )
    select: Annotated[str, Field(pattern=SELECT_PATTERN)] = Field(
        "loss",
        description="the validation score that selects the run's weights: 'loss' (lowest), "
        "'csi_T' (highest CSI at T data units, e.g. 'csi_1.0') or 'fss_T_N' (highest FSS at T "
        "and N pixels, e.g. 'fss_1.0_8')",
    )
    checkpoint_every: Annotated[int, Field(ge=1)] = 500
    log_every: Annotated[int, Field(ge=1)] = 10
    num_workers: Annotated[int, Field(ge=0)] = 0
    crop: Annotated[int, Field(ge=1)] | None = Field(None, description="random crop (pixels)")
    augment: list[Literal["flip", "rot90", "reverse"]] = Field(
        default_factory=list,
        description="random symmetries of training windows: 'flip' (either axis), 'rot90' "
        "(quarter turns), 'reverse' (played backwards)",
    )
    flip: bool = Field(False, description="the same as augment = ['flip'] (older recipes)")
    balanced: bool = False  # Shi et al. 2017's B-MSE/B-MAE rain-rate weights (docs/training.md)
    area_loss: Annotated[float, Field(ge=0)] = 0.0  # the event-area term (docs/training.md)
    area_thresholds: list[Annotated[float, Field(gt=0)]] = Field([1.0], min_length=1)
    tensorboard: bool = True
    init: str | None = Field(None, description="start from a run's or a shipped model's weights")

    @model_validator(mode="after")
    def _augmentations(self) -> TrainConfig:
        """`flip = true` is `augment = ["flip"]`; each symmetry is named once."""
        if self.flip and "flip" not in self.augment:
            self.augment.append("flip")
        if len(set(self.augment)) != len(self.augment):
            raise ValueError("train.augment names a symmetry twice")
        return self


class EvaluateConfig(_Strict):
    """`[evaluate]`: how `stforecast evaluate` scores the model and the baselines."""

    baselines: list[str] = Field(
        default_factory=lambda: ["persistence", "extrapolation"],
        description="baselines scored by the same code (`stforecast.evaluation.baselines`)",
    )
    thresholds: list[float] = Field(
        default_factory=lambda: [0.1, 1.0, 5.0],
        description="event thresholds for CSI/POD/FAR/ETS and FSS, in data units",
    )
    scales: list[Annotated[int, Field(ge=1)]] = Field(
        default_factory=lambda: [1, 4, 16], description="FSS neighbourhood sizes (pixels)"
    )
    data_range: Annotated[float, Field(gt=0)] | None = Field(
        None,
        description="value range for PSNR and SSIM (default: the test truth's observed range)",
    )
    clip: tuple[float | None, float | None] | None = Field(
        None,
        description="clip forecasts to [low, high] before scoring (default: [0, none] for "
        "precipitation units, none otherwise)",
    )
    samples: Annotated[int, Field(ge=0)] = Field(
        3, description="sample panels (inputs, truth, forecasts, error) in the report"
    )
    batch_size: Annotated[int, Field(ge=1)] = Field(8, description="sequences per model call")
    max_sequences: Annotated[int, Field(ge=1)] | None = Field(
        None, description="score at most this many test sequences (default: all)"
    )


class ForecastConfig(_Strict):
    """`[forecast]`: defaults for `stforecast forecast` with a model trained on this recipe (the
    output's names and metadata: [outputs.md](outputs.md#what-a-catalogue-reads-acdd-13))."""

    hours: Annotated[float, Field(gt=0)] | None = Field(
        None, description="lead time to forecast (default: the model's output length)"
    )
    format: Literal["netcdf", "geotiff", "cog"] = "netcdf"  # cog: a Cloud-Optimized GeoTIFF
    title: str | None = Field(None, description="output title (default: generated)")
    institution: str = Field("", description="the output's `institution` (default: the input's)")
    license: str = Field("", description="the output's `license` (default: the input's licence)")
    references: str = Field("", description="the output's `references` (default: the input's)")
    source: str = Field("", description="the data, in `source` after the model (default: input's)")
    attributes: dict[Name, str] = Field({}, description="more global attributes: creator_name, ...")
    latlon: bool = Field(False, description="2-D `lat`, `lon` on a projected grid (NetCDF)")
    variable_name: Name | list[Name] | None = Field(None, description="output name(s), by channel")
    allow_missing_frames: Annotated[int, Field(ge=0)] = Field(
        0,
        description="input frames that may be missing from the last T_in steps; they are "
        "filled by linear interpolation in time (0: a missing frame is an error, exit 3)",
    )
    tile_overlap: Annotated[float, Field(ge=0, lt=1)] = Field(
        0.5, description="overlap of neighbouring tiles, as a fraction of the tile size"
    )
    tile_batch: Annotated[int, Field(ge=1)] = Field(16, description="tiles per model call")
    max_hours: Annotated[float, Field(gt=0)] = Field(
        24.0,
        description="longest lead time a forecast may ask for, in hours (the model's horizon is "
        "always allowed): a day is far past a nowcast's skill, and a slip (100000 steps) fails "
        "at once (exit 2), not after hours under the output's lock; raise it for longer rollouts",
    )
    max_input_age: Annotated[float, Field(gt=0)] | None = Field(
        None,
        description="the oldest the newest input frame may be, ISO 8601 (`PT30M`) or seconds, from "
        "the wall clock or the expected reference time the caller gives; older is exit 3, so a "
        "stalled feed is not forecast as new (unset: no limit; a step old or more only warns)",
    )

    @field_validator("max_input_age", mode="before")
    @classmethod
    def _seconds(cls, value: Any) -> Any:
        """An ISO 8601 duration becomes seconds: the recipe, the run's `recipe.toml` and the
        engine all hold a plain number."""
        if isinstance(value, dt.timedelta):
            return value.total_seconds()
        if not isinstance(value, str):
            return value
        try:
            return float(value)
        except ValueError:
            pass
        try:
            return TypeAdapter(dt.timedelta).validate_python(value.strip()).total_seconds()
        except ValidationError:
            raise ValueError(
                f"{value!r} is not an ISO 8601 duration (e.g. PT30M, PT2H) or seconds"
            ) from None


class Recipe(_Strict):
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)
    forecast: ForecastConfig = Field(default_factory=ForecastConfig)


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> Recipe:
    """Load and validate a whole recipe; errors name the file and the field (exit 2)."""
    raw = recipe_table(path, overrides)
    where = raw.pop("__file__")
    try:
        return Recipe.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(format_error(err, where)) from None
