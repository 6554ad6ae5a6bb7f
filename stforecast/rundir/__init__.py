"""The run directory: its layout, the model card, and loading a run.

Training writes runs through this package; forecasting, export, serving and evaluation read them
through it and never import the trainer.

    run = stforecast.rundir.load_run("runs/radar", device="cpu")   # net + card + [forecast]
    model, card = stforecast.rundir.load_model("runs/radar")

The names load on first use, so that `rundir.layout` (file names only) needs no torch.
"""

from typing import Any

__all__ = ["Run", "load_model", "load_run", "read_card"]


def __getattr__(name: str) -> Any:
    if name in ("Run", "load_model", "load_run"):
        from stforecast.rundir import load

        return getattr(load, name)
    if name == "read_card":
        from stforecast.rundir.card import read_card

        return read_card
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
