"""Streaming verification scores, each checked against an independent computation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from skimage.metrics import structural_similarity

from stforecast.evaluation.metrics import (
    DEFAULT_SCALES,
    DEFAULT_THRESHOLDS,
    PSNR_CAP_DB,
    Scores,
    key,
)


def rain(rng, shape, scale=3.0):
    """Intermittent non-negative field: about half the pixels dry."""
    return np.where(rng.random(shape) < 0.5, 0.0, rng.gamma(0.8, scale, shape))


def assert_results_equal(a: dict, b: dict, rtol=1e-12, atol=1e-12):
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=rtol, atol=atol, err_msg=k)


# ------------------------------------------------------------------------------------ keys


def test_key_formatting():
    assert key("mse") == "mse"
    assert key("csi", 1) == "csi_1.0"
    assert key("csi", 0.1) == "csi_0.1"
    assert key("ets", 5) == "ets_5.0"
    assert key("fss", 1.0, 8) == "fss_1.0_8"
    assert key("fss", 0.1, 16.0) == "fss_0.1_16"
    with pytest.raises(ValueError, match="scale"):
        key("fss", scale=4)
    with pytest.raises(ValueError, match="integer"):
        key("fss", 1.0, 2.5)


def test_default_keys_and_lengths():
    s = Scores(3, data_range=10.0)
    s.update(np.ones((3, 16, 16)), np.ones((3, 16, 16)))
    r = s.result()
    expected = {"mse", "mae", "mse_pixel", "mae_pixel", "rmse", "psnr", "ssim"}
    for t in DEFAULT_THRESHOLDS:
        expected |= {key(m, t) for m in ("csi", "pod", "far", "ets")}
        expected |= {key("fss", t, n) for n in DEFAULT_SCALES}
    assert set(r) == expected
    assert "csi_1.0" in r and "fss_5.0_16" in r
    assert all(isinstance(v, list) and len(v) == 3 for v in r.values())
    assert all(isinstance(x, float) for v in r.values() for x in v)
    assert s.frames == [1, 1, 1]


def test_protocol_covers_every_key():
    s = Scores(2, data_range=1.0, thresholds=(0.5, 2), scales=(1, 3), clip=(0.0, 1.0))
    p = s.protocol()
    assert set(p) == set(s.result())
    assert all(isinstance(v, str) and len(v) > 20 for v in p.values())
    assert "sum" in p["mse"] and str(PSNR_CAP_DB).rstrip("0").rstrip(".") in p["psnr"]
    s8 = Scores(2, data_range=1.0, ssim_uint8=True)
    assert "uint8" in s8.protocol()["ssim"]


# ------------------------------------------------------------------- mse / mae / psnr


def slow_image_metrics(f, o, valid, data_range):
    """Direct loops over frames and pixels: f, o, valid (B, T, H, W)."""
    B, T, H, W = o.shape
    out = {k: [] for k in ("mse", "mae", "mse_pixel", "mae_pixel", "rmse", "psnr")}
    for t in range(T):
        frame_se, frame_ae, psnrs = [], [], []
        tot_se = tot_ae = 0.0
        npix = 0
        for b in range(B):
            se = ae = 0.0
            n = 0
            for i in range(H):
                for j in range(W):
                    x, y = f[b, t, i, j], o[b, t, i, j]
                    if valid[b, t, i, j] and math.isfinite(x) and math.isfinite(y):
                        se += (x - y) ** 2
                        ae += abs(x - y)
                        n += 1
            if n == 0:
                continue
            frame_se.append(se)
            frame_ae.append(ae)
            mse = se / n
            psnr = PSNR_CAP_DB if mse == 0 else 10 * math.log10(data_range**2 / mse)
            psnrs.append(min(psnr, PSNR_CAP_DB))
            tot_se += se
            tot_ae += ae
            npix += n
        out["mse"].append(sum(frame_se) / len(frame_se))
        out["mae"].append(sum(frame_ae) / len(frame_ae))
        out["mse_pixel"].append(tot_se / npix)
        out["mae_pixel"].append(tot_ae / npix)
        out["rmse"].append(math.sqrt(tot_se / npix))
        out["psnr"].append(sum(psnrs) / len(psnrs))
    return out


def test_mse_mae_psnr_against_loops():
    rng = np.random.default_rng(1)
    B, T, H, W = 3, 4, 9, 7
    o = rain(rng, (B, T, H, W))
    f = o + rng.normal(0, 1.5, o.shape)
    o[0, 1, 2, 3] = np.nan
    f[1, 2, :3, :] = np.nan
    valid = rng.random((B, T, H, W)) > 0.2
    f[2, 3] = o[2, 3]  # one perfect frame: PSNR capped
    s = Scores(T, data_range=20.0)
    s.update(f, o, valid)
    r = s.result()
    ref = slow_image_metrics(f, o, valid, 20.0)
    for k, v in ref.items():
        np.testing.assert_allclose(r[k], v, rtol=1e-12, err_msg=k)
    assert s.frames == [B] * T


def test_mse_is_per_frame_sum_papers_convention():
    # Moving MNIST-like: 64x64 frames in [0, 1], error 0.1 everywhere.
    o = np.zeros((2, 64, 64))
    f = o + 0.1
    s = Scores(2, data_range=1.0)
    s.update(f, o)
    r = s.result()
    np.testing.assert_allclose(r["mse"], [64 * 64 * 0.01] * 2)
    np.testing.assert_allclose(r["mae"], [64 * 64 * 0.1] * 2)
    np.testing.assert_allclose(r["mse_pixel"], [0.01] * 2)
    np.testing.assert_allclose(r["rmse"], [0.1] * 2)
    np.testing.assert_allclose(r["psnr"], [20.0] * 2)


def test_psnr_zero_error_frame_is_capped():
    o = np.random.default_rng(0).random((1, 16, 16))
    s = Scores(1, data_range=1.0)
    s.update(o.copy(), o)
    assert s.result()["psnr"] == [PSNR_CAP_DB]
    assert s.result()["mse"] == [0.0]


# ------------------------------------------------------------------------ contingency


def test_contingency_scores_hand_made():
    # threshold 1.0; event = value >= 1 (the 1.0 at (1, 1) counts)
    truth = np.array([[2.0, 0.0, 3.0], [0.0, 1.0, 0.0]])
    fcst = np.array([[1.5, 2.0, 0.0], [0.0, 1.0, 0.5]])
    # hits: (0,0) (1,1) = 2; misses: (0,2) = 1; false alarms: (0,1) = 1; correct neg: 2; N = 6
    s = Scores(1, data_range=5.0, thresholds=(1.0,), scales=(1,))
    s.update(fcst[None], truth[None])
    r = s.result()
    assert r["csi_1.0"] == pytest.approx([2 / 4])
    assert r["pod_1.0"] == pytest.approx([2 / 3])
    assert r["far_1.0"] == pytest.approx([1 / 3])
    # random hits (H+M)(H+F)/N = 3*3/6 = 1.5; ETS = (2-1.5)/(4-1.5) = 0.2
    assert r["ets_1.0"] == pytest.approx([0.2])

    # A second, all-dry frame of the same lead adds 6 correct negatives to the same table:
    # N = 12, random hits 9/12 = 0.75, ETS = 1.25/3.25 = 5/13; CSI/POD/FAR unchanged.
    s.update(np.zeros((1, 2, 3)), np.zeros((1, 2, 3)))
    r = s.result()
    assert r["csi_1.0"] == pytest.approx([0.5])
    assert r["pod_1.0"] == pytest.approx([2 / 3])
    assert r["far_1.0"] == pytest.approx([1 / 3])
    assert r["ets_1.0"] == pytest.approx([5 / 13])


def test_contingency_per_lead_and_threshold():
    truth = np.array([[[0.5, 5.0]], [[0.0, 0.0]]])  # (T=2, 1, 2)
    fcst = np.array([[[0.2, 6.0]], [[0.3, 0.0]]])
    s = Scores(2, data_range=10.0, thresholds=(0.1, 5.0), scales=(1,))
    s.update(fcst, truth)
    r = s.result()
    # lead 0, t=0.1: H=2 -> perfect; t=5: H=1, CN=1 -> perfect, ETS = (1-0.5)/(1-0.5) = 1
    # lead 1, t=0.1: F=1, CN=1 -> CSI 0, POD undefined, FAR 1
    assert r["csi_0.1"] == pytest.approx([1.0, 0.0])
    assert r["pod_0.1"][0] == 1.0 and math.isnan(r["pod_0.1"][1])
    assert r["far_0.1"] == pytest.approx([0.0, 1.0])
    assert r["ets_5.0"][0] == pytest.approx(1.0)
    # lead 1, t=5: no event anywhere -> every categorical score undefined
    for m in ("csi", "pod", "far", "ets"):
        assert math.isnan(r[key(m, 5.0)][1])


# -------------------------------------------------------------------------------- FSS


def brute_force_fss(f, o, valid, t, n):
    """Loop over every valid pixel's n x n neighbourhood (rows i - n//2 .. i - n//2 + n - 1, as
    scipy's uniform_filter places it), fractions over valid in-domain pixels."""
    num = den = 0.0
    N, H, W = o.shape
    for k in range(N):
        for i in range(H):
            for j in range(W):
                if not valid[k, i, j]:
                    continue
                cf = co = cv = 0
                for a in range(i - n // 2, i - n // 2 + n):
                    for b in range(j - n // 2, j - n // 2 + n):
                        if 0 <= a < H and 0 <= b < W and valid[k, a, b]:
                            cv += 1
                            cf += f[k, a, b] >= t
                            co += o[k, a, b] >= t
                pf, po = cf / cv, co / cv
                num += (pf - po) ** 2
                den += pf**2 + po**2
    return 1 - num / den


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5])
def test_fss_against_brute_force(n):
    rng = np.random.default_rng(n)
    N, H, W = 2, 9, 11
    o = rain(rng, (N, H, W))
    f = rain(rng, (N, H, W))
    o[0, 0, :4] = np.nan
    f[1, 5, 5] = np.nan
    mask = rng.random((N, H, W)) > 0.15
    valid = mask & np.isfinite(o) & np.isfinite(f)
    s = Scores(1, data_range=20.0, thresholds=(1.0, 3.0), scales=(n,))
    s.update(f[:, None], o[:, None], mask[:, None])
    r = s.result()
    for t in (1.0, 3.0):
        assert r[key("fss", t, n)][0] == pytest.approx(brute_force_fss(f, o, valid, t, n), 1e-10)


