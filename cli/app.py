"""The `stforecast` command. Subcommands live in one module each; torch is imported only by the
command that needs it, so `stforecast --help` and `--version` stay instant."""

from __future__ import annotations

from typing import Annotated

import typer

from stforecast import __version__
from stforecast.cli.blend import blend
from stforecast.cli.evaluate import evaluate
from stforecast.cli.export import export
from stforecast.cli.forecast import forecast
from stforecast.cli.models import models
from stforecast.cli.plot import plot
from stforecast.cli.prepare import prepare
from stforecast.cli.serve import serve
from stforecast.cli.synthetic import synthetic
from stforecast.cli.train import train

app = typer.Typer(
    name="stforecast",
    help="Train, run and verify recurrent spatiotemporal forecasts (CMS-LSTM, SA-ConvLSTM, "
    "ConvLSTM, PredRNN) on geoscience frame stacks.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"stforecast {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_show_version, is_eager=True, help="Show the version."),
    ] = False,
) -> None:
    """Spatiotemporal forecasting for geoscience data."""


app.command("prepare")(prepare)
app.command("train")(train)
app.command("forecast")(forecast)
app.command("serve")(serve)
app.command("evaluate")(evaluate)
app.command("blend")(blend)
app.command("export")(export)
app.command("plot")(plot)
app.command("models")(models)
app.add_typer(synthetic, name="synthetic")


def main() -> None:
    """Run the app; command-line usage errors (a bad flag value, a missing argument) are one line
    `error: ...` with exit code 2, like every other error, instead of Click's usage box; an
    unexpected exception (a bug) is one line with exit code 1 unless STFORECAST_DEBUG is set.
    SIGINT and SIGTERM end every command with one line and exit 130 / 143, after its clean-up
    (`stforecast.cli.signals`)."""
    import gc
    import sys

    from stforecast.cli import signals

    try:  # one try around all: the one exception a signal raises may come at any bytecode
        signals.install()
        code = signals.conclude(_run())
    except KeyboardInterrupt:  # a signal outside the command's own handling
        code = signals.conclude(130)
    # Nothing is left to free: spare the interpreter's final collections over every object the
    # libraries created (0.5-0.7 s after importing torch); atexit handlers and flushes still run,
    # then the process ends with `code` (signals' last atexit handler).
    gc.freeze()
    sys.exit(code)


def _run() -> int:
    """The command's exit code; Click's errors and bugs reported as one line (after a signal,
    `signals.conclude` reports the signal instead)."""
    import os
    import sys

    from stforecast.cli.signals import received

    try:
        code = app(standalone_mode=False)
    except SystemExit as err:  # shell completion exits by itself
        return err.code if isinstance(err.code, int) else 0 if err.code is None else 1
    except Exception as err:  # Click's exceptions, whether Typer vendors Click or not
        kind = type(err).__name__
        if received() is not None:
            code = 1  # whatever the signal caused: conclude reports the signal
        elif kind == "NoArgsIsHelpError":
            err.show()  # `stforecast` alone prints the help
            code = err.exit_code
        elif kind == "Abort":
            sys.stderr.write("error: interrupted\n")
            code = 130
        elif hasattr(err, "format_message") and hasattr(err, "exit_code"):
            sys.stderr.write(f"error: {err.format_message()}\n")
            code = err.exit_code
        elif os.environ.get("STFORECAST_DEBUG"):
            raise
        else:  # a bug: one line and exit 1, the traceback with STFORECAST_DEBUG=1
            sys.stderr.write(
                f"error: internal error: {type(err).__name__}: {err} "
                "(a bug; rerun with STFORECAST_DEBUG=1 for the traceback)\n"
            )
            code = 1
    return code if isinstance(code, int) else 0
