"""An exported ONNX file as a run: `load_run("radar.onnx")` is the `Run` of the run directory it
was exported from, without PyTorch.

The card, the run's `[forecast]` section and its recipe digest come from the file's metadata
(`rundir.onnx_graph`); the network is `OnnxNet`, an onnxruntime session with what forecasting
asks of a network (`forecasting.tiling`): frame size, patch, whether it is size-free or guided,
and `stream`, numpy in and out. The forecast is then the run directory's, value for value
(within the export's 1e-4), with the ONNX file in its provenance.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from stforecast.config import ForecastConfig
from stforecast.errors import ConfigError, InputError, ModelMismatchError
from stforecast.rundir.onnx_graph import (
    CARD_KEY,
    FORECAST_KEY,
    GUIDE_NAME,
    INPUT_NAME,
    OUTPUT_NAME,
    RECIPE_KEY,
    STEPS_NAME,
)

__all__ = ["DEVICES", "OnnxNet", "load_onnx"]

INSTALL = "pip install onnxruntime (or pip install 'stforecast[export]')"
#: `--device` -> onnxruntime's execution provider.
DEVICES = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}


class OnnxNet:
    """A network for `forecasting.tiling.predict` over an onnxruntime session of an exported
    rollout: `stream(frames, steps, guide)` with numpy `(B, T, C, H, W)` in, `(B, C, H, W)` leads
    out. A file of an earlier export (no `steps` input) forecasts at most `max_steps` leads."""

    numpy_io = True  # what `tiling.predict` feeds: numpy arrays, not tensors

    def __init__(self, session: Any, card: dict[str, Any], meta: dict[str, str]) -> None:
        arch = card["architecture"]
        shape = {i.name: i.shape for i in session.get_inputs()}[INPUT_NAME]
        self.session = session
        self.config = arch
        self.in_channels = int(arch["in_channels"])
        self.patch_size = int(arch["patch_size"])
        self.guided = GUIDE_NAME in {i.name for i in session.get_inputs()}
        self.size_free = not all(isinstance(d, int) for d in shape[3:])
        frame = arch["frame_size"] if self.size_free else shape[3:]
        self.frame_size = (int(frame[0]), int(frame[1]))
        overridable = {i.name for i in session.get_overridable_initializers()}
        self.output_frames = int(meta.get("output_frames") or 0)
        self.max_steps = None if STEPS_NAME in overridable else self.output_frames

    def stream(
        self, frames: np.ndarray, steps: int, guide: np.ndarray | None = None
    ) -> Iterator[np.ndarray]:
        """The forecast's leads, one at a time (the whole rollout runs at the first)."""
        if self.max_steps is not None and steps > self.max_steps:
            raise ConfigError(
                f"this ONNX file forecasts at most {self.max_steps} leads, not {steps}: "
                "export it again with this version of stforecast (any number of leads)"
            )
        feed = {INPUT_NAME: np.ascontiguousarray(frames, dtype=np.float32)}
        if self.max_steps is None:
            feed[STEPS_NAME] = np.array(steps, dtype=np.int64)
        if self.guided:
            feed[GUIDE_NAME] = _guide_for(guide, frames.shape[1] - 1 + (self.max_steps or steps))
        out = self.session.run([OUTPUT_NAME], feed)[0]
        for k in range(steps):
            yield out[:, k]


def _guide_for(guide: np.ndarray | None, length: int) -> np.ndarray:
    """The guide, padded to the rollout's `length` by repeating its last frame: leads past the
    ones asked for are dropped, and the rollout is causal, so the padding changes none kept."""
    if guide is None:
        raise ValueError("a guided model needs its guide")
    guide = np.ascontiguousarray(guide, dtype=np.float32)
    extra = length - guide.shape[1]
    if extra <= 0:
        return guide
    return np.concatenate([guide, np.repeat(guide[:, -1:], extra, axis=1)], axis=1)


def load_onnx(path: str | Path, *, device: str = "auto") -> Any:
    """The `Run` of an exported ONNX file: its card must be inside (else exit 4) and describe
    gridded data with a time step, as a run directory's."""
    from stforecast.rundir.load import Run, check_contract

    path = Path(path)
    session, provider = _session(path, device)
    meta = dict(session.get_modelmeta().custom_metadata_map)
    card = _card(meta, path)
    check_contract(card, path)
    try:
        options = ForecastConfig.model_validate_json(meta.get(FORECAST_KEY) or "{}")
    except ValueError as err:
        raise ModelMismatchError(f"{path}: its [forecast] section is not valid: {err}") from None
    try:
        net = OnnxNet(session, card, meta)
    except (KeyError, TypeError, ValueError, IndexError) as err:
        raise ModelMismatchError(f"{path}: the model card does not fit the graph ({err})") from None
    device_name = "cuda" if provider == DEVICES["cuda"] else "cpu"
    return Run(net, card, path, device_name, options, meta.get(RECIPE_KEY))


def _card(meta: dict[str, str], path: Path) -> dict[str, Any]:
    text = meta.get(CARD_KEY)
    if not text:
        raise ModelMismatchError(
            f"{path}: no stforecast model card inside; forecast with a file written by "
            "`stforecast export --format onnx`"
        )
    try:
        card = json.loads(text)
    except ValueError:
        card = None
    if not isinstance(card, dict) or not isinstance(card.get("architecture"), dict):
        raise ModelMismatchError(f"{path}: the embedded model card is not valid JSON of a card")
    return card


def _session(path: Path, device: str) -> tuple[Any, str]:
    """An onnxruntime session of `path` on `device` (auto: CUDA where onnxruntime has it),
    with the threads `OMP_NUM_THREADS` gives, as PyTorch would use."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise ConfigError(f"forecasting with an ONNX file needs onnxruntime: {INSTALL}") from None
    available = ort.get_available_providers()
    if device == "auto":
        device = "cuda" if DEVICES["cuda"] in available else "cpu"
    if device not in DEVICES:
        raise ConfigError(f"an ONNX model runs on cpu or cuda, not {device!r}")
    if DEVICES[device] not in available:
        raise ConfigError(f"device {device!r} was asked for but onnxruntime here has no CUDA")
    options = ort.SessionOptions()
    options.log_severity_level = 3  # no notice that `steps` is an overridable initializer
    threads = os.environ.get("OMP_NUM_THREADS", "")
    if threads.isdigit() and int(threads) > 0:
        options.intra_op_num_threads = int(threads)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise InputError(f"{path}: cannot read: {err.strerror or err}") from None
    try:
        session = ort.InferenceSession(data, options, providers=[DEVICES[device]])
    except Exception as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise InputError(f"{path}: not a readable ONNX model ({first[:200]})") from None
    return session, DEVICES[device]
