"""`--log-json` on prepare, train and evaluate: every line a JSON object stamped with a UTC
time, the host, the pid and the command; progress, a final `done` and an `error` line."""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

from stforecast.data.synthetic import write_rain_cells

RECIPE = """
[data]
sources = ["rain.nc"]
input_frames = 3
output_frames = 3
[model]
name = "convlstm"
patch_size = 4
hidden_channels = [8]
[train]
max_steps = 4
val_every = 2
log_every = 2
val_batches = 1
tensorboard = false
"""


def run(cwd: Path, *args: str) -> tuple[int, list[dict], str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "stforecast", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    lines = [json.loads(line) for line in done.stdout.splitlines()]  # nothing but JSON
    return done.returncode, lines, done.stderr


def stamped(lines: list[dict], command: str) -> None:
    assert lines
    for line in lines:
        assert list(line)[:4] == ["time", "host", "pid", "command"]
        assert line["time"].endswith("Z")
        when = dt.datetime.fromisoformat(line["time"].replace("Z", "+00:00"))
        assert abs((dt.datetime.now(dt.UTC) - when).total_seconds()) < 600
        assert line["host"] == socket.gethostname() and line["command"] == command
    assert len({line["pid"] for line in lines}) == 1
    times = [line["time"] for line in lines]
    assert times == sorted(times)


def test_prepare_train_evaluate_log_json(tmp_path):
    write_rain_cells(tmp_path / "rain.nc", frames=48, size=32)
    (tmp_path / "r.toml").write_text(RECIPE)

    code, lines, err = run(tmp_path, "prepare", "r.toml", "--out", "store", "--log-json")
    assert code == 0, err
    stamped(lines, "prepare")
    assert {"reading", "done"} <= {line["stage"] for line in lines}
    assert lines[-1]["stage"] == "done" and lines[-1]["frames"]["frames"] == 48
    code, lines, err = run(tmp_path, "prepare", "r.toml", "--out", "store", "--log-json")
    assert code == 2 and err.startswith("error: ") and "--overwrite" in err
    stamped(lines, "prepare")
    assert lines[-1]["stage"] == "error" and lines[-1]["exit_code"] == 2
    assert lines[-1]["error"] == err.removeprefix("error: ").strip()

    code, lines, err = run(tmp_path, "train", "r.toml", "--out", "run", "--log-json")
    assert code == 0, err
    stamped(lines, "train")
    events = [line.get("event") for line in lines if line["stage"] == "training"]
    assert "step" in events and "validation" in events and events[-1] == "done"
    assert lines[-1]["stage"] == "done" and lines[-1]["steps"] == 4

    args = ("evaluate", "--model", "run", "--out", "ev", "--log-json")
    code, lines, err = run(tmp_path, *args, "--set", 'evaluate.baselines=["persistence"]')
    assert code == 0, err
    stamped(lines, "evaluate")
    assert lines[-1]["stage"] == "done"
    assert set(lines[-1]["summary"]) >= {"model", "persistence"}
    assert len(lines[-1]["lead_minutes"]) == 3
