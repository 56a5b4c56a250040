"""The source index: what an earlier run learned about each source object, so that a re-run
over unchanged objects does not download them again.

Kept in the output storage beside the results, one index per source location, under
``index/<hash of the source URL>/``:

- ``index.jsonl.gz``: the snapshot, one JSON line per object: key, size, version (ETag, or a
  local file's times and inode) and the sha256 of its content;
- ``delta-<run>-NNNNNN.jsonl``: entries a run learned since, written as it goes, so that an
  interrupted run keeps what it hashed. A run folds them into a new snapshot at its end.

An entry is trusted only while the listed size and version match: a changed object is read
and hashed again. The index is a cache and nothing more: an unreadable snapshot or line is
dropped with a warning (those objects are hashed again), never a failed run; a lost entry
costs one download, never a wrong result.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import json
import logging
import time
import uuid
import zlib
from collections.abc import Iterable, Iterator

from docproc.errors import ObjectNotFoundError
from docproc.storage import ObjectInfo, Storage

log = logging.getLogger(__name__)

FORMAT = 1
SNAPSHOT = "index.jsonl.gz"


@dataclasses.dataclass(frozen=True)
class Entry:
    size: int
    version: str
    sha256: str


def index_prefix(source_url: str) -> str:
    return f"index/{hashlib.sha256(source_url.encode()).hexdigest()[:16]}/"


def _lines(data: bytes, key: str) -> Iterator[tuple[str, Entry]]:
    for number, line in enumerate(data.decode("utf-8", "replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            if "format" in row:
                continue
            yield row["k"], Entry(int(row["s"]), str(row["v"]), str(row["h"]))
        except (ValueError, KeyError, TypeError):
            log.warning("index %s line %d is unreadable, dropped: %.80r", key, number, line)


def _dump(entries: Iterable[tuple[str, Entry]]) -> Iterator[str]:
    for key, entry in entries:
        yield json.dumps({"k": key, "s": entry.size, "v": entry.version, "h": entry.sha256})


class SourceIndex:
    """The index of one source location in one output storage, as one run uses it."""

    def __init__(
        self,
        dst: Storage,
        source_url: str,
        flush_every: int = 5000,
        flush_seconds: float = 30.0,
    ) -> None:
        self.dst = dst
        self.source_url = source_url
        self.prefix = index_prefix(source_url)
        self.flush_every, self.flush_seconds = flush_every, flush_seconds
        self.entries: dict[str, Entry] = {}
        self._learned: set[str] = set()
        self._run = uuid.uuid4().hex[:12]
        self._pending: list[tuple[str, Entry]] = []
        self._deltas: list[str] = []
        self._flushed_at = time.monotonic()

    # -- reading

    def _read_all(self) -> tuple[dict[str, Entry], list[str]]:
        """Snapshot and deltas as stored now (deltas in key order: later runs win), and the
        keys of the deltas read."""
        entries: dict[str, Entry] = {}
        snapshot = self.prefix + SNAPSHOT
        try:
            data = gzip.decompress(self.dst.read_bytes(snapshot))
        except ObjectNotFoundError:
            data = b""
        except (OSError, EOFError, zlib.error) as exc:  # torn or foreign: start again
            log.warning("index %s is unreadable, its objects are hashed again: %s", snapshot, exc)
            data = b""
        entries.update(_lines(data, snapshot))
        deltas = [
            o.key for o in self.dst.iter_objects(self.prefix) if o.key.rsplit("/", 1)[-1].startswith("delta-")
        ]
        for key in deltas:
            try:
                entries.update(_lines(self.dst.read_bytes(key), key))
            except ObjectNotFoundError:  # folded by a concurrent run meanwhile
                continue
        return entries, deltas

    def load(self) -> int:
        """Read what earlier runs stored; returns how many entries."""
        self.entries, _ = self._read_all()
        log.info("index %s: %d entries", self.prefix, len(self.entries))
        return len(self.entries)

    def known(self, obj: ObjectInfo) -> ObjectInfo:
        """``obj`` with its sha256 when the index has it for this very size and version."""
        entry = self.entries.get(obj.key)
        if entry is None or not obj.version or (entry.size, entry.version) != (obj.size, obj.version):
            return obj
        return dataclasses.replace(obj, sha256=entry.sha256)

    # -- learning

    def learn(self, obj: ObjectInfo, sha256: str) -> None:
        """Remember the sha256 of ``obj`` as listed (a no-op for what the index had already)."""
        if not obj.version:
            return
        entry = Entry(obj.size, obj.version, sha256)
        if self.entries.get(obj.key) == entry:
            return
        self.entries[obj.key] = entry
        self._learned.add(obj.key)
        self._pending.append((obj.key, entry))
        if len(self._pending) >= self.flush_every or time.monotonic() - self._flushed_at > self.flush_seconds:
            self.flush()

    @property
    def learned(self) -> int:
        return len(self._learned)

    def flush(self) -> None:
        """Store what was learned since the last flush as a delta: an interrupted run keeps it."""
        self._flushed_at = time.monotonic()
        if not self._pending:
            return
        key = f"{self.prefix}delta-{self._run}-{len(self._deltas) + 1:06d}.jsonl"
        self.dst.write_bytes(key, ("\n".join(_dump(self._pending)) + "\n").encode(), "application/x-ndjson")
        self._deltas.append(key)
        self._pending = []

    def save(self, listed: Iterable[str] | None = None) -> None:
        """Fold the stored deltas and this run's entries into a new snapshot.

        ``listed``: every key of the source as this run listed it, to drop the entries of
        objects that are gone (None when the run listed only part of the source).
        """
        self.flush()
        stored, deltas = self._read_all()  # a concurrent run's deltas too
        merged = {**stored, **{k: self.entries[k] for k in self._learned}}
        if listed is not None:
            keep = set(listed)
            merged = {k: v for k, v in merged.items() if k in keep}
        header = json.dumps({"format": FORMAT, "source": self.source_url})
        body = "\n".join([header, *_dump(sorted(merged.items()))]) + "\n"
        self.dst.write_bytes(
            self.prefix + SNAPSHOT, gzip.compress(body.encode(), compresslevel=6), "application/gzip"
        )
        for key in deltas:  # folded into the snapshot just written
            self.dst.delete(key)
        self._deltas = []
        self.entries = merged
        log.info("index %s saved: %d entries, %d learned by this run", self.prefix, len(merged), self.learned)
