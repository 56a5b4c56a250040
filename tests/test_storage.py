"""One contract suite for both storages: a local folder and a prefix of a bucket on a real MinIO.

Every test in ``TestStorageContract`` runs against both implementations; what only one of
them can show (symlink escapes on disk, object names in the bucket) follows in its own class.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import tracemalloc
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from docproc.errors import (
    AccessDeniedError,
    ConfigurationError,
    ObjectNotFoundError,
    PermanentDocumentError,
    SourceMissingError,
)
from docproc.jobs import sha256_file
from docproc.settings import Settings
from docproc.storage import LocalStorage, ObjectInfo, Storage, open_storage, source_copy
from docproc.storage.s3 import S3Storage
from tests.fixtures.minio import MinioServer

BUCKET = "docproc-test"
MiB = 2**20


@pytest.fixture(params=["local", "s3"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Storage:
    if request.param == "local":
        return LocalStorage(tmp_path / "root")
    server: MinioServer = request.getfixturevalue("minio_server")
    # A fresh prefix per test: the bucket is shared by the whole session.
    return S3Storage(BUCKET, f"contract-{uuid.uuid4().hex[:12]}", server.settings())


def write_random_file(path: Path, size: int, chunk: int = MiB) -> str:
    """Random (incompressible) content written a chunk at a time; returns its sha256."""
    digest = hashlib.sha256()
    with path.open("wb") as fh:
        for _ in range(size // chunk):
            block = os.urandom(chunk)
            digest.update(block)
            fh.write(block)
    return digest.hexdigest()


UNSAFE_KEYS = [
    "../outside.txt",
    "inbox/../../outside.txt",
    "inbox/..",
    "..",
    "/etc/passwd",
    "/abs/path.txt",
    "",
    "a\\..\\b",
    "nul\x00byte",
]


class TestStorageContract:
    def test_write_read_exists_list_delete(self, storage: Storage) -> None:
        assert not storage.exists("inbox/a.txt")
        storage.write_bytes("inbox/a.txt", b"hello", content_type="text/plain")
        assert storage.exists("inbox/a.txt")
        assert storage.read_bytes("inbox/a.txt") == b"hello"
        assert [(o.key, o.size) for o in storage.iter_objects()] == [("inbox/a.txt", 5)]
        storage.delete("inbox/a.txt")
        assert not storage.exists("inbox/a.txt")
        assert list(storage.iter_objects()) == []
        storage.delete("inbox/a.txt")  # deleting what is gone is not an error

    def test_listing_gives_a_version_that_changes_with_the_content(self, storage: Storage) -> None:
        """What the index trusts instead of downloading: same size and version, same content."""
        storage.write_bytes("inbox/a.txt", b"hello")
        [first] = storage.iter_objects("inbox/a.txt")
        assert first.version
        assert first.sha256 is None  # only the flow's index knows a hash without reading
        [again] = storage.iter_objects()
        assert again == first  # listing twice: nothing changed
        storage.write_bytes("inbox/a.txt", b"world")  # same size, other content
        [changed] = storage.iter_objects()
        assert (changed.key, changed.size) == (first.key, first.size)
        assert changed.version != first.version
        assert changed == ObjectInfo("inbox/a.txt", 5, changed.version)

    def test_listing_is_recursive_sorted_and_prefix_bounded(self, storage: Storage) -> None:
        for key in ["inbox/b.pdf", "inbox/sub/c.txt", "inbox/a.pdf", "inbox2/x.pdf", "results/r.json"]:
            storage.write_bytes(key, key.encode())
        storage.write_bytes("inbox/.hidden", b"not part of the tree")
        assert [o.key for o in storage.iter_objects("inbox")] == [
            "inbox/a.pdf",
            "inbox/b.pdf",
            "inbox/sub/c.txt",
        ]
        assert [o.key for o in storage.iter_objects("inbox/")] == [
            "inbox/a.pdf",
            "inbox/b.pdf",
            "inbox/sub/c.txt",
        ]
        assert [o.key for o in storage.iter_objects()] == [
            "inbox/a.pdf",
            "inbox/b.pdf",
            "inbox/sub/c.txt",
            "inbox2/x.pdf",
            "results/r.json",
        ]
        assert [o.size for o in storage.iter_objects("results")] == [len(b"results/r.json")]
        assert [(o.key, o.size) for o in storage.iter_objects("inbox/a.pdf")] == [("inbox/a.pdf", 11)]
        assert list(storage.iter_objects("nothing-here")) == []

    def test_overwrite_is_atomic_for_readers(self, storage: Storage, tmp_path: Path) -> None:
        # Large enough to be a multipart upload on S3 and a multi-write copy on disk.
        old, new = tmp_path / "old.bin", tmp_path / "new.bin"
        old_sha = write_random_file(old, 12 * MiB)
        new_sha = write_random_file(new, 12 * MiB)
        storage.write_file("results/doc.bin", old)
        seen: set[str] = set()
        stop = threading.Event()
        errors: list[Exception] = []

        def reader() -> None:
            try:
                while not stop.is_set():
                    seen.add(hashlib.sha256(storage.read_bytes("results/doc.bin")).hexdigest())
            except Exception as exc:  # noqa: BLE001 - handed to the main thread, which asserts on it
                errors.append(exc)

        thread = threading.Thread(target=reader)
        thread.start()
        try:
            for source in (new, old, new):
                storage.write_file("results/doc.bin", source)
        finally:
            stop.set()
            thread.join(60)
        assert not errors, errors
        assert seen, "the reader never completed a read"
        assert seen <= {old_sha, new_sha}, "a reader saw a partial or mixed object"
        assert hashlib.sha256(storage.read_bytes("results/doc.bin")).hexdigest() == new_sha

    @pytest.mark.parametrize(
        "key",
        [
            "inbox/my scan (1).pdf",
            "inbox/été/straße 日本語.txt",
            "inbox/a+b%20c#d?e=f&g.txt",
            "inbox/emoji 📄 tab\tname.txt",
            "inbox/ leading and trailing spaces .txt",
        ],
    )
    def test_awkward_keys_round_trip(self, storage: Storage, key: str) -> None:
        storage.write_bytes(key, key.encode())
        assert storage.exists(key)
        assert storage.read_bytes(key) == key.encode()
        assert [o.key for o in storage.iter_objects("inbox")] == [key]
        with storage.local_copy(key) as path:
            assert path.read_bytes() == key.encode()
        storage.delete(key)
        assert not storage.exists(key)

    def test_very_long_key(self, storage: Storage) -> None:
        # Room is left for an S3 prefix: the limit (1024 bytes) is on the whole object name.
        component = "é" * 100  # 200 bytes, within any file system's 255-byte name limit
        key = "/".join([component] * 4) + "/" + "n" * 150 + ".txt"
        assert 900 < len(key.encode()) < 1000
        storage.write_bytes(key, b"long")
        assert storage.read_bytes(key) == b"long"
        assert [o.key for o in storage.iter_objects()] == [key]

    def test_too_long_key_is_refused(self, storage: Storage) -> None:
        key = "/".join(["x" * 200] * 6)  # 1205 bytes
        with pytest.raises(ConfigurationError):
            storage.write_bytes(key, b"x")
        assert list(storage.iter_objects()) == []

    def test_overlong_path_component_is_refused(self, storage: Storage) -> None:
        # 255 bytes is the file-name limit of local file systems and of MinIO's object names.
        key = "inbox/" + "é" * 150 + ".pdf"  # one 304-byte component
        with pytest.raises(ConfigurationError):
            storage.write_bytes(key, b"x")
        assert list(storage.iter_objects()) == []

    @pytest.mark.parametrize("key", UNSAFE_KEYS)
    def test_unsafe_keys_are_refused(self, storage: Storage, tmp_path: Path, key: str) -> None:
        source = tmp_path / "source.txt"
        source.write_bytes(b"payload")
        with pytest.raises(ConfigurationError):
            storage.write_bytes(key, b"payload")
        with pytest.raises(ConfigurationError):
            storage.write_file(key, source)
        with pytest.raises(ConfigurationError):
            storage.read_bytes(key)
        with pytest.raises(ConfigurationError):
            storage.exists(key)
        with pytest.raises(ConfigurationError):
            storage.delete(key)
        with pytest.raises(ConfigurationError), storage.local_copy(key):
            pass
        assert list(storage.iter_objects()) == []

    def test_redundant_separators_are_normalized(self, storage: Storage) -> None:
        storage.write_bytes("inbox//sub/./a.txt", b"x")
        assert storage.exists("inbox/sub/a.txt")
        assert [o.key for o in storage.iter_objects()] == ["inbox/sub/a.txt"]

    def test_missing_key(self, storage: Storage) -> None:
        assert not storage.exists("inbox/missing.pdf")
        with pytest.raises(ObjectNotFoundError):
            storage.read_bytes("inbox/missing.pdf")
        with pytest.raises(ObjectNotFoundError), storage.local_copy("inbox/missing.pdf"):
            pass

    def test_vanished_source_is_a_document_error(self, storage: Storage) -> None:
        storage.write_bytes("inbox/gone.pdf", b"%PDF-1.7")
        listed = list(storage.iter_objects("inbox"))
        storage.delete("inbox/gone.pdf")  # deleted between listing and processing
        with (
            pytest.raises(SourceMissingError, match=r"gone\.pdf") as info,
            source_copy(storage, listed[0].key),
        ):
            pass
        assert isinstance(info.value, PermanentDocumentError)
        assert info.value.reason == "source_missing"
        storage.write_bytes("inbox/here.pdf", b"%PDF-1.7")
        with source_copy(storage, "inbox/here.pdf") as path:
            assert path.read_bytes() == b"%PDF-1.7"

    def test_write_file_from_missing_local_file(self, storage: Storage, tmp_path: Path) -> None:
        with pytest.raises(FileNotFoundError):
            storage.write_file("inbox/x.pdf", tmp_path / "does-not-exist.pdf")
        assert not storage.exists("inbox/x.pdf")

    def test_large_file_streams_with_bounded_memory(self, storage: Storage, tmp_path: Path) -> None:
        size = 40 * MiB
        source = tmp_path / "big.pdf"
        sha = write_random_file(source, size)
        tracemalloc.start()
        try:
            storage.write_file("inbox/big.pdf", source, content_type="application/pdf")
            _, upload_peak = tracemalloc.get_traced_memory()
            tracemalloc.reset_peak()
            with storage.local_copy("inbox/big.pdf") as path:
                _, download_peak = tracemalloc.get_traced_memory()
                assert path.suffix == ".pdf"
                assert path.stat().st_size == size
                copy_sha = sha256_file(path)
        finally:
            tracemalloc.stop()
        assert copy_sha == sha
        assert [(o.key, o.size) for o in storage.iter_objects("inbox")] == [("inbox/big.pdf", size)]
        # One multipart part (5 MiB) plus buffers, never the whole 40 MiB file.
        assert upload_peak < 12 * MiB, f"upload peak {upload_peak / MiB:.1f} MiB"
        assert download_peak < 4 * MiB, f"download peak {download_peak / MiB:.1f} MiB"

    def test_url_names_the_root(
        self, storage: Storage, tmp_path: Path, request: pytest.FixtureRequest
    ) -> None:
        if isinstance(storage, S3Storage):
            assert storage.url == f"s3://{BUCKET}/{storage.prefix}"
            settings = request.getfixturevalue("minio_server").settings()
        else:
            assert storage.url == str(tmp_path / "root")
            settings = Settings()
        storage.write_bytes("inbox/a.txt", b"a")
        reopened = open_storage(storage.url, settings)
        assert type(reopened) is type(storage)
        assert reopened.url == storage.url
        assert reopened.read_bytes("inbox/a.txt") == b"a"


class TestLocalStorageStaysInsideRoot:
    def test_nothing_lands_outside_the_root(self, tmp_path: Path) -> None:
        root = tmp_path / "dest"
        outside = tmp_path / "outside"
        outside.mkdir()
        (root / "results").mkdir(parents=True)
        # A symlinked folder inside DEST that points out of it.
        (root / "results" / "escape").symlink_to(outside, target_is_directory=True)
        (root / "escape-file").symlink_to(outside / "victim.txt")
        (outside / "victim.txt").write_bytes(b"untouched")
        storage = LocalStorage(root)
        for key in [*UNSAFE_KEYS, "results/escape/x.json", "results/escape/../../../x.json"]:
            with pytest.raises(ConfigurationError):
                storage.write_bytes(key, b"attack")
        with pytest.raises(ConfigurationError):
            storage.write_bytes("escape-file", b"attack")
        with pytest.raises(ConfigurationError):
            storage.delete("escape-file")
        assert sorted(p.name for p in outside.iterdir()) == ["victim.txt"]
        assert (outside / "victim.txt").read_bytes() == b"untouched"
        assert sorted(p.name for p in tmp_path.iterdir()) == ["dest", "outside"]

    def test_listing_does_not_follow_links_out_of_the_root(self, tmp_path: Path) -> None:
        root = tmp_path / "src"
        outside = tmp_path / "secret"
        outside.mkdir()
        (outside / "passwd").write_bytes(b"x")
        (root / "inbox").mkdir(parents=True)
        (root / "inbox" / "a.pdf").write_bytes(b"a")
        (root / "inbox" / "link.pdf").symlink_to(outside / "passwd")
        (root / "inbox" / "dir").symlink_to(outside, target_is_directory=True)
        assert [o.key for o in LocalStorage(root).iter_objects()] == ["inbox/a.pdf"]


class TestLocalStorageIsDurable:
    def test_writes_are_fsynced_before_and_after_the_rename(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A power cut cannot be staged here, so the test records the real system calls (they
        still run) and checks the order a crash-safe write needs: the data reaches the disk
        before the rename makes it visible, and the rename itself is fsynced in its folder.
        Without that, a crash can leave an empty result that breaks every later run."""
        storage = LocalStorage(tmp_path / "root")
        calls: list[tuple[str, str]] = []
        real_fsync, real_replace = os.fsync, os.replace

        def fsync(fd: int) -> None:
            calls.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
            real_fsync(fd)

        def replace(src: str, dst: str) -> None:
            calls.append(("replace", str(dst)))
            real_replace(src, dst)

        monkeypatch.setattr(os, "fsync", fsync)
        monkeypatch.setattr(os, "replace", replace)
        source = tmp_path / "scan.pdf"
        source.write_bytes(b"%PDF-1.7 scan")
        for key, write in [
            ("results/new/a.json", lambda k: storage.write_bytes(k, b"{}")),
            ("results/new/a.json", lambda k: storage.write_bytes(k, b'{"v": 2}')),
            ("quarantine/x/scan.pdf", lambda k: storage.write_file(k, source)),
        ]:
            calls.clear()
            write(key)
            target = storage.root / key
            replaced = calls.index(("replace", str(target)))
            tmp_synced = [
                i
                for i, (op, path) in enumerate(calls)
                if op == "fsync"
                and Path(path).parent == target.parent
                and Path(path).name.startswith(".tmp-")
            ]
            assert tmp_synced, calls
            assert tmp_synced[0] < replaced, calls
            assert ("fsync", str(target.parent)) in calls[replaced + 1 :], calls
        assert storage.read_bytes("results/new/a.json") == b'{"v": 2}'
        assert storage.read_bytes("quarantine/x/scan.pdf") == b"%PDF-1.7 scan"
        assert not [p for p in (storage.root / "results/new").iterdir() if p.name.startswith(".tmp-")]

    def test_new_folders_are_fsynced_in_their_parent(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        storage = LocalStorage(tmp_path / "root")
        synced: list[str] = []
        real_fsync = os.fsync

        def fsync(fd: int) -> None:
            synced.append(os.readlink(f"/proc/self/fd/{fd}"))
            real_fsync(fd)

        monkeypatch.setattr(os, "fsync", fsync)
        storage.write_bytes("text/deep/er/t.txt", b"t")
        root = storage.root
        for folder in (root, root / "text", root / "text/deep", root / "text/deep/er"):
            assert str(folder) in synced, synced


class TestLocalStorageUnreadableFile:
    def test_an_unreadable_file_is_access_denied(self) -> None:
        """A file the process may not read is a per-document AccessDeniedError, not a
        PermissionError that fails the run. Root reads everything, so as root the check runs
        in a child process with the uid and gid of nobody (util-linux setpriv)."""
        root = Path(tempfile.mkdtemp(prefix="docproc-perm-"))
        try:
            root.chmod(0o755)
            (root / "inbox").mkdir(mode=0o755)
            (root / "inbox" / "secret.txt").write_bytes(b"payroll")
            (root / "inbox" / "secret.txt").chmod(0o000)
            (root / "inbox" / "open.txt").write_bytes(b"hello")
            (root / "inbox" / "open.txt").chmod(0o644)
            check = (
                "import sys\n"
                "from pathlib import Path\n"
                "from docproc.errors import AccessDeniedError\n"
                "from docproc.storage import LocalStorage, source_copy\n"
                "storage = LocalStorage(Path(sys.argv[1]))\n"
                "assert storage.read_bytes('inbox/open.txt') == b'hello'\n"
                "for attempt in (lambda: storage.read_bytes('inbox/secret.txt'),\n"
                "                lambda: source_copy(storage, 'inbox/secret.txt').__enter__()):\n"
                "    try:\n"
                "        attempt()\n"
                "    except AccessDeniedError as exc:\n"
                "        assert exc.reason == 'access_denied', exc\n"
                "        assert 'inbox/secret.txt' in str(exc), exc\n"
                "    else:\n"
                "        raise SystemExit('read an unreadable file')\n"
                "print('denied')\n"
            )
            as_nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
            run = subprocess.run(
                [*(as_nobody if os.geteuid() == 0 else []), sys.executable, "-c", check, str(root)],
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
                cwd="/",
            )
            assert run.returncode == 0, run.stderr[-2000:]
            assert run.stdout.strip() == "denied"
        finally:
            shutil.rmtree(root, ignore_errors=True)


class TestS3Storage:
    def test_keys_are_relative_to_the_prefix(self, minio_server: MinioServer) -> None:
        prefix = f"p-{uuid.uuid4().hex[:8]}/nested"
        storage = S3Storage.from_url(f"s3://{BUCKET}/{prefix}/", minio_server.settings())
        other = S3Storage.from_url(f"s3://{BUCKET}/{prefix}-sibling", minio_server.settings())
        storage.write_bytes("inbox/a b.txt", b"x")
        other.write_bytes("inbox/c.txt", b"y")
        names = [o.object_name for o in minio_server.client().list_objects(BUCKET, prefix, recursive=True)]
        assert f"{prefix}/inbox/a b.txt" in names
        assert [o.key for o in storage.iter_objects()] == ["inbox/a b.txt"]
        assert [o.key for o in other.iter_objects()] == ["inbox/c.txt"]
        whole = S3Storage.from_url(f"s3://{BUCKET}", minio_server.settings())
        assert whole.url == f"s3://{BUCKET}"
        assert f"{prefix}/inbox/a b.txt" in [o.key for o in whole.iter_objects(prefix)]

    def test_local_copy_is_removed_afterwards(self, minio_server: MinioServer) -> None:
        storage = S3Storage(BUCKET, f"tmp-{uuid.uuid4().hex[:8]}", minio_server.settings())
        storage.write_bytes("inbox/scan.tif", b"II*\x00")
        with storage.local_copy("inbox/scan.tif") as path:
            assert path.name == "scan.tif"
            assert path.read_bytes() == b"II*\x00"
        assert not path.exists()
        assert not path.parent.exists()

    def test_one_denied_object_is_a_document_error(self, minio_server: MinioServer) -> None:
        """A real bucket policy denies one object to a client; only that object fails, as
        AccessDeniedError (quarantine ``access_denied``), never a ConfigurationError (exit 2).
        The client is anonymous because MinIO's root user is above every policy."""
        bucket = minio_server.make_bucket(f"denied-{uuid.uuid4().hex[:8]}")
        arn = f"arn:aws:s3:::{bucket}"
        anyone = {"AWS": ["*"]}
        policy = {
            "Version": "2012-10-17",
            "Statement": [
                {"Effect": "Allow", "Principal": anyone, "Action": ["s3:ListBucket"], "Resource": [arn]},
                {
                    "Effect": "Allow",
                    "Principal": anyone,
                    "Action": ["s3:GetObject", "s3:PutObject"],
                    "Resource": [f"{arn}/*"],
                },
                {
                    "Effect": "Deny",
                    "Principal": anyone,
                    "Action": ["s3:GetObject"],
                    "Resource": [f"{arn}/inbox/secret.pdf"],
                },
                {
                    "Effect": "Deny",
                    "Principal": anyone,
                    "Action": ["s3:PutObject"],
                    "Resource": [f"{arn}/results/locked.json"],
                },
            ],
        }
        root = minio_server.client()
        root.set_bucket_policy(bucket, json.dumps(policy))
        for name in ("inbox/open.pdf", "inbox/secret.pdf"):
            root.put_object(bucket, name, io.BytesIO(b"%PDF-1.7"), 8)
        anonymous = S3Storage(
            bucket, "", minio_server.settings(s3_access_key="", s3_secret_key="", s3_sse="none")
        )
        assert [o.key for o in anonymous.iter_objects("inbox")] == ["inbox/open.pdf", "inbox/secret.pdf"]
        assert anonymous.read_bytes("inbox/open.pdf") == b"%PDF-1.7"
        with pytest.raises(AccessDeniedError, match=r"inbox/secret\.pdf") as info:
            anonymous.read_bytes("inbox/secret.pdf")
        assert info.value.reason == "access_denied"
        assert isinstance(info.value, PermanentDocumentError)
        with pytest.raises(AccessDeniedError), source_copy(anonymous, "inbox/secret.pdf"):
            pass
        with pytest.raises(AccessDeniedError):
            anonymous.exists("inbox/secret.pdf")
        anonymous.write_bytes("results/open.json", b"{}")
        with pytest.raises(AccessDeniedError, match=r"locked\.json"):
            anonymous.write_bytes("results/locked.json", b"{}")
        # A listing the client may not do at all is still a configuration problem: nothing can work.
        closed = S3Storage(
            minio_server.make_bucket(f"closed-{uuid.uuid4().hex[:8]}"),
            "",
            minio_server.settings(s3_access_key="", s3_secret_key="", s3_sse="none"),
        )
        with pytest.raises(ConfigurationError, match="AccessDenied"):
            list(closed.iter_objects("inbox"))

    def test_missing_bucket_is_a_configuration_error(self, minio_server: MinioServer) -> None:
        storage = S3Storage.from_url("s3://no-such-bucket-here/x", minio_server.settings())
        with pytest.raises(ConfigurationError, match="no-such-bucket-here"):
            storage.write_bytes("a.txt", b"x")

    @pytest.mark.parametrize(
        "url", ["s3://", "s3:///prefix", "s3://bucket/a/../../b", "s3://bucket/x?versionId=1"]
    )
    def test_bad_urls(self, minio_server: MinioServer, url: str) -> None:
        with pytest.raises(ConfigurationError):
            S3Storage.from_url(url, minio_server.settings())

    def test_open_storage_dispatches(self, minio_server: MinioServer, tmp_path: Path) -> None:
        settings = minio_server.settings()
        assert isinstance(open_storage(f"s3://{BUCKET}/x", settings), S3Storage)
        local = open_storage(str(tmp_path), settings)
        assert isinstance(local, LocalStorage)
        assert local.url == str(tmp_path)


@pytest.fixture(autouse=True)
def _no_leftover_tracemalloc() -> Iterator[None]:
    yield
    if tracemalloc.is_tracing():
        tracemalloc.stop()