def test_fss_identical_is_one_and_zero_forecast_is_zero():
    rng = np.random.default_rng(3)
    o = rain(rng, (3, 32, 32))
    s = Scores(3, data_range=20.0)
    s.update(o.copy(), o)
    for t in DEFAULT_THRESHOLDS:
        for n in DEFAULT_SCALES:
            assert s.result()[key("fss", t, n)] == [1.0, 1.0, 1.0]
    z = Scores(3, data_range=20.0)
    z.update(np.zeros_like(o), o)
    for t in DEFAULT_THRESHOLDS:
        for n in DEFAULT_SCALES:
            assert z.result()[key("fss", t, n)] == [0.0, 0.0, 0.0]


def test_fss_grows_with_scale_for_displaced_field():
    o = np.zeros((1, 40, 40))
    o[0, 10:20, 10:20] = 5.0
    f = np.roll(o, 3, axis=-1)
    s = Scores(1, data_range=10.0, thresholds=(1.0,), scales=(1, 4, 16))
    s.update(f, o)
    r = s.result()
    assert r["fss_1.0_1"][0] < r["fss_1.0_4"][0] < r["fss_1.0_16"][0] <= 1.0


# ------------------------------------------------------------------------------- SSIM


def test_ssim_matches_skimage_when_all_valid():
    rng = np.random.default_rng(4)
    o = rng.random((2, 3, 24, 20)) * 8
    f = np.clip(o + rng.normal(0, 1, o.shape), 0, None)
    s = Scores(3, data_range=8.0, ssim_window=5)
    s.update(f, o)
    for t in range(3):
        ref = np.mean(
            [structural_similarity(f[b, t], o[b, t], data_range=8.0, win_size=5) for b in range(2)]
        )
        assert s.result()["ssim"][t] == pytest.approx(ref, rel=1e-12)


