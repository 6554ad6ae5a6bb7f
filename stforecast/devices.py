"""The one device policy: `auto` picks CUDA, then Apple MPS, then the CPU; asking for a device
that is not there is a configuration error (exit 2), never a silent fallback."""

from __future__ import annotations

from typing import Any

from stforecast.errors import ConfigError

DEVICES = ("auto", "cpu", "cuda", "mps")


def resolve_device(name: str = "auto", local_rank: int = 0) -> Any:
    """A `torch.device` for `name`; `local_rank` picks the GPU of a torchrun process."""
    import torch

    if name not in DEVICES:
        raise ConfigError(f"unknown device {name!r}; choose one of {', '.join(DEVICES)}")
    mps = getattr(torch.backends, "mps", None)
    has_mps = bool(mps is not None and mps.is_available())
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "mps" if has_mps else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("device 'cuda' was asked for but no CUDA device is available")
        index = local_rank % torch.cuda.device_count()
        torch.cuda.set_device(index)
        return torch.device("cuda", index)
    if name == "mps" and not has_mps:
        raise ConfigError("device 'mps' was asked for but the MPS backend is not available")
    return torch.device(name)


def describe_device(device: Any) -> str:
    """`cuda:0 (NVIDIA H200)`, or the device's name."""
    import torch

    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return str(device)
