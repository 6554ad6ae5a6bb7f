"""Reference nowcasts, registered by name and scored by the same code as the models.

A baseline is a callable ``(inputs, steps) -> forecast``: ``inputs`` is ``(T_in, H, W)`` in data
units (physical, e.g. mm/h), NaN where there is no coverage; the forecast is ``(steps, H, W)``
float32 in the same units.

- ``persistence``: the last observed frame repeated.
- ``extrapolation``: a motion field estimated by optical flow on the last frames, and
  semi-Lagrangian advection of the last frame along it (the operational reference nowcast; pysteps'
  "extrapolation" nowcast is the reference point of the field). See :func:`extrapolation`.

- ``pysteps_extrapolation``, ``sprog``, ``steps_mean``: pysteps' own nowcasts (the optional extra;
  see `stforecast.pysteps_nowcasts`).

New baselines are added with the :func:`register` decorator and looked up with :func:`get`.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from stforecast import pysteps_nowcasts
from stforecast.errors import ConfigError
from stforecast.motion import extrapolate

Baseline = Callable[[np.ndarray, int], np.ndarray]

_REGISTRY: dict[str, Baseline] = {}


def register(name: str) -> Callable[[Baseline], Baseline]:
    """Decorator: make a baseline available under ``name`` (names are unique)."""

    def decorate(fn: Baseline) -> Baseline:
        if name in _REGISTRY:
            raise ValueError(f"baseline {name!r} is already registered")
        _REGISTRY[name] = fn
        return fn

    return decorate


def available() -> list[str]:
    """Names of the registered baselines, sorted."""
    return sorted(_REGISTRY)


def get(name: str) -> Baseline:
    """The baseline registered as ``name``; `ConfigError` (exit 2) if there is none, or if it
    needs a library that is not installed."""
    try:
        fn = _REGISTRY[name]
    except KeyError:
        raise ConfigError(
            f"unknown baseline {name!r}; available: {', '.join(available())}"
        ) from None
    if name in pysteps_nowcasts.NAMES:
        pysteps_nowcasts.require(name)
    return fn


def _check(inputs: np.ndarray, steps: int) -> np.ndarray:
    x = np.asarray(inputs)
    if x.ndim != 3 or x.shape[0] < 1:
        raise ValueError(
            f"baseline inputs must have shape (T_in, H, W) with T_in >= 1, got {x.shape}"
        )
    if isinstance(steps, bool) or int(steps) != steps or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    return x.astype(np.float32, copy=False)


@register("persistence")
def persistence(inputs: np.ndarray, steps: int) -> np.ndarray:
    """The last input frame repeated ``steps`` times (NaN, i.e. no coverage, kept)."""
    x = _check(inputs, steps)
    return np.repeat(x[-1:], int(steps), axis=0).copy()


@register("extrapolation")
def extrapolation(inputs: np.ndarray, steps: int) -> np.ndarray:
    """Optical-flow extrapolation nowcast (Lagrangian persistence).

    1. Motion: `stforecast.motion.estimate_motion` on the last ``FLOW_PAIRS + 1`` frames:
       Lucas–Kanade (``optical_flow_ilk``) with the earlier frame of each pair as reference, so
       the flow is the forward displacement in pixels per step; flows of the pairs averaged
       (gradient-energy weights), smoothed and gap-filled; the motion field is then held
       stationary.
    2. Advection: `stforecast.motion.advect` traces each pixel back one step at a time along
       the flow (bilinear, ``scipy.ndimage.map_coordinates`` order 1) and samples the last frame
       once per lead. The last frame's NaN pixels are first filled with its minimum valid value
       (so NaN does not spread through interpolation); values advected in from outside the
       domain are that minimum too.
    3. Coverage: pixels that are NaN in the last frame stay NaN at every lead (the radar coverage
       is fixed on the grid); every other pixel is finite.

    With a single input frame there is no motion and the result equals persistence.
    """
    return extrapolate(_check(inputs, steps), int(steps))


def _pysteps_baseline(name: str) -> Baseline:
    def baseline(inputs: np.ndarray, steps: int) -> np.ndarray:
        return pysteps_nowcasts.nowcast(name, _check(inputs, steps), int(steps))

    baseline.__name__ = name
    baseline.__doc__ = f"pysteps' {name} nowcast (see `stforecast.pysteps_nowcasts`)."
    return baseline


for _name in pysteps_nowcasts.NAMES:
    register(_name)(_pysteps_baseline(_name))
