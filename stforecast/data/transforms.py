"""Invertible value transforms, picked by name, fitted on the training split only.

A transform turns data values (e.g. rain rate in mm/h) into what a network sees and back:

    t = transforms.get("zscore")
    fitter = t.fitter()
    for chunk in training_chunks:          # frame by frame: archives exceed memory
        fitter.update(chunk)               # NaN and ±inf are ignored
    params = fitter.result()               # JSON-serialisable dict of floats
    y = t.forward(x, params)               # numpy, dask, xarray or torch, NaN stays NaN
    x_back = t.inverse(y, params)
    manifest["transform"] = t.to_dict(params)
    t, params = transforms.from_dict(manifest["transform"])

Nothing here fits implicitly: which frames form the training split is the caller's decision.
The forward/inverse code is one path for numpy and torch (the operations are looked up on the
array's own library), so the same parameters serve `prepare` (numpy/dask) and the model's
inverse on its outputs (torch, any device). torch is imported only when a tensor is passed.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from types import ModuleType
from typing import Any, ClassVar

import numpy as np

from stforecast.errors import ConfigError, InputError

__all__ = [
    "DBR",
    "Fitter",
    "Log1p",
    "MinMax",
    "NoneTransform",
    "Transform",
    "ZScore",
    "available",
    "from_dict",
    "get",
    "register",
]

Params = dict[str, float]


# --------------------------------------------------------------------------------------------
# Array-library dispatch: numpy (also dask and xarray through numpy's protocols) or torch.


def _xp(x: Any) -> ModuleType:
    """The module whose functions operate on `x`: torch for tensors, numpy otherwise."""
    if type(x).__module__.startswith("torch"):
        import torch

        return torch
    return np


def _as_array(x: Any) -> Any:
    """Leave arrays and tensors as they are; make lists and scalars numpy arrays."""
    return x if hasattr(x, "dtype") and hasattr(x, "shape") else np.asarray(x, dtype=np.float64)


def _scalar_like(value: float, x: Any) -> Any:
    """`value` as a 0-d array of `x`'s floating dtype (and device), so that thresholds computed
    from it round exactly as the data do (float32 stays float32)."""
    xp = _xp(x)
    if xp is np:
        dtype = x.dtype if np.issubdtype(x.dtype, np.floating) else np.float64
        return np.asarray(value, dtype=dtype)
    dtype = x.dtype if x.is_floating_point() else xp.get_default_dtype()
    return xp.tensor(value, dtype=dtype, device=x.device)


def _apply(fn: Callable[[Any], Any], x: Any) -> Any:
    """Apply an elementwise function; xarray objects keep coords and attrs (lazily on dask)."""
    import xarray as xr

    if isinstance(x, xr.DataArray):
        return x.copy(data=fn(x.data))
    return fn(_as_array(x))


# --------------------------------------------------------------------------------------------
# Streaming statistics.


class Fitter:
    """Accumulates count, mean, M2 (sum of squared deviations), min and max over chunks.

    Each chunk's moments are computed in float64 and merged with Chan et al.'s parallel update
    (numerically stable, unlike summing x and x²):

        n = n_a + n_b,  δ = mean_b - mean_a,
        mean = mean_a + δ·n_b/n,  M2 = M2_a + M2_b + δ²·n_a·n_b/n.

    Non-finite values (NaN: no coverage; ±inf: corrupt) are ignored. `result` turns the
    statistics into the transform's parameters; it raises InputError when nothing finite was seen.
    """

    def __init__(
        self,
        name: str,
        result: Callable[[Fitter], Params],
        preprocess: Callable[[np.ndarray], np.ndarray] | None = None,
    ) -> None:
        self.name = name
        self._result = result
        self._preprocess = preprocess
        self.count = 0
        self.mean = 0.0
        self.m2 = 0.0
        self.min = math.inf
        self.max = -math.inf

    def update(self, chunk: Any) -> None:
        """Add one chunk (numpy, dask, xarray or torch; any shape) of the training split."""
        if type(chunk).__module__.startswith("torch"):
            chunk = chunk.detach().cpu().numpy()
        values = np.asarray(chunk, dtype=np.float64)
        if self._preprocess is not None:
            values = self._preprocess(values)
        values = values[np.isfinite(values)]
        n_b = values.size
        if n_b == 0:
            return
        mean_b = float(values.mean())
        m2_b = float(np.square(values - mean_b).sum())
        n_a = self.count
        n = n_a + n_b
        delta = mean_b - self.mean
        self.mean += delta * n_b / n
        self.m2 += m2_b + delta * delta * n_a * n_b / n
        self.count = n
        self.min = min(self.min, float(values.min()))
        self.max = max(self.max, float(values.max()))

    @property
    def std(self) -> float:
        """Population standard deviation (ddof=0), as `numpy.nanstd`."""
        return math.sqrt(self.m2 / self.count) if self.count else math.nan

    def result(self) -> Params:
        if self.count == 0:
            raise InputError(
                f"cannot fit transform {self.name!r}: the training split has no finite values"
            )
        return {k: float(v) for k, v in self._result(self).items()}


class _NothingToFit(Fitter):
    """For transforms without parameters: `update` is a no-op, `result` is `{}`."""

    def __init__(self, name: str) -> None:
        super().__init__(name, lambda f: {})

    def update(self, chunk: Any) -> None:
        return None

    def result(self) -> Params:
        return {}


# --------------------------------------------------------------------------------------------
# Transforms.


class Transform(ABC):
    """An invertible, monotonic (non-decreasing) map of data values.

    Subclasses set `name`, `defaults` (accepted options and their default values) and
    `param_names` (keys `fitter().result()` returns), and implement `_forward` / `_inverse`
    with operations that numpy and torch share (`xp` is the array's module).
    """

    name: ClassVar[str] = ""
    defaults: ClassVar[dict[str, Any]] = {}
    param_names: ClassVar[tuple[str, ...]] = ()

    def __init__(self, **options: Any) -> None:
        unknown = sorted(set(options) - set(self.defaults))
        if unknown:
            valid = ", ".join(self.defaults) if self.defaults else "none"
            raise ConfigError(
                f"unknown option {', '.join(map(repr, unknown))} for transform {self.name!r};"
                f" valid options: {valid}"
            )
        self.options: dict[str, Any] = self._validate({**self.defaults, **options})

    def _validate(self, options: dict[str, Any]) -> dict[str, Any]:
        """Check and complete options (JSON-serialisable values); raise ConfigError."""
        return options

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self.options.items())
        return f"{type(self).__name__}({opts})"

    # fitting ---------------------------------------------------------------------------------

    def fitter(self) -> Fitter:
        """A fresh streaming fitter; feed it the training split chunk by chunk."""
        return _NothingToFit(self.name)

    # applying --------------------------------------------------------------------------------

    def forward(self, x: Any, params: Params) -> Any:
        """Data values -> transformed values (same container type and float dtype as `x`)."""
        p = self._check_params(params)
        return _apply(lambda a: self._forward(a, p, _xp(a)), x)

    def inverse(self, y: Any, params: Params) -> Any:
        """Transformed values -> data values."""
        p = self._check_params(params)
        return _apply(lambda a: self._inverse(a, p, _xp(a)), y)

    @abstractmethod
    def _forward(self, x: Any, p: Params, xp: ModuleType) -> Any: ...

    @abstractmethod
    def _inverse(self, y: Any, p: Params, xp: ModuleType) -> Any: ...

    def _check_params(self, params: Params) -> Params:
        needed = self.expected_params()
        missing = [k for k in needed if k not in params]
        if missing:
            raise ConfigError(
                f"transform {self.name!r} needs parameters {', '.join(needed)};"
                f" missing {', '.join(missing)} (fit it on the training split first)"
            )
        return {k: float(params[k]) for k in needed}

    def expected_params(self) -> tuple[str, ...]:
        """Keys the fitted parameters must have (empty: nothing to fit)."""
        return self.param_names

    # manifest --------------------------------------------------------------------------------

    def to_dict(self, params: Params) -> dict[str, Any]:
        """`{"name", "options", "params"}`: everything needed to rebuild the transform."""
        p = self._check_params(params)
        return {"name": self.name, "options": dict(self.options), "params": p}


class NoneTransform(Transform):
    """Identity: `y = x`."""

    name = "none"

    def _forward(self, x: Any, p: Params, xp: ModuleType) -> Any:
        return x

    def _inverse(self, y: Any, p: Params, xp: ModuleType) -> Any:
        return y


class Log1p(Transform):
    """`y = log(1 + max(x, 0))`, inverse `x = exp(max(y, 0)) - 1`.

    Negative inputs are clipped to 0 first: radar products carry small negative artefacts
    (e.g. -0.1 mm) that would otherwise give large negative values (or NaN below -1). Likewise
    the inverse clips network outputs below 0 to 0, so it never returns negative amounts. Exact
    inverses on x >= 0; NaN stays NaN.
    """

    name = "log1p"

    def _forward(self, x: Any, p: Params, xp: ModuleType) -> Any:
        return xp.log1p(xp.clip(x, 0, None))

    def _inverse(self, y: Any, p: Params, xp: ModuleType) -> Any:
        return xp.expm1(xp.clip(y, 0, None))


class MinMax(Transform):
    """`y = (x - min) / (max - min)` with min, max of the training split: [0, 1] on it.

    Values outside the training range map outside [0, 1] (no clipping, so it stays invertible).
    A constant training split (max == min) uses a denominator of 1: y = x - min.
    """

    name = "minmax"
    param_names = ("min", "max")

    def fitter(self) -> Fitter:
        return Fitter(self.name, lambda f: {"min": f.min, "max": f.max})

    @staticmethod
    def _scale(p: Params) -> float:
        span = p["max"] - p["min"]
        return span if span > 0 else 1.0

    def _forward(self, x: Any, p: Params, xp: ModuleType) -> Any:
        return (x - p["min"]) / self._scale(p)

    def _inverse(self, y: Any, p: Params, xp: ModuleType) -> Any:
        return y * self._scale(p) + p["min"]


class ZScore(Transform):
    """`y = (x - mean) / std` with the training split's mean and population std (ddof=0).

    Fitted by a streaming, numerically stable accumulation (see `Fitter`). A constant training
    split (std == 0) uses std = 1: y = x - mean.
    """

    name = "zscore"
    param_names = ("mean", "std")

    def fitter(self) -> Fitter:
        return Fitter(self.name, lambda f: {"mean": f.mean, "std": f.std})

    @staticmethod
    def _std(p: Params) -> float:
        return p["std"] if p["std"] > 0 else 1.0

    def _forward(self, x: Any, p: Params, xp: ModuleType) -> Any:
        return (x - p["mean"]) / self._std(p)

    def _inverse(self, y: Any, p: Params, xp: ModuleType) -> Any:
        return y * self._std(p) + p["mean"]


class DBR(Transform):
    """Decibel rain rate: `y = 10·log10(R)` for R >= threshold, `zerovalue` for R < threshold.

    Options: `threshold` (mm/h, default 0.1), `zerovalue` (dB, default 10·log10(threshold) - 5,
    i.e. -15 dB for 0.1 mm/h; must lie below 10·log10(threshold) so that "no rain" is
    distinguishable), `scale` (default False).

    Inverse (the usual convention): `R = 10^(y/10)` for y >= 10·log10(threshold), and 0 below it,
    so that network outputs between `zerovalue` and the threshold decode to no rain. Exact
    inverses for R >= threshold; values below the threshold (including 0 and negative artefacts)
    all decode to 0. NaN stays NaN.

    With `scale=True` the dB values are also mapped to roughly [0, 1], which suits sigmoid
    outputs and normalisation layers: `y' = (y - zerovalue) / (max - zerovalue)`, where `max` is
    the largest dBR of the training split (fitted; a split without rain uses a denominator of 1).
    No rain maps to exactly 0. The default (`scale=False`) is pure dBR and needs no fitting.
    """

    name = "dbr"
    defaults: ClassVar[dict[str, Any]] = {"threshold": 0.1, "zerovalue": None, "scale": False}

    def _validate(self, options: dict[str, Any]) -> dict[str, Any]:
        threshold = _number(options["threshold"], "threshold", self.name)
        if not threshold > 0:
            raise ConfigError(f"transform 'dbr': threshold must be > 0 mm/h, got {threshold}")
        threshold_db = 10.0 * math.log10(threshold)
        zerovalue = options["zerovalue"]
        zerovalue = threshold_db - 5.0 if zerovalue is None else _number(zerovalue, "zerovalue")
        if not zerovalue < threshold_db:
            raise ConfigError(
                f"transform 'dbr': zerovalue must be below 10·log10(threshold) = "
                f"{threshold_db:g} dB, got {zerovalue:g}"
            )
        scale = options["scale"]
        if not isinstance(scale, bool):
            raise ConfigError(f"transform 'dbr': scale must be true or false, got {scale!r}")
        return {"threshold": threshold, "zerovalue": zerovalue, "scale": scale}

    def expected_params(self) -> tuple[str, ...]:
        return ("max",) if self.options["scale"] else ()

    def fitter(self) -> Fitter:
        if not self.options["scale"]:
            return _NothingToFit(self.name)
        return Fitter(self.name, lambda f: {"max": f.max}, preprocess=lambda a: self._dbr(a, np))

    def _span(self, p: Params) -> float:
        span = p["max"] - self.options["zerovalue"]
        return span if span > 0 else 1.0

    def _dbr(self, x: Any, xp: ModuleType) -> Any:
        threshold = self.options["threshold"]
        below = x < threshold  # False for NaN, which then flows through log10 as NaN
        safe = xp.where(below, threshold, x)  # avoids log10 of 0 or negatives (warnings)
        return xp.where(below, self.options["zerovalue"], 10.0 * xp.log10(safe))

    def _forward(self, x: Any, p: Params, xp: ModuleType) -> Any:
        y = self._dbr(x, xp)
        if self.options["scale"]:
            y = (y - self.options["zerovalue"]) / self._span(p)
        return y

    def _inverse(self, y: Any, p: Params, xp: ModuleType) -> Any:
        if self.options["scale"]:
            y = y * self._span(p) + self.options["zerovalue"]
        # The cut is computed in y's dtype with the forward's operations, so R == threshold
        # (which the forward maps to exactly this value) decodes to rain, not to 0.
        cut = 10.0 * xp.log10(_scalar_like(self.options["threshold"], y))
        return xp.where(y < cut, 0.0, 10.0 ** (y / 10.0))


def _number(value: Any, option: str, transform: str = "dbr") -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(
            f"transform {transform!r}: {option} must be a finite number, got {value!r}"
        )
    return float(value)


# --------------------------------------------------------------------------------------------
# Registry.

_REGISTRY: dict[str, type[Transform]] = {}


def register(name: str, cls: type[Transform], *, replace: bool = False) -> None:
    """Make `cls` available as `get(name)` (plugins may add their own transforms)."""
    if not isinstance(cls, type) or not issubclass(cls, Transform):
        raise ConfigError(f"transform {name!r} must be a subclass of Transform, got {cls!r}")
    key = name.strip().lower()
    if not key:
        raise ConfigError("a transform name must be a non-empty string")
    if key in _REGISTRY and not replace and _REGISTRY[key] is not cls:
        raise ConfigError(f"transform {key!r} is already registered (pass replace=True)")
    _REGISTRY[key] = cls


def available() -> list[str]:
    """Registered transform names."""
    return sorted(_REGISTRY)


def get(name: str, **options: Any) -> Transform:
    """The transform registered as `name` (case-insensitive), configured with `options`."""
    key = name.strip().lower() if isinstance(name, str) else name
    if key not in _REGISTRY:
        raise ConfigError(f"unknown transform {name!r}; available: {', '.join(available())}")
    cls = _REGISTRY[key]
    if cls.name != key:  # registered under another name: keep that name for the manifest
        cls = type(cls.__name__, (cls,), {"name": key})
    return cls(**options)


def from_dict(d: dict[str, Any]) -> tuple[Transform, Params]:
    """Rebuild `(transform, params)` from `Transform.to_dict` output (e.g. a manifest entry)."""
    if not isinstance(d, dict) or "name" not in d:
        raise ConfigError(
            f"a transform entry must be a mapping with 'name', 'options', 'params'; got {d!r}"
        )
    extra = sorted(set(d) - {"name", "options", "params"})
    if extra:
        raise ConfigError(
            f"unknown key(s) {', '.join(extra)} in transform entry; valid: name, options, params"
        )
    transform = get(d["name"], **(d.get("options") or {}))
    params = transform._check_params(d.get("params") or {})
    return transform, params


for _cls in (NoneTransform, Log1p, MinMax, ZScore, DBR):
    register(_cls.name, _cls)


def normalise_frames(
    block: np.ndarray, transform: Transform, params: list[Params], fill: list[float]
) -> np.ndarray:
    """Physical frames `(N, C, H, W)` -> what the network sees: each channel through the
    transform with its own parameters, missing values (NaN) set to that channel's normalised
    fill value. The one code path of `prepare` (the store) and `forecast` (new frames)."""
    out = np.empty(block.shape, dtype=np.float32)
    for c in range(block.shape[1]):
        x = block[:, c]
        y = np.asarray(transform.forward(x, params[c]), dtype=np.float32)
        y[~np.isfinite(x)] = fill[c]
        out[:, c] = y
    return out


def denormalise_frames(block: Any, transform: Transform, params: list[Params]) -> Any:
    """Network outputs `(..., C, H, W)` (numpy or torch) -> physical values, channel by channel."""
    channels = [transform.inverse(block[..., c, :, :], params[c]) for c in range(block.shape[-3])]
    return _xp(block).stack(channels, -3)
