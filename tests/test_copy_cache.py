"""The per-worker copy cache: the slices of a long document on one worker download it once.

Downloads are counted by a wrapper over a real MinIO (tests/test_index.py's ``Counting``);
the flow-level count on MinIO's own metrics is in tests/test_s3_downloads.py.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from docproc import jobs
from docproc.models import DocumentOutcome, DocumentSlice, PlannedDocument, SliceOutcome
from docproc.settings import Settings
from docproc.storage import LocalStorage
from docproc.storage.cache import CopyCache
from docproc.storage.s3 import S3Storage
from tests.documents import pages_pdf
from tests.fixtures.minio import MinioServer
from tests.test_index import BUCKET, Counting

PAGES = 16


@pytest.fixture
def s3_stores(minio_server: MinioServer) -> tuple[Counting, S3Storage]:
    run = uuid.uuid4().hex[:12]
    settings = minio_server.settings()
    return Counting(S3Storage(BUCKET, f"cache-{run}/in", settings)), S3Storage(
        BUCKET, f"cache-{run}/out", settings
    )


def _split_run(src: Counting, dst: S3Storage, settings: Settings, batch: int) -> DocumentOutcome:
    [obj] = src.iter_objects()
    doc = jobs.inspect_object(src, dst, obj, settings)
    assert isinstance(doc, PlannedDocument)
    assert doc.pages == PAGES
    for first in range(1, PAGES + 1, batch):
        piece = DocumentSlice(doc=doc, first=first, last=min(first + batch - 1, PAGES))
        assert isinstance(jobs.process_slice(src, dst, piece, settings), SliceOutcome)
    return jobs.finish_document(src, dst, doc, settings)


def test_slices_of_a_long_document_download_it_once(
    s3_stores: tuple[Counting, S3Storage], tmp_path: Path
) -> None:
    src, dst = s3_stores
    pdf = pages_pdf(tmp_path / "long.pdf", [f"Page {n} of the long report." for n in range(1, PAGES + 1)])
    src.write_file("long.pdf", pdf)
    # The engine is never used (text-layer pages): tesseract is the one cheap to build.
    settings = Settings(engine="tesseract")

    outcome = _split_run(src, dst, settings, batch=2)

    assert outcome.status == "processed", outcome
    assert outcome.pages == PAGES
    # Inspection, 8 slices and the searchable PDF: one download, the rest from the local copy.
    assert src.downloads == {"long.pdf": 1}
    assert list(dst.iter_objects("parts/")) == []


def test_without_the_cache_every_slice_downloads_again(
    s3_stores: tuple[Counting, S3Storage], tmp_path: Path
) -> None:
    """The same run with the cache switched off: what the cache saves (and proof that the
    count above measures downloads)."""
    src, dst = s3_stores
    pdf = pages_pdf(tmp_path / "long.pdf", [f"Page {n} of the long report." for n in range(1, PAGES + 1)])
    src.write_file("long.pdf", pdf)
    outcome = _split_run(src, dst, Settings(engine="tesseract", copy_cache_bytes=0), batch=2)
    assert outcome.status == "processed", outcome
    assert src.downloads["long.pdf"] == 1 + PAGES // 2 + 1


def test_a_changed_object_is_not_served_from_a_stale_copy(s3_stores: tuple[Counting, S3Storage]) -> None:
    src, dst = s3_stores
    settings = Settings(engine="tesseract", markdown=False)
    src.write_bytes("memo.txt", b"Memo: the meeting moved to 2024-06-01.")
    [obj] = src.iter_objects()
    first = jobs.inspect_object(src, dst, obj, settings)
    src.write_bytes("memo.txt", b"Memo: the meeting moved to 2024-09-30.")
    [obj] = src.iter_objects()
    second = jobs.inspect_object(src, dst, obj, settings)
    assert isinstance(first, PlannedDocument)
    assert isinstance(second, PlannedDocument)
    assert first.id != second.id
    result = jobs.process_document(src, dst, second, settings)
    assert result.status == "processed"
    text = dst.read_bytes(jobs.text_key(second.id, settings)).decode()
    assert "2024-09-30" in text


def test_cache_is_bounded_private_and_keeps_copies_in_use(tmp_path: Path) -> None:
    cache = CopyCache(limit_bytes=250, parent=tmp_path)
    assert stat.S_IMODE(cache.folder.stat().st_mode) == 0o700  # sources are nobody else's business
    files = []
    for n in range(3):
        path = tmp_path / f"doc-{n}.pdf"
        path.write_bytes(bytes([n]) * 100)
        files.append(path)
    cache.put("s3://b", "doc-0.pdf", "id0", files[0])
    with cache.get("s3://b", "doc-0.pdf", "id0") as held:
        assert held is not None
        assert held.read_bytes() == files[0].read_bytes()
        cache.put("s3://b", "doc-1.pdf", "id1", files[1])
        cache.put("s3://b", "doc-2.pdf", "id2", files[2])  # over the bound: doc-1 goes, not doc-0
        assert held.exists()
    assert cache.size <= 250
    with cache.get("s3://b", "doc-1.pdf", "id1") as gone:
        assert gone is None
    with cache.get("s3://b", "doc-0.pdf", "other-id") as other:
        assert other is None  # another content under the same key is another entry
    too_big = tmp_path / "big.pdf"
    too_big.write_bytes(b"x" * 300)
    cache.put("s3://b", "big.pdf", "idb", too_big)
    with cache.get("s3://b", "big.pdf", "idb") as big:
        assert big is None


def test_a_killed_workers_copies_are_removed_by_the_next_cache(tmp_path: Path) -> None:
    code = (
        "import os, sys\n"
        "from pathlib import Path\n"
        "from docproc.storage.cache import CopyCache\n"
        "cache = CopyCache(1000, Path(sys.argv[1]))\n"
        "(Path(sys.argv[1]) / 'doc.pdf').write_bytes(b'secret')\n"
        "cache.put('s3://b', 'doc.pdf', 'id', Path(sys.argv[1]) / 'doc.pdf')\n"
        "print(cache.folder, flush=True)\n"
        "os.kill(os.getpid(), 9)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, check=False
    )
    assert proc.returncode == -9, proc.stderr
    left = Path(proc.stdout.strip())
    assert left.is_dir()
    assert any(left.rglob("doc.pdf"))

    cache = CopyCache(1000, tmp_path)
    assert not left.exists()
    assert cache.folder.is_dir()


def test_local_folders_are_read_in_place(tmp_path: Path) -> None:
    """A folder needs no copy: the cache is not used for it."""
    src = LocalStorage(tmp_path / "in")
    assert not src.copies_on_read
    src.write_bytes("a.txt", b"hello")
    with jobs.document_copy(src, "a.txt", "id", Settings()) as path:
        assert path == tmp_path / "in" / "a.txt"
    assert os.path.exists(path)
