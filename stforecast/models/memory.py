"""Memory a model needs, estimated before anything is allocated.

A configuration that cannot fit (`hidden_channels = [1000000]`, a card claiming a billion input
frames) must be refused with the estimate, not end in an allocation failure or in the kernel's
OOM killer. The network is built on PyTorch's meta device, which records shapes and allocates
nothing, so the estimate costs milliseconds whatever the configuration.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "TooLargeError",
    "available_bytes",
    "check_fits",
    "inference_bytes",
    "meta_build",
    "training_bytes",
]


class TooLargeError(ValueError):
    """The estimate exceeds the memory this process can have (a usage error: exit 2)."""


def meta_build(config: Mapping[str, Any]) -> torch.nn.Module:
    """The network a config describes, on the meta device (no memory is allocated)."""
    from stforecast.models.registry import build_from_config

    with torch.device("meta"):
        return build_from_config(config)


def parameter_bytes(net: torch.nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in net.parameters())


def training_bytes(net: torch.nn.Module, batch: int, t_in: int, t_out: int) -> dict[str, int]:
    """Bytes one training step needs, measured on the meta device (nothing is computed):
    storages saved for the backward pass of a batch (each counted once), plus weights, gradients
    and AdamW state."""
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        s = t.untyped_storage()
        storages[s._cdata] = s.nbytes()
        return t

    meta = net if _on_meta(net) else copy.deepcopy(net).to("meta")
    c = net.in_channels
    h, w = net.frame_size
    x = torch.zeros(batch, t_in + t_out, c, h, w, device="meta")
    guide = x[:, 1:] if getattr(net, "guided", False) else None  # (B, T_in - 1 + T_out, ...)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        meta.rollout(x[:, :t_in], t_out, guide=guide)
    params = parameter_bytes(net)
    return {
        "activations": sum(storages.values()),
        "weights": params,
        "optimizer_and_grads": 3 * params,
    }


def inference_bytes(
    net: torch.nn.Module, *, batch: int, t_in: int, grid: tuple[int, int] | None = None
) -> int:
    """Bytes a forecast needs, roughly: weights, the normalised inputs of `batch` tiles (or of
    the whole `grid`), and the recurrent state with room for one step's temporaries (four
    copies of the hidden, cell and memory states of every layer)."""
    h, w = grid or net.frame_size
    c = net.in_channels
    frame = 4 * c * h * w
    p = int(net.patch_size)
    latent = 4 * math.ceil(h / p) * math.ceil(w / p)
    hidden = [int(x) for x in net.config["hidden_channels"]]
    state = 3 * latent * sum(hidden)
    return parameter_bytes(net) + batch * (t_in * frame + 4 * state)


def available_bytes(device: Any = "cpu") -> int | None:
    """What this process may still allocate: free GPU memory on CUDA; on the CPU the kernel's
    `MemAvailable`, capped by the cgroup limit (containers, systemd `MemoryMax`); None where
    neither can be read."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    limits = [v for v in (_meminfo_available(), _cgroup_room()) if v is not None]
    return min(limits) if limits else None


def check_fits(need: int, what: str, device: Any = "cpu") -> None:
    """Refuse `what` when it needs more than is available (`TooLargeError` with both figures)."""
    room = available_bytes(device)
    if room is not None and need > room:
        raise TooLargeError(
            f"{what} needs about {_gb(need)}, more than the {_gb(room)} available on "
            f"{torch.device(device).type}; make the model, the batch or the grid smaller"
        )


def _gb(n: float) -> str:
    return f"{n / 2**30:.3g} GiB" if n < 2**60 else f"{n / 2**30:.3e} GiB"


def _on_meta(net: torch.nn.Module) -> bool:
    return any(p.is_meta for p in net.parameters())


def _meminfo_available() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _cgroup_room() -> int | None:
    """cgroup v2 `memory.max - memory.current` of this process's group, if limited."""
    try:
        group = Path("/proc/self/cgroup").read_text().strip().split("::", 1)[-1]
        base = Path("/sys/fs/cgroup") / group.lstrip("/")
        limit = (base / "memory.max").read_text().strip()
        if limit == "max":
            return None
        return int(limit) - int((base / "memory.current").read_text())
    except (OSError, ValueError):
        return None
