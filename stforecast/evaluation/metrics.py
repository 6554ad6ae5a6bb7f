"""Verification scores per lead time, accumulated in a streaming way (numpy only).

`Scores` accumulates sums and counts (float64) per lead time, so evaluating a long archive runs in
bounded memory: call `update` once per batch, then `result` (one list per metric, aligned with lead
times), `summary` (mean over lead times) and `protocol` (how each number was computed).

Image metrics follow the video-prediction papers (PredRNN, OpenSTL, the CMS-LSTM code): MSE and
MAE are per-frame *sums* over pixels averaged over frames; SSIM is scikit-image's
``structural_similarity`` per 2-D frame with an explicit ``data_range``. Verification scores
follow forecasting practice: CSI, POD, FAR, ETS from contingency tables at thresholds, and the
fractions skill score (FSS, Roberts & Lean 2008) at thresholds × neighbourhood sizes.

Pixels where the truth or the forecast is not finite (NaN: missing data, radar no-coverage) or where
``valid`` is False are excluded from every score.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
from scipy import ndimage as ndi
from skimage.metrics import structural_similarity

DEFAULT_THRESHOLDS = (0.1, 1.0, 5.0)
DEFAULT_SCALES = (1, 4, 16)
#: PSNR of a frame with zero error (and the upper bound of every frame's PSNR), in dB.
PSNR_CAP_DB = 100.0


def key(metric: str, threshold: float | None = None, scale: int | None = None) -> str:
    """Result key: ``key("mse") == "mse"``, ``key("csi", 1) == "csi_1.0"``,
    ``key("fss", 1, 8) == "fss_1.0_8"`` (threshold as ``str(float(t))``, scale as an integer)."""
    if threshold is None:
        if scale is not None:
            raise ValueError(f"key({metric!r}): a scale needs a threshold")
        return metric
    out = f"{metric}_{float(threshold)}"
    if scale is None:
        return out
    if int(scale) != scale:
        raise ValueError(f"key({metric!r}): scale must be an integer, got {scale!r}")
    return f"{out}_{int(scale)}"


def _nan_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den, NaN where den == 0."""
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    out = np.full(np.broadcast(num, den).shape, np.nan)
    np.divide(num, den, out=out, where=den != 0)
    return out


