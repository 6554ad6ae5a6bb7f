"""The examples in `examples/` work: the shell scripts parse, the crontab and the systemd units are
well formed, the command lines in the example pages name real commands, options and recipe
fields, and `forecast-latest.sh` picks the right files (fast); the walkthroughs, python_api.py and
the cron wrapper run for real (slow: `pytest -m slow`, about 4 minutes on 2 CPU cores)."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from pydantic import BaseModel

from conftest import shared
from runs import make_run

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
CRON = EXAMPLES / "cron"
WRAPPER = CRON / "forecast-latest.sh"
SCRIPTS = sorted(EXAMPLES.rglob("*.sh"))
PAGES = sorted(EXAMPLES.rglob("*.md"))
INSTALLED = "/opt/stforecast/"  # where the cron and systemd examples expect the checkout
STFORECAST = f"{sys.executable} -m stforecast"  # this Python's stforecast, whatever is on PATH


def run_script(args: list[str], env: dict[str, str] | None = None, timeout: float = 600):
    return subprocess.run(
        args,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "STFORECAST": STFORECAST, **(env or {})},
    )


# ------------------------------------------------------------------------------ shell scripts


def test_the_examples_are_there():
    names = {str(p.relative_to(EXAMPLES)) for p in EXAMPLES.rglob("*") if p.is_file()}
    assert {
        "README.md",
        "radar_walkthrough.sh",
        "geotiff_walkthrough.sh",
        "python_api.py",
        "torchrun.md",
        "cron/README.md",
        "cron/crontab",
        "cron/forecast-latest.sh",
        "cron/stforecast-forecast.service",
        "cron/stforecast-forecast.timer",
        "cron/stforecast-server.service",
    } <= names
    index = (EXAMPLES / "README.md").read_text()
    for name in ("quickstart.sh", "radar_walkthrough.sh", "geotiff_walkthrough.sh",
                 "python_api.py", "cron/", "torchrun.md"):  # fmt: skip
        assert f"]({name}" in index, f"examples/README.md does not link {name}"


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: str(p.relative_to(EXAMPLES)))
def test_shell_scripts_parse(script):
    out = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert script.read_text().startswith("#!/usr/bin/env bash\n")


def test_the_cron_wrapper_is_executable():
    assert os.access(WRAPPER, os.X_OK), "chmod +x examples/cron/forecast-latest.sh"


# ------------------------------------------------------------------------------ crontab

_CRON_RANGES = [(0, 59), (0, 23), (1, 31), (1, 12), (0, 7)]
_NAMES = {3: "jan feb mar apr may jun jul aug sep oct nov dec", 4: "sun mon tue wed thu fri sat"}


def _cron_field_ok(field: str, k: int) -> bool:
    lo, hi = _CRON_RANGES[k]
    names = _NAMES.get(k, "").split()
    for part in field.split(","):
        base, _, step = part.partition("/")
        if step and not (step.isdigit() and int(step) > 0):
            return False
        if base == "*":
            continue
        for value in base.split("-", 1):
            if value.lower() in names:
                continue
            if not value.isdigit() or not lo <= int(value) <= hi:
                return False
    return True


def crontab_entries(text: str) -> tuple[dict[str, str], list[tuple[list[str], str]]]:
    """Environment lines and `(5 time fields, command)` of each job of a crontab."""
    env, jobs = {}, []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = re.match(r"^([A-Za-z_]\w*)\s*=\s*(.*)$", line)
        if match:
            env[match.group(1)] = match.group(2)
            continue
        words = line.split(None, 5)
        assert len(words) == 6, f"a job needs 5 time fields and a command: {line!r}"
        jobs.append((words[:5], words[5]))
    return env, jobs


def test_crontab_line():
    env, jobs = crontab_entries((CRON / "crontab").read_text())
    assert len(jobs) == 1
    fields, command = jobs[0]
    for k, field in enumerate(fields):
        assert _cron_field_ok(field, k), f"time field {k + 1} {field!r}"
    assert fields[0] == "*/10" and fields[1:] == ["*"] * 4  # every 10 minutes
    assert "%" not in command, "cron turns % into a newline: escape it as \\%"
    assert env.get("STFORECAST_MODEL") and env.get("SHELL") == "/bin/bash"
    out = subprocess.run(["bash", "-n", "-c", command], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    words = shlex.split(command)
    wrapper = next(w for w in words if w.endswith("forecast-latest.sh"))
    assert (ROOT / wrapper.removeprefix(INSTALLED)).resolve() == WRAPPER.resolve()
    assert "--log-json" in words and ">>" in command and "2>&1" in command
    assert "flock" not in words  # stforecast takes its own lock


# ------------------------------------------------------------------------------ systemd units


def unit_file(path: Path) -> dict[str, list[tuple[str, str]]]:
    """Sections of a systemd unit file -> `(key, value)` in order (keys may repeat)."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current = None
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        assert not line.endswith("\\"), f"{path.name}:{number}: keep directives on one line"
        header = re.fullmatch(r"\[([A-Za-z]+)\]", line)
        if header:
            current = header.group(1)
            sections.setdefault(current, [])
            continue
        assert current, f"{path.name}:{number}: a directive before any [Section]"
        key, sep, value = line.partition("=")
        assert sep and re.fullmatch(r"[A-Z][A-Za-z]+", key.strip()), f"{path.name}:{number}"
        sections[current].append((key.strip(), value.strip()))
    return sections


