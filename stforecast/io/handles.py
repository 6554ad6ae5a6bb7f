"""A small cache of open files for files read frame after frame (one NetCDF or GeoTIFF holding
many frames).

Reopening such a file for every frame costs its header and, worse, the decompressed blocks: a
pixel-interleaved 24-band GeoTIFF decodes every band for each band read (25× slower), and an HDF5
chunk spanning many frames is inflated again per frame. Per-frame files are never cached, so at
most `size` files stay open whatever the number of frames.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

Key = tuple[int, str, int, int]


class HandleCache:
    """LRU of open handles keyed by path and the file's mtime and size (a rewritten file is
    reopened) and by process id (a forked worker opens its own). Each handle has its own lock:
    neither GDAL nor HDF5 handles may be used by two threads at once."""

    def __init__(self, opener: Callable[[str], Any], size: int = 4) -> None:
        self._opener = opener
        self._size = size
        self._lock = threading.Lock()
        self._entries: OrderedDict[Key, tuple[Any, threading.Lock]] = OrderedDict()
        self._pid = os.getpid()

    @contextmanager
    def use(self, path: str) -> Iterator[Any]:
        stat = os.stat(path)
        key = (os.getpid(), path, stat.st_mtime_ns, stat.st_size)
        with self._lock:
            if self._pid != key[0]:  # forked: the parent's handles are not ours to use or close
                self._entries.clear()
                self._pid = key[0]
            entry = self._entries.pop(key, None)
            if entry is None:
                entry = (self._opener(path), threading.Lock())
            self._entries[key] = entry
            while len(self._entries) > self._size:
                _, (old, old_lock) = self._entries.popitem(last=False)
                with old_lock:
                    old.close()
            handle, lock = entry
            lock.acquire()  # before releasing the cache: nobody can evict it under us
        try:
            yield handle
        finally:
            lock.release()

    def clear(self) -> None:
        """Close every cached handle (tests, or before files are replaced on platforms that lock
        open files)."""
        with self._lock:
            while self._entries:
                _, (old, old_lock) = self._entries.popitem(last=False)
                with old_lock:
                    old.close()
