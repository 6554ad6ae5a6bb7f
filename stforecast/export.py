"""Export a trained model to ONNX or TorchScript, to run without stforecast.

The exported graph is the whole forecast: normalised input frames `frames` `(B, T_in, C, H, W)`
float32 -> normalised forecast `forecast` `(B, T_out, C, H, W)`, with T_in the card's
`input_frames`, T_out `steps` (default: the card's `output_frames`) and H x W the model's frame
size. The batch size B is free; the other dimensions are fixed. The recurrent rollout is unrolled
(T_in - 1 + T_out steps), so a different T_in or T_out needs another export.

A guided model (`options.guidance`) takes a second input, `guide` `(B, T_in - 1 + T_out, C, H, W)`:
the extrapolation of the normalised frames that `stforecast.motion.guidance(frames[b], T_out)`
gives (numpy and scipy, no torch). The graph takes it rather than computing it because the motion
estimate (Lucas-Kanade with outlier rejection) has no ONNX equivalent worth the name; the export
is verified with the guide computed by that function.

The model card travels inside the file: ONNX `metadata_props` (`stforecast_model_card`, the card
JSON, plus `stforecast_version`, `input_frames`, `output_frames`), TorchScript extra files
(`model_card.json`, and `export.json` with the same three fields). docs/export.md shows how to
read them back.

ONNX goes through PyTorch's TorchScript-based exporter (opset 17): it handles every architecture
(SDPA attention, pixel (un)shuffle patching, LayerNorm) with a free batch dimension and takes
seconds. The torch.export-based exporter is the fallback where that one fails or is gone from
torch; it is much slower and cannot keep CMS-LSTM's batch dimension free (the SE block's `chunk`
on the batch axis), which is then refused with an `ExportError`. TorchScript is a trace of the
rollout with a scripted check of the input shape in front.

Every export is verified before it is written: the file is loaded back (onnxruntime,
`torch.jit.load`) and run at batch sizes 1 and 3 (the trace used 2) against the PyTorch model in
fp32. It is then written atomically, so a failure never leaves a partial file nor replaces an
existing one.
"""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import io
import json
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from stforecast import __version__
from stforecast.errors import ConfigError, InputError, StforecastError, writing
from stforecast.models import SequenceModel

FORMATS = ("onnx", "torchscript")
SUFFIXES = {"onnx": ".onnx", "torchscript": ".pt"}  # the usual file names
INPUT_NAME = "frames"
GUIDE_NAME = "guide"  # the second input of a guided model
OUTPUT_NAME = "forecast"
CARD_KEY = "stforecast_model_card"  # ONNX metadata key of the card JSON
CARD_FILE = "model_card.json"  # TorchScript extra file of the card JSON
EXPORT_FILE = "export.json"  # TorchScript extra file: version, input and output frames
OPSET = 17
TOLERANCE = 1e-4  # max abs difference to PyTorch, in normalised units
VERIFY_BATCHES = (1, 3)  # the trace uses batch 2, so both check that the batch is free
_TRACE_BATCH = 2
_INSTALL = "pip install 'stforecast[export]'"


class ExportError(StforecastError):
    """The exporter failed, or the exported file does not reproduce the PyTorch model (exit 1)."""


def export(
    model: SequenceModel,
    card: dict[str, Any],
    path: str | Path,
    fmt: str,
    *,
    steps: int | None = None,
    verify: bool = True,
    tolerance: float = TOLERANCE,
) -> Path:
    """Export `model` (with its `card`) to `path` as `fmt` ("onnx" or "torchscript").

    The graph forecasts `steps` frames (default: the card's `output_frames`) from the card's
    `input_frames`. With `verify` (default) the exported file is run at two batch sizes and must
    match PyTorch within `tolerance` (max abs difference), else `ExportError` and nothing is
    written. Returns `path`.
    """
    fmt = check_format(fmt)
    _check_packages(fmt, verify)
    path = _check_path(path, fmt)
    spec = _spec(model, card, steps)
    net = copy.deepcopy(model).to(device="cpu", dtype=torch.float32).eval()
    with _quiet(), torch.no_grad():
        to_bytes = _to_onnx if fmt == "onnx" else _to_torchscript
        data = to_bytes(net, card, spec)
        if verify:
            _verify(net, data, fmt, spec, tolerance)
    from stforecast.io.atomic import atomic_write_bytes

    with writing(path, "write the export"):  # read-only, full disk: exit 3 naming the path
        atomic_write_bytes(path, data)
    return path


