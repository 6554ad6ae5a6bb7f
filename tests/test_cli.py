"""The command line: version, help without torch, the models table, errors, packaging."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from stforecast import __version__
from stforecast.cli.app import app

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


def test_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"stforecast {__version__}"


def test_help_lists_commands_and_does_not_import_torch():
    code = (
        "import sys\n"
        "from stforecast.cli.app import app\n"
        "try:\n"
        "    app(['--help'])\n"
        "except SystemExit as e:\n"
        "    assert e.code == 0, e.code\n"
        "assert 'torch' not in sys.modules, 'torch imported just to print help'\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ}
    )
    assert out.returncode == 0, out.stderr
    assert "models" in out.stdout


def test_models_table_shows_the_reference_count():
    result = runner.invoke(app, ["models", "cms_lstm", "convlstm"])
    assert result.exit_code == 0, result.output
    assert "7,967,580" in result.output and "2,361,424" in result.output
    assert "predrnn" not in result.output


def test_models_options_build_the_ablations():
    result = runner.invoke(app, ["models", "convlstm", "-o", "ce=true", "-o", "se_scales=3"])
    assert result.exit_code == 0, result.output
    # ConvLSTM with CE and 3-scale SE is CMS-LSTM
    assert "7,967,580" in result.output


@pytest.mark.parametrize(
    "args, message",
    [
        (["models", "unet"], "unknown model 'unet'"),
        (["models", "cms_lstm", "-o", "colour=red"], "unknown model option"),
        (["models", "cms_lstm", "-o", "se_scales"], "--option takes key=value"),
        (["models", "cms_lstm", "--frame-size", "30"], "not divisible"),
        (["models", "--frame-size", "abc"], "Invalid value for '--frame-size'"),
        (["bogus"], "No such command 'bogus'"),
        (["prepare"], "Missing argument"),
    ],
)
def test_bad_options_exit_2_with_one_line(args, message):
    out = subprocess.run(
        [sys.executable, "-m", "stforecast", *args], capture_output=True, text=True
    )
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]
    assert "Traceback" not in out.stderr


def test_wheel_installs_no_top_level_cli(tmp_path):
    pytest.importorskip("setuptools")
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    (wheel,) = tmp_path.glob("stforecast-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names}
    assert tops == {"stforecast", f"stforecast-{__version__}.dist-info"}, tops
    assert "stforecast/cli/app.py" in names and "stforecast/models/se.py" in names
    entry = zipfile.ZipFile(wheel).read(f"stforecast-{__version__}.dist-info/entry_points.txt")
    assert b"stforecast = stforecast.cli.app:main" in entry


def test_shell_completion_completes_commands():
    """`--install-completion` installs a script that calls the program back like this."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "_STFORECAST_COMPLETE": "complete_bash",
           "COMP_WORDS": "stforecast fore", "COMP_CWORD": "1"}  # fmt: skip
    code = "import sys; sys.argv[0] = 'stforecast'; from stforecast.cli.app import main; main()"
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert res.stdout.split() == ["forecast"], res.stderr
