"""Models shipped with the package, by short name: `stforecast/pretrained/NAME/` holds the
weights (safetensors) and the model card of a run, as `stforecast train` wrote them, so that
everything that takes a run directory takes the name too (`--model radar`,
`stforecast.load_model("radar")`). `tools/ship_model.py` trains one from its recipe and
writes it here; docs/pretrained.md says what each was trained on and how well it scores.

`radar`, the default model of `stforecast forecast` when none is named, forecasts precipitation
(a rate, a depth per step or dBZ, by any variable name) on any grid it can bring to its spacing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DEFAULT = "radar"  # what `forecast` uses without --model and $STFORECAST_MODEL


def names() -> list[str]:
    """The shipped models, by short name."""
    return sorted(p.parent.name for p in HERE.glob("*/model.json"))


def resolve(model: str | Path | None) -> Path:
    """`model` as a path: None is the default model (`default`); an existing file or directory
    wins; else a shipped model's name (its directory here); else the path as given (whose
    absence the caller reports)."""
    if model is None:
        return default()
    path = Path(model)
    if path.exists() or path.name != str(model):
        return path
    shipped = HERE / str(model)
    return shipped if (shipped / "model.json").is_file() else path


def default() -> Path:
    """The default model's directory (a `ConfigError` when this installation lacks it)."""
    from stforecast.errors import ConfigError

    path = HERE / DEFAULT
    if not (path / "model.json").is_file():
        raise ConfigError("no model: pass --model RUN_DIR or set STFORECAST_MODEL")
    return path


def summary(name: str) -> dict[str, Any]:
    """What `stforecast models` shows of a shipped model: from its card."""
    card = json.loads((HERE / name / "model.json").read_text())
    arch, contract = card["architecture"], card["input"]
    return {
        "name": name,
        "architecture": arch["name"],
        "parameters": arch.get("parameters"),
        "guidance": (arch.get("options") or {}).get("guidance"),
        "accepts": contract.get("accepts") or [],
        "variable": contract.get("variable"),
        "units": contract.get("units"),
        "spacing_m": (contract.get("processing") or {}).get("spacing"),
        "time_step_seconds": contract.get("time_step_seconds"),
        "frames": [contract.get("input_frames"), contract.get("output_frames")],
        "trained_on": [a.get("name") for a in contract.get("archives") or []],
        "blended": card.get("blending") is not None,
    }
