"""Loading a run directory: the model card, the weights (safetensors, checked against the
card's sha256) and the run's own recipe, as one `Run` that forecasting, export, serving and
evaluation use without importing the trainer.

Loading never unpickles: the architecture comes from JSON and the weights from safetensors.
`load_run` also takes an exported `.onnx` file (`rundir.onnx_model`): the same `Run`, its card
from the file, its model an onnxruntime session. Importing this module imports no torch: the
network and the card writer load on first use, so the ONNX forecast path never pays for them.
"""

from __future__ import annotations

import functools
import hashlib
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stforecast.config import ForecastConfig, load_recipe
from stforecast.data.contract import DataContract
from stforecast.errors import ConfigError, InputError, ModelMismatchError, environment_error
from stforecast.io.sources import sha256
from stforecast.rundir.layout import BEST, CHECKPOINTS, RECIPE, WEIGHTS

if TYPE_CHECKING:
    from stforecast import models

__all__ = [
    "Run",
    "as_run",
    "build_from_card",
    "check_contract",
    "load_model",
    "load_run",
    "loaded_weights",
    "run_recipe",
]


def build_from_card(card: dict[str, Any], device: Any = "cpu") -> models.SequenceModel:
    """An untrained model with the card's architecture, refused (exit 2, with the estimate)
    before anything is allocated when it cannot fit in memory."""
    from stforecast import models
    from stforecast.models.memory import TooLargeError, check_fits, inference_bytes, meta_build

    config = {**card["architecture"], "frame_size": tuple(card["architecture"]["frame_size"])}
    frames = (card.get("input") or {}).get("input_frames")
    try:
        meta = meta_build(config)
        if isinstance(frames, int) and frames > 0:
            need = inference_bytes(meta, batch=1, t_in=frames)
            check_fits(need, "this model's forecast", device)
        return models.build_from_config(config)
    except TooLargeError as err:
        raise ConfigError(f"model card: {err}") from None
    except (KeyError, TypeError, ValueError) as err:
        raise ModelMismatchError(
            f"model card architecture cannot be built: {_first_line(err)}"
        ) from None


def load_model(
    run_dir: str | Path, *, weights: str = "selected", device: Any = "cpu"
) -> tuple[models.SequenceModel, dict[str, Any]]:
    """A trained model in eval mode and its card: `model, card = load_model("runs/radar")`.

    `weights`: `selected` (the run's weights: the best validation's when the run had a
    validation split, see the card's `weights.selected`), `best` or `final`. The file is checked
    against the card's sha256, and `card["weights"]["loaded"]` says which weights were loaded.
    """
    from stforecast import pretrained
    from stforecast.rundir.card import parameter_count, read_card

    run_dir = pretrained.resolve(run_dir)  # a shipped model's name: its directory
    card = read_card(run_dir)
    name, rel, expected = _weights_file(card, weights, run_dir)
    path = run_dir / rel
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise InputError(f"{path}: weights missing from the run directory") from None
    sha = hashlib.sha256(data).hexdigest()
    if expected and sha != expected:
        raise InputError(f"{path}: sha256 differs from the model card; the weights were altered")
    card["weights"]["loaded"] = {"name": name, "file": rel, "sha256": sha}
    net = build_from_card(card, device)
    _check_architecture(card, data, path)
    try:
        from safetensors.torch import load as load_safetensors

        state = load_safetensors(data)
    except Exception as err:
        raise InputError(f"{path}: not readable safetensors weights ({_first_line(err)})") from None
    _load_state(net, state, path)
    expected_count = card["architecture"].get("parameters")
    if expected_count is not None and parameter_count(net) != expected_count:
        raise ModelMismatchError(f"{path}: parameter count differs from the model card")
    return net.to(device).eval(), card


def loaded_weights(card: dict[str, Any]) -> dict[str, Any]:
    """Which weights a loaded card's model has: `{"name", "label", "sha256"}`; the label says it
    in words (`best validation (step 500)`, `final (step 3000)`) for metrics and provenance."""
    entry = card.get("weights") or {}
    loaded = entry.get("loaded") or {"name": "final", "sha256": entry.get("sha256")}
    metrics = card.get("metrics") or {}
    if loaded["name"] == "best":
        step = (metrics.get("best") or {}).get("step")
        label = f"best validation (step {step})"
    else:
        step = (card.get("training") or {}).get("steps")
        label = "final" if step is None else f"final (step {step})"
    return {"name": loaded["name"], "label": label, "sha256": loaded.get("sha256")}


def _weights_file(card: dict[str, Any], weights: str, where: Path) -> tuple[str, str, str | None]:
    """(which weights, file relative to the run, expected sha256) for a `weights` choice."""
    from stforecast.rundir.card import WEIGHT_CHOICES

    if weights not in WEIGHT_CHOICES:
        raise ConfigError(f"weights must be one of {', '.join(WEIGHT_CHOICES)}, got {weights!r}")
    entry = card["weights"]
    name = entry.get("selected", "final") if weights == "selected" else weights
    if name == "best":
        if not entry.get("best"):
            raise InputError(f"{where}: has no best weights (the run had no validation split)")
        return "best", f"{CHECKPOINTS}/{BEST}", entry.get("best_sha256")
    return "final", str(entry.get("file") or WEIGHTS), entry.get("sha256")


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _check_architecture(card: dict[str, Any], data: bytes, path: Path) -> None:
    """The card must describe the network the weights were trained as (recorded in the
    weights since this check exists; older weights are checked by their tensors alone)."""
    from stforecast.rundir.card import weights_architecture

    recorded = weights_architecture(data)
    if recorded is None:
        return
    claimed = {k: v for k, v in card["architecture"].items() if k != "parameters"}
    if claimed != recorded:
        differ = sorted(
            k for k in set(claimed) | set(recorded) if claimed.get(k) != recorded.get(k)
        )
        raise ModelMismatchError(
            f"{path}: the model card describes another network than the weights "
            f"(differs in {', '.join(differ)}: card {claimed.get(differ[0])!r}, weights "
            f"{recorded.get(differ[0])!r})"
        )


