"""Hostile and broken run directories through the CLI (issue 13): each is its documented exit
code with one clear line naming the field, and writes nothing."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from stforecast.errors import ModelMismatchError

from runs import make_run


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return make_run(tmp_path_factory.mktemp("hostile"), steps=2)


def stforecast(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "stforecast", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
    )


def edited_run(base, tmp_path: Path, edit) -> Path:
    run = tmp_path / "run"
    shutil.copytree(base["run"], run)
    card = json.loads((run / "model.json").read_text())
    edit(card)
    (run / "model.json").write_text(json.dumps(card))
    return run


def forecast(base, run: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    out = tmp_path / "out"
    out.mkdir()
    res = stforecast(
        "forecast", str(base["archive"]), "--steps", "1", "--model", str(run),
        "--out", str(out) + "/", "--device", "cpu", cwd=tmp_path,
    )  # fmt: skip
    assert list(out.iterdir()) == [], "a refused forecast wrote something"
    return res


def one_line(res: subprocess.CompletedProcess) -> str:
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    return lines[0]


def _drop(key: str):
    return lambda card: card.pop(key)


def _set_input(key: str, value):
    return lambda card: card["input"].__setitem__(key, value)


@pytest.mark.parametrize(
    ("edit", "field"),
    [
        (_drop("weights"), "weights"),
        (_drop("architecture"), "architecture"),
        (_drop("input"), "input"),
        (_set_input("input_frames", 0), "input_frames"),
        (_set_input("time_step_seconds", 0), "time_step_seconds"),
        (_set_input("time_step_seconds", "600s"), "time_step_seconds"),
        (lambda card: card["architecture"].pop("hidden_channels"), "architecture.hidden_channels"),
    ],
    ids=["no-weights", "no-architecture", "no-input", "frames-0", "step-0", "step-text", "no-h"],
)
def test_broken_card_fields_are_named_with_exit_4(base, tmp_path, edit, field):
    res = forecast(base, edited_run(base, tmp_path, edit), tmp_path)
    assert res.returncode == 4, res.stderr
    assert f"'{field}'" in one_line(res)


def test_a_card_claiming_another_architecture_is_refused(base, tmp_path):
    """ConvLSTM and PredRNN weights have different tensors, but a card can also lie within one
    family: the weights record what they were trained as."""

    def claim(card):
        card["architecture"]["name"] = "predrnn"

    res = forecast(base, edited_run(base, tmp_path, claim), tmp_path)
    assert res.returncode == 4
    line = one_line(res)
    assert "another network" in line and "predrnn" in line and "convlstm" in line


def test_weights_of_another_shape_are_one_line(base, tmp_path):
    """Weights without the recorded architecture (older runs) are checked tensor by tensor."""
    from safetensors.torch import load_file, save_file

    def unsigned(card):
        card["weights"].pop("sha256")
        card["weights"].pop("best_sha256")

    run = edited_run(base, tmp_path, unsigned)
    for name in ("model.safetensors", "checkpoints/best.safetensors"):
        state = load_file(run / name)
        state.pop(sorted(state)[0])
        save_file(state, run / name)  # no metadata: the tensors are all there is
    res = forecast(base, run, tmp_path)
    assert res.returncode == 4
    assert "1 missing" in one_line(res)


def test_load_model_raises_the_typed_error(base, tmp_path):
    from stforecast.rundir.load import load_model

    run = edited_run(base, tmp_path, lambda card: card["architecture"].update(kernel_size=5))
    with pytest.raises(ModelMismatchError, match="kernel_size"):
        load_model(run)


def test_a_recipe_that_contradicts_the_store_is_a_usage_error(base, tmp_path):
    recipe = tmp_path / "r.toml"
    recipe.write_text(
        f'[data]\nstore = "{base["store"]}"\ninput_frames = 10000000\n'
        '[model]\nname = "convlstm"\nhidden_channels = [4]\n[train]\nmax_steps = 1\n'
    )
    res = stforecast("train", str(recipe), "--out", str(tmp_path / "run"), cwd=tmp_path)
    assert res.returncode == 2, res.stderr
    line = one_line(res)
    assert "input_frames = 10000000 contradicts the store" in line
    assert not (tmp_path / "run").exists()


def test_window_lengths_left_unset_are_recorded_from_the_store(base, tmp_path):
    recipe = tmp_path / "r.toml"
    recipe.write_text(
        f'[data]\nstore = "{base["store"]}"\n'
        '[model]\nname = "convlstm"\nhidden_channels = [4]\n'
        '[train]\nmax_steps = 1\nval_every = 1\nval_batches = 1\ndevice = "cpu"\n'
    )
    res = stforecast("train", str(recipe), "--out", str(tmp_path / "run"), cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    written = (tmp_path / "run" / "recipe.toml").read_text()
    assert "input_frames = 4\n" in written and "output_frames = 3\n" in written


@pytest.mark.parametrize(
    "edit",
    [
        lambda card: card["architecture"].update(hidden_channels=[1_000_000]),
        lambda card: card["architecture"].update(hidden_channels=[20_000] * 4),
        lambda card: card["input"].update(input_frames=10**9),
    ],
    ids=["hidden-1e6", "hidden-20000x4", "frames-1e9"],
)
def test_a_card_too_large_for_memory_is_refused_before_allocating(base, tmp_path, edit):
    res = forecast(base, edited_run(base, tmp_path, edit), tmp_path)
    assert res.returncode == 2, res.stderr
    line = one_line(res)
    assert "needs about" in line and "GiB" in line and "available" in line


def test_training_too_large_for_memory_is_refused_with_the_estimate(base, tmp_path):
    recipe = tmp_path / "r.toml"
    recipe.write_text(
        f'[data]\nstore = "{base["store"]}"\n'
        '[model]\nname = "convlstm"\nhidden_channels = [1000000]\n[train]\nmax_steps = 1\n'
    )
    res = stforecast("train", str(recipe), "--out", str(tmp_path / "run"), cwd=tmp_path)
    assert res.returncode == 2, res.stderr
    assert "one training step needs about" in one_line(res)
    assert not (tmp_path / "run").exists()
    dry = stforecast("train", str(recipe), "--dry-run", cwd=tmp_path)
    assert dry.returncode == 0 and "parameters" in dry.stdout  # the estimate, not an allocation


def test_a_killed_prepare_leaves_a_temporary_store_that_the_next_one_sweeps(tmp_path):
    from stforecast.config import data_config
    from stforecast.data.prepare import prepare
    from stforecast.data.synthetic import write_rain_cells

    archive = write_rain_cells(tmp_path / "r.nc", frames=12, size=8)
    left = tmp_path / ".store.tmp"  # what SIGKILL mid-prepare leaves
    (left / "frames").mkdir(parents=True)
    (left / "frames" / "0.0.0.0").write_bytes(b"half a chunk")
    prepare(
        data_config(sources=[str(archive)], input_frames=2, output_frames=1), tmp_path / "store"
    )
    assert not left.exists() and (tmp_path / "store" / "manifest.json").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.nc", "store"]


def test_a_forecast_uses_and_names_the_selected_weights(base, tmp_path):
    """The run's selected weights are the best validation's; the forecast file says so."""
    import hashlib

    import xarray as xr

    out = tmp_path / "f.nc"
    res = stforecast(
        "forecast", str(base["archive"]), "--steps", "1", "--model", str(base["run"]),
        "--out", str(out), "--device", "cpu", cwd=tmp_path,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    with xr.open_dataset(out) as ds:
        model = json.loads(ds.attrs["provenance"])["model"]
    best = base["run"] / "checkpoints" / "best.safetensors"
    assert model["weights"].startswith("best validation (step ")
    assert model["weights_sha256"] == hashlib.sha256(best.read_bytes()).hexdigest()
