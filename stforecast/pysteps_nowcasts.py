"""Baselines from pysteps, the nowcasting library forecasters already use (optional extra).

Registered beside `persistence` and the built-in `extrapolation`, and scored by the same code:

- ``pysteps_extrapolation``: pysteps' dense Lucas-Kanade motion and its semi-Lagrangian
  extrapolation of the last frame (`pysteps.nowcasts.extrapolation`).
- ``sprog``: S-PROG (Seed 2003), pysteps' smooth deterministic nowcast: the last three frames are
  decomposed into a cascade of spatial scales, each scale evolves by its own AR(2) process along
  the motion, so small scales lose their predictability first. The fair opponent of a network
  trained on a squared error.
- ``steps_mean``: the mean of a STEPS ensemble (Bowler et al. 2006; `STEPS_MEMBERS` members,
  fixed seed), another smooth forecast; chosen over ANVIL because ANVIL is built for vertically
  integrated liquid and STEPS is pysteps' operational rain-rate nowcast.

The inputs are rain rates (mm/h) with NaN where there is no coverage. As pysteps' own examples
do, the cascade methods work on ``10 log10 R`` with rain below `RAIN_THRESHOLD` set to a fixed
"no rain" value, and the motion is estimated on the same transformed frames; the forecast is
transformed back, rain below the threshold reported as 0. Pixels without coverage in the last
frame stay NaN at every lead, as in the built-in extrapolation. These baselines are meant for
precipitation; other quantities are refused.

pysteps is an optional extra (``pip install -e ".[pysteps]"``); without it these names fail
with one line saying how to install it.
"""

from __future__ import annotations

import contextlib
import io
import os
from typing import Any

import numpy as np

from stforecast.errors import ConfigError

__all__ = ["NAMES", "RAIN_THRESHOLD", "STEPS_MEMBERS", "available", "nowcast"]

NAMES = ("pysteps_extrapolation", "sprog", "steps_mean")
#: Rain rate (mm/h) below which a pixel is "no rain" for the dB transform.
RAIN_THRESHOLD = 0.1
#: Negative rates down to this (mm/h) are a product's artefacts and count as no rain (BOM's
#: bias-corrected rainfall has pixels at -0.1 mm per 10 min, -0.6 mm/h); lower ones mean the
#: quantity is not precipitation, and the baselines refuse it.
NEGATIVE_TOLERANCE = -1.0
#: The dB value given to "no rain" (pysteps' examples use -15 dB).
NO_RAIN_DB = -15.0
#: Members of the STEPS ensemble whose mean is the ``steps_mean`` baseline, and its seed.
STEPS_MEMBERS = 12
STEPS_SEED = 24
#: Cascade levels of S-PROG and STEPS (pysteps' default).
CASCADE_LEVELS = 6

INSTALL = 'pip install -e ".[pysteps]" (or pip install pysteps)'


def available() -> bool:
    """Whether pysteps can be imported here."""
    try:
        _pysteps()
    except ConfigError:
        return False
    return True


def require(name: str) -> None:
    """Fail early, before any work, when a pysteps baseline is asked for without pysteps."""
    try:
        _pysteps()
    except ConfigError:
        raise ConfigError(f"baseline {name!r} needs pysteps: {INSTALL}") from None


def _pysteps() -> Any:
    os.environ.setdefault("PYSTEPS_QUIET", "1")
    try:
        # pysteps prints where it found its configuration file at import: keep stdout clean.
        with contextlib.redirect_stdout(io.StringIO()):
            import pysteps  # noqa: F401
            from pysteps import motion, nowcasts
    except ImportError:
        raise ConfigError(f"pysteps is not installed: {INSTALL}") from None
    return motion, nowcasts


def _to_db(x: np.ndarray) -> np.ndarray:
    """Rain rate -> dB (10 log10 R), no rain and no coverage -> `NO_RAIN_DB`."""
    rain = np.isfinite(x) & (x >= RAIN_THRESHOLD)
    out = np.full(x.shape, NO_RAIN_DB, dtype=np.float64)
    out[rain] = 10.0 * np.log10(x[rain])
    return out


def _from_db(x: np.ndarray) -> np.ndarray:
    threshold = 10.0 * np.log10(RAIN_THRESHOLD)
    rate = np.where(np.isfinite(x) & (x >= threshold), 10.0 ** (x / 10.0), 0.0)
    return rate.astype(np.float32)


def nowcast(name: str, inputs: np.ndarray, steps: int) -> np.ndarray:
    """The pysteps nowcast ``name`` of ``steps`` leads from ``inputs`` (T_in, H, W) in mm/h."""
    motion, nowcasts = _pysteps()
    x = np.asarray(inputs, dtype=np.float64)
    last = x[-1]
    covered = np.isfinite(last)
    if not covered.any():
        return np.full((steps, *last.shape), np.nan, dtype=np.float32)
    if np.nanmin(x) < NEGATIVE_TOLERANCE:
        raise ConfigError(f"baseline {name!r} is for precipitation; the inputs are negative")
    db = _to_db(x)
    recent = db[-4:]  # the same frames the built-in extrapolation estimates its motion on
    with contextlib.redirect_stdout(io.StringIO()):
        velocity = motion.get_method("LK")(recent) if recent.shape[0] > 1 else None
        if velocity is None:
            velocity = np.zeros((2, *last.shape))
        out = _run(name, nowcasts, db, velocity, int(steps))
    out = _from_db(out)
    out[:, ~covered] = np.nan
    return out


def _run(name: str, nowcasts: Any, db: np.ndarray, velocity: np.ndarray, steps: int) -> Any:
    extrap = {"allow_nonfinite_values": True}
    if name == "pysteps_extrapolation" or db.shape[0] < 3:
        return nowcasts.get_method("extrapolation")(
            db[-1], velocity, steps, extrap_kwargs={**extrap, "outval": NO_RAIN_DB}
        )
    threshold = 10.0 * np.log10(RAIN_THRESHOLD)
    if not (db[-3:] > threshold).any():  # no rain at all: the cascade has nothing to evolve
        return np.full((steps, *db.shape[1:]), NO_RAIN_DB)
    if name == "sprog":
        return nowcasts.get_method("sprog")(
            db[-3:], velocity, steps, precip_thr=threshold, n_cascade_levels=CASCADE_LEVELS,
            extrap_kwargs=extrap,
        )  # fmt: skip
    members = nowcasts.get_method("steps")(
        db[-3:], velocity, steps, n_ens_members=STEPS_MEMBERS, n_cascade_levels=CASCADE_LEVELS,
        precip_thr=threshold, vel_pert_method=None, mask_method="obs",
        seed=STEPS_SEED, extrap_kwargs=extrap,
    )  # fmt: skip
    # the ensemble mean of rain rates, not of dB values
    return 10.0 * np.log10(np.maximum(np.nanmean(_from_db(members), axis=0), 1e-6))