def export_run(
    run_dir: str | Path,
    fmt: str,
    out: str | Path,
    *,
    weights: str = "selected",
    steps: int | None = None,
    verify: bool = True,
) -> Path:
    """Export the model of a training run directory with its selected weights (or `best`,
    `final`); the embedded card says which (`weights.loaded`)."""
    fmt = check_format(fmt)
    _check_packages(fmt, verify)
    out = _check_path(out, fmt)
    from stforecast.data.contract import DataContract
    from stforecast.rundir.load import load_model

    model, card = load_model(run_dir, weights=weights, device="cpu")
    DataContract.from_card(card.get("input"), str(run_dir))  # a bad card: named as by `forecast`
    return export(model, card, out, fmt, steps=steps, verify=verify)


def check_format(fmt: str) -> str:
    name = str(fmt).strip().lower()
    if name not in FORMATS:
        raise ConfigError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    return name


def read_embedded_card(path: str | Path) -> dict[str, Any]:
    """The model card embedded in an exported file (either format), e.g. to check an export."""
    path = Path(path)
    try:
        with path.open("rb") as fh:
            head = fh.read(4)
        if head.startswith(b"PK"):  # TorchScript archives are zip files
            extra = {CARD_FILE: ""}
            torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
            text = extra[CARD_FILE]
        else:
            _check_packages("onnx", verify=False)
            import onnx

            proto = onnx.load(str(path), load_external_data=False)
            text = {p.key: p.value for p in proto.metadata_props}.get(CARD_KEY, "")
        card = json.loads(text) if text else None
    except OSError as err:
        raise InputError(f"{path}: cannot read: {err.strerror or err}") from None
    except StforecastError:
        raise
    except Exception as err:
        raise InputError(f"{path}: not an ONNX or TorchScript file ({_first_line(err)})") from None
    if not isinstance(card, dict):
        raise InputError(f"{path}: no stforecast model card inside")
    return card


# --- what is exported -------------------------------------------------------------------------


class _Rollout(nn.Module):
    """The whole forecast as one graph input -> one output, `steps` fixed."""

    def __init__(self, net: SequenceModel, steps: int, check: tuple[int, ...] | None = None):
        super().__init__()
        self.net = net
        self.steps = steps
        self.check = check  # (T_in, C, H, W) to check at run time (TorchScript)

    def forward(self, frames: torch.Tensor, guide: torch.Tensor | None = None) -> torch.Tensor:
        if self.check is not None:
            frames = _frames_checker()(frames, *self.check)
        return self.net(frames, self.steps, guide=guide)


def _check_frames(frames: torch.Tensor, t: int, c: int, h: int, w: int) -> torch.Tensor:
    """Scripted into the traced TorchScript graph: the unrolled rollout only fits T_in frames."""
    if frames.dim() != 5 or frames.shape[1:] != [t, c, h, w]:
        dims = str(t) + ", " + str(c) + ", " + str(h) + ", " + str(w)
        raise ValueError("frames must be (batch, T_in, C, H, W) = (batch, " + dims + ")")
    return frames


_SCRIPTED: list = []


def _frames_checker():
    if not _SCRIPTED:
        _SCRIPTED.append(torch.jit.script(_check_frames))
    return _SCRIPTED[0]


