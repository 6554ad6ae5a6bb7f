"""The Python API for notebooks: `stforecast.open_frames` and `stforecast.forecast` on paths and on
xarray objects (CRS from a CF grid mapping, a `spatial_ref` coordinate or rioxarray), typed
errors with the command line's messages, a light package root that `dir` and `help` describe,
and examples/notebook.ipynb run cell by cell against a tiny trained run."""

from __future__ import annotations

import json
import os
import pydoc
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyproj
import pytest
import xarray as xr

import stforecast
from stforecast import errors
from stforecast.io.assemble import open_frames as open_files

from runs import make_run

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "examples" / "notebook.ipynb"
PUBLIC = {"forecast", "load_model", "open_frames", "errors", "__version__", "InputError",
          "ConfigError", "ModelMismatch", "LockHeld", "StforecastError"}  # fmt: skip


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny run trained on 32 x 32 rain cells (EPSG:3035, 1 km, 10 min) and its archive."""
    return make_run(tmp_path_factory.mktemp("api"))


@pytest.fixture(scope="module")
def archive(tiny):
    """The archive in memory, with nothing left that points back to its file."""
    ds = xr.load_dataset(tiny["archive"])
    ds.encoding = {}
    for var in ds.variables.values():
        var.encoding = {}
    return ds


# -- the package root -------------------------------------------------------------------------


def test_import_is_light_and_dir_lists_the_public_names():
    code = (
        "import sys, stforecast\n"
        "heavy = [m for m in ('torch', 'xarray', 'numpy') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        "print(dir(stforecast))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    names = set(eval(out.stdout))
    assert names == PUBLIC, names ^ PUBLIC
    assert "Any" not in names


def test_help_describes_the_api():
    text = pydoc.render_doc(stforecast, renderer=pydoc.plaintext)
    for name in ("open_frames(", "load_model(", "forecast(", "ModelMismatch", "InputError"):
        assert name in text, name
    assert "xarray.Dataset" in text
    doc = stforecast.forecast.__doc__
    assert "CF" in doc and "input's own grid" in doc and "xarray.Dataset" in doc
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        stforecast.nope  # noqa: B018


def test_errors_have_short_public_names():
    assert errors.ModelMismatch is errors.ModelMismatchError is stforecast.ModelMismatch
    assert errors.LockHeld is errors.LockHeldError is stforecast.LockHeld
    assert stforecast.InputError is errors.InputError
    assert stforecast.ConfigError is errors.ConfigError
    assert errors.MissingVariable is errors.MissingVariableError
    codes = [(errors.ConfigError, 2), (errors.InputError, 3), (errors.ModelMismatch, 4),
             (errors.LockHeld, 5), (errors.Cancelled, 130), (errors.TimeLimit, 124)]  # fmt: skip
    for cls, code in codes:
        assert cls.exit_code == code and issubclass(cls, errors.StforecastError)
    assert set(errors.__all__) <= set(dir(errors))


# -- open_frames on xarray objects ------------------------------------------------------------


def _same_frames(a: xr.DataArray, b: xr.DataArray) -> None:
    assert a.dims == b.dims and a.name == b.name and a.dtype == np.float32
    np.testing.assert_array_equal(a["time"].values, b["time"].values)
    np.testing.assert_allclose(a.values, b.values, equal_nan=True)
    for axis in ("x", "y"):
        np.testing.assert_allclose(a[axis].values, b[axis].values)
        assert a[axis].attrs == b[axis].attrs
    for key in ("units", "long_name", "standard_name", "transform", "time_step",
                "source_variable"):  # fmt: skip
        assert a.attrs.get(key) == b.attrs.get(key), key
    assert pyproj.CRS.from_wkt(a.attrs["crs_wkt"]) == pyproj.CRS.from_wkt(b.attrs["crs_wkt"])


def test_a_dataset_and_its_dataarray_open_like_the_file(tiny, archive):
    path = tiny["archive"]
    ref = open_files(path)
    _same_frames(stforecast.open_frames(archive), ref)
    _same_frames(stforecast.open_frames(archive, variable="rainrate"), ref)
    with xr.open_dataset(path, decode_coords="all") as ds:  # the grid mapping as a coordinate
        _same_frames(stforecast.open_frames(ds["rainrate"]), ref)
    with xr.open_dataset(path) as ds:  # `crs` stays behind; the file it came from has it
        frames = stforecast.open_frames(ds["rainrate"])
        _same_frames(frames, ref)
        assert frames.attrs["sources"] == [str(path)]
    with xr.open_dataset(path, decode_times=False, mask_and_scale=False) as ds:
        _same_frames(stforecast.open_frames(ds), ref)  # numeric CF times, packing undone
    assert stforecast.open_frames(ref) is ref  # open_frames' own output passes through
    assert stforecast.open_frames(archive).attrs["sources"] == []


def test_a_dataarray_without_its_grid_mapping_says_how_to_keep_it(archive):
    with pytest.raises(errors.InputError, match="names the grid mapping 'crs', which it does not"):
        stforecast.open_frames(archive["rainrate"])


def test_rioxarray_layouts(archive, monkeypatch):
    """What `rioxarray.open_rasterio` gives: `band` frames with a `time` coordinate along them, a
    `spatial_ref` coordinate (CRS in `crs_wkt` and `spatial_ref`), the grid mapping in the
    encoding; and `.rio.crs` when rioxarray is loaded (faked here: it is not installed)."""
    wkt = pyproj.CRS.from_epsg(3035).to_wkt()
    da = archive["rainrate"].copy().rename(time="band").drop_vars(["lat", "lon"])
    da = da.assign_coords(band=np.arange(1, da.sizes["band"] + 1),
                          time=("band", archive["time"].values),
                          spatial_ref=((), 0, {"crs_wkt": wkt, "spatial_ref": wkt}))  # fmt: skip
    da.attrs.pop("grid_mapping")
    da.encoding["grid_mapping"] = "spatial_ref"
    frames = stforecast.open_frames(da)
    assert frames.dims == ("time", "y", "x") and frames.attrs["time_step"] == 600
    np.testing.assert_array_equal(frames["time"].values, archive["time"].values)
    assert pyproj.CRS.from_wkt(frames.attrs["crs_wkt"]).to_epsg() == 3035

    class Rio:
        def __init__(self, obj):
            self.crs = pyproj.CRS.from_epsg(32633)

    bare = archive["rainrate"].copy().drop_vars(["lat", "lon"])
    bare.attrs.pop("grid_mapping")
    assert stforecast.open_frames(bare).attrs["crs_wkt"] == ""
    monkeypatch.setattr(xr.DataArray, "rio", property(Rio), raising=False)
    assert pyproj.CRS.from_wkt(stforecast.open_frames(bare).attrs["crs_wkt"]).to_epsg() == 32633


def test_lonlat_pixels_and_a_single_frame():
    lon = xr.DataArray(np.linspace(5, 6, 4), dims="lon", attrs={"units": "degrees_east"})
    lat = xr.DataArray(np.linspace(51, 50, 3), dims="lat", attrs={"units": "degrees_north"})
    attrs = {"units": "K", "valid_time": "2024-01-01T06:00:00Z"}
    da = xr.DataArray(np.ones((3, 4)), coords={"lat": lat, "lon": lon}, dims=("lat", "lon"),
                      name="t2m", attrs=attrs)  # fmt: skip
    frames = stforecast.open_frames(da)
    assert frames.dims == ("time", "y", "x") and frames.shape == (1, 3, 4)
    assert frames["time"].values[0] == np.datetime64("2024-01-01T06:00")
    assert pyproj.CRS.from_wkt(frames.attrs["crs_wkt"]).to_epsg() == 4326
    pixels = xr.DataArray(np.zeros((2, 3, 3)), dims=("time", "row", "col"), name="v",
                          coords={"time": np.array(["2024-01-01T00:10", "2024-01-01T00:00"],
                                                   dtype="datetime64[ns]")})  # fmt: skip
    frames = stforecast.open_frames(pixels)
    assert frames["time"].values[0] < frames["time"].values[1]  # sorted by time
    assert frames.attrs["crs_wkt"] == "" and "in pixels" in frames["x"].attrs["long_name"]


def test_the_variable_is_chosen_as_for_files(tiny, archive, tmp_path):
    two = archive.assign(other=archive["rainrate"] * 2)
    two.to_netcdf(tmp_path / "two.nc")
    with pytest.raises(errors.InputError) as from_file:
        open_files(tmp_path / "two.nc")
    with pytest.raises(errors.InputError) as from_memory:
        stforecast.open_frames(two)
    assert str(from_memory.value) == str(from_file.value)
    assert "several data variables in the sources: rainrate, other" in str(from_memory.value)
    assert stforecast.open_frames(two, variable="other").name == "other"
    channels = stforecast.open_frames(two, variable=["rainrate", "other"])
    assert channels.dims == ("time", "channel", "y", "x")
    assert channels.attrs["source_variable"] == ["rainrate", "other"]
    with pytest.raises(errors.MissingVariable, match="no variable 'nope'; available: rainrate"):
        stforecast.open_frames(two, variable="nope")
    with pytest.raises(errors.InputError, match="has no name"):
        stforecast.open_frames(archive["rainrate"].rename(None))
    with pytest.raises(errors.MissingVariable, match="available: rainrate"):
        stforecast.open_frames(archive["rainrate"], variable="precip")


def test_bad_times_are_input_errors(archive):
    no_time = archive.drop_vars("time")
    with pytest.raises(errors.InputError, match="no time found for 'rainrate'"):
        stforecast.open_frames(no_time)
    twice = archive.isel(time=[0, 1, 1])
    with pytest.raises(errors.InputError, match="duplicate times"):
        stforecast.open_frames(twice)


def test_several_xarray_objects_are_one_stack(tiny, archive):
    parts = [archive.isel(time=[k]) for k in range(archive.sizes["time"] - 1, -1, -1)]
    _same_frames(stforecast.open_frames(parts), open_files(tiny["archive"]))
    with pytest.raises(errors.InputError, match="paths or xarray objects"):
        stforecast.open_frames([archive, str(tiny["archive"])])


# -- forecast ---------------------------------------------------------------------------------


def test_forecast_takes_every_kind_of_input_and_model(tiny, archive):
    run = tiny["run"]
    model = stforecast.load_model(run)
    frames = stforecast.open_frames(tiny["archive"])
    ref = stforecast.forecast(frames, run, hours=1)
    with xr.open_dataset(tiny["archive"]) as ds:
        inputs = [archive, ds["rainrate"], tiny["archive"], [str(tiny["archive"])]]
        for frames_in in inputs:
            for model_in in (model, run, str(run)):
                ds_out = stforecast.forecast(frames_in, model_in, hours=1)
                np.testing.assert_allclose(ds_out["rainrate"].values, ref["rainrate"].values,
                                           equal_nan=True)  # fmt: skip


def test_what_forecast_returns(tiny, archive):
    ds = stforecast.forecast(archive, stforecast.load_model(tiny["run"]), hours=1)
    assert isinstance(ds, xr.Dataset)
    assert set(ds.data_vars) == {"rainrate", "crs"}
    fc = ds["rainrate"]
    assert fc.dims == ("time", "y", "x") and fc.dtype == np.float32 and fc.sizes["time"] == 6
    assert fc.attrs["units"] == "mm h-1" and fc.attrs["grid_mapping"] == "crs"
    np.testing.assert_allclose(ds["x"].values, archive["x"].values)  # the input's grid
    np.testing.assert_allclose(ds["y"].values, archive["y"].values)
    assert pyproj.CRS.from_wkt(ds["crs"].attrs["crs_wkt"]).to_epsg() == 3035
    assert ds.attrs["Conventions"] == "CF-1.10, ACDD-1.3"
    newest = archive["time"].values[-1]
    assert ds["forecast_reference_time"].values == newest
    assert (ds["time"].values - newest == ds["forecast_period"].values).all()
    assert ds["forecast_period"].values[0] == np.timedelta64(10, "m")
    assert json.loads(ds.attrs["provenance"])["inputs"] == []  # in memory: no files


def test_forecast_errors_are_typed_with_the_cli_messages(tiny, archive):
    model = stforecast.load_model(tiny["run"])
    wrong = r"no variable 'rainrate'; available: precip \(the model forecasts 'rainrate'\)"
    with pytest.raises(errors.ModelMismatch, match=wrong):
        stforecast.forecast(archive.rename(rainrate="precip"), model, hours=1)
    with pytest.raises(errors.ModelMismatch, match="the input variable is"):
        stforecast.forecast(archive.set_coords("crs")["rainrate"].rename("precip"), model, hours=1)
    with pytest.raises(errors.InputError, match="the model needs 4 frames"):
        stforecast.forecast(archive.isel(time=slice(0, 2)), model, hours=1)
    other = archive["rainrate"].copy().drop_vars(["lat", "lon"])
    other.attrs.pop("grid_mapping")
    other.attrs["crs_wkt"] = pyproj.CRS.from_epsg(32633).to_wkt()
    with pytest.raises(errors.ModelMismatch, match="CRS differs: input EPSG:32633, model EPSG"):
        stforecast.forecast(other, model, hours=1)
    with pytest.raises(errors.ConfigError, match="a network alone has no model card"):
        stforecast.forecast(archive, model[0], hours=1)
    with pytest.raises(errors.ConfigError, match="frames must be paths, an xarray"):
        stforecast.forecast(np.zeros((4, 32, 32)), model, hours=1)


# -- the notebook -----------------------------------------------------------------------------


def test_the_notebook_is_valid_nbformat_4():
    nb = json.loads(NOTEBOOK.read_text())
    assert nb["nbformat"] == 4 and nb["nbformat_minor"] >= 5
    assert nb["metadata"]["kernelspec"]["language"] == "python"
    ids = [cell["id"] for cell in nb["cells"]]
    assert len(set(ids)) == len(ids)
    for cell in nb["cells"]:
        assert cell["cell_type"] in ("markdown", "code") and isinstance(cell["source"], list)
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None  # stored clean
    code = "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code")
    for step in ("stforecast.open_frames(", "stforecast.forecast(", "plt.", "except stforecast"):
        assert step in code, step


def test_the_notebook_runs(tiny, tmp_path, monkeypatch):
    """Its code cells in order, in one namespace, as a kernel would run them (nbclient is not
    installed here; where it is, it runs the notebook itself)."""
    monkeypatch.setenv("STFORECAST_MODEL", str(tiny["run"]))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.chdir(tmp_path)
    nb = json.loads(NOTEBOOK.read_text())
    try:
        import nbclient
        import nbformat
    except ImportError:
        nbclient = None
    if nbclient is not None:
        nbclient.NotebookClient(nbformat.reads(json.dumps(nb), as_version=4)).execute()
        assert (tmp_path / "forecast.nc").is_file()
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    namespace: dict = {"__name__": "__main__"}
    cells = [c for c in nb["cells"] if c["cell_type"] == "code"]
    try:
        for k, cell in enumerate(cells):
            exec(compile("".join(cell["source"]), f"{NOTEBOOK.name}[{k}]", "exec"), namespace)
    finally:
        plt.close("all")
    assert namespace["fc"]["rainrate"].sizes["time"] == 6
    with xr.open_dataset(tmp_path / "forecast.nc") as written:
        assert written["rainrate"].attrs["units"] == "mm h-1"
    assert os.environ["STFORECAST_MODEL"] == namespace["RUN"]
