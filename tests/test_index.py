"""The source index: a re-run over unchanged objects downloads none of them; a changed one is
read, hashed and processed again. One contract over a local folder and a real MinIO.

Downloads are counted by a thin wrapper over the real storage (every ``local_copy`` call is a
download on S3 and a full read on a folder); the flow-level count on MinIO's own request
metrics is in tests/test_s3_downloads.py.
"""

from __future__ import annotations

import gzip
import logging
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import pytest

from docproc import jobs
from docproc.index import SNAPSHOT, SourceIndex, index_prefix
from docproc.models import DocumentOutcome, PlannedDocument
from docproc.settings import Settings
from docproc.storage import LocalStorage, ObjectInfo, Storage
from docproc.storage.s3 import S3Storage
from tests.fixtures.minio import MinioServer

BUCKET = "docproc-test"
TEXTS = {f"inbox/memo-{i}.txt": f"Memo {i}: meeting moved to 2024-06-0{i}.".encode() for i in range(1, 6)}


class Counting(Storage):
    """The real storage, with its downloads (``local_copy``) and reads counted per key."""

    def __init__(self, inner: Storage) -> None:
        self.inner = inner
        self.copies_on_read = inner.copies_on_read
        self.downloads: Counter[str] = Counter()
        self.reads: Counter[str] = Counter()

    @property
    def url(self) -> str:
        return self.inner.url

    def iter_objects(self, prefix: str = "") -> Iterator[ObjectInfo]:
        return self.inner.iter_objects(prefix)

    def exists(self, key: str) -> bool:
        return self.inner.exists(key)

    def read_bytes(self, key: str) -> bytes:
        self.reads[key] += 1
        return self.inner.read_bytes(key)

    def write_bytes(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        self.inner.write_bytes(key, data, content_type)

    def write_file(self, key: str, path: Path, content_type: str = "application/octet-stream") -> None:
        self.inner.write_file(key, path, content_type)

    def local_copy(self, key: str) -> AbstractContextManager[Path]:
        self.downloads[key] += 1
        return self.inner.local_copy(key)

    def delete(self, key: str) -> None:
        self.inner.delete(key)


@pytest.fixture(params=["local", "s3"])
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Counting, Counting]:
    if request.param == "local":
        return Counting(LocalStorage(tmp_path / "in")), Counting(LocalStorage(tmp_path / "out"))
    server: MinioServer = request.getfixturevalue("minio_server")
    run = uuid.uuid4().hex[:12]
    settings = server.settings()
    return Counting(S3Storage(BUCKET, f"index-{run}/in", settings)), Counting(
        S3Storage(BUCKET, f"index-{run}/out", settings)
    )


def _results(dst: Storage) -> dict[str, int]:
    return {o.key: o.size for o in dst.iter_objects("results/")}


def _run(src: Counting, dst: Storage, settings: Settings) -> list[DocumentOutcome]:
    """What the flow does around inspection, in one process: list; report what is unchanged
    with its result as written; inspect the rest (by its known sha256 where the index has it),
    learn, process what is new; save the index."""
    index = SourceIndex(dst, src.url)
    fingerprint = settings.fingerprint()
    results = _results(dst) if index.load() else {}
    listed = list(src.iter_objects("inbox"))
    outcomes = []
    for listed_obj in listed:
        obj = index.known(listed_obj)
        found = index.unchanged_outcome(obj, fingerprint, results)
        if found is None:
            found = jobs.inspect_object(src, dst, obj, settings)
            if isinstance(found, PlannedDocument):
                index.learn(obj, found.id)
                found = jobs.process_document(src, dst, found, settings)
            elif found.id is not None:
                index.learn(obj, found.id)
            index.finished(found, fingerprint)
        outcomes.append(found)
    index.save((o.key for o in listed), _results(dst))
    return outcomes


def _result_reads(dst: Counting) -> int:
    return sum(n for key, n in dst.reads.items() if key.startswith("results/"))


def test_rerun_over_unchanged_objects_downloads_none(stores: tuple[Counting, Counting]) -> None:
    src, dst = stores
    settings = Settings(markdown=False)
    for key, data in TEXTS.items():
        src.write_bytes(key, data)

    first = _run(src, dst, settings)
    assert [o.status for o in first] == ["processed"] * len(TEXTS)
    assert sum(src.downloads.values()) >= len(TEXTS)
    assert [o.key for o in dst.iter_objects("index/")] == [index_prefix(src.url) + SNAPSHOT]

    src.downloads.clear()
    dst.reads.clear()
    second = _run(src, dst, settings)
    assert [(o.status, o.reason) for o in second] == [("skipped", "result_exists")] * len(TEXTS)
    assert src.downloads == Counter()  # nothing downloaded, nothing read
    assert _result_reads(dst) == 0  # nor any result: the index and one listing of results/ said it
    assert [o.id for o in second] == [o.id for o in first]
    assert [(o.quality, o.document_type, o.language, o.pages) for o in second] == [
        (o.quality, o.document_type, o.language, o.pages) for o in first
    ]

    # Same size, other content: the listing's version changes, so it is read and hashed again.
    changed = "inbox/memo-3.txt"
    src.write_bytes(changed, TEXTS[changed].replace(b"Memo 3", b"Memo 9"))
    src.downloads.clear()
    third = _run(src, dst, settings)
    assert {o.source: o.status for o in third if o.status != "skipped"} == {changed: "processed"}
    assert set(src.downloads) == {changed}
    assert next(o for o in third if o.source == changed).id != first[2].id

    # A deleted object leaves the index with the next full listing.
    src.delete("inbox/memo-5.txt")
    _run(src, dst, settings)
    index = SourceIndex(dst, src.url)
    index.load()
    assert sorted(index.entries) == sorted(k for k in TEXTS if k != "inbox/memo-5.txt")