KNOWN = {
    "Unit": {"Description", "Documentation", "After", "Wants", "Requires", "Before"},
    "Service": {
        "Type", "User", "Group", "Environment", "ExecStart", "TimeoutStartSec", "StandardOutput",
        "StandardError", "Nice", "WorkingDirectory", "EnvironmentFile", "RuntimeDirectory",
        "RuntimeDirectoryMode", "Restart", "RestartSec", "TimeoutStopSec",
    },
    "Timer": {"OnCalendar", "AccuracySec", "Persistent", "Unit", "RandomizedDelaySec"},
    "Install": {"WantedBy"},
}  # fmt: skip


def test_systemd_units_are_well_formed():
    service = unit_file(CRON / "stforecast-forecast.service")
    timer = unit_file(CRON / "stforecast-forecast.timer")
    assert set(service) == {"Unit", "Service"} and set(timer) == {"Unit", "Timer", "Install"}
    for unit in (service, timer):
        for section, items in unit.items():
            unknown = {k for k, _ in items} - KNOWN[section]
            assert not unknown, f"[{section}] {unknown}"
    svc = dict(service["Service"])
    assert svc["Type"] == "oneshot"
    envs = [v for k, v in service["Service"] if k == "Environment"]
    assert any(v.startswith("STFORECAST_MODEL=") for v in envs)
    exec_start = shlex.split(svc["ExecStart"])
    assert (ROOT / exec_start[0].removeprefix(INSTALLED)).resolve() == WRAPPER.resolve()
    assert "--log-json" in exec_start
    for key in ("StandardOutput", "StandardError"):
        assert svc[key].startswith(("append:/", "journal", "file:/")), svc[key]
    server = unit_file(CRON / "stforecast-server.service")
    for section, items in server.items():
        unknown = {k for k, _ in items} - KNOWN[section]
        assert not unknown, f"[{section}] {unknown}"
    srv = dict(server["Service"])
    command = shlex.split(srv["ExecStart"])
    assert command[1:3] == ["serve", "--socket"] and command[3].startswith("/run/stforecast/")
    assert srv["RuntimeDirectory"] == "stforecast" and srv["RuntimeDirectoryMode"] == "0700"
    assert f"STFORECAST_SOCKET={command[3]}" in envs  # the forecast runs use that server
    tmr = dict(timer["Timer"])
    assert tmr["Unit"] == "stforecast-forecast.service"
    assert dict(timer["Install"])["WantedBy"] == "timers.target"
    assert re.fullmatch(r"\*-\*-\* \*:0?\d/10(:00)?", tmr["OnCalendar"]), tmr["OnCalendar"]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_systemd_analyze_verify(tmp_path):
    """`systemd-analyze verify` on copies whose ExecStart points at this checkout (verify checks
    that the command exists); unknown keys or bad values only warn, so warnings fail too."""
    text = (CRON / "stforecast-forecast.service").read_text()
    (tmp_path / "stforecast-forecast.service").write_text(
        text.replace(INSTALLED + "examples/cron/forecast-latest.sh", str(WRAPPER))
    )
    shutil.copy(CRON / "stforecast-forecast.timer", tmp_path)
    text = (CRON / "stforecast-server.service").read_text()
    (tmp_path / "stforecast-server.service").write_text(
        text.replace(INSTALLED + ".venv/bin/stforecast", STFORECAST)
    )
    calendar = dict(unit_file(CRON / "stforecast-forecast.timer")["Timer"])["OnCalendar"]
    out = subprocess.run(["systemd-analyze", "calendar", calendar], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    out = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", "stforecast-forecast.service",
         "stforecast-forecast.timer", "stforecast-server.service"],
        capture_output=True, text=True, cwd=tmp_path,
    )  # fmt: skip
    messages = out.stdout + out.stderr
    if out.returncode != 0 and "stforecast-forecast" not in messages:
        pytest.skip(f"systemd-analyze cannot run here: {messages.strip()[:200]}")
    assert out.returncode == 0, messages
    assert not re.search(r"Unknown|Failed|ignoring|not executable", messages), messages