def _load_state(net: Any, state: dict[str, Any], path: Path) -> None:
    """Load weights into the card's network; a mismatch is one line saying what differs."""
    mine = net.state_dict()
    missing = sorted(set(mine) - set(state))
    unexpected = sorted(set(state) - set(mine))
    reshaped = sorted(k for k in set(mine) & set(state) if mine[k].shape != state[k].shape)
    if missing or unexpected or reshaped:
        parts = [
            f"{len(keys)} {what} (e.g. {keys[0]!r})"
            for keys, what in (
                (missing, "missing"),
                (unexpected, "unexpected"),
                (reshaped, "of another shape"),
            )
            if keys
        ]
        raise ModelMismatchError(
            f"{path}: the weights do not fit the card's architecture: tensors " + ", ".join(parts)
        )
    net.load_state_dict(state, strict=True)


@dataclass
class Run:
    """A trained run ready for inference: the network (eval mode, on `device`), its card, the
    `[forecast]` section of its recipe and the digests that go into provenance."""

    net: Any
    card: dict[str, Any]
    path: Path | None
    device: Any
    options: ForecastConfig = field(default_factory=ForecastConfig)
    recipe_sha256: str | None = None

    @functools.cached_property
    def contract(self) -> DataContract:
        """The card's data contract, read once."""
        return DataContract.from_card(self.card.get("input"), str(self.path or "model card"))

    @property
    def step(self) -> int:
        return int(self.contract.time_step_seconds or 0)

    @property
    def input_frames(self) -> int:
        return self.contract.input_frames


def load_run(run_dir: str | Path | None, *, device: str = "auto", weights: str = "selected") -> Run:
    """Load a run directory (or an exported `.onnx` file, or a shipped model by name; None:
    the shipped default) for forecasting; refuses runs without a data contract."""
    from stforecast import pretrained

    run_dir = pretrained.resolve(run_dir)  # a shipped model's name (None: the default)
    try:
        mode = os.stat(run_dir).st_mode
    except FileNotFoundError:
        mode = 0
    except OSError as err:  # a symbolic link loop, a name too long, ...
        raise environment_error(err, run_dir, "open the run directory") from None
    if stat.S_ISREG(mode) and run_dir.suffix.lower() == ".onnx":
        if weights != "selected":
            raise ConfigError(f"{run_dir}: an ONNX file holds one set of weights, its own")
        from stforecast.rundir.onnx_model import load_onnx

        return load_onnx(run_dir, device=device)
    if not stat.S_ISDIR(mode):
        if run_dir.suffix.lower() == ".onnx":
            raise InputError(f"{run_dir}: no such ONNX file (`stforecast export` writes one)")
        raise InputError(f"{run_dir}: no such run directory (the output of `stforecast train`)")
    from stforecast.devices import resolve_device

    torch_device = resolve_device(device)
    net, card = load_model(run_dir, weights=weights, device=torch_device)
    check_contract(card, run_dir)
    own = run_recipe(run_dir)
    if own is None:
        return Run(net, card, run_dir, torch_device)
    return Run(net, card, run_dir, torch_device, own.forecast, sha256(run_recipe_path(run_dir)))


def run_recipe_path(run_dir: Path) -> Path:
    return Path(run_dir) / RECIPE


def run_recipe(run_dir: Path) -> Any:
    """The resolved recipe a run was trained with (its `[forecast]` and `[evaluate]` defaults),
    or None for a run directory without one."""
    path = run_recipe_path(run_dir)
    return load_recipe(path) if path.is_file() else None


def check_contract(card: dict[str, Any], where: Any) -> DataContract:
    """The card's data contract, which must describe gridded data with a time step."""
    entry = card.get("input")
    if isinstance(entry, dict) and (
        entry.get("time_step_seconds") is None or "processing" not in entry
    ):
        raise ModelMismatchError(
            f"{where}: this model was trained on data without a grid (Moving MNIST); "
            "it cannot forecast geographic frames"
        )
    return DataContract.from_card(entry, str(where))


def as_run(model: Any, device: str = "auto") -> Run:
    """A `Run` from a run directory, a shipped model's name (None: the default), a `Run`, or
    the `(model, card)` that `load_model` returns."""
    if isinstance(model, Run):
        return model
    if model is None or isinstance(model, (str, Path)):
        return load_run(model, device=device)
    if isinstance(model, tuple) and len(model) == 2:  # what `stforecast.load_model` returns
        net, card = model
        check_contract(card, "model")
        return Run(net.eval(), card, None, next(net.parameters()).device)
    raise TypeError("model must be a run directory, a Run, or the (model, card) of load_model")
