"""Each block against a direct, slow transcription of its paper equations (independent of the
vectorised code paths: explicit loops over windows, explicit softmax instead of SDPA)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from stforecast.models import patchify, unpatchify
from stforecast.models.attention import from_windows, to_windows
from stforecast.models.ce import ContextEmbedding
from stforecast.models.convlstm import ConvLSTMCore
from stforecast.models.norm import ChannelNorm
from stforecast.models.sam import SelfAttention, SelfAttentionMemory
from stforecast.models.se import SpatiotemporalExpression
from stforecast.models.stlstm import SpatiotemporalLSTMCore

torch.manual_seed(0)


def rand(*shape):
    return torch.randn(*shape, dtype=torch.float64)


def conv(x, layer):
    return F.conv2d(x, layer.weight, layer.bias, padding=layer.padding)


def test_patch_round_trip_and_layout():
    x = rand(2, 3, 2, 12, 8)
    lat = patchify(x, 4)
    assert lat.shape == (2, 3, 32, 3, 2)
    assert torch.equal(unpatchify(lat, 4), x)
    # channel c·p² + i·p + j at latent (y, x) holds pixel (y·p + i, x·p + j) of channel c
    c, i, j, yy, xx = 1, 2, 3, 2, 1
    assert lat[1, 2, c * 16 + i * 4 + j, yy, xx] == x[1, 2, c, yy * 4 + i, xx * 4 + j]


def test_windows_round_trip():
    x = rand(2, 5, 8, 12)
    tokens = to_windows(x, (4, 3))
    assert tokens.shape == (2 * 2 * 4, 12, 5)
    assert torch.equal(from_windows(tokens, (2, 8, 12), (4, 3)), x)
    # the first window holds the top-left 4x3 block, row by row
    assert torch.equal(tokens[0, :, 2], x[0, 2, :4, :3].reshape(-1))


def test_convlstm_core_matches_the_equations():
    core = ConvLSTMCore(3, 4, 3, "none", (6, 6)).double()
    x, h, c = rand(2, 3, 6, 6), rand(2, 4, 6, 6), rand(2, 4, 6, 6)
    gates = conv(x, core.conv_x[0]) + conv(h, core.conv_h[0])
    i, f, g, o = gates[:, :4], gates[:, 4:8], gates[:, 8:12], gates[:, 12:]
    c_ref = torch.sigmoid(f + 1) * c + torch.sigmoid(i) * torch.tanh(g)
    h_ref = torch.sigmoid(o) * torch.tanh(c_ref)
    h_new, c_new = core(x, h, c)
    assert torch.allclose(c_new, c_ref) and torch.allclose(h_new, h_ref)


def test_stlstm_core_matches_the_equations():
    core = SpatiotemporalLSTMCore(4, 4, 3, "none", (5, 5)).double()
    x, h, c, m = (rand(1, 4, 5, 5) for _ in range(4))
    gx = conv(x, core.conv_x[0]).split(4, 1)
    gh = F.conv2d(h, core.conv_h[0].weight, padding=1).split(4, 1)
    gm = F.conv2d(m, core.conv_m[0].weight, padding=1).split(4, 1)
    c_ref = torch.sigmoid(gx[1] + gh[1] + 1) * c + torch.sigmoid(gx[0] + gh[0]) * torch.tanh(
        gx[2] + gh[2]
    )
    m_ref = torch.sigmoid(gx[4] + gm[1] + 1) * m + torch.sigmoid(gx[3] + gm[0]) * torch.tanh(
        gx[5] + gm[2]
    )
    cm = torch.cat([c_ref, m_ref], 1)
    o = torch.sigmoid(gx[6] + gh[3] + F.conv2d(cm, core.conv_o[0].weight, padding=1))
    h_ref = o * torch.tanh(F.conv2d(cm, core.conv_last.weight))
    h_new, c_new, m_new = core(x, h, c, m)
    assert torch.allclose(c_new, c_ref) and torch.allclose(m_new, m_ref)
    assert torch.allclose(h_new, h_ref)


def test_context_embedding_alternates_five_half_steps():
    ce = ContextEmbedding(3, 4, 3, "none", (6, 6)).double()
    x, h = rand(2, 3, 6, 6), rand(2, 4, 6, 6)
    xr, hr = x, h
    for _ in range(2):
        xr = 2 * torch.sigmoid(conv(hr, ce.w_h[0])) * xr  # Eq. 2, x̂
        hr = 2 * torch.sigmoid(conv(xr, ce.w_x[0])) * hr  # Eq. 2, Ĥ
    xr = 2 * torch.sigmoid(conv(hr, ce.w_h[0])) * xr  # the fifth half-step updates x
    xo, ho = ce(x, h)
    assert torch.allclose(xo, xr) and torch.allclose(ho, hr)


def slow_se_scale(se, h, c, s):
    """Eq. 4 by loops: every window of the scale, its H and C tokens, explicit softmax."""
    B, ch, H, W = h.shape
    w = se.qkv.weight[3 * ch * s : 3 * ch * (s + 1), :, 0, 0]
    b = se.qkv.bias[3 * ch * s : 3 * ch * (s + 1)]
    win = H // 2**s
    out = {"h": torch.zeros_like(h), "c": torch.zeros_like(c)}
    for n in range(B):
        for wy in range(0, H, win):
            for wx in range(0, W, win):
                feats = [t[n, :, wy : wy + win, wx : wx + win].reshape(ch, -1) for t in (h, c)]
                z = torch.cat(feats, dim=1)  # (C, 2·win²): H tokens then C tokens
                proj = w @ z + b[:, None]
                q, k, v = proj[:ch], proj[ch : 2 * ch], proj[2 * ch :]
                att = torch.softmax(q.T @ k, dim=1)  # rows: queries, no 1/sqrt(d)
                zhat = se.gain[s] * (v @ att.T) + z
                zh, zc = zhat[:, : win * win], zhat[:, win * win :]
                out["h"][n, :, wy : wy + win, wx : wx + win] = zh.reshape(ch, win, win)
                out["c"][n, :, wy : wy + win, wx : wx + win] = zc.reshape(ch, win, win)
    return out["h"], out["c"]


def test_se_attention_matches_a_loop_over_windows():
    se = SpatiotemporalExpression(4, (8, 8), 3, "layer").double()
    with torch.no_grad():
        se.gain.copy_(torch.tensor([1.0, 0.7, 1.3]))
    h, c = rand(2, 4, 8, 8), rand(2, 4, 8, 8)
    z = torch.cat([h, c], 0)
    qkv = se.qkv(z).split(12, dim=1)
    for s in range(3):  # the block attends channels last
        fast = se.scale_attention(qkv[s].permute(0, 2, 3, 1), z.permute(0, 2, 3, 1), s)
        fast = fast.permute(0, 3, 1, 2)
        ref_h, ref_c = slow_se_scale(se, h, c, s)
        assert torch.allclose(fast[:2], ref_h) and torch.allclose(fast[2:], ref_c)


def test_se_attention_only_sees_its_own_window():
    se = SpatiotemporalExpression(4, (8, 8), 3, "none").double()
    for s, win in enumerate((8, 4, 2)):
        h = rand(1, 4, 8, 8).requires_grad_()
        c = rand(1, 4, 8, 8).requires_grad_()
        z = torch.cat([h, c], 0)
        qkv = se.qkv(z).split(12, dim=1)[s].permute(0, 2, 3, 1)  # channels last
        out = se.scale_attention(qkv, z.permute(0, 2, 3, 1), s)
        py, px = 5, 2  # one query position (in the H half)
        out[0, py, px].sum().backward()
        inside = torch.zeros(8, 8, dtype=torch.bool)
        y0, x0 = py // win * win, px // win * win
        inside[y0 : y0 + win, x0 : x0 + win] = True
        for grad in (h.grad[0].abs().sum(0), c.grad[0].abs().sum(0)):
            assert (grad[~inside] == 0).all(), f"scale {s} leaks outside its {win}x{win} window"
            assert (grad[inside] > 0).all(), "the whole window (H and C tokens) is attended"


def test_se_update_matches_eqs_6_and_7():
    se = SpatiotemporalExpression(4, (4, 4), 1, "none").double()
    h, c = rand(2, 4, 4, 4), rand(2, 4, 4, 4)
    a_h, a_c = se.expression(h, c)
    z = conv(torch.cat([a_h, a_c], 1), se.w_z)
    i, g, o = (conv(z, se.gates_z[0]) + conv(h, se.gates_h[0])).split(4, 1)
    c_ref = (1 - torch.sigmoid(i)) * c + torch.sigmoid(i) * torch.tanh(g)
    h_new, c_new = se(h, c)
    assert torch.allclose(c_new, c_ref)
    assert torch.allclose(h_new, torch.sigmoid(o) * c_ref)  # no tanh on Ĉ


def test_sam_matches_the_equations():
    sam = SelfAttentionMemory(4, 2, 3).double()
    h, m = rand(2, 4, 5, 5), rand(2, 4, 5, 5)
    qkv = conv(h, sam.qkv_h).flatten(2)
    q, k_h, v_h = qkv[:, :2], qkv[:, 2:4], qkv[:, 4:]
    km = conv(m, sam.kv_m).flatten(2)
    k_m, v_m = km[:, :2], km[:, 2:]
    z_h = v_h @ torch.softmax(q.transpose(1, 2) @ k_h, dim=-1).transpose(1, 2)  # Eqs. 2-4
    z_m = v_m @ torch.softmax(q.transpose(1, 2) @ k_m, dim=-1).transpose(1, 2)  # Eqs. 5-7
    z = conv(torch.cat([z_h, z_m], 1).reshape(2, 8, 5, 5), sam.w_z)
    i, g, o = sam.gates(torch.cat([z, h], 1)).split(4, 1)
    m_ref = (1 - torch.sigmoid(i)) * m + torch.sigmoid(i) * torch.tanh(g)  # Eq. 8
    h_new, m_new = sam(h, m)
    assert torch.allclose(m_new, m_ref)
    assert torch.allclose(h_new, torch.sigmoid(o) * m_ref)  # Eq. 9


def test_windowed_sam_is_local():
    sam = SelfAttentionMemory(4, 2, 1, window=2).double()
    h, m = rand(1, 4, 4, 4).requires_grad_(), rand(1, 4, 4, 4).requires_grad_()
    sam(h, m)[0][0, :, 0, 0].sum().backward()  # kernel 1: locality comes from attention only
    for grad in (h.grad, m.grad):
        g = grad[0].abs().sum(0)
        assert (g[2:, :] == 0).all() and (g[:, 2:] == 0).all() and (g[:2, :2] > 0).all()


def test_base_model_attention_matches_the_equations():
    sa = SelfAttention(4, 3).double()
    x = rand(2, 4, 3, 3)
    p = conv(x, sa.qkv).flatten(2)
    q, k, v = p[:, :3], p[:, 3:6], p[:, 6:]
    z = (v @ torch.softmax(q.transpose(1, 2) @ k, dim=-1).transpose(1, 2)).reshape(2, 4, 3, 3)
    assert torch.allclose(sa(x), conv(z, sa.w_f) + x)


def test_channel_norm_normalises_each_position():
    norm = ChannelNorm(5).double()
    x = rand(2, 5, 3, 4) * 3 + 1
    y = norm(x)
    assert torch.allclose(y.mean(1), torch.zeros(2, 3, 4, dtype=torch.float64), atol=1e-6)
    ones = torch.ones(2, 3, 4, dtype=torch.float64)
    assert torch.allclose(y.var(1, unbiased=False), ones, atol=1e-4)
    # size-free: a crop normalises the same as the full field
    assert torch.allclose(norm(x[..., 1:3, :2]), y[..., 1:3, :2])
