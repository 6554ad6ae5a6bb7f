"""`stforecast export`: ONNX and TorchScript files of real (tiny) trained runs reproduce the
PyTorch model at two batch sizes, carry the model card, and run without stforecast."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import typer
from typer.testing import CliRunner

from stforecast.cli.export import export as export_command
from stforecast.errors import ConfigError
from stforecast.export import (
    CARD_FILE,
    CARD_KEY,
    EXPORT_FILE,
    ExportError,
    export,
    export_run,
    read_embedded_card,
)
from stforecast.rundir.load import load_model

from runs import make_run

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.*` is deprecated:DeprecationWarning")

MODELS = ["convlstm", "predrnn", "sa_convlstm", "cms_lstm"]
SUFFIX = {"onnx": "onnx", "torchscript": "pt"}
T_IN, T_OUT, SIZE = 4, 3, 16  # make_run's input and output frames; 16x16 frames, patch 2


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models run fastest on one thread (and do not stall when the cores are shared)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("export-runs")
    return {m: make_run(root / m, model=m, size=SIZE, frames=48, steps=2)["run"] for m in MODELS}


@pytest.fixture(scope="module")
def exported(runs, tmp_path_factory) -> dict[tuple[str, str], Path]:
    out = tmp_path_factory.mktemp("exported")
    files = {}
    for m, run in runs.items():
        for fmt, suffix in SUFFIX.items():
            # the tests below do what `verify` does, at other batch sizes and inputs
            files[m, fmt] = export_run(run, fmt, out / f"{m}.{suffix}", verify=False)
    return files


@pytest.fixture(scope="module")
def loaded(exported) -> dict[str, tuple]:
    """Per model: the ONNX file in onnxruntime and the TorchScript file in torch.jit."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return {
        m: (
            ort.InferenceSession(
                str(exported[m, "onnx"]), options, providers=["CPUExecutionProvider"]
            ),
            torch.jit.load(str(exported[m, "torchscript"])),
        )
        for m in MODELS
    }


