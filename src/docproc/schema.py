"""The versioned JSON Schema of a document result, generated from the models.

`python -m docproc.schema` rewrites schema/document-result.v<N>.json; a test fails when the
committed file and the models disagree.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from docproc.models import SCHEMA_VERSION, DocumentResult

SCHEMA_DIR = Path(__file__).resolve().parents[2] / "schema"
SCHEMA_ID = f"https://docproc.dev/schema/document-result.v{SCHEMA_VERSION}.json"


def document_result_schema() -> dict[str, Any]:
    schema = DocumentResult.model_json_schema(mode="serialization")
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": SCHEMA_ID, **schema}


def schema_path() -> Path:
    return SCHEMA_DIR / f"document-result.v{SCHEMA_VERSION}.json"


def render() -> str:
    return json.dumps(document_result_schema(), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    schema_path().parent.mkdir(exist_ok=True)
    schema_path().write_text(render(), encoding="utf-8")