def test_ssim_uint8_matches_cms_lstm_protocol():
    rng = np.random.default_rng(5)
    o = rng.random((4, 32, 32))
    f = o + rng.normal(0, 0.2, o.shape)
    s = Scores(4, data_range=1.0, clip=(0.0, 1.0), ssim_uint8=True)
    s.update(f, o)
    for t in range(4):
        # the CMS-LSTM code: clip to [0, 1], np.uint8(x * 255), skimage defaults (window 7)
        x = np.uint8(o[t] * 255)
        gx = np.uint8(np.clip(f[t], 0, 1) * 255)
        ref = structural_similarity(gx, x, data_range=255)
        assert s.result()["ssim"][t] == pytest.approx(ref, rel=1e-12)


def test_ssim_masked_is_mean_of_map_over_valid_pixels():
    rng = np.random.default_rng(6)
    o = rng.random((20, 20)) * 4
    f = o + rng.normal(0, 0.5, o.shape)
    valid = np.ones((20, 20), bool)
    valid[:, 12:] = False
    s = Scores(1, data_range=4.0)
    s.update(f[None], o[None], valid)
    fill = o[valid].min()
    a, b = np.where(valid, f, fill), np.where(valid, o, fill)
    _, smap = structural_similarity(a, b, data_range=4.0, win_size=7, full=True)
    ref = smap[3:-3, 3:-3][valid[3:-3, 3:-3]].mean()
    assert s.result()["ssim"][0] == pytest.approx(ref, rel=1e-12)


