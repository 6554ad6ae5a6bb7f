"""`stforecast forecast --model FILE.onnx`: the forecast of an exported model on onnxruntime is
the run directory's (values within 1e-4, the same metadata but for the provenance naming the
file), whole grid, size-free, tiled, guided and blended, and never imports PyTorch."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from typer.testing import CliRunner

from stforecast.cli.app import app
from stforecast.export import export_run
from stforecast.forecasting.job import forecast_to_file

from runs import make_run

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.*` is deprecated:DeprecationWarning")

KINDS = {
    "plain": {},  # layer norm: the 32 x 32 grid is the model's frame
    "tiled": {"crop": 16},  # trained on 16 x 16 crops: 32 x 32 forecasts in tiles
    "size_free": {"model": "cms_lstm", "options": {"norm": "channel", "window": 4}, "crop": 16},
    "guided": {"options": {"guidance": True}},
}
TIMESTAMPS = {"history", "date_created", "date_modified", "date_issued", "date_metadata_modified"}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, dict[str, Path]]:
    root = tmp_path_factory.mktemp("onnx-runs")
    made = {kind: make_run(root / kind, **kw) for kind, kw in KINDS.items()}
    # a run whose card blends the model with the extrapolation beyond its horizon (3 leads)
    blended = root / "blended"
    shutil.copytree(made["plain"]["run"], blended / "run")
    card_file = blended / "run" / "model.json"
    card = json.loads(card_file.read_text())
    card["blending"] = {"first_lead": 4, "weights": [0.6, 0.3], "score": "mse", "fitted_on": {}}
    card_file.write_text(json.dumps(card))
    made["blended"] = {"archive": made["plain"]["archive"], "run": blended / "run"}
    for kind, paths in made.items():
        paths["onnx"] = export_run(paths["run"], "onnx", root / f"{kind}.onnx")
    return made


def _compare(a: Path, b: Path, onnx_file: Path) -> None:
    """Same values (1e-4) and metadata; the provenance names the ONNX file instead of the run."""
    x, y = xr.load_dataset(a), xr.load_dataset(b)
    assert list(x.data_vars) == list(y.data_vars) and x.sizes == y.sizes
    for name in x.data_vars:
        u, v = x[name].values, y[name].values
        if u.dtype.kind == "f":
            assert np.array_equal(np.isnan(u), np.isnan(v)), name
            assert np.nanmax(np.abs(u - v), initial=0.0) <= 1e-4, name
        assert x[name].attrs == y[name].attrs
    for name in x.coords:
        np.testing.assert_array_equal(x[name].values, y[name].values)
    assert {k: v for k, v in x.attrs.items() if k not in TIMESTAMPS | {"provenance"}} == {
        k: v for k, v in y.attrs.items() if k not in TIMESTAMPS | {"provenance"}
    }
    px, py = json.loads(x.attrs["provenance"]), json.loads(y.attrs["provenance"])
    # the model's path, relative to the forecast file
    assert (b.parent / py["model"].pop("run")).resolve() == onnx_file.resolve()
    px["model"].pop("run")
    px.pop("created"), py.pop("created")
    assert px == py


@pytest.mark.parametrize("kind", [*KINDS, "blended"])
def test_the_onnx_forecast_is_the_run_directorys(kind, runs, tmp_path):
    paths = runs[kind]
    sources = [str(paths["archive"])]
    # 5 leads, past the 3 the models were trained (and exported) for
    a = forecast_to_file(sources, paths["run"], tmp_path / "run.nc", steps=5, device="cpu")
    b = forecast_to_file(sources, paths["onnx"], tmp_path / "onnx.nc", steps=5, device="cpu")
    assert a["tiles"] == b["tiles"] == ([16, 16] if kind == "tiled" else None)
    assert a["device"] == b["device"] == "cpu" and b["steps"] == 5
    _compare(tmp_path / "run.nc", tmp_path / "onnx.nc", paths["onnx"])


def test_the_graph_is_free_in_size_only_for_size_free_models(runs):
    shapes = {}
    for kind in ("plain", "size_free"):
        session = ort.InferenceSession(str(runs[kind]["onnx"]), providers=["CPUExecutionProvider"])
        shapes[kind] = session.get_inputs()[0].shape
        assert [i.name for i in session.get_overridable_initializers()] == ["steps"]
    assert shapes["plain"] == ["batch", 4, 1, 32, 32]
    assert shapes["size_free"] == ["batch", 4, 1, "height", "width"]


CHILD = """
import sys
from stforecast.cli.app import app
try:
    app(ARGS, standalone_mode=False)
except SystemExit as stop:
    assert not stop.code, stop.code
