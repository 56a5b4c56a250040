"""End-to-end assertions shared by the local end-to-end tests and scripts/kind-e2e.sh.

The kind workflow cannot run here (no Docker engine); its checks are these functions, which the
local tests run against real storage, so both paths assert the same thing:
every expected document has exactly one result that validates against the result schema, and
every expected bad document has exactly one quarantine record.

CLI (used by scripts/kind-e2e.sh; S3 settings from DOCPROC_* environment):
    python -m tests.e2e_checks upload SOURCE_DIR DEST_URL
    python -m tests.e2e_checks check DEST_URL --expect a.pdf b.tif [--quarantined bad.pdf]
"""

from __future__ import annotations

import argparse
import json
import mimetypes
import sys
from collections.abc import Iterable
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
from minio import Minio

from docproc.models import DocumentResult, QuarantineRecord
from docproc.settings import Settings
from docproc.storage import Storage, open_storage

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "schema"


@cache
def result_schema() -> dict[str, Any]:
    """The committed JSON Schema of a result when present, else the model's own schema."""
    committed = sorted(SCHEMA_DIR.glob("document-result.v*.json"))
    if committed:
        schema: dict[str, Any] = json.loads(committed[-1].read_text())
        return schema
    return DocumentResult.model_json_schema()


def _json_objects(storage: Storage, prefix: str) -> Iterable[tuple[str, Any]]:
    for info in storage.iter_objects(prefix):
        if info.key.endswith(".json"):
            try:
                yield info.key, json.loads(storage.read_bytes(info.key))
            except json.JSONDecodeError:
                continue


def collect(storage: Storage, prefix: str = "") -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """Result keys and quarantine-record keys by document source, under ``prefix``."""
    results: dict[str, list[str]] = {}
    quarantined: dict[str, list[str]] = {}
    for key, doc in _json_objects(storage, prefix):
        if not isinstance(doc, dict) or "source" not in doc:
            continue
        if "schema_version" in doc and "pages" in doc:
            results.setdefault(doc["source"], []).append(key)
        elif "reason" in doc and "quarantined_at" in doc:
            quarantined.setdefault(doc["source"], []).append(key)
    return results, quarantined


def check_results(
    storage: Storage,
    expected_sources: Iterable[str],
    prefix: str = "",
    quarantined: Iterable[str] = (),
) -> dict[str, DocumentResult]:
    """Assert one valid result per expected source and one quarantine record per bad source.

    Returns the parsed results by source, for further checks by the caller.
    """
    expected = sorted(set(expected_sources))
    bad = sorted(set(quarantined))
    results, records = collect(storage, prefix)
    problems: list[str] = []
    parsed: dict[str, DocumentResult] = {}
    for source in expected:
        keys = results.get(source, [])
        if len(keys) != 1:
            problems.append(f"{source}: expected exactly one result, found {len(keys)} {keys}")
            continue
        doc = json.loads(storage.read_bytes(keys[0]))
        try:
            jsonschema.validate(doc, result_schema())
            parsed[source] = DocumentResult.model_validate(doc)
        except (jsonschema.ValidationError, ValueError) as exc:
            problems.append(f"{source}: result {keys[0]} does not validate: {str(exc).splitlines()[0]}")
    for source in bad:
        keys = records.get(source, [])
        if len(keys) != 1:
            problems.append(f"{source}: expected exactly one quarantine record, found {len(keys)} {keys}")
            continue
        QuarantineRecord.model_validate_json(storage.read_bytes(keys[0]))
        if source in results:
            problems.append(f"{source}: quarantined but also has results {results[source]}")
    unexpected = sorted(set(results) - set(expected))
    if unexpected:
        problems.append(f"results for documents not expected: {unexpected}")
    assert not problems, "end-to-end check failed:\n  " + "\n  ".join(problems)
    return parsed


def unencrypted_objects(client: Minio, bucket: str, prefix: str) -> list[str]:
    """Keys under ``prefix`` that MinIO does not report as server-side encrypted (SSE-S3 or SSE-KMS).

    Needs at least one object: an empty prefix is reported as a problem, never as a pass.
    """
    keys = [
        o.object_name for o in client.list_objects(bucket, prefix=prefix, recursive=True) if o.object_name
    ]
    if not keys:
        return [f"(no objects under {bucket}/{prefix})"]
    plain = []
    for key in keys:
        headers = {k.lower(): v for k, v in client.stat_object(bucket, key).metadata.items()}
        if headers.get("x-amz-server-side-encryption") not in ("AES256", "aws:kms"):
            plain.append(key)
    return plain


def upload(source_dir: Path, storage: Storage) -> list[str]:
    """Copy every file of ``source_dir`` (not README.md) to ``storage``; the keys written."""
    keys = []
    for path in sorted(p for p in source_dir.iterdir() if p.is_file() and p.name != "README.md"):
        content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        storage.write_file(path.name, path, content_type)
        keys.append(path.name)
    return keys


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.e2e_checks", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("upload", help="upload a folder's documents")
    up.add_argument("source_dir", type=Path)
    up.add_argument("dest")
    check = sub.add_parser("check", help="check a run's results")
    check.add_argument("dest")
    check.add_argument("--expect", nargs="+", required=True, help="sources that must have one valid result")
    check.add_argument("--quarantined", nargs="*", default=[], help="sources that must be quarantined")
    args = parser.parse_args(argv)
    settings = Settings()
    if args.command == "upload":
        keys = upload(args.source_dir, open_storage(args.dest, settings))
        print(f"uploaded {len(keys)} documents to {args.dest}")
        return 0
    try:
        parsed = check_results(open_storage(args.dest, settings), args.expect, quarantined=args.quarantined)
    except AssertionError as exc:
        print(exc, file=sys.stderr)
        return 1
    print(f"ok: {len(parsed)} results, {len(args.quarantined)} quarantined, in {args.dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