def frames(batch: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(batch, T_IN, 1, SIZE, SIZE, generator=gen) * 2


@pytest.mark.parametrize("name", MODELS)
def test_files_match_pytorch_at_two_batch_sizes(name, runs, loaded):
    net, _ = load_model(runs[name])
    session, scripted = loaded[name]
    assert [i.name for i in session.get_inputs()] == ["frames"]
    assert [o.name for o in session.get_outputs()] == ["forecast"]
    for batch in (1, 3):
        x = frames(batch, seed=batch)
        with torch.no_grad():
            expected = net(x, T_OUT).numpy()
            from_script = scripted(x).numpy()
        from_onnx = session.run(["forecast"], {"frames": x.numpy()})[0]
        assert expected.shape == (batch, T_OUT, 1, SIZE, SIZE)
        assert from_onnx.shape == expected.shape == from_script.shape
        assert np.abs(from_onnx - expected).max() <= 1e-4
        assert np.abs(from_script - expected).max() <= 1e-4


@pytest.mark.parametrize("name", MODELS)
def test_card_is_inside_both_files(name, runs, exported, loaded):
    card = json.loads((runs[name] / "model.json").read_text())
    meta = loaded[name][0].get_modelmeta().custom_metadata_map
    # the run's card, plus which of its weights the file holds (the selected ones)
    embedded = json.loads(meta[CARD_KEY])
    assert embedded["weights"]["loaded"]["name"] == card["weights"]["selected"] == "best"
    assert embedded["weights"]["loaded"]["sha256"] == card["weights"]["best_sha256"]
    card["weights"]["loaded"] = embedded["weights"]["loaded"]
    assert embedded == card
    assert (meta["input_frames"], meta["output_frames"]) == (str(T_IN), str(T_OUT))
    assert meta["stforecast_version"] == card["software"]["stforecast"]
    props = {p.key: p.value for p in onnx.load(str(exported[name, "onnx"])).metadata_props}
    assert props == dict(meta)
    extra = {CARD_FILE: "", EXPORT_FILE: ""}
    torch.jit.load(str(exported[name, "torchscript"]), _extra_files=extra)
    assert json.loads(extra[CARD_FILE]) == card
    assert json.loads(extra[EXPORT_FILE])["output_frames"] == str(T_OUT)
    assert (
        read_embedded_card(exported[name, "onnx"])
        == read_embedded_card(exported[name, "torchscript"])
        == card
    )


def test_torchscript_refuses_other_frame_counts(loaded):
    scripted = loaded["convlstm"][1]
    with pytest.raises(Exception, match=r"frames must be \(batch, T_in, C, H, W\)"):
        scripted(torch.zeros(1, T_IN + 1, 1, SIZE, SIZE))


CHILD = """
import importlib.util, json, sys
import numpy as np
sys.meta_path[:] = [f for f in sys.meta_path if "stforecast" not in type(f).__module__ + repr(f)]
# the checkout's own folders go; a virtual environment inside the checkout stays
sys.path[:] = [p for p in sys.path if p and not (p.startswith(REPO) and "site-packages" not in p)]
if importlib.util.find_spec("stforecast") is not None:  # a regular install: hide it
    class Hide:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] == "stforecast":
                raise ModuleNotFoundError("hidden", name=name)
    sys.meta_path.insert(0, Hide())
try:
    import stforecast
except ImportError:
    pass
else:
    raise SystemExit("stforecast is importable")
import onnxruntime as ort
import torch
diffs = {}
for name, (onnx_file, script_file) in FILES.items():
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(onnx_file, options, providers=["CPUExecutionProvider"])
    card = json.loads(session.get_modelmeta().custom_metadata_map["stforecast_model_card"])
    extra = {"model_card.json": ""}
    scripted = torch.jit.load(script_file, _extra_files=extra)
    assert json.loads(extra["model_card.json"]) == card
    for batch in (1, 3):
        x = np.load(f"{DIR}/{name}-{batch}-x.npy")
        expected = np.load(f"{DIR}/{name}-{batch}-y.npy")
        got = session.run(["forecast"], {"frames": x})[0]
        with torch.no_grad():
            traced = scripted(torch.from_numpy(x)).numpy()
        diffs[name, batch] = max(np.abs(got - expected).max(), np.abs(traced - expected).max())
assert not any(m.split(".")[0] == "stforecast" for m in sys.modules), "stforecast was imported"
print(json.dumps({f"{n}/{b}": float(d) for (n, b), d in diffs.items()}))
"""


def test_files_run_without_stforecast(runs, exported, tmp_path):
    files = {}
    for name in MODELS:
        net, _ = load_model(runs[name])
        for batch in (1, 3):
            x = frames(batch, seed=10 + batch)
            with torch.no_grad():
                y = net(x, T_OUT)
            np.save(tmp_path / f"{name}-{batch}-x.npy", x.numpy())
            np.save(tmp_path / f"{name}-{batch}-y.npy", y.numpy())
        files[name] = (str(exported[name, "onnx"]), str(exported[name, "torchscript"]))
    repo = str(Path(__file__).resolve().parents[1])
    code = f"REPO = {repo!r}\nDIR = {str(tmp_path)!r}\nFILES = {files!r}\n" + textwrap.dedent(CHILD)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["OMP_NUM_THREADS"] = "1"
    result = subprocess.run(
        [sys.executable, "-I", "-c", code],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    diffs = json.loads(result.stdout.strip().splitlines()[-1])
    assert len(diffs) == 2 * len(MODELS)
    assert max(diffs.values()) <= 1e-4


def test_steps_sets_the_forecast_length(runs, tmp_path):
    net, card = load_model(runs["convlstm"])
    path = export(net, card, tmp_path / "long.onnx", "onnx", steps=5)
    session = ort.InferenceSession(str(path))
    assert session.get_modelmeta().custom_metadata_map["output_frames"] == "5"
    x = frames(2)
    got = session.run(None, {"frames": x.numpy()})[0]
    with torch.no_grad():
        expected = net(x, 5).numpy()
    assert got.shape == (2, 5, 1, SIZE, SIZE)
    assert np.abs(got - expected).max() <= 1e-4


def test_engine_errors(runs, tmp_path, monkeypatch):
    net, card = load_model(runs["convlstm"])
    with pytest.raises(ConfigError, match="unknown export format 'tflite'"):
        export(net, card, tmp_path / "m.tflite", "tflite")
    with pytest.raises(ConfigError, match="steps must be a positive integer"):
        export(net, card, tmp_path / "m.onnx", "onnx", steps=0)
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # as if not installed
    with pytest.raises(ConfigError, match=r"pip install 'stforecast\[export\]'"):
        export(net, card, tmp_path / "m.onnx", "onnx")
    assert list(tmp_path.iterdir()) == []


# --- the command, in a Typer app of its own (cli/app.py registers it) ---------------------------


@pytest.fixture
def cli(monkeypatch):
    monkeypatch.delenv("STFORECAST_MODEL", raising=False)
    app = typer.Typer()
    app.command()(export_command)
    try:
        runner = CliRunner(mix_stderr=False)  # Click < 8.2 mixes stderr into the output
    except TypeError:
        runner = CliRunner()
    return lambda *args: runner.invoke(app, [str(a) for a in args])


def test_cli_writes_the_file_and_prints_its_path(cli, runs, tmp_path):
    out = tmp_path / "sub" / "model.onnx"
    result = cli("--model", runs["convlstm"], "--format", "onnx", "--out", out)
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == str(out)
    assert ort.InferenceSession(str(out)).get_inputs()[0].shape[1:] == [T_IN, 1, SIZE, SIZE]


def test_cli_model_from_environment(cli, runs, tmp_path, monkeypatch):
    monkeypatch.setenv("STFORECAST_MODEL", str(runs["convlstm"]))
    result = cli(
        "--format", "torchscript", "--out", tmp_path / "m.pt", "--weights", "best", "--steps", 2
    )
    assert result.exit_code == 0, result.output
    assert torch.jit.load(str(tmp_path / "m.pt"))(frames(1)).shape == (1, 2, 1, SIZE, SIZE)


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--model", "{tmp}/missing", "--out", "{tmp}/m.onnx"], 3, "no model card"),
        (["--model", "{run}", "--format", "tflite", "--out", "{tmp}/m"], 2, "unknown export"),
        (["--format", "onnx", "--out", "{tmp}/m.onnx"], 2, "no model: pass --model RUN or set"),
    ],
)
def test_cli_errors_are_one_line(cli, runs, tmp_path, args, code, message):
    args = [a.format(tmp=tmp_path, run=runs["convlstm"]) for a in args]
    result = cli(*args)
    assert result.exit_code == code
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: ")
    assert message in result.stderr
    assert not (tmp_path / "m.onnx").exists() and not (tmp_path / "m").exists()


def test_cli_replaces_an_existing_file_only_on_success(cli, runs, tmp_path, monkeypatch):
    out = tmp_path / "model.onnx"
    out.write_bytes(b"previous export")

    def broken(*args, **kwargs):
        raise ExportError("onnx export differs from PyTorch by up to 1 (tolerance 0.0001)")

    with monkeypatch.context() as patch:
        patch.setattr("stforecast.export._verify", broken)
        result = cli("--model", runs["convlstm"], "--out", out)
    assert result.exit_code == 1
    assert result.stderr.startswith("error: onnx export differs")
    assert out.read_bytes() == b"previous export"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]  # no temporary left
    result = cli("--model", runs["convlstm"], "--out", out)
    assert result.exit_code == 0, result.output
    assert onnx.load(str(out)).metadata_props