heavy = sorted(m for m in ("torch", "matplotlib", "skimage") if m in sys.modules)
print(heavy)
"""


def test_the_onnx_forecast_never_imports_torch(runs, tmp_path):
    """In a fresh process, the command line with an ONNX file (as cron runs it) and the engine's
    `forecast_to_file`: torch never imported, nor matplotlib or scikit-image (no guidance)."""
    out = tmp_path / "out.nc"
    args = ["forecast", str(runs["plain"]["archive"]), "--steps", "4", "--model",
            str(runs["plain"]["onnx"]), "--out", str(out), "--quiet"]  # fmt: skip
    engine = textwrap.dedent(f"""
        import sys
        from stforecast.forecasting.job import forecast_to_file
        forecast_to_file([{str(runs["plain"]["archive"])!r}], {str(runs["plain"]["onnx"])!r},
                         {str(tmp_path / "engine.nc")!r}, steps=2)
        print(sorted(m for m in ("torch", "matplotlib", "skimage") if m in sys.modules))
    """)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for code in (f"ARGS = {args!r}\n" + textwrap.dedent(CHILD), engine):
        res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             env=env, timeout=120)  # fmt: skip
        assert res.returncode == 0, res.stderr[-2000:]
        assert res.stdout.strip().splitlines()[-1] == "[]", res.stdout
    assert out.is_file() and (tmp_path / "engine.nc").is_file()


def cli(*args: str, env: dict | None = None):
    return CliRunner().invoke(app, [str(a) for a in args], env=env)


def test_log_json_lines_are_stamped(runs, tmp_path):
    res = cli("forecast", runs["plain"]["archive"], "--steps", "2", "--model",
              runs["plain"]["onnx"], "--out", f"{tmp_path}/", "--log-json")  # fmt: skip
    assert res.exit_code == 0, res.output
    events = [json.loads(line) for line in res.stdout.splitlines()]
    assert [e["stage"] for e in events] == ["start-up", "import", "load model", "read", "written"]
    for event in events:
        assert {"time", "host", "pid"} <= set(event) and event["command"] == "forecast"
    assert events[-1]["output_file"].endswith(".nc")


def _without_card(src: Path, dst: Path) -> Path:
    proto = onnx.load(str(src))
    del proto.metadata_props[:]
    onnx.save(proto, str(dst))
    return dst


def test_failures_are_one_line(runs, tmp_path, monkeypatch):
    archive = runs["plain"]["archive"]
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not a model")
    bare = _without_card(runs["plain"]["onnx"], tmp_path / "bare.onnx")
    cases = [
        (bare, 4, "no stforecast model card"),
        (garbage, 3, "not a readable ONNX model"),
        (tmp_path / "missing.onnx", 3, "no such ONNX file"),
    ]  # fmt: skip
    for model, code, message in cases:
        res = cli("forecast", archive, "--steps", "2", "--model", model, "--out", tmp_path / "f.nc")
        assert res.exit_code == code, res.output
        assert res.stderr.count("\n") == 1 and message in res.stderr, res.stderr
    res = cli("forecast", archive, "--model", runs["plain"]["onnx"], "--device", "mps",
              "--out", tmp_path / "f.nc")  # fmt: skip
    assert res.exit_code == 2 and "cpu or cuda" in res.stderr
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if not installed
    res = cli("forecast", archive, "--model", runs["plain"]["onnx"], "--out", tmp_path / "f.nc")
    assert res.exit_code == 2 and "pip install onnxruntime" in res.stderr
    assert not (tmp_path / "f.nc").exists()


def test_a_file_of_an_earlier_export_forecasts_its_own_leads(runs, tmp_path):
    """Before the loop, exports unrolled a fixed number of leads: fewer are cut from them, more
    are refused before any work (exit 2)."""
    import torch

    from stforecast.export import CARD_KEY
    from stforecast.rundir.load import load_model

    net, card = load_model(runs["plain"]["run"])

    class Rollout(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, frames):
            return self.net(frames, 3)

    old = tmp_path / "old.onnx"
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        batch = {"frames": {0: "batch"}, "forecast": {0: "batch"}}
        torch.onnx.export(Rollout().eval(), (torch.rand(2, 4, 1, 32, 32),), str(old),
                          dynamo=False, input_names=["frames"], output_names=["forecast"],
                          dynamic_axes=batch)  # fmt: skip
    proto = onnx.load(str(old))
    for key, value in {CARD_KEY: json.dumps(card), "output_frames": "3"}.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(proto, str(old))
    sources = [str(runs["plain"]["archive"])]
    forecast_to_file(sources, runs["plain"]["run"], tmp_path / "run.nc", steps=2)
    forecast_to_file(sources, old, tmp_path / "old.nc", steps=2)
    a, b = xr.load_dataset(tmp_path / "run.nc"), xr.load_dataset(tmp_path / "old.nc")
    assert np.nanmax(np.abs(a["rainrate"].values - b["rainrate"].values)) <= 1e-4
    res = cli("forecast", *sources, "--steps", "4", "--model", old, "--out", tmp_path / "x.nc")
    assert res.exit_code == 2 and "at most 3 leads" in res.stderr


def test_help_shows_the_exit_codes_line_by_line():
    res = cli("forecast", "--help")
    assert res.exit_code == 0
    lines = [line.strip(" │") for line in res.stdout.splitlines()]
    for code in ("0", "1", "2", "3", "4", "5", "124", "130"):
        assert any(line.startswith(f"{code} ") for line in lines), (code, res.stdout)


def test_the_format_choices_are_the_writers():
    import typing

    from stforecast.cli.forecast import Device, Format
    from stforecast.devices import DEVICES
    from stforecast.io.write import FORMATS

    assert typing.get_args(Format) == FORMATS and typing.get_args(Device) == DEVICES


@pytest.mark.parametrize(("option", "value"), [("--format", "grib"), ("--device", "tpu")])
def test_format_and_device_are_choices(option, value, tmp_path):
    res = subprocess.run(
        [sys.executable, "-m", "stforecast", "forecast", str(tmp_path / "x.nc"), option, value],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert res.returncode == 2
    assert res.stderr.startswith("error: ") and res.stderr.count("\n") == 1
    assert value in res.stderr