class Scores:
    """Streaming accumulator of verification scores for ``leads`` lead times.

    Parameters
    ----------
    leads: number of lead times (the length of every result list).
    data_range: range of the data in data units (PSNR peak, SSIM ``data_range``); > 0.
    thresholds: event thresholds in data units (event = value >= threshold).
    scales: FSS neighbourhood sizes in pixels (n × n windows placed as
        ``scipy.ndimage.uniform_filter`` places them: rows ``i - n//2 .. i - n//2 + n - 1``, so even
        sizes lean half a pixel up-left).
    clip: (low, high) applied to the forecast before scoring; either side may be None.
    ssim_window: SSIM window size (odd, >= 3); frames smaller than it get no SSIM.
    ssim_uint8: SSIM as the CMS-LSTM Moving MNIST protocol computes it: values in
        [0, data_range] mapped to uint8 by ``uint8(clip(x / data_range, 0, 1) * 255)`` (truncation,
        as ``np.uint8(x * 255)`` in that code) and SSIM with ``data_range=255``.
    """

    def __init__(
        self,
        leads: int,
        *,
        data_range: float,
        thresholds=DEFAULT_THRESHOLDS,
        scales=DEFAULT_SCALES,
        clip: tuple[float | None, float | None] | None = None,
        ssim_window: int = 7,
        ssim_uint8: bool = False,
    ) -> None:
        if isinstance(leads, bool) or int(leads) != leads or leads < 1:
            raise ValueError(f"leads must be a positive integer, got {leads!r}")
        if not (math.isfinite(float(data_range)) and float(data_range) > 0):
            raise ValueError(f"data_range must be a positive number, got {data_range!r}")
        thresholds = tuple(float(t) for t in thresholds)
        if any(not math.isfinite(t) for t in thresholds):
            raise ValueError(f"thresholds must be finite numbers, got {thresholds!r}")
        if len({key("x", t) for t in thresholds}) != len(thresholds):
            raise ValueError(f"thresholds must be distinct, got {thresholds!r}")
        scales_in = tuple(scales)
        if any(isinstance(n, bool) or int(n) != n or n < 1 for n in scales_in):
            raise ValueError(f"scales must be positive integers (pixels), got {scales_in!r}")
        scales = tuple(int(n) for n in scales_in)
        if len(set(scales)) != len(scales):
            raise ValueError(f"scales must be distinct, got {scales!r}")
        if clip is not None:
            if len(clip) != 2:
                raise ValueError(f"clip must be (low, high), got {clip!r}")
            lo, hi = clip
            if lo is not None and hi is not None and lo > hi:
                raise ValueError(f"clip low {lo} is above clip high {hi}")
        if isinstance(ssim_window, bool) or ssim_window < 3 or ssim_window % 2 != 1:
            raise ValueError(f"ssim_window must be an odd integer >= 3, got {ssim_window!r}")

        self.leads = int(leads)
        self.data_range = float(data_range)
        self.thresholds = thresholds
        self.scales = scales
        self.clip = None if clip is None else (clip[0], clip[1])
        self.ssim_window = int(ssim_window)
        self.ssim_uint8 = bool(ssim_uint8)

        L, K, S = self.leads, len(thresholds), len(scales)
        self._frames = np.zeros(L)  # frames with >= 1 valid pixel
        self._frame_se = np.zeros(L)  # sum over frames of per-frame sums of squared errors
        self._frame_ae = np.zeros(L)
        self._psnr = np.zeros(L)  # sum over frames of per-frame PSNR
        self._pixels = np.zeros(L)  # valid pixels
        self._ssim = np.zeros(L)  # sum over frames of per-frame SSIM
        self._ssim_frames = np.zeros(L)
        self._table = np.zeros((L, K, 4))  # hits, misses, false alarms, correct negatives
        self._fss_num = np.zeros((L, K, S))  # sum (Pf - Po)^2
        self._fss_den = np.zeros((L, K, S))  # sum Pf^2 + Po^2

    @property
    def frames(self) -> list[int]:
        """Number of frames scored per lead (frames with at least one valid pixel)."""
        return [int(n) for n in self._frames]

    # ------------------------------------------------------------------ update

    def update(
        self, forecast: np.ndarray, truth: np.ndarray, valid: np.ndarray | None = None
    ) -> None:
        """Accumulate one batch: ``forecast`` and ``truth`` are (T, H, W) or (B, T, H, W) in data
        units with T <= leads (leads 0..T-1 are updated); ``valid`` is a bool mask broadcastable
        to ``truth`` (False = excluded)."""
        f = np.asarray(forecast)
        o = np.asarray(truth)
        if f.shape != o.shape:
            raise ValueError(
                f"forecast and truth must have the same shape, got {f.shape} and {o.shape}"
            )
        if o.ndim not in (3, 4):
            raise ValueError(
                f"forecast and truth must have shape (T, H, W) or (B, T, H, W), got {o.shape}"
            )
        if 0 in o.shape:
            raise ValueError(f"forecast and truth must not be empty, got shape {o.shape}")
        n_leads = o.shape[-3]
        if n_leads > self.leads:
            raise ValueError(
                f"got {n_leads} lead times (axis -3 of shape {o.shape}), "
                f"more than leads={self.leads}"
            )
        shape = o.shape
        f = f.astype(np.float64).reshape((-1, *shape[-3:]))
        o = o.astype(np.float64).reshape((-1, *shape[-3:]))
        if self.clip is not None:
            lo, hi = self.clip
            if lo is not None:
                f = np.maximum(f, lo)  # NaN stays NaN
            if hi is not None:
                f = np.minimum(f, hi)
        v = np.isfinite(f) & np.isfinite(o)
        if valid is not None:
            m = np.asarray(valid)
            if m.dtype != bool and not np.issubdtype(m.dtype, np.integer):
                raise ValueError(f"valid must be a boolean mask, got dtype {m.dtype}")
            try:
                m = np.broadcast_to(m.astype(bool), shape)
            except ValueError:
                raise ValueError(
                    f"valid mask of shape {m.shape} does not broadcast to truth shape {shape}"
                ) from None
            v &= m.reshape(v.shape)
        for lead in range(n_leads):
            self._update_lead(lead, f[:, lead], o[:, lead], v[:, lead])

    def _update_lead(self, lead: int, f: np.ndarray, o: np.ndarray, v: np.ndarray) -> None:
        """Accumulate frames (N, H, W) of one lead time; v: valid mask."""
        n = v.sum(axis=(1, 2)).astype(np.float64)
        has = n > 0
        if not has.any():
            return
        d = np.where(v, f - o, 0.0)
        se = np.einsum("nij,nij->n", d, d)
        ae = np.abs(d).sum(axis=(1, 2))
        self._frames[lead] += has.sum()
        self._frame_se[lead] += se.sum()
        self._frame_ae[lead] += ae.sum()
        self._pixels[lead] += n.sum()
        r2 = self.data_range**2
        mse_f = np.maximum(se[has] / n[has], r2 * 10.0 ** (-PSNR_CAP_DB / 10.0))
        self._psnr[lead] += np.sum(10.0 * np.log10(r2 / mse_f))

        for i in np.flatnonzero(has):
            s = self._ssim_frame(f[i], o[i], v[i])
            if s is not None:
                self._ssim[lead] += s
                self._ssim_frames[lead] += 1

        if not self.thresholds:
            return
        vf = v.astype(np.float64)
        nvalid = n.sum()
        boxes = {}  # scale -> filtered valid mask (the fraction denominators)
        for k, t in enumerate(self.thresholds):
            fe = (f >= t) & v
            oe = (o >= t) & v
            hits = float(np.count_nonzero(fe & oe))
            misses = float(np.count_nonzero(oe)) - hits
            false_alarms = float(np.count_nonzero(fe)) - hits
            self._table[lead, k] += (
                hits,
                misses,
                false_alarms,
                nvalid - hits - misses - false_alarms,
            )
            fe = fe.astype(np.float64)
            oe = oe.astype(np.float64)
            for s, size in enumerate(self.scales):
                if size == 1:
                    pf, po = fe, oe
                else:
                    if size not in boxes:
                        boxes[size] = ndi.uniform_filter(vf, size=(1, size, size), mode="constant")
                    box = boxes[size]
                    pf = self._fractions(fe, box, v, size)
                    po = self._fractions(oe, box, v, size)
                pf, po = pf[v], po[v]
                # the same summation for all three, so that FSS(0, o) is exactly 0
                self._fss_num[lead, k, s] += np.sum((pf - po) ** 2)
                self._fss_den[lead, k, s] += np.sum(pf**2) + np.sum(po**2)

    @staticmethod
    def _fractions(event: np.ndarray, box: np.ndarray, v: np.ndarray, size: int) -> np.ndarray:
        """Fraction of valid pixels that are events in each size × size neighbourhood."""
        num = ndi.uniform_filter(event, size=(1, size, size), mode="constant")
        out = np.zeros_like(num)
        np.divide(num, box, out=out, where=v & (box > 0))
        return np.clip(out, 0.0, 1.0, out=out)  # uniform_filter's running sums round

    def _ssim_frame(self, f: np.ndarray, o: np.ndarray, v: np.ndarray) -> float | None:
        """SSIM of one 2-D frame averaged over its valid pixels; None if undefined."""
        w = self.ssim_window
        if min(f.shape) < w:
            return None
        f = np.where(v, f, 0.0)
        o = np.where(v, o, 0.0)
        if self.ssim_uint8:
            f = (np.clip(f / self.data_range, 0.0, 1.0) * 255).astype(np.uint8)
            o = (np.clip(o / self.data_range, 0.0, 1.0) * 255).astype(np.uint8)
            data_range = 255.0
        else:
            data_range = self.data_range
        if v.all():
            return float(
                structural_similarity(
                    f, o, data_range=data_range, win_size=w, gaussian_weights=False
                )
            )
        fill = o[v].min()
        f[~v] = fill
        o[~v] = fill
        _, smap = structural_similarity(
            f, o, data_range=data_range, win_size=w, gaussian_weights=False, full=True
        )
        pad = (w - 1) // 2  # skimage's mean SSIM leaves out this border; so do we
        inner = (slice(pad, -pad), slice(pad, -pad))
        m = v[inner]
        if not m.any():
            return None
        return float(smap[inner][m].mean(dtype=np.float64))

    # ------------------------------------------------------------------ results

    def result(self) -> dict[str, list[float]]:
        """Every metric per lead time (lists of length ``leads``; NaN where undefined/no data)."""
        out: dict[str, np.ndarray] = {}
        mse_pixel = _nan_div(self._frame_se, self._pixels)
        out["mse"] = _nan_div(self._frame_se, self._frames)
        out["mae"] = _nan_div(self._frame_ae, self._frames)
        out["mse_pixel"] = mse_pixel
        out["mae_pixel"] = _nan_div(self._frame_ae, self._pixels)
        out["rmse"] = np.sqrt(mse_pixel)
        out["psnr"] = _nan_div(self._psnr, self._frames)
        out["ssim"] = _nan_div(self._ssim, self._ssim_frames)
        for k, t in enumerate(self.thresholds):
            h, m, fa, cn = (self._table[:, k, j] for j in range(4))
            total = h + m + fa + cn
            random_hits = _nan_div((h + m) * (h + fa), total)
            out[key("csi", t)] = _nan_div(h, h + m + fa)
            out[key("pod", t)] = _nan_div(h, h + m)
            out[key("far", t)] = _nan_div(fa, h + fa)
            out[key("ets", t)] = _nan_div(h - random_hits, h + m + fa - random_hits)
        for k, t in enumerate(self.thresholds):
            for s, size in enumerate(self.scales):
                num, den = self._fss_num[:, k, s], self._fss_den[:, k, s]
                out[key("fss", t, size)] = 1.0 - _nan_div(num, den)
        return {name: [float(x) for x in values] for name, values in out.items()}

    def summary(self) -> dict[str, float]:
        """Mean over lead times of each result list, ignoring NaN (NaN if all are NaN)."""
        out = {}
        for name, values in self.result().items():
            a = np.asarray(values)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                out[name] = float(np.nanmean(a)) if np.isfinite(a).any() else math.nan
        return out

    def protocol(self) -> dict[str, str]:
        """For each key of `result`: how it was computed (one sentence each)."""
        valid = "valid pixels (truth and forecast finite, mask true)"
        if self.clip is not None:
            lo, hi = self.clip
            valid += f", forecast clipped to [{lo}, {hi}]"
        frames = "frames with at least one valid pixel"
        if self.ssim_uint8:
            ssim_how = (
                f"frames mapped to uint8 as uint8(clip(x / {self.data_range:g}, 0, 1) * 255) "
                "(truncation, as in the CMS-LSTM Moving MNIST code), then skimage "
                "structural_similarity with data_range=255"
            )
        else:
            ssim_how = (
                "skimage structural_similarity on data-unit frames with "
                f"data_range={self.data_range:g}"
            )
        p = {
            "mse": f"Per-frame sum of squared errors over {valid}, in data units², averaged "
            f"over {frames} (PredRNN/CMS-LSTM convention).",
            "mae": f"Per-frame sum of absolute errors over {valid}, in data units, averaged "
            f"over {frames} (PredRNN/CMS-LSTM convention).",
            "mse_pixel": f"Mean squared error over all {valid} of all frames, in data units².",
            "mae_pixel": f"Mean absolute error over all {valid} of all frames, in data units.",
            "rmse": "Square root of mse_pixel, in data units.",
            "psnr": f"Per-frame 10·log10({self.data_range:g}² / mean squared error over {valid}), "
            f"capped at {PSNR_CAP_DB:g} dB (the value of a zero-error frame), averaged over "
            f"{frames}.",
            "ssim": f"Per 2-D frame, {ssim_how}, win_size={self.ssim_window}, uniform window "
            "(gaussian_weights=False), mean of the SSIM map (full=True) over the valid pixels "
            "outside the (win_size-1)/2 border that skimage leaves out, invalid pixels of both "
            "frames first filled with the truth frame's minimum valid value; averaged over frames "
            "(frames smaller than the window or with no valid pixel inside the border skipped).",
        }
        for t in self.thresholds:
            src = (
                f"from the contingency table of events (value >= {t:g} data units) over {valid}, "
                "accumulated over all frames of the lead time"
            )
            p[key("csi", t)] = f"Critical success index H/(H+M+F) {src}."
            p[key("pod", t)] = f"Probability of detection H/(H+M) {src}."
            p[key("far", t)] = f"False alarm ratio F/(H+F) {src}."
            p[key("ets", t)] = (
                f"Equitable threat score (H-Hr)/(H+M+F-Hr) with Hr=(H+M)(H+F)/N {src}."
            )
        for t in self.thresholds:
            for n in self.scales:
                p[key("fss", t, n)] = (
                    "Fractions skill score 1 - Σ(Pf-Po)² / Σ(Pf²+Po²), sums over the "
                    f"{valid} of all frames of the lead time, where P is the fraction of valid "
                    f"pixels with value >= {t:g} in the {n}x{n} neighbourhood "
                    "(scipy.ndimage.uniform_filter, mode='constant', pixels outside the domain "
                    "not counted)."
                )
        return p
