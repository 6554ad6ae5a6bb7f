"""The model registry: users and the rest of stforecast pick architectures by name.

Each entry fixes which blocks the cells carry; `build` options switch blocks on or off on top of
that (`ce`, `se_scales`), so the ablations of CMS-LSTM's Table 3 are `build("predrnn", ce=True)`,
`build("cms_lstm", se_scales=1)`, `build("sa_convlstm", ce=True, se_scales=3)`, ...
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from stforecast.models.cell import Cell
from stforecast.models.norm import NORMS
from stforecast.models.sequence import SequenceModel


@dataclass(frozen=True)
class Architecture:
    description: str
    paper: str
    core: str = "convlstm"
    blocks: dict[str, Any] = field(default_factory=dict)


_REGISTRY: dict[str, Architecture] = {}

# Options `build` accepts beyond the shared arguments, with their defaults.
OPTIONS: dict[str, Any] = {
    "norm": "layer",  # "layer" (papers, tied to the grid), "channel" (size-free), "none"
    "ce": False,  # CE block (CMS-LSTM Eq. 2)
    "ce_iterations": 5,  # CE half-steps (authors' code: 5)
    "se_scales": 0,  # SE block at 1, 2 or 3 scales (0: off)
    "se_kernel_size": 5,  # SE convolutions (paper: 5×5)
    "key_channels": 16,  # Ĉ, query/key channels of SAM and SA
    "window": None,  # attention window in latent pixels (None: the whole grid, as the papers)
    "guidance": False,  # correct a nowcast instead of forecasting from scratch: true (or
    # "extrapolation") the extrapolation, "sprog" pysteps' S-PROG (`stforecast.motion.guidance`)
}
GUIDES = ("extrapolation", "sprog")  # the guides by name (true is the extrapolation)


def register(name: str, architecture: Architecture) -> None:
    """Add an architecture under `name` (plugins may register their own)."""
    _REGISTRY[name] = architecture


def available() -> list[str]:
    """Registered model names."""
    return sorted(_REGISTRY)


def describe(name: str) -> Architecture:
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(available())}")
    return _REGISTRY[name]


def _as_pair(value: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2 or min(pair) < 1:
        raise ValueError(f"frame_size must be one or two positive integers, got {value!r}")
    return int(pair[0]), int(pair[1])


def build(
    name: str,
    *,
    in_channels: int,
    frame_size: int | tuple[int, int],
    patch_size: int,
    hidden_channels: int | list[int],
    kernel_size: int,
    num_layers: int | None = None,
    **options: Any,
) -> SequenceModel:
    """Build a registered model.

    `hidden_channels` is one width per layer (or one width and `num_layers`). Options are those of
    `OPTIONS`; unknown ones are errors, so a recipe typo never passes silently.
    """
    arch = describe(name)
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        valid = ", ".join(OPTIONS)
        raise ValueError(f"unknown model option(s) {', '.join(unknown)}; valid: {valid}")
    opts = {**OPTIONS, **arch.blocks, **options}
    if not (isinstance(opts["guidance"], bool) or opts["guidance"] in GUIDES):
        raise ValueError(
            f"guidance must be true, false, 'extrapolation' or 'sprog', got {opts['guidance']!r}"
        )
    if opts["norm"] not in NORMS:
        raise ValueError(f"unknown norm {opts['norm']!r}; choose one of {', '.join(NORMS)}")
    if isinstance(hidden_channels, int):
        hidden = [hidden_channels] * (num_layers or 1)
    else:
        hidden = [int(h) for h in hidden_channels]
        if num_layers is not None and num_layers != len(hidden):
            raise ValueError(f"num_layers={num_layers} but {len(hidden)} hidden widths given")
    if not hidden or min(hidden) < 1:
        raise ValueError("hidden_channels needs at least one positive width")
    if arch.core == "stlstm" and len(set(hidden)) != 1:
        raise ValueError("PredRNN's zig-zag memory needs the same width in every layer")
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be odd and positive, got {kernel_size}")
    if in_channels < 1 or patch_size < 1:
        raise ValueError("in_channels and patch_size must be positive")
    frame = _as_pair(frame_size)
    if frame[0] % patch_size or frame[1] % patch_size:
        raise ValueError(f"frame size {frame[0]}x{frame[1]} is not divisible by patch {patch_size}")
    if opts["se_scales"] not in (0, 1, 2, 3):
        raise ValueError(f"se_scales must be 0, 1, 2 or 3, got {opts['se_scales']}")
    size = (frame[0] // patch_size, frame[1] // patch_size)
    cell_opts = {k: opts[k] for k in OPTIONS if k != "guidance"}
    cells = []
    x_ch = hidden[0]  # layer 0 reads the embedded input
    for h_ch in hidden:
        cells.append(
            Cell(
                arch.core,
                x_ch,
                h_ch,
                kernel_size,
                size,
                sam=opts.get("sam", False),
                sa_input=opts.get("sa_input", False),
                **cell_opts,
            )
        )
        x_ch = h_ch
    has_attention = bool(opts["se_scales"] or opts.get("sam") or opts.get("sa_input"))
    size_free = opts["norm"] != "layer" and (opts["window"] is not None or not has_attention)
    config = {
        "name": name,
        "in_channels": in_channels,
        "frame_size": list(frame),
        "patch_size": patch_size,
        "hidden_channels": hidden,
        "kernel_size": kernel_size,
        "options": cell_opts | ({"guidance": opts["guidance"]} if opts["guidance"] else {}),
    }
    guided = bool(opts["guidance"])
    return SequenceModel(cells, hidden, in_channels, patch_size, frame, config, size_free, guided)


def build_from_config(config: Mapping[str, Any]) -> SequenceModel:
    """Build the model a config describes, in the form of `SequenceModel.config`.

    The one way from a description to a net: a recipe's `[model]` plus the data's `in_channels`
    and `frame_size` builds a new model, and a model card's `architecture` (the same form) rebuilds
    a trained one. Keys other than `build`'s arguments (a card's `parameters`) are ignored.
    """
    return build(
        config["name"],
        in_channels=config["in_channels"],
        frame_size=config["frame_size"],
        patch_size=config["patch_size"],
        hidden_channels=config["hidden_channels"],
        kernel_size=config["kernel_size"],
        **config.get("options", {}),
    )


register(
    "convlstm",
    Architecture("ConvLSTM, with layer norm", "Shi et al., NeurIPS 2015"),
)
register(
    "predrnn",
    Architecture("PredRNN: ST-LSTM with the zig-zag memory", "Wang et al., NeurIPS 2017", "stlstm"),
)
register(
    "sa_convlstm",
    Architecture(
        "SA-ConvLSTM: ConvLSTM + self-attention memory (SAM)",
        "Lin et al., AAAI 2020",
        blocks={"sam": True},
    ),
)
register(
    "sa_base",
    Architecture(
        "SA-ConvLSTM's base model: self-attention on input and hidden state, no memory",
        "Lin et al., AAAI 2020, Sec. 3.1",
        blocks={"sa_input": True},
    ),
)
register(
    "cms_lstm",
    Architecture(
        "CMS-LSTM: ConvLSTM + context embedding (CE) + 3-scale expression (SE)",
        "Chai et al., ICME 2022",
        blocks={"ce": True, "se_scales": 3},
    ),
)
