"""The model card (`model.json`) and loading a trained model from a run directory.

The card is what `forecast`, `evaluate` and `export` need to use a model safely: how to rebuild
it (`architecture`, which is `model.config` plus the parameter count), what input it expects
(`input`: the data contract with variable, units, transform, grid, time step, and the input and
output lengths), where the weights are and their sha256, how it was trained and how well it did.
Metrics in the card are on the validation split, in the model's (transformed) units.

Loading never unpickles: the architecture comes from JSON and the weights from safetensors.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import platform
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from stforecast import __version__, models
from stforecast.errors import InputError
from stforecast.training.checkpoint import BEST, atomic_write_bytes
from stforecast.training.rundir import CARD, CHECKPOINTS, WEIGHTS, write_json

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
    contract = dict(getattr(data, "contract", {}) or {})
    frame = [int(s) for s in data.frame_size]
    return {
        "format": FORMAT,
        "version": VERSION,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "architecture": {**net.config, "parameters": parameter_count(net)},
        "input": {
            **contract,
            "channels": int(data.in_channels),
            "frame_size": frame,
            "input_frames": int(data.input_frames),
            "output_frames": int(data.output_frames),
        },
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


def build_from_card(card: dict[str, Any]) -> models.SequenceModel:
    """An untrained model with the card's architecture."""
    arch = dict(card["architecture"])
    arch.pop("parameters", None)
    try:
        return models.build(
            arch.pop("name"),
            in_channels=arch.pop("in_channels"),
            frame_size=tuple(arch.pop("frame_size")),
            patch_size=arch.pop("patch_size"),
            hidden_channels=arch.pop("hidden_channels"),
            kernel_size=arch.pop("kernel_size"),
            **arch.pop("options", {}),
        )
    except (KeyError, TypeError, ValueError) as err:
        raise InputError(f"model card architecture cannot be built: {err}") from None


def load_model(
    run_dir: str | Path, *, best: bool = False, device: str | torch.device = "cpu"
) -> tuple[models.SequenceModel, dict[str, Any]]:
    """A trained model in eval mode and its card: `model, card = load_model("runs/radar")`.

    `best=True` loads the weights of the best validation (`checkpoints/best.safetensors`)
    instead of the final ones. The final weights are checked against the card's sha256.
    """
    run_dir = Path(run_dir)
    card = read_card(run_dir)
    path = run_dir / (f"{CHECKPOINTS}/{BEST}" if best else WEIGHTS)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise InputError(f"{path}: weights missing from the run directory") from None
    expected = None if best else card["weights"].get("sha256")
    if expected and hashlib.sha256(data).hexdigest() != expected:
        raise InputError(f"{path}: sha256 differs from the model card; the weights were altered")
    net = build_from_card(card)
    try:
        state = load_safetensors(data)
        net.load_state_dict(state, strict=True)
    except Exception as err:
        raise InputError(f"{path}: weights do not fit the card's architecture: {err}") from None
    expected_count = card["architecture"].get("parameters")
    if expected_count is not None and parameter_count(net) != expected_count:
        raise InputError(f"{path}: parameter count differs from the model card")
    return net.to(device).eval(), card