def _spec(model: SequenceModel, card: dict[str, Any], steps: int | None) -> dict[str, Any]:
    from stforecast.data.contract import DataContract

    contract = DataContract.from_card(card.get("input"))
    t_in = contract.input_frames
    t_out = contract.output_frames if steps is None else steps
    h, w = (int(s) for s in card["architecture"]["frame_size"])
    if isinstance(t_out, bool) or not isinstance(t_out, int) or t_out < 1:
        raise ConfigError(f"steps must be a positive integer, got {steps!r}")
    if (h, w) != tuple(model.frame_size):
        raise InputError(
            f"model card frame_size {h}x{w} differs from the model's "
            f"{model.frame_size[0]}x{model.frame_size[1]}"
        )
    return {
        "input": (t_in, model.in_channels, h, w),
        "guided": bool(getattr(model, "guided", False)),
        "output_frames": t_out,
        "meta": {
            "stforecast_version": __version__,
            "input_frames": str(t_in),
            "output_frames": str(t_out),
        },
    }


def _example(batch: int, spec: dict[str, Any], seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Frames of `batch` sequences (and their guides, for a guided model)."""
    gen = torch.Generator().manual_seed(seed)
    frames = torch.rand(batch, *spec["input"], generator=gen, dtype=torch.float32)
    if not spec["guided"]:
        return (frames,)
    from stforecast.motion import guidance

    steps = spec["output_frames"]
    guide = torch.from_numpy(np.stack([guidance(f.numpy(), steps) for f in frames]))
    return frames, guide


def _names(spec: dict[str, Any]) -> list[str]:
    return [INPUT_NAME, GUIDE_NAME] if spec["guided"] else [INPUT_NAME]


# --- ONNX ------------------------------------------------------------------------------------


def _to_onnx(net: SequenceModel, card: dict[str, Any], spec: dict[str, Any]) -> bytes:
    import onnx

    wrapper = _Rollout(net, spec["output_frames"]).eval()
    example = _example(_TRACE_BATCH, spec)
    names = _names(spec)
    try:
        proto = _onnx_torchscript(wrapper, example, names)
    except Exception as first:  # the exporter is gone from this torch, or fails on an op
        try:
            proto = _onnx_dynamo(wrapper, example, names)
        except Exception as second:
            raise ExportError(
                f"ONNX export failed: {_first_line(first)}; "
                f"the torch.export-based exporter too: {_first_line(second)}"
            ) from None
    del proto.metadata_props[:]
    for key, value in {CARD_KEY: json.dumps(card), **spec["meta"]}.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.doc_string = (
        f"stforecast {card['architecture'].get('name', 'model')}: normalised {INPUT_NAME} "
        f"(batch, {', '.join(map(str, spec['input']))}) -> {OUTPUT_NAME} "
        f"(batch, {spec['output_frames']}, {', '.join(map(str, spec['input'][1:]))})"
    )
    proto.producer_name, proto.producer_version = "stforecast", __version__
    onnx.checker.check_model(proto)
    return proto.SerializeToString()


def _onnx_torchscript(wrapper: nn.Module, example: tuple[torch.Tensor, ...], names: list[str]):
    """PyTorch's TorchScript-based exporter (deprecated, still the robust one here)."""
    import onnx

    buffer = io.BytesIO()
    torch.onnx.export(
        wrapper,
        example,
        buffer,
        dynamo=False,
        input_names=names,
        output_names=[OUTPUT_NAME],
        dynamic_axes={name: {0: "batch"} for name in [*names, OUTPUT_NAME]},
        opset_version=OPSET,
        do_constant_folding=True,
    )
    return onnx.load_model_from_string(buffer.getvalue())


def _onnx_dynamo(wrapper: nn.Module, example: tuple[torch.Tensor, ...], names: list[str]):
    """The torch.export-based exporter; refused where it fixed the batch size."""
    batch = torch.export.Dim("batch", min=1)
    program = torch.onnx.export(
        wrapper,
        example,
        input_names=names,
        output_names=[OUTPUT_NAME],
        dynamic_shapes=[{0: batch} for _ in names],
        opset_version=max(OPSET, 18),
        dynamo=True,
        verbose=False,
    )
    proto = program.model_proto
    batch = proto.graph.input[0].type.tensor_type.shape.dim[0]
    if not batch.dim_param:
        raise ExportError(f"the batch size was fixed to {batch.dim_value}")
    return proto


# --- TorchScript -----------------------------------------------------------------------------


def _to_torchscript(net: SequenceModel, card: dict[str, Any], spec: dict[str, Any]) -> bytes:
    wrapper = _Rollout(net, spec["output_frames"], check=spec["input"]).eval()
    try:
        traced = torch.jit.trace(wrapper, _example(_TRACE_BATCH, spec), check_trace=False)
        buffer = io.BytesIO()
        extra = {CARD_FILE: json.dumps(card), EXPORT_FILE: json.dumps(spec["meta"])}
        torch.jit.save(traced, buffer, _extra_files=extra)
    except Exception as err:
        raise ExportError(f"TorchScript export failed: {_first_line(err)}") from None
    return buffer.getvalue()


# --- verification ----------------------------------------------------------------------------


def _verify(
    net: SequenceModel, data: bytes, fmt: str, spec: dict[str, Any], tolerance: float
) -> None:
    """Run the exported bytes at `VERIFY_BATCHES` and compare with PyTorch."""
    if fmt == "onnx":
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3
        session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])

        def run(*x: torch.Tensor):
            feed = {name: t.numpy() for name, t in zip(_names(spec), x, strict=True)}
            return torch.from_numpy(session.run([OUTPUT_NAME], feed)[0])

    else:
        loaded = torch.jit.load(io.BytesIO(data), map_location="cpu")

        def run(*x: torch.Tensor):
            return loaded(*x)

    t_out = spec["output_frames"]
    for batch in VERIFY_BATCHES:
        x = _example(batch, spec, seed=batch)
        expected = net(x[0], t_out, guide=x[1] if len(x) > 1 else None)
        try:
            got = run(*x)
        except Exception as err:
            raise ExportError(
                f"the exported {fmt} file does not run at batch {batch}: {_first_line(err)}"
            ) from None
        if tuple(got.shape) != tuple(expected.shape):
            raise ExportError(
                f"{fmt} export is wrong: batch {batch} gives shape {tuple(got.shape)}, "
                f"PyTorch {tuple(expected.shape)}"
            )
        diff = float((got.float() - expected).abs().max())
        if not diff <= tolerance:
            raise ExportError(
                f"{fmt} export differs from PyTorch by up to {diff:.3g} at batch {batch} "
                f"(tolerance {tolerance:g}); nothing was written"
            )


# --- helpers ---------------------------------------------------------------------------------


def _check_packages(fmt: str, verify: bool) -> None:
    if fmt != "onnx":
        return
    needed = ["onnx", "onnxscript", "onnxruntime"] if verify else ["onnx", "onnxscript"]
    missing = [name for name in needed if importlib.util.find_spec(name) is None]
    if missing:
        raise ConfigError(f"ONNX export needs {' and '.join(missing)}: {_INSTALL}")


def _check_path(path: str | Path, fmt: str) -> Path:
    path = Path(path)
    if path.is_dir():
        example = path / f"model{SUFFIXES[fmt]}"
        raise InputError(f"{path} is a directory; give the file to write, e.g. {example}")
    return path


def _first_line(err: BaseException) -> str:
    lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
    return f"{type(err).__name__}: {lines[0]}" if lines else type(err).__name__


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """No tracer or deprecation warnings, exporter logs or prints while exporting."""
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "torch.export", "onnxscript")]
    levels = [logger.level for logger in loggers]
    try:
        for logger in loggers:
            logger.setLevel(logging.ERROR)
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)
