"""The source index: what an earlier run learned about each source object, so that a re-run
over unchanged objects does not download them again.

Kept in the output storage beside the results, one index per source location, under
``index/<hash of the source URL>/``:

- ``index.jsonl.gz``: the snapshot, one JSON line per object: key, size, version (ETag, or a
  local file's times and inode) and the sha256 of its content, and for a document with a
  result, that result's settings fingerprint and size and the outcome's summary (quality,
  type, language, pages);
- ``delta-<run>-NNNNNN.jsonl``: entries a run learned since, written as it goes, so that an
  interrupted run keeps what it hashed. A run folds them into a new snapshot at its end.

An entry is trusted only while the listed size and version match: a changed object is read
and hashed again. A re-run reports an unchanged document whose result is listed with the size
the index recorded as skipped without any call for it (:meth:`SourceIndex.unchanged_outcome`);
with another size, or without one recorded, a worker reads and checks the result. The index is a cache and nothing more: an unreadable snapshot or line is
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
from collections.abc import Iterable, Iterator, Mapping

from docproc.errors import ObjectNotFoundError
from docproc.models import DocumentOutcome
from docproc.storage import ObjectInfo, Storage

log = logging.getLogger(__name__)

FORMAT = 1
SNAPSHOT = "index.jsonl.gz"


@dataclasses.dataclass(frozen=True)
class Done:
    """A document's result under one settings fingerprint, and what its outcome said."""

    fingerprint: str
    result_size: int  # -1 until the run that wrote it saw it listed
    quality: str | None
    document_type: str | None
    language: str | None
    pages: int


@dataclasses.dataclass(frozen=True)
class Entry:
    size: int
    version: str
    sha256: str
    done: Done | None = None


def result_key(doc_id: str, fingerprint: str) -> str:
    """Where a result lives (``docproc.jobs.result_key`` for one fingerprint)."""
    return f"results/{doc_id}-{fingerprint}.json"


def index_prefix(source_url: str) -> str:
    return f"index/{hashlib.sha256(source_url.encode()).hexdigest()[:16]}/"


def _done(row: list[object]) -> Done:
    fingerprint, size, quality, document_type, language, pages = row
    return Done(
        str(fingerprint),
        int(str(size)),
        None if quality is None else str(quality),
        None if document_type is None else str(document_type),
        None if language is None else str(language),
        int(str(pages)),
    )


def _lines(data: bytes, key: str) -> Iterator[tuple[str, Entry]]:
    for number, line in enumerate(data.decode("utf-8", "replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            if "format" in row:
                continue
            done = row.get("r")
            yield (
                row["k"],
                Entry(
                    int(row["s"]),
                    str(row["v"]),
                    str(row["h"]),
                    None if done is None else _done(done),
                ),
            )
        except (ValueError, KeyError, TypeError, IndexError):
            log.warning("index %s line %d is unreadable, dropped: %.80r", key, number, line)


def _dump(entries: Iterable[tuple[str, Entry]]) -> Iterator[str]:
    for key, entry in entries:
        row: dict[str, object] = {"k": key, "s": entry.size, "v": entry.version, "h": entry.sha256}
        if entry.done is not None:
            row["r"] = dataclasses.astuple(entry.done)
        yield json.dumps(row)


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

    def _entry(self, obj: ObjectInfo) -> Entry | None:
        entry = self.entries.get(obj.key)
        if entry is None or not obj.version or (entry.size, entry.version) != (obj.size, obj.version):
            return None
        return entry

    def known(self, obj: ObjectInfo) -> ObjectInfo:
        """``obj`` with its sha256 when the index has it for this very size and version."""
        entry = self._entry(obj)
        return obj if entry is None else dataclasses.replace(obj, sha256=entry.sha256)

    def unchanged_outcome(
        self, obj: ObjectInfo, fingerprint: str, results: Mapping[str, int]
    ) -> DocumentOutcome | None:
        """The outcome of an unchanged object whose result is there as it was written: listed
        in ``results`` (key -> size, one listing of results/) with the size recorded for it."""
        entry = self._entry(obj)
        done = None if entry is None else entry.done
        if entry is None or done is None or done.fingerprint != fingerprint:
            return None
        key = result_key(entry.sha256, fingerprint)
        if done.result_size < 1 or results.get(key) != done.result_size:
            return None
        try:
            return self._skipped(obj.key, entry.sha256, key, done)
        except ValueError as exc:  # a foreign or edited entry: let a worker look
            log.warning("index entry of %s is unusable: %s", obj.key, exc)
            return None

    @staticmethod
    def _skipped(source: str, doc_id: str, key: str, done: Done) -> DocumentOutcome:
        return DocumentOutcome.model_validate(
            {
                "source": source,
                "id": doc_id,
                "status": "skipped",
                "reason": "result_exists",
                "result_key": key,
                "quality": done.quality,
                "document_type": done.document_type,
                "language": done.language,
                "pages": done.pages,
            }
        )

    # -- learning

    def learn(self, obj: ObjectInfo, sha256: str) -> None:
        """Remember the sha256 of ``obj`` as listed (a no-op for what the index had already)."""
        if not obj.version:
            return
        old = self.entries.get(obj.key)
        if old is not None and (old.size, old.version, old.sha256) == (obj.size, obj.version, sha256):
            return
        entry = Entry(obj.size, obj.version, sha256)
        self.entries[obj.key] = entry
        self._learned.add(obj.key)
        self._pending.append((obj.key, entry))
        if len(self._pending) >= self.flush_every or time.monotonic() - self._flushed_at > self.flush_seconds:
            self.flush()

    def finished(self, outcome: DocumentOutcome, fingerprint: str) -> None:
        """Remember what a document with a result under ``fingerprint`` came to (a worker's
        outcome, not one of :meth:`unchanged_outcome`), for the next run; the size of its result
        as it is now is filled in by :meth:`save`."""
        entry = self.entries.get(outcome.source)
        if (
            entry is None
            or outcome.status == "quarantined"
            or outcome.result_key != result_key(entry.sha256, fingerprint)
        ):
            return
        done = Done(fingerprint, -1, outcome.quality, outcome.document_type, outcome.language, outcome.pages)
        self.entries[outcome.source] = dataclasses.replace(entry, done=done)
        self._learned.add(outcome.source)

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

    def save(self, listed: Iterable[str] | None = None, results: Mapping[str, int] | None = None) -> None:
        """Fold the stored deltas and this run's entries into a new snapshot.

        ``listed``: every key of the source as this run listed it, to drop the entries of
        objects that are gone (None when the run listed only part of the source).
        ``results``: results/ as listed now (key -> size), to record the size of the results
        this run wrote or found.
        """
        self.flush()
        stored, deltas = self._read_all()  # a concurrent run's deltas too
        merged = {**stored, **{k: self.entries[k] for k in self._learned}}
        if listed is not None:
            keep = set(listed)
            merged = {k: v for k, v in merged.items() if k in keep}
        if results is not None:
            for key in self._learned:
                entry = merged.get(key)
                if entry is None or entry.done is None or entry.done.result_size >= 0:
                    continue
                size = results.get(result_key(entry.sha256, entry.done.fingerprint), -1)
                merged[key] = dataclasses.replace(
                    entry, done=dataclasses.replace(entry.done, result_size=size)
                )
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
