"""Invertible transforms: hand-computed values, round trips on numpy and torch, streaming fits."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import xarray as xr

from stforecast.data import transforms
from stforecast.errors import ConfigError, InputError

RAIN = np.array([0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 100.0])  # >= dbr's threshold


def _fit(t: transforms.Transform, *chunks) -> dict[str, float]:
    fitter = t.fitter()
    for chunk in chunks:
        fitter.update(chunk)
    return fitter.result()


def _all():
    return [transforms.get(n) for n in transforms.available()] + [transforms.get("dbr", scale=True)]


def test_registry_names():
    assert transforms.available() == ["dbr", "log1p", "minmax", "none", "zscore"]
    assert transforms.get("DBR ").name == "dbr"


def test_unknown_transform_lists_valid_names():
    with pytest.raises(ConfigError, match=r"unknown transform 'sqrt'.*dbr, log1p, minmax"):
        transforms.get("sqrt")


@pytest.mark.parametrize(
    ("name", "options", "match"),
    [
        ("log1p", {"threshold": 1}, r"unknown option 'threshold'.*valid options: none"),
        ("dbr", {"treshold": 1}, r"valid options: threshold, zerovalue, scale"),
        ("dbr", {"threshold": 0}, r"threshold must be > 0"),
        ("dbr", {"threshold": "0.1"}, r"finite number"),
        ("dbr", {"zerovalue": -10.0}, r"zerovalue must be below"),
        ("dbr", {"scale": "yes"}, r"scale must be true or false"),
    ],
)
def test_bad_options(name, options, match):
    with pytest.raises(ConfigError, match=match):
        transforms.get(name, **options)


@pytest.mark.parametrize("t", _all(), ids=repr)
@pytest.mark.parametrize("kind", ["float32", "float64", "torch32", "torch64"])
def test_round_trip_nan_and_type(t, kind):
    x = np.concatenate([RAIN, [np.nan]])
    params = _fit(t, x[:4], x[4:])
    dtype = np.float32 if kind.endswith("32") else np.float64
    data = x.astype(dtype)
    if kind.startswith("torch"):
        data = torch.from_numpy(data)
    y = t.forward(data, params)
    back = t.inverse(y, params)
    assert type(y) is type(data) and type(back) is type(data)
    assert y.dtype == data.dtype and back.dtype == data.dtype
    y, back = np.asarray(y), np.asarray(back)
    assert np.isnan(y[-1]) and np.isnan(back[-1])
    assert np.isfinite(y[:-1]).all()
    rtol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(back[:-1], x[:-1], rtol=rtol, atol=0)


@pytest.mark.parametrize("t", _all(), ids=repr)
def test_monotonic(t):
    grid = np.linspace(-1.0, 200.0, 20001)
    params = _fit(t, RAIN)
    y = t.forward(grid, params)
    assert (np.diff(y) >= 0).all()
    valid = grid >= 0.1
    assert (np.diff(y[valid]) > 0).all()  # strictly increasing on the valid range
    back = t.inverse(np.linspace(y.min() - 1, y.max() + 1, 5001), params)
    assert (np.diff(back) >= 0).all()


def test_same_values_numpy_and_torch():
    for t in _all():
        params = _fit(t, RAIN)
        a = t.forward(RAIN, params)
        b = t.forward(torch.from_numpy(RAIN), params).numpy()
        np.testing.assert_allclose(a, b, rtol=1e-12)


def test_streaming_fit_equals_one_shot():
    rng = np.random.default_rng(0)
    # A large offset makes naive sum/sum-of-squares lose digits; Chan's merge does not.
    data = 1e6 + rng.gamma(0.5, 3.0, size=(12, 40, 50))
    data[rng.random(data.shape) < 0.3] = np.nan
    chunks = [data[:1], data[1:5], data[5:6, :3], data[5:6, 3:], data[6:]]
    for name, keys in (("zscore", ("mean", "std")), ("minmax", ("min", "max"))):
        params = _fit(transforms.get(name), *chunks)
        expected = {
            "mean": np.nanmean(data),
            "std": np.nanstd(data),
            "min": np.nanmin(data),
            "max": np.nanmax(data),
        }
        assert set(params) == set(keys)
        for key in keys:
            assert params[key] == pytest.approx(expected[key], rel=1e-9)
    # float32 chunks, torch and xarray chunks, an all-NaN chunk, inf ignored
    f = transforms.get("zscore").fitter()
    f.update(torch.tensor([1.0, 2.0], dtype=torch.float32))
    f.update(xr.DataArray(np.array([np.nan, np.nan])))
    f.update(np.array([3.0, 4.0, np.inf, -np.inf], dtype=np.float32))
    assert f.result() == pytest.approx({"mean": 2.5, "std": math.sqrt(1.25)}, rel=1e-12)


def test_fit_without_data_is_an_input_error():
    f = transforms.get("minmax").fitter()
    f.update(np.full(5, np.nan))
    with pytest.raises(InputError, match=r"'minmax'.*no finite values"):
        f.result()
    assert transforms.get("log1p").fitter().result() == {}


def test_log1p_by_hand():
    t = transforms.get("log1p")
    y = t.forward(np.array([-0.1, 0.0, math.e - 1.0, np.nan]), {})
    np.testing.assert_allclose(y[:3], [0.0, 0.0, 1.0], atol=1e-15)
    assert np.isnan(y[3])
    np.testing.assert_allclose(t.inverse(np.array([-0.5, 0.0, 1.0]), {}), [0, 0, math.e - 1])


def test_minmax_and_zscore_by_hand():
    mm = transforms.get("minmax")
    p = _fit(mm, [2.0, 4.0], [6.0, np.nan])
    assert p == {"min": 2.0, "max": 6.0}
    np.testing.assert_allclose(mm.forward(np.array([2.0, 4.0, 6.0, 8.0]), p), [0, 0.5, 1, 1.5])
    z = transforms.get("zscore")
    p = _fit(z, [1.0, 2.0], [3.0], [4.0])
    assert p == pytest.approx({"mean": 2.5, "std": math.sqrt(1.25)})
    np.testing.assert_allclose(z.forward(np.array([2.5, 2.5 + math.sqrt(1.25)]), p), [0, 1])


def test_constant_training_split_stays_invertible():
    for name in ("minmax", "zscore"):
        t = transforms.get(name)
        p = _fit(t, np.full(10, 3.0))
        y = t.forward(np.array([3.0, 4.0]), p)
        np.testing.assert_allclose(y, [0.0, 1.0])
        np.testing.assert_allclose(t.inverse(y, p), [3.0, 4.0])


def test_dbr_by_hand():
    t = transforms.get("dbr")
    assert t.options == {"threshold": 0.1, "zerovalue": -15.0, "scale": False}
    assert _fit(t, RAIN) == {}
    r = np.array([-0.1, 0.0, 0.05, 0.0999, 0.1, 1.0, 10.0, 100.0, np.nan])
    y = t.forward(r, {})
    np.testing.assert_allclose(y[:8], [-15, -15, -15, -15, -10, 0, 10, 20], atol=1e-12)
    assert np.isnan(y[8])
    back = t.inverse(np.array([-15.0, -12.0, -10.0001, -10.0, 0.0, 20.0, np.nan]), {})
    np.testing.assert_allclose(back[:6], [0, 0, 0, 0.1, 1.0, 100.0], rtol=1e-12)
    assert np.isnan(back[6])
    # the threshold itself decodes to rain in float32 too
    thr = np.float32(0.1)
    assert t.inverse(t.forward(np.array([thr]), {}), {})[0] == pytest.approx(0.1, rel=1e-6)
    assert t.inverse(t.forward(torch.tensor([0.1]), {}), {})[0].item() == pytest.approx(0.1)
    # other threshold and zero value
    t = transforms.get("dbr", threshold=1, zerovalue=-3)
    np.testing.assert_allclose(t.forward(np.array([0.5, 1.0, 100.0]), {}), [-3, 0, 20])
    np.testing.assert_allclose(t.inverse(np.array([-3.0, -0.5, 0.0]), {}), [0, 0, 1])


def test_dbr_scaled():
    t = transforms.get("dbr", scale=True)
    p = _fit(t, [0.0, 0.05, np.nan], [1.0, 100.0])
    assert p == pytest.approx({"max": 20.0})  # 10·log10(100)
    y = t.forward(np.array([0.0, 0.1, 1.0, 100.0]), p)
    np.testing.assert_allclose(y, [0.0, 5 / 35, 15 / 35, 1.0])  # (dBR + 15) / (20 + 15)
    np.testing.assert_allclose(t.inverse(y, p), [0.0, 0.1, 1.0, 100.0])
    with pytest.raises(ConfigError, match=r"needs parameters max"):
        t.forward(np.ones(2), {})
    # no rain at all in the training split: denominator 1
    p = _fit(t, np.zeros(4))
    assert p == {"max": -15.0}
    np.testing.assert_allclose(t.forward(np.array([0.0, 1.0]), p), [0.0, 15.0])


def test_manifest_dict_round_trip():
    for t in _all():
        params = _fit(t, RAIN)
        d = json.loads(json.dumps(t.to_dict(params)))
        assert set(d) == {"name", "options", "params"}
        t2, p2 = transforms.from_dict(d)
        assert t2.name == t.name and t2.options == t.options and p2 == params
        np.testing.assert_array_equal(t2.forward(RAIN, p2), t.forward(RAIN, params))


@pytest.mark.parametrize(
    "entry",
    [
        {"name": "zscore", "options": {}, "params": {"mean": 1.0}},
        {"name": "nope", "options": {}, "params": {}},
        {"name": "none", "options": {}, "params": {}, "extra": 1},
        {"options": {}},
        ["none"],
    ],
)
def test_bad_manifest_entries(entry):
    with pytest.raises(ConfigError):
        transforms.from_dict(entry)


def test_xarray_and_dask_stay_lazy_with_attrs():
    da = xr.DataArray(np.tile(RAIN, (3, 1)), dims=("time", "x"), attrs={"units": "mm h-1"})
    da = da.chunk({"time": 1})
    for t in _all():
        params = _fit(t, RAIN)
        y = t.forward(da, params)
        assert isinstance(y, xr.DataArray) and y.chunks is not None
        assert y.attrs == da.attrs
        np.testing.assert_allclose(t.inverse(y, params).values, da.values, rtol=1e-12)


def test_register_custom_transform():
    class Sqrt(transforms.Transform):
        name = "test-sqrt"

        def _forward(self, x, p, xp):
            return xp.sqrt(x)

        def _inverse(self, y, p, xp):
            return y * y

    transforms.register("test-sqrt", Sqrt)
    try:
        assert "test-sqrt" in transforms.available()
        np.testing.assert_allclose(transforms.get("test-sqrt").forward(np.array([4.0]), {}), [2])
        with pytest.raises(ConfigError, match="already registered"):
            transforms.register("test-sqrt", transforms.Log1p)
        with pytest.raises(ConfigError, match="subclass of Transform"):
            transforms.register("x", dict)  # type: ignore[arg-type]
    finally:
        transforms._REGISTRY.pop("test-sqrt", None)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_tensors_stay_on_device():
    x = torch.tensor(np.concatenate([RAIN, [np.nan]]), dtype=torch.float32, device="cuda")
    for t in _all():
        params = _fit(t, RAIN)
        y = t.forward(x, params)
        back = t.inverse(y, params)
        assert y.device == x.device and back.device == x.device
        np.testing.assert_allclose(back.cpu().numpy()[:-1], RAIN, rtol=1e-5)
        assert torch.isnan(back[-1])
