"""The model engine: registry, shapes, gradients, causality, rollout, determinism, faithfulness."""

from __future__ import annotations

import pytest
import torch

from stforecast import models

from conftest import SMALL, build_small


def frames(batch=2, t=4, seed=1, size=16, channels=2):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, t, channels, size, size, generator=g)


def n_params(net) -> int:
    return sum(p.numel() for p in net.parameters())


def test_available_lists_the_papers_models():
    assert {"convlstm", "predrnn", "sa_convlstm", "sa_base", "cms_lstm"} <= set(models.available())


def test_cms_lstm_reference_parameter_count_is_the_published_one():
    net = models.build(
        "cms_lstm",
        in_channels=1,
        frame_size=(64, 64),
        patch_size=4,
        hidden_channels=[64] * 4,
        kernel_size=3,
    )
    assert n_params(net) == 7_967_580  # the authors' code, the paper's 7.968M


def test_sa_convlstm_reference_count_matches_its_docstring():
    net = models.build(
        "sa_convlstm",
        in_channels=1,
        frame_size=(64, 64),
        patch_size=4,
        hidden_channels=[64] * 4,
        kernel_size=3,
    )
    assert n_params(net) == 2_544_400
    from stforecast.models import sam

    assert "2,544,400" in sam.__doc__


def test_se_scales_change_only_the_fusion_width():
    counts = {s: n_params(build_small("convlstm", ce=True, se_scales=s)) for s in (1, 2, 3)}
    ch = SMALL["hidden_channels"][0]
    per_scale = 3 * (ch * ch + ch) + 1 + ch * ch * 25  # Q, K, V, γ, fuse-conv input slice
    layers = len(SMALL["hidden_channels"])
    assert counts[2] - counts[1] == layers * per_scale
    assert counts[3] - counts[2] == layers * per_scale


def test_shapes_for_every_model_and_ablation(variant):
    name, opts = variant
    net = build_small(name, **opts)
    out = net(frames(), steps=3)
    assert out.shape == (2, 3, 2, 16, 16)
    assert torch.isfinite(out).all()
    assert net.rollout(frames(), steps=3).shape == (2, 4 - 1 + 3, 2, 16, 16)


def test_every_parameter_receives_a_gradient(variant):
    name, opts = variant
    net = build_small(name, **opts)
    x = frames(t=3)
    out = net.rollout(x, steps=3)
    out.square().mean().backward()
    dead = [n for n, p in net.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not dead, f"parameters without gradient: {dead}"


@pytest.mark.parametrize("name", ["convlstm", "predrnn", "sa_convlstm", "sa_base", "cms_lstm"])
def test_causality(name):
    net = build_small(name).eval()
    x = frames(t=5)
    with torch.no_grad():
        base = net.rollout(x, steps=3)
        later = x.clone()
        later[:, 3] += 0.5  # change frame 4 of 5
        moved = net.rollout(later, steps=3)
        # output i is the forecast of frame i+1, made from frames 0..i
        assert torch.equal(base[:, :3], moved[:, :3]), "an output saw a later frame"
        assert not torch.allclose(base[:, 3:], moved[:, 3:]), "outputs after the change ignore it"
        last = x.clone()
        last[:, -1] = torch.rand_like(last[:, -1])
        assert not torch.allclose(net(x, 3), net(last, 3)), "the last frame must matter"


def test_scheduled_sampling_mask_feeds_truth_or_prediction():
    net = build_small("cms_lstm").eval()
    x, future = frames(t=3), frames(t=3, seed=7)
    with torch.no_grad():
        free = net(x, steps=4)
        none = net(x, steps=4, future=future, mask=torch.zeros(2, 3))
        assert torch.allclose(free, none, atol=1e-6)  # mask 0: the model's own predictions
        forced = net(x, steps=4, future=future, mask=torch.ones(2, 3))
        teacher = net(torch.cat([x, future], dim=1), steps=1)  # truth fed at every step
        # with the truth fed, the last forecast equals a plain run on the true frames
        assert torch.allclose(forced[:, -1], teacher[:, -1], atol=1e-5)
        assert torch.allclose(forced[:, 0], free[:, 0])  # the first forecast uses no truth
        half = net(x, 4, future=future, mask=torch.tensor([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0]]))
        assert torch.allclose(half[0], forced[0], atol=1e-6)
        assert torch.allclose(half[1], free[1], atol=1e-6)
    with pytest.raises(ValueError, match="future"):
        net(x, steps=4, mask=torch.ones(2, 3))


