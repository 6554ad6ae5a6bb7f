"""Resumable checkpoints.

A checkpoint is written (`io.atomic`) to a temporary file in the same directory, flushed and
fsynced, moved over the old one with `os.replace` (atomic on POSIX), and the directory is fsynced
so the rename itself survives a power cut. A process killed at any moment leaves either the
previous checkpoint or the new one under the final name, never a truncated file; stale temporary
files are removed on resume.

Checkpoints hold only tensors, numbers, strings, lists, tuples and dicts, and are read with
`torch.load(weights_only=True)`: a file that needs arbitrary unpickling is refused.

Layout of `checkpoints/last.pt` (a dict, `FORMAT`/`VERSION` first):

    format, version    "stforecast-checkpoint", 1
    step               optimizer steps done (the next step to run)
    epoch, position    data order: epoch number and batches of it consumed; `train_size` guards
                       against resuming on a different training split
    model, optimizer   state dicts; `scaler` the fp16 GradScaler state or None
    scheduler          {"schedule", "step", "lr"} (schedules are pure functions of the step)
    sampling           {"kind", "steps", "eta", "eta_input"} at `step`
    best, stale        best validation {"loss", "step", "metrics"}; validations since it improved
    last_validation    the latest validation metrics (or None)
    rng                Python, numpy, torch CPU and CUDA generator states
    elapsed_s          training wall time over all sessions; `world_size` of the run
    architecture       `model.config`; `recipe` the resolved recipe as JSON text
"""

from __future__ import annotations

import contextlib
import os
import pickle
import re
import warnings
from pathlib import Path
from typing import Any

import torch

from stforecast.errors import InputError, environment_error, writing
from stforecast.io.atomic import atomic_path

FORMAT = "stforecast-checkpoint"
VERSION = 1


def remove_stale(directory: Path) -> list[Path]:
    """Delete temporary files that a killed writer left in `directory`; returns them."""
    removed = []
    if directory.is_dir():
        for tmp in directory.glob(".*.tmp"):
            with contextlib.suppress(OSError):
                tmp.unlink()
                removed.append(tmp)
    return removed


def save_checkpoint(path: str | os.PathLike[str], state: dict[str, Any]) -> Path:
    """Atomically save a checkpoint dict (see the module docstring for its keys)."""
    state = {"format": FORMAT, "version": VERSION, **state}
    with writing(path, "write the checkpoint"), atomic_path(path) as tmp, open(tmp, "wb") as fh:
        torch.save(state, fh)
    return Path(path)


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a checkpoint on the CPU with `weights_only=True`; any problem is an `InputError`,
    one line: torch's warnings about a foreign pickle are silenced (the error says it all), and
    such a file is refused, never unpickled."""
    path = Path(path)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=UserWarning, module=r"torch(\.|$)")
            state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise InputError(f"{path}: no such checkpoint") from None
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as err:
        if isinstance(err, OSError) and err.errno is not None:  # the file system's, not the file's
            raise environment_error(err, path, "read the checkpoint") from None
        raise InputError(
            f"{path}: not a readable stforecast checkpoint (loaded with weights_only=True): "
            f"{_why(err)}"
        ) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise InputError(f"{path}: not an stforecast checkpoint")
    if state.get("version") != VERSION:
        raise InputError(
            f"{path}: checkpoint version {state.get('version')} is not supported "
            f"(this stforecast reads version {VERSION})"
        )
    return state


def _why(err: BaseException) -> str:
    """torch's reason in a few words: its weights-only message is a page of advice on how to
    unpickle the file anyway (with terminal escapes), which a checkpoint of ours never needs."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(err))
    if isinstance(err, pickle.UnpicklingError):
        found = re.search(r"Unsupported global: GLOBAL (\S+)", text)
        if found:
            return f"it holds a Python object ({found.group(1)}), which is never unpickled"
        if "Weights only load failed" in text:
            return "not tensors and plain values: refused, never unpickled"
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[0].split(". ")[0] if lines else type(err).__name__  # its first sentence
