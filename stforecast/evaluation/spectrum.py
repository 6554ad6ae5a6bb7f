"""Power spectra of forecast fields: how much structure a forecast has at each wavelength
compared with the observation, and so whether it has speckle at the model's patch scale.

A patched model (space-to-depth by p, then 1×1 convolutions) can leave a checkerboard whose
wavelength is p pixels and its divisors; a smooth forecast has *less* power than the observation
at short wavelengths. `patch_power_ratio` is the forecast's power over the observation's in the
band of wavelengths from p/2 to 2p pixels: about 1 for a forecast as textured as the truth, much
above 1 for speckle, below 1 for a blurred forecast.
"""

from __future__ import annotations

import numpy as np


def radial_spectrum(field: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(wavenumbers in cycles per pixel, mean power in each ring) of a 2-D field, NaN as the
    field's mean; the mean is removed and a Hann window tapers the edges (no edge leakage)."""
    x = np.asarray(field, dtype=np.float64)
    x = np.where(np.isfinite(x), x, np.nanmean(x) if np.isfinite(x).any() else 0.0)
    H, W = x.shape
    window = np.outer(np.hanning(H), np.hanning(W))
    power = np.abs(np.fft.fft2((x - x.mean()) * window)) ** 2
    ky = np.fft.fftfreq(H)[:, None]
    kx = np.fft.fftfreq(W)[None, :]
    k = np.hypot(ky, kx)
    dk = 1.0 / max(H, W)
    rings = np.round(k / dk).astype(int)
    total = np.bincount(rings.ravel(), power.ravel())
    count = np.bincount(rings.ravel())
    keep = count > 0
    return (np.arange(len(total)) * dk)[keep], total[keep] / count[keep]


def band_power(field: np.ndarray, shortest: float, longest: float) -> float:
    """Total ring power of `field` at wavelengths in [`shortest`, `longest`] pixels."""
    k, p = radial_spectrum(field)
    band = (k >= 1.0 / longest) & (k <= 1.0 / shortest)
    return float(p[band].sum())


def patch_power_ratio(forecast: np.ndarray, observed: np.ndarray, patch: int) -> float:
    """Forecast power over observed power at wavelengths p/2 .. 2p pixels (p = `patch`,
    at least 2 pixels): the speckle measure of the module docstring."""
    shortest, longest = max(2.0, patch / 2), 2.0 * patch
    obs = band_power(observed, shortest, longest)
    return band_power(forecast, shortest, longest) / obs if obs > 0 else float("nan")
