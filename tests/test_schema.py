"""The committed result schema matches the models, and rejects what the models reject."""

from __future__ import annotations

import json

import jsonschema
import pytest

from docproc.schema import document_result_schema, render, schema_path


def test_committed_schema_is_current() -> None:
    assert schema_path().read_text(encoding="utf-8") == render(), (
        "schema is stale: run `.venv/bin/python -m docproc.schema` and commit the result "
        "(bump SCHEMA_VERSION in models.py if the change is incompatible)"
    )


def test_schema_is_valid_draft_2020_12() -> None:
    jsonschema.Draft202012Validator.check_schema(json.loads(schema_path().read_text()))


@pytest.mark.parametrize(
    ("field", "value"),
    [("quality", {"status": "great", "reasons": []}), ("schema_version", 2), ("pages", "none")],
)
def test_schema_rejects_invalid_results(field: str, value: object) -> None:
    result = {
        "schema_version": 1,
        "id": "0" * 64,
        "source": "a.txt",
        "media_type": "text/plain",
        "size_bytes": 1,
        "pages": [],
        "text": "",
        "language": {"code": "und", "score": 0.0},
        "entities": [],
        "document_type": {"label": "other", "score": 0.0},
        "quality": {"status": "failed", "reasons": ["no_text"]},
        "timings": {},
        "pipeline_version": "0.1.0",
        "settings_fingerprint": "x",
        "processed_at": "2024-01-01T00:00:00Z",
    }
    schema = document_result_schema()
    jsonschema.validate(result, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**result, field: value}, schema)
