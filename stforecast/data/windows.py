"""Time regularity, chronological splits and training windows.

Frames must sit on the time step counted from the first frame. A gap (missing steps) splits the
archive into segments; a window of `T_in + T_out` consecutive frames never spans a gap and never
mixes splits, so train, validation and test windows share no frame.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np

from stforecast.config import as_utc
from stforecast.errors import InputError
from stforecast.io.times import iso_duration as iso_duration  # the one ISO 8601 duration helper

SPLITS = ("train", "validation", "test")


def to_datetime64(value: dt.datetime) -> np.datetime64:
    """A recipe time (naive = UTC, or aware) as a naive UTC numpy datetime."""
    return np.datetime64(as_utc(value), "ns")


def fmt(t: np.datetime64) -> str:
    return str(np.datetime_as_string(t, unit="s")) + "Z"


@dataclass(frozen=True)
class Timeline:
    """The archive's times on its step: contiguous segments and the gaps between them."""

    times: np.ndarray  # datetime64[ns], ascending
    step: int  # seconds
    segment: np.ndarray  # segment id per frame
    gaps: list[dict]  # {"after", "before", "missing_frames"}

    @property
    def segments(self) -> list[tuple[int, int]]:
        """(first, last + 1) frame index of each segment."""
        edges = np.flatnonzero(np.diff(self.segment)) + 1
        starts = np.concatenate([[0], edges])
        ends = np.concatenate([edges, [len(self.segment)]])
        return [(int(a), int(b)) for a, b in zip(starts, ends, strict=True)]


def timeline(times: np.ndarray, step: int) -> Timeline:
    """Check that every frame sits on the step grid; find gaps and segments."""
    times = np.asarray(times, dtype="datetime64[ns]")
    if len(times) == 0:
        raise InputError("no frames")
    if step <= 0:
        raise InputError(f"time step must be positive, got {step} s")
    diffs = np.diff(times) / np.timedelta64(1, "s")
    if (diffs <= 0).any():
        i = int(np.argmax(diffs <= 0))
        raise InputError(f"times are not strictly increasing at {fmt(times[i + 1])}")
    offsets = (times - times[0]) / np.timedelta64(1, "s")
    off = np.flatnonzero(np.mod(offsets, step) != 0)
    if off.size:
        raise InputError(
            f"frame at {fmt(times[off[0]])} is off the {step} s time step "
            f"(counted from {fmt(times[0])})"
        )
    jumps = np.flatnonzero(diffs > step)
    segment = np.zeros(len(times), dtype=np.int32)
    for j in jumps:
        segment[j + 1 :] += 1
    gaps = [
        {
            "after": fmt(times[j]),
            "before": fmt(times[j + 1]),
            "missing_frames": int(diffs[j] // step) - 1,
        }
        for j in jumps
    ]
    return Timeline(times, step, segment, gaps)


def assign_splits(times: np.ndarray, split) -> np.ndarray:
    """Split id per frame: 0 train, 1 validation, 2 test, -1 in none.

    By explicit time ranges (inclusive start, exclusive end) when given, else by fractions of the
    frames in time order: train the first `f0·n` frames (rounded down), validation up to
    `(f0 + f1)·n`, test the rest.
    """
    n = len(times)
    ids = np.full(n, -1, dtype=np.int8)
    if split.by_time:
        for k, name in enumerate(SPLITS):
            rng = split.ranges()[name]
            if rng is None:
                continue
            start, end = (to_datetime64(t) for t in rng)
            ids[(times >= start) & (times < end)] = k
        return ids
    bounds = np.floor(np.cumsum(split.fractions) * n + 1e-9).astype(int)
    bounds[-1] = n
    for k, (a, b) in enumerate(zip(np.concatenate([[0], bounds[:-1]]), bounds, strict=True)):
        ids[a:b] = k
    return ids


def window_starts(split_ids: np.ndarray, segment: np.ndarray, length: int, stride: int):
    """Start indices of the windows of each split: `length` consecutive frames of one split and
    one segment, every `stride` frames from the start of each such run."""
    out: dict[str, np.ndarray] = {}
    key = split_ids.astype(np.int64) * (int(segment.max()) + 2) + segment
    edges = np.flatnonzero(np.diff(key)) + 1
    starts = np.concatenate([[0], edges])
    ends = np.concatenate([edges, [len(key)]])
    for k, name in enumerate(SPLITS):
        found = [
            np.arange(a, b - length + 1, stride)
            for a, b in zip(starts, ends, strict=True)
            if split_ids[a] == k and b - a >= length
        ]
        out[name] = np.concatenate(found).astype(np.int64) if found else np.zeros(0, np.int64)
    return out


def time_record(line: Timeline) -> dict:
    """The manifest's `time` section of an archive's timeline."""
    return {
        "start": fmt(line.times[0]),
        "end": fmt(line.times[-1]),
        "frames": len(line.times),
        "segments": [[fmt(line.times[a]), fmt(line.times[b - 1])] for a, b in line.segments],
        "gaps": line.gaps,
    }


def split_bounds(times: np.ndarray, split_ids: np.ndarray, step: int) -> dict[str, list[str]]:
    """First frame time and end (last frame + one step) of each split, for the manifest."""
    out = {}
    for k, name in enumerate(SPLITS):
        idx = np.flatnonzero(split_ids == k)
        if idx.size:
            end = times[idx[-1]] + np.timedelta64(step, "s")
            out[name] = [fmt(times[idx[0]]), fmt(end)]
    return out