def test_ssim_undefined_for_frames_smaller_than_window():
    s = Scores(1, data_range=1.0)
    s.update(np.zeros((1, 3, 5)), np.zeros((1, 3, 5)))
    assert math.isnan(s.result()["ssim"][0])
    assert s.result()["mse"] == [0.0]


# ------------------------------------------------------- streaming, masks, clip, errors


def test_streaming_chunks_equal_one_update():
    rng = np.random.default_rng(7)
    o = rain(rng, (9, 4, 24, 24))
    f = np.clip(o + rng.normal(0, 2, o.shape), 0, None)
    o[2, 1, :5, :5] = np.nan
    valid = rng.random((24, 24)) > 0.1
    one = Scores(4, data_range=30.0, scales=(1, 3, 8))
    one.update(f, o, valid)
    chunked = Scores(4, data_range=30.0, scales=(1, 3, 8))
    for sl in (slice(0, 2), slice(2, 7), slice(7, 9)):
        chunked.update(f[sl], o[sl], valid)
    assert_results_equal(one.result(), chunked.result(), rtol=1e-10)
    assert one.frames == chunked.frames == [9] * 4
    # sequences without a batch axis stream the same way
    single = Scores(4, data_range=30.0, scales=(1, 3, 8))
    for b in range(9):
        single.update(f[b], o[b], valid)
    assert_results_equal(one.result(), single.result(), rtol=1e-10)


def test_masked_pixels_do_not_change_any_score():
    rng = np.random.default_rng(8)
    o = rain(rng, (2, 3, 24, 24))
    f = np.clip(o + rng.normal(0, 1, o.shape), 0, None)
    valid = np.ones((3, 24, 24), bool)
    valid[:, :, 16:] = False
    bad = f.copy()
    bad[..., 16:] = 1e6  # huge errors where masked out
    ref = Scores(3, data_range=30.0)
    ref.update(f, o, valid)
    masked = Scores(3, data_range=30.0)
    masked.update(bad, o, valid)
    assert_results_equal(ref.result(), masked.result())
    # NaN in the truth (no coverage) excludes exactly like the mask
    o_nan = o.copy()
    o_nan[..., 16:] = np.nan
    nan = Scores(3, data_range=30.0)
    nan.update(bad, o_nan)
    assert_results_equal(ref.result(), nan.result())
    # NaN in the forecast too
    f_nan = f.copy()
    f_nan[..., 16:] = np.nan
    fnan = Scores(3, data_range=30.0)
    fnan.update(f_nan, o + 0.0)
    assert_results_equal(ref.result(), fnan.result())


@pytest.mark.parametrize("shape", [(24, 24), (3, 24, 24), (2, 3, 24, 24)])
def test_valid_mask_broadcasts(shape):
    rng = np.random.default_rng(9)
    o = rain(rng, (2, 3, 24, 24))
    f = rain(rng, (2, 3, 24, 24))
    valid = np.broadcast_to(rng.random(shape) > 0.3, o.shape)
    a = Scores(3, data_range=30.0)
    a.update(f, o, valid.reshape(shape) if valid.ndim == len(shape) else valid)
    b = Scores(3, data_range=30.0)
    b.update(f, np.where(valid, o, np.nan))
    assert_results_equal(a.result(), b.result())