def test_a_result_changed_since_it_was_written_is_read_again(stores: tuple[Counting, Counting]) -> None:
    src, dst = stores
    settings = Settings(markdown=False)
    for key, data in TEXTS.items():
        src.write_bytes(key, data)
    first = _run(src, dst, settings)
    key = first[0].result_key
    assert key is not None

    # Still valid, another size: a worker reads it (no download) and the index records it anew.
    dst.write_bytes(key, dst.read_bytes(key) + b"\n")
    src.downloads.clear()
    dst.reads.clear()
    edited = _run(src, dst, settings)
    assert [o.status for o in edited] == ["skipped"] * len(TEXTS)
    assert src.downloads == Counter()
    assert _result_reads(dst) == 1
    dst.reads.clear()
    assert [o.status for o in _run(src, dst, settings)] == ["skipped"] * len(TEXTS)
    assert _result_reads(dst) == 0

    # Unreadable: the document is processed again.
    dst.write_bytes(key, b'{"schema_version": 1, "id": ')
    src.downloads.clear()
    broken = _run(src, dst, settings)
    assert [o.status for o in broken] == ["processed"] + ["skipped"] * (len(TEXTS) - 1)
    assert set(src.downloads) == {first[0].source}


def test_torn_or_stale_index_costs_downloads_not_results(
    stores: tuple[Counting, Counting], caplog: pytest.LogCaptureFixture
) -> None:
    src, dst = stores
    settings = Settings(markdown=False)
    for key, data in TEXTS.items():
        src.write_bytes(key, data)
    first = _run(src, dst, settings)
    snapshot = index_prefix(src.url) + SNAPSHOT

    # Torn: the snapshot cut in the middle. Every object is hashed again, nothing reprocessed.
    dst.write_bytes(snapshot, dst.read_bytes(snapshot)[:40])
    src.downloads.clear()
    with caplog.at_level(logging.WARNING, logger="docproc.index"):
        torn = _run(src, dst, settings)
    assert "unreadable" in caplog.text
    assert [o.status for o in torn] == ["skipped"] * len(TEXTS)
    assert set(src.downloads) == set(TEXTS)
    assert [o.id for o in torn] == [o.id for o in first]

    # Stale or lying: an entry whose version no longer matches is not trusted, and one line
    # that is not JSON at all is dropped while the others still count.
    lines = gzip.decompress(dst.read_bytes(snapshot)).decode().splitlines()
    lines = [line.replace('"v": "', '"v": "old-') if "memo-1" in line else line for line in lines] + [
        "{not json"
    ]
    dst.write_bytes(snapshot, gzip.compress(("\n".join(lines) + "\n").encode()))
    src.downloads.clear()
    stale = _run(src, dst, settings)
    assert [o.status for o in stale] == ["skipped"] * len(TEXTS)
    assert set(src.downloads) == {"inbox/memo-1.txt"}


def test_an_interrupted_run_keeps_what_it_hashed(stores: tuple[Counting, Counting]) -> None:
    """Entries are stored as deltas while a run goes on; a run that never saves its snapshot
    (killed) still spares the next one the downloads it made."""
    src, dst = stores
    settings = Settings(markdown=False)
    for key, data in TEXTS.items():
        src.write_bytes(key, data)
    index = SourceIndex(dst, src.url, flush_every=2)
    for obj in src.iter_objects("inbox"):
        found = jobs.inspect_object(src, dst, obj, settings)
        assert isinstance(found, PlannedDocument)
        index.learn(obj, found.id)
        jobs.process_document(src, dst, found, settings)
    # No save(): the run was killed. Two deltas of two entries each were flushed.
    assert len([o for o in dst.iter_objects(index_prefix(src.url)) if "delta-" in o.key]) == 2

    src.downloads.clear()
    rerun = _run(src, dst, settings)
    assert [o.status for o in rerun] == ["skipped"] * len(TEXTS)
    assert set(src.downloads) == {"inbox/memo-5.txt"}  # the one entry never flushed
    assert [o.key for o in dst.iter_objects(index_prefix(src.url))] == [index_prefix(src.url) + SNAPSHOT]


def test_index_is_kept_per_source_location(tmp_path: Path) -> None:
    dst = LocalStorage(tmp_path / "out")
    one, other = LocalStorage(tmp_path / "a"), LocalStorage(tmp_path / "b")
    assert index_prefix(one.url) != index_prefix(other.url)
    for src in (one, other):
        src.write_bytes("x.txt", b"same key, other source")
        index = SourceIndex(dst, src.url)
        [obj] = src.iter_objects()
        index.learn(obj, "ab" * 32)
        index.save([obj.key])
    assert len({o.key.split("/")[1] for o in dst.iter_objects("index/")}) == 2
