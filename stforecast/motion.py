"""Motion: optical-flow estimation on a stack of frames and semi-Lagrangian advection along it.

One code for the built-in `extrapolation` baseline and for the extrapolation guidance of learned
models (`guidance`): a guided network is trained to correct exactly the forecast it is compared
with. Fields are `(T, H, W)` arrays in any units (NaN where there is no coverage); the motion is
in pixels per time step, (rows, cols).
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
from scipy import ndimage as ndi
from skimage.registration import optical_flow_ilk

#: Flow is estimated on a block-averaged grid whose longer side is at most this many pixels.
FLOW_MAX_SIDE = 256
#: Number of consecutive pairs of the last frames whose flows are averaged.
FLOW_PAIRS = 3
#: Lucas–Kanade window radius and number of warps (pixels of the estimation grid).
ILK_RADIUS = 7
ILK_NUM_WARP = 3


def _workers() -> int:
    """Threads for the interpolations and flow estimates, which release the GIL: the CPUs this
    process may use, at most 4 (the gain flattens there)."""
    try:
        return max(1, min(4, len(os.sched_getaffinity(0))))
    except AttributeError:  # not Linux
        return max(1, min(4, os.cpu_count() or 1))


class _Serial:
    """The executor interface, run in the caller's thread (one CPU, or no pool given)."""

    def submit(self, fn: Callable, *args, **kwargs) -> Future:
        done: Future = Future()
        done.set_result(fn(*args, **kwargs))
        return done


def _pool() -> ThreadPoolExecutor | None:
    n = _workers()
    return ThreadPoolExecutor(n, thread_name_prefix="motion") if n > 1 else None