def test_fully_masked_frames_are_not_counted():
    o = np.ones((2, 2, 8, 8))
    valid = np.ones((2, 2, 8, 8), bool)
    valid[0, 1] = False
    s = Scores(2, data_range=1.0)
    s.update(o + 0.5, o, valid)
    assert s.frames == [2, 1]
    np.testing.assert_allclose(s.result()["mse"], [16.0, 16.0])


def test_clip_applies_to_forecast_before_scoring():
    rng = np.random.default_rng(10)
    o = rng.random((2, 16, 16))
    f = o + rng.normal(0, 1, o.shape)
    clipped = Scores(2, data_range=1.0, clip=(0.0, 1.0))
    clipped.update(f, o)
    ref = Scores(2, data_range=1.0)
    ref.update(np.clip(f, 0.0, 1.0), o)
    assert_results_equal(clipped.result(), ref.result())
    low_only = Scores(2, data_range=1.0, clip=(0.0, None))
    low_only.update(f, o)
    ref_low = Scores(2, data_range=1.0)
    ref_low.update(np.maximum(f, 0.0), o)
    assert_results_equal(low_only.result(), ref_low.result())


def test_fewer_leads_than_configured_and_summary():
    rng = np.random.default_rng(11)
    o = rain(rng, (2, 16, 16))
    s = Scores(4, data_range=30.0)
    s.update(o + 1.0, o)
    r = s.result()
    assert s.frames == [1, 1, 0, 0]
    assert r["mse"][:2] == pytest.approx([256.0, 256.0])
    assert all(math.isnan(x) for x in r["mse"][2:] + r["ssim"][2:] + r["csi_1.0"][2:])
    summary = s.summary()
    assert set(summary) == set(r)
    assert summary["mse"] == pytest.approx(256.0)
    assert summary["mae_pixel"] == pytest.approx(1.0)
    empty = Scores(2, data_range=1.0).summary()
    assert all(math.isnan(v) for v in empty.values())


def test_wrong_shapes_raise_clear_errors():
    s = Scores(3, data_range=1.0)
    with pytest.raises(ValueError, match="same shape"):
        s.update(np.zeros((3, 8, 8)), np.zeros((3, 8, 9)))
    with pytest.raises(ValueError, match=r"\(T, H, W\) or \(B, T, H, W\)"):
        s.update(np.zeros((8, 8)), np.zeros((8, 8)))
    with pytest.raises(ValueError, match=r"\(T, H, W\) or \(B, T, H, W\)"):
        s.update(np.zeros((1, 1, 3, 8, 8)), np.zeros((1, 1, 3, 8, 8)))
    with pytest.raises(ValueError, match="more than leads=3"):
        s.update(np.zeros((4, 8, 8)), np.zeros((4, 8, 8)))
    with pytest.raises(ValueError, match="does not broadcast"):
        s.update(np.zeros((3, 8, 8)), np.zeros((3, 8, 8)), np.ones((2, 8, 8), bool))
    with pytest.raises(ValueError, match="boolean"):
        s.update(np.zeros((3, 8, 8)), np.zeros((3, 8, 8)), np.full((8, 8), 0.5))
    with pytest.raises(ValueError, match="empty"):
        s.update(np.zeros((0, 8, 8)), np.zeros((0, 8, 8)))
    assert s.frames == [0, 0, 0]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"leads": 0}, "leads"),
        ({"data_range": 0.0}, "data_range"),
        ({"data_range": float("nan")}, "data_range"),
        ({"scales": (0,)}, "scales"),
        ({"scales": (2.5,)}, "scales"),
        ({"thresholds": (1, 1.0)}, "distinct"),
        ({"clip": (1.0, 0.0)}, "clip"),
        ({"ssim_window": 4}, "ssim_window"),
    ],
)
def test_bad_configuration(kwargs, match):
    args = {"leads": 2, "data_range": 1.0} | kwargs
    leads = args.pop("leads")
    with pytest.raises(ValueError, match=match):
        Scores(leads, **args)