def test_rollout_beyond_the_training_horizon():
    net = build_small("sa_convlstm").eval()
    with torch.no_grad():
        short = net(frames(t=3), steps=2)
        long = net(frames(t=3), steps=25)
    assert long.shape == (2, 25, 2, 16, 16)
    assert torch.isfinite(long).all()
    assert torch.allclose(long[:, :2], short, atol=1e-6)  # a longer rollout extends, never rewrites


def test_determinism_under_a_seed():
    a, b = build_small("cms_lstm", seed=3), build_small("cms_lstm", seed=3)
    for (na, pa), (nb, pb) in zip(a.named_parameters(), b.named_parameters(), strict=True):
        assert na == nb and torch.equal(pa, pb)
    x = frames()
    assert torch.equal(a(x, 3), b(x, 3))
    c = build_small("cms_lstm", seed=4)
    assert not torch.equal(a(x, 3), c(x, 3))


def test_predrnn_memory_flows_zig_zag():
    net = build_small("predrnn").eval()
    seen = []
    for layer, cell in enumerate(net.cells):
        cell.register_forward_hook(
            lambda mod, args, out, layer=layer: seen.append((layer, args[4], out[3]))
        )
    with torch.no_grad():
        net(frames(t=2), steps=1)
    # step 0: bottom layer starts from zeros, each layer hands M up
    assert seen[0][0] == 0 and torch.count_nonzero(seen[0][1]) == 0
    assert torch.equal(seen[1][1], seen[0][2])
    # step 1: the bottom layer receives the top layer's M of step 0
    top_step0 = seen[len(net.cells) - 1][2]
    assert torch.equal(seen[len(net.cells)][1], top_step0)


def test_size_free_model_runs_on_a_larger_grid_and_tied_model_refuses():
    free = build_small("cms_lstm", norm="channel", window=4).eval()
    with torch.no_grad():
        out = free(frames(size=32), steps=2)
    assert out.shape == (2, 2, 2, 32, 32)
    tied = build_small("cms_lstm").eval()
    with pytest.raises(ValueError, match="tied to 16x16"):
        tied(frames(size=32), steps=2)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"name": "unet"}, "unknown model"),
        ({"colour": 1}, "unknown model option"),
        ({"norm": "batch"}, "unknown norm"),
        ({"frame_size": (17, 16)}, "not divisible by patch"),
        ({"kernel_size": 4}, "odd"),
        ({"se_scales": 4}, "se_scales"),
        ({"name": "predrnn", "hidden_channels": [8, 16]}, "same width"),
        ({"name": "cms_lstm", "window": 3}, "cannot be split"),
    ],
)
def test_bad_build_arguments_are_clear_errors(kwargs, message):
    args = {**SMALL, "name": "convlstm", **kwargs}
    with pytest.raises(ValueError, match=message):
        models.build(args.pop("name"), **args)


def test_wrong_input_is_a_clear_error():
    net = build_small("convlstm")
    with pytest.raises(ValueError, match="channels"):
        net(frames(channels=3), steps=1)
    with pytest.raises(ValueError, match=r"\(B, T, C, H, W\)"):
        net(torch.rand(2, 2, 16, 16), steps=1)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_bf16_autocast():
    net = build_small("cms_lstm").cuda()
    x = frames().cuda()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = net.rollout(x, steps=3)
    assert out.dtype == torch.bfloat16 and torch.isfinite(out.float()).all()
    out.float().square().mean().backward()
    assert all(p.grad is not None for p in net.parameters())
    with torch.no_grad():
        ref = net.float()(x, 3)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            low = net(x, 3).float()
    assert (ref - low).abs().max() < 0.1


def test_cpu_bf16_autocast_tracks_fp32():
    net = build_small("cms_lstm").eval()
    x = frames()
    with torch.no_grad():
        ref = net(x, 3)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = net(x, 3).float()
    # bf16 keeps 8 bits of mantissa: over a 3-step rollout the mean error is about 4 % of the
    # mean output (the largest, 0.08-0.17 over inputs); a broken path would be of its order
    error = (ref - low).abs()
    assert error.mean() < 0.1 * ref.abs().mean() and error.max() < 0.3