def _block_mean(x: np.ndarray, f: int) -> np.ndarray:
    """Mean over f × f blocks; the edges are padded by repetition up to a multiple of f."""
    if f == 1:
        return x
    H, W = x.shape
    ph, pw = -H % f, -W % f
    x = np.pad(x, ((0, ph), (0, pw)), mode="edge")
    return x.reshape(x.shape[0] // f, f, x.shape[1] // f, f).mean(axis=(1, 3))


def _estimation_fields(frames: np.ndarray) -> np.ndarray:
    """Frames prepared for optical flow: NaN filled with the minimum valid value, log1p for
    non-negative data (so that intense cells do not dominate), otherwise standardised."""
    finite = np.isfinite(frames)
    lo = float(frames[finite].min())
    x = np.where(finite, frames, lo).astype(np.float64)
    if lo >= 0:
        return np.log1p(x)
    sd = float(x.std())
    return (x - x.mean()) / (sd if sd > 0 else 1.0)


def _spread(flow: np.ndarray, weight: np.ndarray, sigma: float) -> np.ndarray:
    """Normalised Gaussian smoothing of ``flow`` (2, h, w) with confidence ``weight``, blended with
    the weighted domain mean where no confident estimate is near."""
    den = ndi.gaussian_filter(weight, sigma, mode="nearest")
    num = np.stack([ndi.gaussian_filter(weight * v, sigma, mode="nearest") for v in flow])
    mean = (weight * flow).sum(axis=(1, 2)) / weight.sum()
    lam = 1e-2 * float(weight.mean())
    return (num + lam * mean[:, None, None]) / (den + lam)


def _pair(a: np.ndarray, b: np.ndarray, gap: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """The Lucas–Kanade flow of one pair and its confidence (None when nothing is trusted)."""
    size = 2 * ILK_RADIUS + 1
    trusted = ~ndi.maximum_filter(gap, size=size + 2, mode="constant")
    if not trusted.any():  # e.g. a missing frame
        return None
    flow = optical_flow_ilk(a, b, radius=ILK_RADIUS, num_warp=ILK_NUM_WARP, prefilter=True)
    flow = np.nan_to_num(flow.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    gr, gc = np.gradient(0.5 * (a.astype(np.float64) + b))
    return flow, ndi.uniform_filter(gr * gr + gc * gc, size=size, mode="mirror") * trusted


def estimate_motion(frames: np.ndarray) -> np.ndarray:
    """Stationary motion field ``(2, H, W)`` = (rows, cols) in pixels per time step.

    Lucas–Kanade (``skimage.registration.optical_flow_ilk``, pyramidal, median-prefiltered) on
    each consecutive pair of the last ``FLOW_PAIRS + 1`` frames, with the earlier frame as
    reference: skimage returns ``(v_row, v_col)`` such that ``later(r + v_row, c + v_col) ≈
    earlier(r, c)``, i.e. the forward displacement of the pattern (checked by experiment: a field
    moving 1 px down and 2 px right per step gives v ≈ (+1, +2)).

    Frames are NaN-filled with their minimum valid value, log1p-transformed when non-negative, and
    block-averaged so that the longer side is at most ``FLOW_MAX_SIDE`` (the flow is rescaled by
    the block size and interpolated back bilinearly). Each estimate is trusted in proportion to the
    local gradient energy (the trace of the Lucas–Kanade matrix), and not at all within the window
    radius of a no-coverage pixel in either frame of the pair (whose filled edge does not move;
    a pair with no trusted pixel, e.g. a missing frame, is dropped). The pairs are combined by a
    per-pixel median (three or more pairs) or weighted mean, then spread by normalised Gaussian
    smoothing and blended with the domain mean where no structure is near, so that featureless
    (e.g. dry) areas ahead of a moving system get a motion too; a second pass drops estimates more
    than 1 px/step (+25 %) away from the first smoothed field.
    """
    frames = np.asarray(frames, dtype=np.float64)
    if frames.ndim != 3:
        raise ValueError(f"frames must have shape (T, H, W), got {frames.shape}")
    T, H, W = frames.shape
    frames = frames[-(FLOW_PAIRS + 1) :]
    finite = np.isfinite(frames)
    if T < 2 or not finite.any():
        return np.zeros((2, H, W))
    f = max(1, math.ceil(max(H, W) / FLOW_MAX_SIDE))
    fields = _estimation_fields(frames)
    fields = np.stack([_block_mean(x, f) for x in fields]).astype(np.float32)
    gaps = np.stack([_block_mean((~m).astype(np.float64), f) > 0 for m in finite])

    pool = _pool()
    try:
        pairs = [(pool or _Serial()).submit(_pair, fields[i], fields[i + 1], gaps[i] | gaps[i + 1])
                 for i in range(len(fields) - 1)]  # fmt: skip
        estimates = [p for p in (job.result() for job in pairs) if p is not None]
    finally:
        if pool is not None:
            pool.shutdown()
    flows = [flow for flow, _ in estimates]
    weights = [weight for _, weight in estimates]
    if not flows:
        return np.zeros((2, H, W))
    flows, weights = np.stack(flows), np.stack(weights)
    weight = weights.mean(axis=0)
    if not weight.any():
        return np.zeros((2, H, W))
    if len(flows) >= 3:
        flow = np.median(flows, axis=0)
    else:
        flow = (weights[:, None] * flows).sum(axis=0) / np.where(weight > 0, weights.sum(0), 1.0)
    sigma = 2.0 * ILK_RADIUS
    smooth = _spread(flow, weight, sigma)
    tol = 1.0 / f + 0.25 * np.hypot(*smooth)
    keep = weight * (np.hypot(*(flow - smooth)) <= tol)
    if keep.any():
        smooth = _spread(flow, keep, sigma)
    flow = smooth * f
    if f == 1:
        return flow
    # Coarse pixel i covers fine pixels f*i .. f*i+f-1, its centre is at f*i + (f-1)/2.
    r = (np.arange(H) - (f - 1) / 2) / f
    c = (np.arange(W) - (f - 1) / 2) / f
    rr, cc = np.meshgrid(r, c, indexing="ij")
    return np.stack([ndi.map_coordinates(v, [rr, cc], order=1, mode="nearest") for v in flow])


def departures(flow: np.ndarray, steps: int, pool: object = None) -> Iterator[np.ndarray]:
    """Departure points ``(2, H, W)`` (rows, cols) of every pixel for leads 1..``steps`` along a
    stationary ``flow``, traced back one step at a time: ``p_k = p_{k-1} - v(p_{k-1})`` with
    ``v`` interpolated bilinearly at ``p_{k-1}``, so curved and varying flow is followed. With a
    `pool` (an executor) the two components are interpolated at once."""
    run = pool or _Serial()
    H, W = flow.shape[1:]
    vr = np.asarray(flow[0], dtype=np.float32)
    vc = np.asarray(flow[1], dtype=np.float32)
    pr, pc = np.meshgrid(
        np.arange(H, dtype=np.float64), np.arange(W, dtype=np.float64), indexing="ij"
    )
    for _ in range(steps):
        coords = np.stack([pr, pc])
        dr, dc = (run.submit(ndi.map_coordinates, v, coords, order=1, mode="nearest")
                  for v in (vr, vc))  # fmt: skip
        pr, pc = pr - dr.result(), pc - dc.result()
        yield np.stack([pr, pc])


def advect(field: np.ndarray, flow: np.ndarray, steps: int, outside: float) -> np.ndarray:
    """Semi-Lagrangian backward advection of ``field`` (H, W, finite) along a stationary ``flow``.

    Lead k samples ``field`` once at the :func:`departures` point ``p_k`` (bilinear, no
    accumulated smoothing). Departure points outside the domain take the value ``outside``.
    """
    src = np.asarray(field, dtype=np.float32)
    out = np.empty((steps, *src.shape), dtype=np.float32)
    pool = _pool()  # lead k is sampled while the departures of lead k + 1 are traced
    run = pool or _Serial()
    try:
        jobs = [run.submit(ndi.map_coordinates, src, at, output=out[k], order=1,
                           mode="constant", cval=outside)
                for k, at in enumerate(departures(flow, steps, pool))]  # fmt: skip
        for job in jobs:
            job.result()
    finally:
        if pool is not None:
            pool.shutdown()
    return out


def extrapolate(frames: np.ndarray, steps: int) -> np.ndarray:
    """The extrapolation nowcast ``(steps, H, W)`` of ``frames`` ``(T, H, W)``: the last frame
    (NaN filled with its minimum) advected along :func:`estimate_motion`; pixels without coverage
    in the last frame stay NaN (the `extrapolation` baseline documents the method)."""
    x = np.asarray(frames, dtype=np.float32)
    last = x[-1]
    covered = np.isfinite(last)
    if not covered.any():
        return np.full((steps, *last.shape), np.nan, dtype=np.float32)
    lo = float(last[covered].min())
    out = advect(np.where(covered, last, lo), estimate_motion(x), steps, outside=lo)
    out[:, ~covered] = np.nan
    return out


GUIDES = ("extrapolation", "sprog")


def guide_method(net: object) -> str:
    """What a guided network's card says its guide is (`[model] options.guidance`): `true` and
    "extrapolation" are the extrapolation, "sprog" is S-PROG."""
    return guide_name(((getattr(net, "config", None) or {}).get("options") or {}).get("guidance"))


def guide_name(value: object) -> str:
    """`[model] options.guidance` by name: "sprog", or "extrapolation" (also for `true`)."""
    return "sprog" if value == "sprog" else "extrapolation"


def guidance(frames: np.ndarray, steps: int, method: str = "extrapolation") -> np.ndarray:
    """The guide of a guided model, aligned with its rollout outputs: ``(T - 1 + steps, C, H, W)``.

    ``frames`` ``(T, C, H, W)`` are the observed inputs (any units; NaN is filled with each
    channel's minimum). The motion is estimated once from channel 0 by :func:`estimate_motion`.
    Output t < T - 1 (the next-frame prediction while observing) is input t advected one step;
    output T - 2 + k (lead k) is the last input advected k steps by :func:`advect`, exactly the
    `extrapolation` baseline's forecast. Values advected in from outside the grid are the minimum.

    ``method="sprog"``: the leads are pysteps' S-PROG nowcast instead (the `sprog` baseline,
    `stforecast.pysteps_nowcasts`), of frames that are ``log1p`` of rain rates in mm/h (what a
    recipe with this guide must prepare): each scale of the rain field loses its structure as
    fast as its own predictability, so the guide is already the smoother, better-scoring
    forecast of the two on CSI and FSS, and the network learns the correction to it.
    """
    if method not in GUIDES:
        raise ValueError(f"unknown guide {method!r}; choose one of {', '.join(GUIDES)}")
    x = np.asarray(frames, dtype=np.float32)
    if x.ndim != 4 or x.shape[0] < 1:
        raise ValueError(f"frames must have shape (T, C, H, W), got {x.shape}")
    T, C, H, W = x.shape
    flow = estimate_motion(x[:, 0])
    one = next(departures(flow, 1))
    out = np.empty((T - 1 + steps, C, H, W), dtype=np.float32)
    for c in range(C):
        finite = np.isfinite(x[:, c])
        lo = float(x[:, c][finite].min()) if finite.any() else 0.0
        filled = np.where(finite, x[:, c], lo)
        for t in range(T - 1):
            out[t, c] = ndi.map_coordinates(filled[t], one, order=1, mode="constant", cval=lo)
        leads = _sprog_leads(filled, steps) if method == "sprog" else None
        out[T - 1 :, c] = advect(filled[-1], flow, steps, outside=lo) if leads is None else leads
    return out


def _sprog_leads(log_rates: np.ndarray, steps: int) -> np.ndarray | None:
    """S-PROG's leads `(steps, H, W)` of `log1p(mm/h)` frames `(T, H, W)`, in the same units;
    None where pysteps cannot fit its cascade (a scale without variance: a few wet pixels), and
    the guide falls back to the extrapolation."""
    from stforecast.errors import ConfigError
    from stforecast.pysteps_nowcasts import nowcast

    rates = np.expm1(np.clip(log_rates, 0.0, None))
    try:
        with warnings.catch_warnings():  # pysteps' notes on degenerate windows, per window
            warnings.simplefilter("ignore")
            leads = nowcast("sprog", rates, steps)
    except ConfigError:  # no pysteps: the one line that says how to install it
        raise
    except Exception:  # pysteps on a degenerate window ("x contains non-finite values" in the
        return None  # AR(2) fit, an IndexError in the cascade): the extrapolation instead
    return np.log1p(np.nan_to_num(leads, nan=0.0)).astype(np.float32)
