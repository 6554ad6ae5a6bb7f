"""Unit strings and conversions, against values computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import xarray as xr

from stforecast.data import units
from stforecast.errors import ConfigError, InputError


@pytest.mark.parametrize(
    ("raw", "canonical", "quantity"),
    [
        ("mm h-1", "mm h-1", "rate"),
        ("mm/h", "mm h-1", "rate"),
        ("mm hr-1", "mm h-1", "rate"),
        ("mm/hr", "mm h-1", "rate"),
        ("mm.h-1", "mm h-1", "rate"),
        ("mm per hour", "mm h-1", "rate"),
        ("kg m-2 s-1", "kg m-2 s-1", "rate"),
        ("kg/m2/s", "kg m-2 s-1", "rate"),
        ("kg m^-2 s^-1", "kg m-2 s-1", "rate"),
        ("kg  m**-2 s-1", "kg m-2 s-1", "rate"),
        ("kg m-2", "kg m-2", "accumulation"),
        ("mm", "mm", "accumulation"),
        ("m", "m", "accumulation"),
        ("dBZ", "dBZ", "reflectivity"),
        ("dbz", "dBZ", "reflectivity"),
        ("K", "K", "temperature"),
        ("kelvin", "K", "temperature"),
        ("degC", "degC", "temperature"),
        ("°C", "degC", "temperature"),
        ("kg kg-1", "kg kg-1", None),
        ("W m-2", "W m-2", None),
        ("degrees_north", "degrees_north", None),
    ],
)
def test_normalise(raw, canonical, quantity):
    assert units.normalise(raw) == canonical
    assert units.quantity(raw) == quantity


def test_equivalent():
    assert units.equivalent("kg m-2", "mm")
    assert units.equivalent("kg m-2 h-1", "mm/h")
    assert units.equivalent("mm s-1", "kg m-2 s-1")
    assert not units.equivalent("mm", "mm h-1")
    assert not units.equivalent("K", "degC")
    assert units.normalise(None) == ""


def test_reflectivity_to_rate_by_hand():
    # Z = 10^(30/10) = 1000 mm⁶ m⁻³; R = (Z / 200)^(1 / 1.6) = 5^0.625
    r = units.convert(30.0, "dBZ", "mm/h")
    assert float(r) == pytest.approx((1000 / 200) ** (1 / 1.6), rel=1e-12)
    assert float(r) == pytest.approx(2.734, abs=1e-3)
    # another Z-R relation: Z = 300 R^1.4
    r = units.convert(np.array([30.0]), "dBZ", "mm h-1", zr=(300, 1.4))
    np.testing.assert_allclose(r, [(1000 / 300) ** (1 / 1.4)], rtol=1e-12)
    # and back: 10·log10(200 · 1^1.6) = 23.0103 dBZ for 1 mm/h
    assert float(units.convert(1.0, "mm/h", "dBZ")) == pytest.approx(10 * math.log10(200))


def test_reflectivity_round_trip_floor_and_nan():
    dbz = np.array([-31.5, -10.0, 0.0, 15.0, 30.0, 45.0, 60.0])
    back = units.convert(units.convert(dbz, "dBZ", "mm h-1"), "mm h-1", "dBZ")
    np.testing.assert_allclose(back, dbz, rtol=0, atol=1e-10)
    rate = np.array([0.0, -0.1, 1e-9, np.nan, 2.0], dtype=np.float32)
    out = units.convert(rate, "mm h-1", "dBZ")
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out[:3], [-32.0, -32.0, -32.0])  # no echo: the floor
    assert np.isnan(out[3]) and np.isfinite(out[[0, 1, 2, 4]]).all()
    r = units.convert(np.array([-40.0, -32.0, np.nan]), "dBZ", "mm h-1")
    np.testing.assert_array_equal(r[:2], [0.0, 0.0])
    assert np.isnan(r[2])
    out = units.convert(np.array([0.0]), "mm/h", "dBZ", dbz_floor=0.0)
    np.testing.assert_array_equal(out, [0.0])


def test_accumulation_and_flux_by_hand():
    assert float(units.convert(1.0, "mm", "mm/h", step_seconds=600)) == pytest.approx(6.0)
    assert float(units.convert(1.0, "kg m-2", "mm h-1", step_seconds=600)) == pytest.approx(6.0)
    assert float(units.convert(6.0, "mm/h", "mm", step_seconds=600)) == pytest.approx(1.0)
    assert float(units.convert(1e-3, "kg m-2 s-1", "mm/h")) == pytest.approx(3.6)
    assert float(units.convert(3.6, "mm/h", "kg m-2 s-1")) == pytest.approx(1e-3)
    assert float(units.convert(0.001, "m", "mm h-1", step_seconds=3600)) == pytest.approx(1.0)
    assert float(units.convert(2.0, "kg m-2", "mm")) == 2.0  # no step needed: same amount
    # reflectivity to an accumulation over 5 min: 2.734 mm/h · 300 s / 3600 s
    acc = units.convert(30.0, "dBZ", "mm", step_seconds=300)
    assert float(acc) == pytest.approx(5**0.625 / 12, rel=1e-12)


def test_temperature():
    np.testing.assert_allclose(units.convert(np.array([273.15, 300.0]), "K", "degC"), [0, 26.85])
    np.testing.assert_allclose(units.convert(np.array([0.0]), "celsius", "kelvin"), [273.15])


def test_identity_and_dtype():
    x = np.array([1.0, np.nan], dtype=np.float32)
    assert units.convert(x, "mm/h", "mm h-1") is x
    assert units.convert(x, "mm", "mm h-1", step_seconds=300).dtype == np.float32


@pytest.mark.parametrize(
    ("src", "dst"),
    [("K", "mm h-1"), ("mm h-1", "K"), ("dBZ", "degC"), ("W m-2", "mm"), ("m s-1", "dBZ x")],
)
def test_unconvertible_pair_names_both(src, dst):
    with pytest.raises(InputError, match=rf"{src!r} to {dst!r}; supported"):
        units.convert(np.ones(2), src, dst)


def test_missing_step_and_bad_parameters():
    with pytest.raises(InputError, match=r"'mm' to 'mm/h' needs the time step"):
        units.convert(1.0, "mm", "mm/h")
    with pytest.raises(ConfigError, match=r"step_seconds must be > 0"):
        units.convert(1.0, "mm", "mm/h", step_seconds=0)
    with pytest.raises(ConfigError, match=r"zr must be a pair"):
        units.convert(1.0, "dBZ", "mm/h", zr=(200, -1))
    with pytest.raises(ConfigError, match=r"zr must be a pair"):
        units.convert(1.0, "dBZ", "mm/h", zr=(200,))


def test_xarray_keeps_attrs_updates_units_and_stays_lazy():
    da = xr.DataArray(
        np.full((4, 3, 3), 0.5, dtype=np.float32),
        dims=("time", "y", "x"),
        attrs={"units": "kg m-2", "long_name": "precipitation", "crs_wkt": "WKT"},
    )
    da.encoding.update({"dtype": "int16", "scale_factor": 0.05, "_FillValue": -1})
    out = units.convert(da.chunk({"time": 1}), "kg m-2", "mm/h", step_seconds=600)
    assert out.chunks is not None
    assert out.attrs == {"units": "mm h-1", "long_name": "precipitation", "crs_wkt": "WKT"}
    assert "scale_factor" not in out.encoding and "dtype" not in out.encoding
    np.testing.assert_allclose(out.values, 3.0)
    assert da.attrs["units"] == "kg m-2"  # input untouched
    same = units.convert(da, "kg m-2", "kg m-2")
    assert same.attrs["units"] == "kg m-2" and np.shares_memory(same.values, da.values)