# ------------------------------------------------------------------------------ the pages


def _fenced_lines(path: Path) -> list[str]:
    """Shell lines of the fenced code blocks of a page, backslash continuations joined."""
    lines, inside, pending = [], False, ""
    for raw in path.read_text().splitlines():
        if raw.strip().startswith("```"):
            inside, pending = not inside, ""
            continue
        if not inside:
            continue
        line = raw.strip()
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        lines.append(pending + line)
        pending = ""
    return lines


def _stforecast_calls(line: str) -> list[list[str]]:
    try:
        words = shlex.split(line, comments=True)
    except ValueError:
        return []
    calls, current = [], []
    for word in [*words, "&&"]:
        if word in ("&&", "||", ";", "|"):
            if current:
                calls.append(current)
            current = []
        else:
            current.append(word)
    out = []
    for words in calls:
        first = next((k for k, w in enumerate(words) if not re.match(r"[A-Za-z_]\w*=", w)), 0)
        for k, word in enumerate(words):
            called = k == first or words[k - 1] in ("-m", "--no-python")  # not `useradd stforecast`
            if called and (word == "stforecast" or word.endswith("/stforecast")):
                out.append(words[k + 1 :])
                break
    return out


def _command_tree():
    import typer

    from stforecast.cli.app import app
    from stforecast.cli.plot import plot

    root = typer.main.get_command(app)
    if "plot" not in root.commands:  # registered in app.py separately
        single = typer.Typer()
        single.command()(plot)
        single.command("x")(lambda: None)
        root.commands["plot"] = typer.main.get_command(single).commands["plot"]
    return root


def test_command_lines_in_the_pages_parse():
    """Every `stforecast ...` line in a code block of examples/*.md is a real command with real
    options and its required arguments (parsed by the real command line; nothing runs)."""
    root = _command_tree()
    checked = 0
    for page in PAGES:
        for line in _fenced_lines(page):
            if line.startswith("#"):
                continue
            for args in _stforecast_calls(line):
                args = [a for a in args if not a.startswith((">", "2>"))]
                command, name = root, "stforecast"
                while hasattr(command, "commands") and args and not args[0].startswith("-"):
                    assert args[0] in command.commands, f"{page.name}: {args[0]!r} in {line!r}"
                    command, name, args = command.commands[args[0]], f"{name} {args[0]}", args[1:]
                try:
                    command.make_context(name, list(args), resilient_parsing=False)
                except Exception as err:
                    message = getattr(err, "format_message", lambda e=err: str(e))()
                    pytest.fail(f"{page.relative_to(EXAMPLES)}: {line!r}: {message}")
                checked += 1
    assert checked >= 4  # torchrun.md: prepare, dry run, one machine, several


def _recipe_fields(model: type[BaseModel], prefix: str = "") -> set[str]:
    out = set()
    for name, field in model.model_fields.items():
        kind = field.annotation
        if isinstance(kind, type) and issubclass(kind, BaseModel):
            out |= _recipe_fields(kind, f"{prefix}{name}.")
        else:
            out.add(prefix + name)
    return out


