"""The prepared-store cache: raw sources named by a recipe are prepared once, into a store keyed
by the content hash of the files and of the `[data]` settings, and reused by training and
evaluation alike.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from stforecast.config import DataConfig
from stforecast.data.prepare import prepare
from stforecast.io.sources import resolve, sha256

__all__ = ["cache_root", "content_key", "file_record", "prepare_cached"]


def cache_root() -> Path:
    """Where prepared stores of raw sources are kept: `$STFORECAST_CACHE`, else the XDG cache."""
    if "STFORECAST_CACHE" in os.environ:
        return Path(os.environ["STFORECAST_CACHE"])
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "stforecast" / "prepared"


def content_key(cfg: DataConfig) -> str:
    """Hash of the source files' contents and of every `[data]` setting that shapes the store."""
    digest = hashlib.sha256()
    settings = cfg.model_dump(mode="json", exclude={"store", "validation_sequences"})
    settings["sources"] = sorted(settings["sources"])
    digest.update(json.dumps(settings, sort_keys=True).encode())
    for sources in [cfg.sources, *(a.sources for a in cfg.archives)]:
        for path in resolve(sources) if sources else []:
            digest.update(sha256(path).encode())
    return digest.hexdigest()[:24]


def prepare_cached(cfg: DataConfig, store: Path, progress=None) -> Path:
    """Prepare `cfg` into the cache once: processes that want the same store (the ranks of a
    torchrun job, two trainings started together) wait on a lock; the first prepares it."""
    import fcntl

    if (store / "manifest.json").exists():
        return store
    store.parent.mkdir(parents=True, exist_ok=True)
    with open(store.parent / f".{store.name}.lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, or the process dies
        if not (store / "manifest.json").exists():
            prepare(cfg, store, overwrite=True, progress=progress)
    return store


def file_record(path: str | os.PathLike[str]) -> dict[str, str]:
    """A training file as cards record it: path and sha256."""
    return {"path": str(path), "sha256": sha256(path)}
