"""The command line: a thin Typer face over the engine, installed as `stforecast.cli`."""
