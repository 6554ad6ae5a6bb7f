"""Extrapolation guidance: the untrained guided model is the extrapolation nowcast, in training,
in the forecast path (whole grid and tiled) and in its exports; augmentations keep windows and
guides together."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stforecast.data.contract import DataContract, Grid, Transform
from stforecast.evaluation.baselines import extrapolation
from stforecast.forecasting.tiling import predict
from stforecast.models import build
from stforecast.motion import guidance
from stforecast.training.augment import TrainingWindows, orient, reversed_window


def moving_cell(T: int = 8, size: int = 32, v: tuple[float, float] = (1.0, 1.5)) -> np.ndarray:
    """A Gaussian rain cell moving by `v` pixels per step, (T, size, size), non-negative."""
    r, c = np.mgrid[:size, :size].astype(np.float64)
    frames = [
        4.0 * np.exp(-((r - 10 - v[0] * t) ** 2 + (c - 8 - v[1] * t) ** 2) / 18.0) for t in range(T)
    ]
    return np.stack(frames).astype(np.float32)


def guided(frame: int = 32, **options) -> torch.nn.Module:
    opts = {"norm": "channel", "window": None, "guidance": True} | options
    return build(
        "convlstm", in_channels=1, frame_size=frame, patch_size=4, hidden_channels=[8],
        kernel_size=3, **opts,
    ).eval()  # fmt: skip


def test_guide_leads_are_the_extrapolation_baseline():
    x = moving_cell()
    g = guidance(x[:6, None], 5)
    assert g.shape == (5 + 5, 1, 32, 32)
    np.testing.assert_allclose(g[5:, 0], extrapolation(x[:6], 5), atol=1e-6)
    # while observing: each input moved one step, close to the next input
    err_guided = np.abs(g[:5, 0] - x[1:6]).mean()
    err_persist = np.abs(x[:5] - x[1:6]).mean()
    assert err_guided < 0.3 * err_persist


def test_untrained_guided_model_is_its_guide():
    x = torch.from_numpy(moving_cell()[:6, None])[None]
    g = torch.from_numpy(guidance(x[0].numpy(), 4))[None]
    net = guided()
    with torch.no_grad():
        out = net.rollout(x, 4, guide=g)
        leads = torch.stack(list(net.stream(x, 4, guide=g)), 1)
    torch.testing.assert_close(out, g, rtol=0, atol=0)
    torch.testing.assert_close(leads, g[:, 5:], rtol=0, atol=0)
    # and training moves it: the head receives a gradient at once
    net.train()
    out = net.rollout(x, 4, guide=g)
    (out - x[:, :1]).square().mean().backward()
    assert float(net.head.weight.grad.abs().sum()) > 0


def test_guide_is_required_and_checked():
    x = torch.rand(1, 6, 1, 32, 32)
    with pytest.raises(ValueError, match="needs a guide of shape"):
        guided().rollout(x, 4)
    with pytest.raises(ValueError, match="needs a guide of shape"):
        guided().rollout(x, 4, guide=torch.rand(1, 4, 1, 32, 32))
    plain = build("convlstm", in_channels=1, frame_size=32, patch_size=4, hidden_channels=[8],
                  kernel_size=3, norm="channel")  # fmt: skip
    with pytest.raises(ValueError, match="takes no guide"):
        plain.rollout(x, 4, guide=torch.rand(1, 9, 1, 32, 32))
    assert "guidance" not in plain.config["options"]  # unguided cards are unchanged


@pytest.mark.parametrize("tile", [None, (32, 32)])
def test_forecast_path_of_untrained_guided_model_is_extrapolation(tile):
    """Whole grid, and tiled on a larger grid: the guide is the extrapolation of the whole
    domain, cut like the frames, so the blend of the tiles is that extrapolation too."""
    size = 48 if tile else 32
    x = moving_cell(size=size)[:6]
    leads = np.stack(list(predict(guided(), x[:, None], 5, tile=tile)))
    np.testing.assert_allclose(leads[:, 0], extrapolation(x, 5), atol=1e-5)


def test_augmentations_keep_window_and_guide_together():
    frames = torch.from_numpy(moving_cell(T=10)[:, None])
    items = [{"inputs": frames[:5], "targets": frames[5:], "coverage": torch.ones(10, 1, 32, 32)}]
    plain = TrainingWindows(items, output_frames=5, guided=True)
    aug = TrainingWindows(items, output_frames=5, guided=True, augment=("flip", "rot90", "reverse"),
                          seed=3)  # fmt: skip
    seen = set()
    for epoch in range(12):
        aug.set_epoch(epoch)
        item = aug[0]
        again = aug[0]
        torch.testing.assert_close(item["guide"], again["guide"])  # a pure function of the draw
        reverse, flips, turns = aug.draw(0, (32, 32))
        seen.add((reverse, tuple(flips), turns))
        base = reversed_window(items[0]) if reverse else items[0]
        torch.testing.assert_close(item["inputs"], orient(base["inputs"], flips, turns))
        torch.testing.assert_close(item["targets"], orient(base["targets"], flips, turns))
        # the guide of the turned window is the turned guide: advection commutes with the grid's
        # symmetries (up to the motion estimate's rounding)
        ref = torch.from_numpy(guidance(base["inputs"].numpy(), 5))
        assert float((item["guide"] - orient(ref, flips, turns)).abs().max()) < 1e-3
    assert len(seen) > 4
    assert plain[0]["guide"].shape == (9, 1, 32, 32)


def test_reversed_window_plays_backwards():
    frames = torch.arange(10.0).reshape(10, 1, 1, 1)
    item = reversed_window({"inputs": frames[:6], "targets": frames[6:]})
    assert item["inputs"].flatten().tolist() == [9, 8, 7, 6, 5, 4]
    assert item["targets"].flatten().tolist() == [3, 2, 1, 0]


def test_onnx_export_of_guided_model_takes_the_guide(tmp_path):
    pytest.importorskip("onnxruntime")
    import onnxruntime as ort

    from stforecast.export import GUIDE_NAME, INPUT_NAME, export

    net = guided()
    with torch.no_grad():
        net.head.weight.normal_(0, 0.1)  # a trained-looking correction, not the zero one
    contract = DataContract(
        variable="rain", units="mm/h", transform=Transform("log1p", {}, {}), grid=Grid((32, 32)),
        time_step_seconds=600, input_frames=6, output_frames=4,
    )  # fmt: skip
    card = {"architecture": net.config, "input": contract.to_card()}
    path = export(net, card, tmp_path / "guided.onnx", fmt="onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == [INPUT_NAME, GUIDE_NAME]
    x = moving_cell()[:6, None][None]
    g = guidance(x[0], 4)[None]
    got = session.run(None, {INPUT_NAME: x, GUIDE_NAME: g})[0]
    with torch.no_grad():
        want = net(torch.from_numpy(x), 4, guide=torch.from_numpy(g)).numpy()
    np.testing.assert_allclose(got, want, atol=1e-4)


def test_patch_power_ratio_finds_speckle():
    from stforecast.evaluation.spectrum import patch_power_ratio

    truth = moving_cell(T=1, size=64)[0]
    blocks = truth.reshape(16, 4, 16, 4).mean(axis=(1, 3)).repeat(4, 0).repeat(4, 1)
    rng = np.random.default_rng(0)
    checker = truth * (1 + 0.3 * rng.standard_normal((16, 16)).repeat(4, 0).repeat(4, 1))
    assert patch_power_ratio(truth, truth, 4) == pytest.approx(1.0)
    assert patch_power_ratio(checker, truth, 4) > 1.5  # speckle at the patch scale
    assert patch_power_ratio(blocks, truth, 4) > 3  # blocky upsampling
    from scipy import ndimage as ndi

    assert patch_power_ratio(ndi.gaussian_filter(truth, 2), truth, 4) < 0.5  # blur


# ------------------------------------------------------------------------------ the S-PROG guide


def test_guidance_option_is_checked_and_recorded():
    assert guided(guidance="sprog").config["options"]["guidance"] == "sprog"
    assert guided().config["options"]["guidance"] is True  # older cards read the same
    for bad in ("steps", 1, [True]):
        with pytest.raises(ValueError, match="guidance must be true, false"):
            guided(guidance=bad)


def test_sprog_guide_needs_rain_rates_through_log1p():
    from types import SimpleNamespace

    from stforecast.errors import ConfigError
    from stforecast.training.objective import check_guide

    temperature = SimpleNamespace(units="K", transform=SimpleNamespace(name="standardize"))
    with pytest.raises(ConfigError, match="needs rain rates through log1p"):
        check_guide("sprog", temperature)
    assert check_guide(True, temperature) is True  # the extrapolation guides any quantity


def test_untrained_sprog_guided_model_forecasts_sprog():
    """The leads of the S-PROG guide are pysteps' S-PROG of the rates (log1p in and out), the
    observing outputs stay the one-step advection, and an untrained model forecasts its guide
    in the forecast path, whole and tiled: a model that starts from the stronger baseline."""
    pytest.importorskip("pysteps", reason="pysteps is an optional extra (.[pysteps])")
    pytest.importorskip("cv2", reason="pysteps' Lucas-Kanade needs OpenCV")
    from stforecast.evaluation.baselines import get

    rates = np.stack([3.0 * moving_cell(size=48)[t] + 0.5 * moving_cell(size=48, v=(-1, 1))[t]
                      for t in range(6)])  # fmt: skip
    x = np.log1p(rates)[:, None]
    g = guidance(x, 4, "sprog")
    np.testing.assert_allclose(g[5:, 0], np.log1p(get("sprog")(rates, 4)), atol=1e-5)
    np.testing.assert_array_equal(g[:5], guidance(x, 4)[:5])
    assert not np.allclose(g[5:], guidance(x, 4)[5:], atol=1e-2)  # not the extrapolation
    for tile in (None, (32, 32)):
        leads = np.stack(list(predict(guided(guidance="sprog"), x, 4, tile=tile)))
        np.testing.assert_allclose(leads, g[5:], atol=1e-5)
    with pytest.raises(ValueError, match="unknown guide"):
        guidance(x, 4, "steps")


def test_sprog_guide_falls_back_where_the_cascade_cannot_be_fitted(monkeypatch):
    from stforecast import pysteps_nowcasts
    from stforecast.errors import ConfigError

    x = np.log1p(3.0 * moving_cell())[:6, None]

    def degenerate(name, inputs, steps):
        raise IndexError("index 4096 is out of bounds")  # what pysteps raised on one window

    monkeypatch.setattr(pysteps_nowcasts, "nowcast", degenerate)
    np.testing.assert_array_equal(guidance(x, 3, "sprog"), guidance(x, 3))

    def missing(name, inputs, steps):
        raise ConfigError("pysteps is not installed: pip install ...")

    monkeypatch.setattr(pysteps_nowcasts, "nowcast", missing)
    with pytest.raises(ConfigError, match="pysteps is not installed"):
        guidance(x, 3, "sprog")