def test_every_set_names_a_recipe_field():
    from stforecast.config import Recipe

    fields = _recipe_fields(Recipe)
    found = set()
    for path in [*SCRIPTS, *PAGES, CRON / "crontab"]:
        for key in re.findall(r"--set\s+[\"']?([a-z_]+(?:\.[a-z_]+)+)=", path.read_text()):
            assert key in fields, f"{path.relative_to(EXAMPLES)}: --set {key} is not a field"
            found.add(key)
    assert {"data.sources", "train.max_time", "evaluate.max_sequences"} <= found


# ------------------------------------------------------------------------------ the wrapper


@pytest.fixture
def frame_dir(tmp_path):
    """Ten empty 'frames' named by time, written in an order other than their names'."""
    folder = tmp_path / "frames"
    folder.mkdir()
    names = [f"radar_20201031_{h:02d}{m:02d}00.nc" for h in (10, 11) for m in range(0, 50, 10)]
    now = time.time()
    for k, name in enumerate(names):
        (folder / name).write_bytes(b"")
        # modification times in another order than the names': the 3rd name is the newest file
        when = now - 1000 + (900 if k == 2 else k)
        os.utime(folder / name, (when, when))
    (folder / "notes.txt").write_text("not a frame")
    return folder, names


def _chosen(result) -> list[str]:
    assert result.returncode == 0, result.stderr
    return [Path(p).name for p in result.stdout.splitlines() if not p.startswith("would run:")]


def test_wrapper_picks_the_newest_files(frame_dir):
    folder, names = frame_dir
    wrapper = [str(WRAPPER), "--dry-run"]
    assert _chosen(run_script([*wrapper, "-n", "3", str(folder)])) == names[-3:]
    assert _chosen(run_script([*wrapper, "-n", "2", "--by", "mtime", str(folder)])) == [
        names[-1], names[2]
    ]  # fmt: skip
    until = run_script([*wrapper, "-n", "2", "--until", names[4], str(folder)])
    assert _chosen(until) == names[3:5]
    assert _chosen(run_script([*wrapper, "-n", "50", str(folder)])) == names
    assert _chosen(run_script([*wrapper, "--glob", "*.txt", str(folder)])) == ["notes.txt"]
    # files written in the last 60 s are skipped
    os.utime(folder / names[-1])
    assert _chosen(run_script([*wrapper, "-n", "1", "--min-age", "60", str(folder)])) == [names[-2]]
    res = run_script([*wrapper, "-n", "2", str(folder), "--", "--hours", "1", "--out", "o/"])
    assert res.stdout.splitlines()[-1].endswith(" forecast " + " ".join(
        shlex.quote(str(folder / n)) for n in names[-2:]) + " --hours 1 --out o/")  # fmt: skip


@pytest.mark.parametrize(
    "args, code, message",
    [
        (["/no/such/dir"], 3, "no such directory"),
        (["--glob", "*.grib", "{dir}"], 3, "no files matching"),
        (["-n", "0", "{dir}"], 2, "--count"),
        (["--by", "size", "{dir}"], 2, "--by"),
        (["--bogus", "{dir}"], 2, "unknown option"),
        ([], 2, "no directory"),
    ],
)
def test_wrapper_errors(args, code, message, frame_dir):
    folder, _ = frame_dir
    res = run_script([str(WRAPPER), *(a.replace("{dir}", str(folder)) for a in args)])
    assert res.returncode == code
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]


