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
from stforecast.errors import InputError
from stforecast.io.atomic import atomic_write_bytes
from stforecast.rundir.layout import CARD, WEIGHTS, write_json

FORMAT = "stforecast-model-card"
VERSION = 1


def weights_bytes(net: torch.nn.Module, metadata: dict[str, str] | None = None) -> bytes:
    """The model's state dict as safetensors bytes (CPU, contiguous copies)."""
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in net.state_dict().items()}
    return save_safetensors(tensors, metadata=metadata)


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
) -> dict[str, Any]:
    """The card's content; `data` is the `TrainingData` the run used."""
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
    return card
