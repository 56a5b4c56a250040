"""A per-process cache of downloaded documents, so that the slices of a long document read on
one worker download it once, not once per slice.

Entries are keyed by the storage's URL, the object's key and the document's sha256, so a
changed object (another sha256) is never served from a stale copy. The cache is bounded in
bytes; the least recently used copies go first, never one that is in use. Its folder is
private to the process (mode 0700, from ``tempfile.mkdtemp``), removed when the process
exits, and folders left by processes that died (a killed worker) are removed by the next
cache made on the machine.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import tempfile
import threading
import weakref
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

_PREFIX = "docproc-copies-"


@dataclass
class _Entry:
    path: Path
    size: int
    users: int = 0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_orphans(parent: Path) -> None:
    """Cache folders of processes that no longer run (killed before they could clean up)."""
    for folder in parent.glob(_PREFIX + "*"):
        pid = folder.name[len(_PREFIX) :].split("-", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)


class CopyCache:
    """Local copies of documents, at most ``limit_bytes`` of them kept between uses."""

    def __init__(self, limit_bytes: int, parent: Path | None = None) -> None:
        self.limit_bytes = limit_bytes
        parent = parent or Path(tempfile.gettempdir())
        _remove_orphans(parent)
        self.folder = Path(tempfile.mkdtemp(prefix=f"{_PREFIX}{os.getpid()}-", dir=parent))
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._lock = threading.Lock()
        self._size = 0
        self.hits = 0
        self.misses = 0
        self._finalizer = weakref.finalize(self, shutil.rmtree, self.folder, True)

    @staticmethod
    def _name(url: str, key: str, doc_id: str) -> str:
        return hashlib.sha256(f"{url}\0{key}\0{doc_id}".encode()).hexdigest()[:32]

    @contextlib.contextmanager
    def get(self, url: str, key: str, doc_id: str) -> Iterator[Path | None]:
        """The cached copy, held (not evicted) for the duration of the context; None on a miss."""
        name = self._name(url, key, doc_id)
        with self._lock:
            entry = self._entries.get(name)
            if entry is None:
                self.misses += 1
            else:
                self.hits += 1
                entry.users += 1
                self._entries.move_to_end(name)
        if entry is None:
            yield None
            return
        try:
            yield entry.path
        finally:
            with self._lock:
                entry.users -= 1
                self._evict()

    def put(self, url: str, key: str, doc_id: str, path: Path) -> None:
        """Keep a copy of ``path`` (a hard link where it can, else a copy) for later uses."""
        size = path.stat().st_size
        if size > self.limit_bytes:
            return
        name = self._name(url, key, doc_id)
        with self._lock:
            if name in self._entries:
                return
        target = self.folder / name / path.name
        target.parent.mkdir(exist_ok=True)
        try:
            os.link(path, target)
        except OSError:  # another file system, or links not allowed
            shutil.copyfile(path, target)
        with self._lock:
            if name in self._entries:  # another thread put it meanwhile
                shutil.rmtree(target.parent, ignore_errors=True)
                return
            self._entries[name] = _Entry(target, size)
            self._size += size
            self._evict()

    def _evict(self) -> None:
        """Drop the least recently used copies not in use until the cache fits (lock held)."""
        for name in list(self._entries):
            if self._size <= self.limit_bytes:
                return
            entry = self._entries[name]
            if entry.users:
                continue
            del self._entries[name]
            self._size -= entry.size
            shutil.rmtree(entry.path.parent, ignore_errors=True)

    @property
    def size(self) -> int:
        return self._size

    def clear(self) -> None:
        with self._lock:
            for name, entry in list(self._entries.items()):
                if not entry.users:
                    del self._entries[name]
                    self._size -= entry.size
                    shutil.rmtree(entry.path.parent, ignore_errors=True)


_caches: dict[tuple[int, str | None], CopyCache] = {}
_caches_lock = threading.Lock()


def copy_cache(limit_bytes: int, parent: Path | None = None) -> CopyCache:
    """The process's cache for this bound and folder, made on first use."""
    key = (limit_bytes, str(parent) if parent else None)
    with _caches_lock:
        cache = _caches.get(key)
        if cache is None:
            cache = _caches[key] = CopyCache(limit_bytes, parent)
        return cache