# ------------------------------------------------------------------------------ slow: they run


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny trained run and its archive split into one NetCDF per frame."""
    root = tmp_path_factory.mktemp("examples")
    run = make_run(root)
    frames = root / "frames"
    frames.mkdir()
    with xr.open_dataset(run["archive"]) as ds:
        ds = ds.load()
    for k in range(ds.sizes["time"]):
        stamp = np.datetime_as_string(ds["time"].values[k], unit="m").replace(":", "")
        ds.isel(time=[k]).to_netcdf(frames / f"rain_{stamp}.nc")
    return {**run, "frames": frames}


@pytest.mark.slow
def test_cron_wrapper_forecasts_and_passes_exit_codes_through(tiny, tmp_path):
    out = tmp_path / "nowcasts"
    out.mkdir()
    env = {"STFORECAST_MODEL": str(tiny["run"])}
    res = run_script([str(WRAPPER), "--count", "6", str(tiny["frames"]), "--",
                      "--hours", "1", "--out", f"{out}/", "--log-json"], env=env)  # fmt: skip
    assert res.returncode == 0, res.stderr
    events = [json.loads(line) for line in res.stdout.splitlines()]
    last = events[-1]
    assert last["stage"] == "written" and Path(last["output_file"]).is_file()
    assert [Path(p).name for p in last["input_files"]] == [
        f"rain_2024-01-01T11{m}0.nc" for m in (2, 3, 4, 5)
    ]  # the model's 4 input frames out of the 6 newest
    assert sorted(p.name for p in out.iterdir()) == ["rainrate_convlstm_20240101T1150Z_PT1H.nc"]
    # a forecast failure's code comes through: too few frames for the model (3), nothing written
    res = run_script([str(WRAPPER), "--count", "2", str(tiny["frames"]), "--",
                      "--hours", "1", "--out", f"{tmp_path}/", "--log-json"], env=env)  # fmt: skip
    assert res.returncode == 3, res.stderr
    assert json.loads(res.stdout.splitlines()[-1])["exit_code"] == 3
    # and the wrapper's own: no such directory (3)
    res = run_script([str(WRAPPER), str(tmp_path / "gone"), "--", "--out", f"{out}/"], env=env)
    assert res.returncode == 3 and res.stderr.startswith("error: ")
    assert sorted(p.name for p in out.iterdir()) == ["rainrate_convlstm_20240101T1150Z_PT1H.nc"]


@pytest.mark.slow
def test_python_api_example(tiny, tmp_path):
    out = tmp_path / "forecast.png"
    res = run_script([sys.executable, str(EXAMPLES / "python_api.py"), str(tiny["frames"]),
                      str(tiny["run"]), str(out), "--hours", "1"])  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().splitlines()[-1] == str(out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_geotiff_walkthrough(tmp_path):
    import rasterio

    work = tmp_path / "work"
    env = {"FAST": "1", "MAX_TIME": "20", "WORK": str(work), "PYTHON": sys.executable,
           "STFORECAST_CACHE": str(tmp_path / "cache")}  # fmt: skip
    res = run_script(["bash", str(EXAMPLES / "geotiff_walkthrough.sh")], env=env)
    assert res.returncode == 0, res.stdout + res.stderr
    assert len(list((work / "frames").glob("rain_*.tif"))) == 144
    (forecast,) = (work / "forecasts").glob("*.tif")
    assert forecast.name == "precipitation_rate_cms_lstm_20240101T2350Z_PT1H.tif"
    with rasterio.open(forecast) as src:
        assert src.count == 6 and src.descriptions[0] == "+PT10M"
        assert src.tags(6)["valid_time"] == "2024-01-02T00:50:00Z"
    assert "band 1:  +PT10M  valid 2024-01-02T00:00:00Z" in res.stdout
    assert f"forecast: {forecast}" in res.stdout


@pytest.mark.slow
def test_radar_walkthrough_fast(tmp_path):
    data = shared("radar-bom-66-20201031")
    run, work = tmp_path / "run", tmp_path / "work"
    env = {"FAST": "1", "MAX_TIME": "45", "DATA": str(data), "RUN": str(run),
           "WORK": str(work), "STFORECAST_CACHE": str(tmp_path / "cache")}  # fmt: skip
    res = run_script(["bash", str(EXAMPLES / "radar_walkthrough.sh")], env=env)
    assert res.returncode == 0, res.stdout + res.stderr
    assert (run / "model.safetensors").is_file()
    forecast = work / "forecasts" / "precipitation_cms_lstm_20201031T2350Z_PT1H.nc"
    assert f"forecast:   {forecast}" in res.stdout
    with xr.open_dataset(forecast) as ds:
        assert ds.sizes["time"] == 6 and ds["precipitation"].attrs["units"] == "mm h-1"
        assert ds.sizes["y"] == ds.sizes["x"] == 128
    metrics = json.loads((work / "evaluation" / "metrics.json").read_text())
    assert set(metrics["methods"]) == {"model", "persistence", "extrapolation"}
    assert metrics["cases"] == 4
    assert (work / "evaluation" / "report.html").is_file()
    if "plot not available" not in res.stdout:  # `stforecast plot` is registered in the app
        assert (work / "forecast.gif").read_bytes()[:6] == b"GIF89a"
