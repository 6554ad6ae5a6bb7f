"""Export a trained model to ONNX or TorchScript, to run without stforecast.

The exported graph is the whole forecast: normalised input frames `frames` `(B, T_in, C, H, W)`
float32 -> normalised forecast `forecast` `(B, T_out, C, H, W)`, with T_in the card's
`input_frames` and T_out `steps` (default: the card's `output_frames`). The batch size B is free.
ONNX loops the model's recurrent step (`rundir.onnx_graph`): its optional input `steps` sets
T_out, and a size-free model (channel norm, windowed attention) takes any H x W that its patch
and window divide; otherwise H x W is the model's frame size. TorchScript traces the unrolled
rollout (T_in - 1 + T_out steps, H x W fixed) with a scripted check of the input shape in front.

A guided model (`options.guidance`) takes a second input, `guide` `(B, T_in - 1 + T_out, C, H, W)`:
the guide of the normalised frames that `stforecast.motion.guidance(frames[b], T_out, method)`
gives for the card's guide (the extrapolation: numpy and scipy; S-PROG: pysteps; no torch); the
motion estimate (Lucas-Kanade with outlier rejection) has no ONNX equivalent worth the name. The
export is verified with extrapolation guides (the guide is an input: any guide checks parity).

The model card travels inside the file: ONNX `metadata_props` (`stforecast_model_card`, the card
JSON, plus `stforecast_version`, `input_frames`, `output_frames` and, from a run directory, its
`[forecast]` section and recipe digest), TorchScript extra files (`model_card.json`, and
`export.json` with the same fields). docs/export.md shows how to read them back.

ONNX goes through PyTorch's TorchScript-based exporter (opset 17), which handles every
architecture; the torch.export-based exporter is the fallback where that one fails or is gone
from torch (much slower; a batch dimension it fixes, as CMS-LSTM's, is refused). Every export
is verified before it is written: the file is loaded back (onnxruntime, `torch.jit.load`) and
run at batch sizes 1 and 3 (the trace used 2) against the PyTorch model in fp32, then written
atomically, so a failure never leaves a partial file nor replaces an existing one.
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
from stforecast.rundir.onnx_graph import (
    CARD_KEY,
    FORECAST_KEY,
    GUIDE_NAME,
    INPUT_NAME,
    OUTPUT_NAME,
    RECIPE_KEY,
    STEPS_NAME,
)

FORMATS = ("onnx", "torchscript")
SUFFIXES = {"onnx": ".onnx", "torchscript": ".pt"}  # the usual file names
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
    metadata: dict[str, str] | None = None,
) -> Path:
    """Export `model` (with its `card`) to `path` as `fmt` ("onnx" or "torchscript").

    The graph forecasts `steps` frames (default: the card's `output_frames`; any number for
    ONNX, through its optional `steps` input) from the card's `input_frames`. With `verify`
    (default) the exported file is run at two batch sizes (and, for ONNX, a longer rollout on
    another grid where the model is size-free) and must match PyTorch within `tolerance` (max
    abs difference), else `ExportError` and nothing is written. `metadata` adds entries (the
    run's `[forecast]` section and recipe digest, as `export_run` does). Returns `path`.
    """
    fmt = check_format(fmt)
    _check_packages(fmt, verify)
    path = _check_path(path, fmt)
    spec = _spec(model, card, steps)
    spec["meta"].update(metadata or {})
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
    from stforecast.io.sources import sha256
    from stforecast.rundir.load import load_model, run_recipe, run_recipe_path

    model, card = load_model(run_dir, weights=weights, device="cpu")
    DataContract.from_card(card.get("input"), str(run_dir))  # a bad card: named as by `forecast`
    own = run_recipe(Path(run_dir))  # its [forecast] defaults travel with the file
    meta = {} if own is None else {
        FORECAST_KEY: own.forecast.model_dump_json(),
        RECIPE_KEY: sha256(run_recipe_path(Path(run_dir))),
    }  # fmt: skip
    return export(model, card, out, fmt, steps=steps, verify=verify, metadata=meta)


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
    """The whole forecast (TorchScript), `steps` fixed, the input's (T_in, C, H, W) checked."""

    def __init__(self, net: SequenceModel, steps: int, check: tuple[int, ...]):
        super().__init__()
        self.net, self.steps, self.check = net, steps, check

    def forward(self, frames: torch.Tensor, guide: torch.Tensor | None = None) -> torch.Tensor:
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
    m = int(model.patch_size) * int((model.config.get("options") or {}).get("window") or 1)
    return {
        "input": (t_in, model.in_channels, h, w),
        "guided": bool(getattr(model, "guided", False)),
        "size_free": bool(model.size_free),
        "other_size": (h + m, w + 2 * m) if model.size_free else (h, w),  # a check of ONNX's
        "output_frames": t_out,
        "meta": {
            "stforecast_version": __version__,
            "input_frames": str(t_in),
            "output_frames": str(t_out),
        },
    }


def _example(
    batch: int, spec: dict[str, Any], seed: int = 0, size=None, steps=None
) -> tuple[torch.Tensor, ...]:
    """Frames of `batch` sequences (and their guides, for a guided model), of the exported
    frame size and length unless `size` (H, W) or `steps` say otherwise."""
    gen = torch.Generator().manual_seed(seed)
    t, c, h, w = spec["input"]
    h, w = size or (h, w)
    frames = torch.rand(batch, t, c, h, w, generator=gen, dtype=torch.float32)
    if not spec["guided"]:
        return (frames,)
    from stforecast.motion import guidance

    steps = steps or spec["output_frames"]  # the guide is an input: any guide checks parity
    guide = torch.from_numpy(np.stack([guidance(f.numpy(), steps) for f in frames]))
    return frames, guide


def _names(spec: dict[str, Any]) -> list[str]:
    return [INPUT_NAME, GUIDE_NAME] if spec["guided"] else [INPUT_NAME]


# --- ONNX ------------------------------------------------------------------------------------


class _Step(nn.Module):
    """One step of the rollout at full resolution, the recurrent state explicit:
    `(x, [g], *state) -> (next frame, *state)`; the ONNX file loops it (`_loop_graph`)."""

    def __init__(self, net: SequenceModel):
        super().__init__()
        self.net = net
        probe = net.zero_state(1, 1, 1, torch.zeros(1))
        self.layout = [[t is not None for t in layer] for layer in probe[:-1]]
        self.layout.append([probe[-1] is not None])
        self.channels = [int(t.shape[1]) for t in _flat(probe)]

    def forward(self, x: torch.Tensor, *rest: torch.Tensor):
        g, flat = (rest[0], rest[1:]) if self.net.guided else (None, rest)
        it = iter(flat)
        state: list = [tuple(next(it) if on else None for on in ons) for ons in self.layout[:-1]]
        state.append(next(it) if self.layout[-1][0] else None)
        p = self.net.patch_size
        g = None if g is None else nn.functional.pixel_unshuffle(g, p)
        out = self.net.step(nn.functional.pixel_unshuffle(x, p), state, g)
        return (nn.functional.pixel_shuffle(out, p), *_flat(state))

    def example(self, batch: int, spec: dict[str, Any]) -> tuple[torch.Tensor, ...]:
        _, c, h, w = spec["input"]
        p = self.net.patch_size
        x = torch.rand(batch, c, h, w, generator=torch.Generator().manual_seed(0))
        zeros = [torch.zeros(batch, ch, h // p, w // p) for ch in self.channels]
        return (x, x.clone(), *zeros) if self.net.guided else (x, *zeros)


def _flat(state: list) -> list[torch.Tensor]:
    """The tensors of a `zero_state`-shaped state, in order, without the unused (None)."""
    out = [t for layer in state[:-1] for t in layer if t is not None]
    return out + ([state[-1]] if state[-1] is not None else [])


def _exportable(net: SequenceModel) -> SequenceModel:
    """`net` (a copy) with the channel norm as reductions over channels: same values, no shape
    from the input (the exporter cannot keep it symbolic), no transposes for onnxruntime."""
    from stforecast.models.norm import ChannelNorm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        centred = x - x.mean(dim=1, keepdim=True)
        scale = torch.rsqrt(centred.square().mean(dim=1, keepdim=True) + self.eps)
        return centred * scale * self.weight[:, None, None] + self.bias[:, None, None]

    for module in net.modules():
        if isinstance(module, ChannelNorm):
            module.forward = forward.__get__(module)
    return net


def _to_onnx(net: SequenceModel, card: dict[str, Any], spec: dict[str, Any]) -> bytes:
    import onnx

    from stforecast.rundir.onnx_graph import loop_graph

    step = _Step(_exportable(copy.deepcopy(net))).eval()  # verified against `net` itself
    example = step.example(_TRACE_BATCH, spec)
    names = ["x", "g"][: 2 if spec["guided"] else 1] + [f"s{i}" for i in range(len(step.channels))]
    outputs = ["y"] + [f"o{i}" for i in range(len(step.channels))]
    try:
        body = _onnx_torchscript(step, example, names, outputs, spec["size_free"])
    except Exception as first:  # the exporter is gone from this torch, or fails on an op
        try:
            body = _onnx_dynamo(step, example, names, outputs, spec["size_free"])
        except Exception as second:
            raise ExportError(
                f"ONNX export failed: {_first_line(first)}; "
                f"the torch.export-based exporter too: {_first_line(second)}"
            ) from None
    proto = loop_graph(body, spec, step.channels, net.patch_size)
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


def _dims(names: list[str], size_free: bool) -> dict[str, dict[int, str]]:
    """The free axes of the step's tensors: batch, and height/width of a size-free model."""
    free = {0: "batch", 2: "height", 3: "width"} if size_free else {0: "batch"}
    return {name: dict(free) for name in names}


def _onnx_torchscript(step: nn.Module, example, names, outputs, size_free: bool):
    """PyTorch's TorchScript-based exporter (deprecated, still the robust one here)."""
    import onnx

    buffer = io.BytesIO()
    torch.onnx.export(
        step,
        example,
        buffer,
        dynamo=False,
        input_names=names,
        output_names=outputs,
        dynamic_axes=_dims([*names, *outputs], size_free),
        opset_version=OPSET,
        do_constant_folding=True,
    )
    return onnx.load_model_from_string(buffer.getvalue())


def _onnx_dynamo(step: nn.Module, example, names, outputs, size_free: bool):
    """The torch.export-based exporter; refused where it fixed the batch size."""
    batch = torch.export.Dim("batch", min=1)
    free = {0: batch}
    if size_free:
        free |= {2: torch.export.Dim("height", min=1), 3: torch.export.Dim("width", min=1)}
    program = torch.onnx.export(
        step,
        example,
        input_names=names,
        output_names=outputs,
        dynamic_shapes=[free for _ in names],
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
    """Run the exported bytes at `VERIFY_BATCHES` and compare with PyTorch; an ONNX file also
    on a longer rollout (its `steps` input), on another grid where the model is size-free."""
    t_out = spec["output_frames"]
    cases = [(batch, None, t_out) for batch in VERIFY_BATCHES]
    if fmt == "onnx":
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3
        session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])

        def run(steps: int, *x: torch.Tensor):
            feed = {name: t.numpy() for name, t in zip(_names(spec), x, strict=True)}
            feed[STEPS_NAME] = np.array(steps, np.int64)
            return torch.from_numpy(session.run([OUTPUT_NAME], feed)[0])

        cases.append((1, spec["other_size"], t_out + 2))
    else:
        loaded = torch.jit.load(io.BytesIO(data), map_location="cpu")

        def run(steps: int, *x: torch.Tensor):
            return loaded(*x)

    for batch, size, steps in cases:
        x = _example(batch, spec, seed=batch, size=size, steps=steps)
        expected = net(x[0], steps, guide=x[1] if len(x) > 1 else None)
        where = f"batch {batch}" + ("" if size is None else f", {size[0]}x{size[1]}, {steps} steps")
        try:
            got = run(steps, *x)
        except Exception as err:
            raise ExportError(
                f"the exported {fmt} file does not run at {where}: {_first_line(err)}"
            ) from None
        if tuple(got.shape) != tuple(expected.shape):
            raise ExportError(
                f"{fmt} export is wrong: {where} gives shape {tuple(got.shape)}, "
                f"PyTorch {tuple(expected.shape)}"
            )
        diff = float((got.float() - expected).abs().max())
        if not diff <= tolerance:
            raise ExportError(
                f"{fmt} export differs from PyTorch by up to {diff:.3g} at {where} "
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
