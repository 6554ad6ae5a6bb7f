"""The model card (`model.json`): built by training, read by everything that uses a run.

The card is what `forecast`, `evaluate` and `export` need to use a model safely: how to rebuild
it (`architecture`, which is `model.config` plus the parameter count), what input it expects
(`input`: the data contract with variable, units, transform, grid, time step, and the input and
output lengths), where the weights are and their sha256, how it was trained and how well it did.
Metrics in the card are on the validation split, in the model's (transformed) units.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import platform
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save as save_safetensors

from stforecast import __version__
from stforecast.errors import InputError, ModelMismatchError
from stforecast.io.atomic import atomic_write_bytes
from stforecast.rundir.layout import CARD, WEIGHTS, write_json

FORMAT = "stforecast-model-card"
VERSION = 1
ARCHITECTURE_KEY = "stforecast.architecture"
WEIGHT_CHOICES = ("selected", "best", "final")


def selected_by(select: str) -> str:
    """What `train.select` means, for the card."""
    if select == "loss":
        return "lowest validation loss (the recipe's train.loss on the validation split)"
    kind, threshold, *scale = select.split("_")
    if kind == "csi":
        return f"highest validation CSI at {threshold} data units ({select})"
    return f"highest validation FSS at {threshold} data units and {scale[0]} pixels ({select})"


# What every card has, and the kind of each (a missing or malformed one is named, exit 4).
REQUIRED = {"architecture": dict, "input": dict, "weights": dict}
ARCHITECTURE_FIELDS = {
    "name": str,
    "in_channels": int,
    "frame_size": list,
    "patch_size": int,
    "hidden_channels": list,
    "kernel_size": int,
}


def weights_bytes(net: torch.nn.Module, metadata: dict[str, str] | None = None) -> bytes:
    """The model's state dict as safetensors bytes (CPU, contiguous copies). The metadata
    carries the architecture, so that a card edited to claim another one is caught."""
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in net.state_dict().items()}
    meta = {**(metadata or {}), ARCHITECTURE_KEY: json.dumps(net.config, sort_keys=True)}
    return save_safetensors(tensors, metadata=meta)


def weights_architecture(data: bytes) -> dict[str, Any] | None:
    """The architecture recorded in safetensors weights (None for weights written before it
    was recorded). Read from the file's JSON header: 8 bytes of length, then the header."""
    if len(data) < 8:
        return None
    size = int.from_bytes(data[:8], "little")
    try:
        header = json.loads(data[8 : 8 + size])
        return json.loads(header["__metadata__"][ARCHITECTURE_KEY])
    except (ValueError, KeyError, TypeError):
        return None


def write_weights(path: Path, net: torch.nn.Module, metadata: dict[str, str] | None = None) -> str:
    """Atomically write safetensors weights; returns their sha256."""
    data = weights_bytes(net, metadata)
    atomic_write_bytes(path, data)
    return hashlib.sha256(data).hexdigest()


def parameter_count(net: torch.nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def build_card(
    *,
    net: torch.nn.Module,
    data: Any,
    recipe: Any,
    weights_sha256: str,
    best_weights: str | None,
    training: dict[str, Any],
    metrics: dict[str, Any],
    best_sha256: str | None = None,
) -> dict[str, Any]:
    """The card's content; `data` is the `TrainingData` the run used. The run's weights are
    the best validation's when there are any (`weights.selected`), else the final ones."""
    contract = data.contract.replace(
        channels=int(data.in_channels),
        frame_size=tuple(int(s) for s in data.frame_size),
        input_frames=int(data.input_frames),
        output_frames=int(data.output_frames),
    )
    return {
        "format": FORMAT,
        "version": VERSION,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "architecture": {**net.config, "parameters": parameter_count(net)},
        "input": contract.to_card(),
        "weights": {
            "file": WEIGHTS,
            "format": "safetensors",
            "sha256": weights_sha256,
            "best": best_weights,
            "best_sha256": best_sha256 if best_weights else None,
            "selected": "best" if best_weights else "final",
            "selected_by": selected_by(recipe.train.select)
            if best_weights
            else "no validation split: the last step",
        },
        "hyperparameters": recipe.train.model_dump(mode="json"),
        "training": {**training, "data_checksums": list(getattr(data, "checksums", []) or [])},
        "metrics": metrics,
        "software": {
            "stforecast": __version__,
            "torch": torch.__version__,
            "python": platform.python_version(),
        },
    }


def write_card(run_dir: Path, card: dict[str, Any]) -> Path:
    return write_json(run_dir / CARD, card)


def read_card(run_dir: str | Path) -> dict[str, Any]:
    path = Path(run_dir) / CARD
    try:
        card = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(
            f"{path}: no model card; is {Path(run_dir)} a finished training run?"
        ) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InputError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(card, dict) or card.get("format") != FORMAT:
        raise InputError(f"{path}: not an stforecast model card")
    if card.get("version") != VERSION:
        raise InputError(f"{path}: model card version {card.get('version')} is not supported")
    check_card(card, path)
    return card


def check_card(card: dict[str, Any], where: Any) -> None:
    """The fields every use of a card needs, each of the right kind (`ModelMismatchError`,
    exit 4, naming the field); the data contract is checked where it is read."""
    for key, kind in REQUIRED.items():
        if not isinstance(card.get(key), kind):
            raise ModelMismatchError(f"{where}: field '{key}' is missing or not a table")
    arch = card["architecture"]
    for key, kind in ARCHITECTURE_FIELDS.items():
        value = arch.get(key)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise ModelMismatchError(
                f"{where}: field 'architecture.{key}' is missing or invalid ({value!r})"
            )
    if not isinstance(card["weights"].get("file"), str):
        raise ModelMismatchError(f"{where}: field 'weights.file' is missing or invalid")
