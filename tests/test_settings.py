"""Settings: every field that changes a result is in the fingerprint, and workers run with the
flow's values instead of whatever their own environment says."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Annotated, Any

import pytest
from pydantic import Field

from docproc import loader
from docproc.settings import LOCAL, OUTCOME, RESULT, Scope, Settings, _check_scopes
from tests.documents import text_pdf

SRC = Path(__file__).resolve().parents[1] / "src" / "docproc"
# Modules that turn a document into a result. A setting they read changes results or outcomes,
# unless it is listed here with the reason it does not.
RESULT_MODULES = ["loader.py", "imaging.py", "pipeline.py", "validate.py", "detect.py", "nlp", "ocr"]
READ_BUT_NOT_RESULT = {
    "gpu": "the same model on another device: the same text",
    "compute_threads": "torch threads: speed only",
}

# The values a test changes each field to; a new field without one fails test_every_result_field...
OTHER_VALUES: dict[str, Any] = {
    "engine": "tesseract",
    "languages": ("en", "de"),
    "dpi": 300,
    "ocr_min_side": 700,
    "ocr_max_side": 3000,
    "detect_orientation": False,
    "deskew": False,
    "min_confidence": 0.7,
    "min_text_layer_chars": 3,
    "nlp_max_chars": 1000,
    "searchable_pdf": False,
    "pdfa": True,
    "markdown": False,
}


def test_every_field_declares_its_scope() -> None:
    assert set(Settings.fields_of(RESULT, OUTCOME, LOCAL)) == set(Settings.model_fields)

    class Careless(Settings):
        new_threshold: int = Field(3, description="added without deciding about the fingerprint")

    with pytest.raises(TypeError, match="new_threshold needs exactly one Scope"):
        _check_scopes(Careless)

    class Careful(Settings):
        new_threshold: Annotated[int, RESULT] = Field(3, description="decided")

    _check_scopes(Careful)
    assert "new_threshold" in Careful.fields_of(RESULT)


def test_every_result_field_changes_the_fingerprint() -> None:
    base = Settings()
    assert set(OTHER_VALUES) == set(Settings.fields_of(RESULT))
    for name, value in OTHER_VALUES.items():
        changed = Settings(**{name: value})
        assert changed.fingerprint() != base.fingerprint(), name
    for name in Settings.fields_of(OUTCOME, LOCAL):
        assert name not in OTHER_VALUES


def _settings_read_by(paths: list[Path]) -> set[str]:
    names: set[str] = set()
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id == "settings"
                and node.attr in Settings.model_fields
            ):
                names.add(node.attr)
    return names


def test_settings_the_processing_core_reads_are_in_the_fingerprint_or_limits() -> None:
    """Fails when the core starts reading a setting that is neither in the fingerprint nor a
    limit (how ``min_text_layer_chars`` was missed), unless its entry above says why."""
    files = [
        p
        for entry in RESULT_MODULES
        for p in ([SRC / entry] if entry.endswith(".py") else (SRC / entry).rglob("*.py"))
    ]
    read = _settings_read_by(files)
    assert "min_text_layer_chars" in read  # the scan sees what it must
    unaccounted = {
        name for name in read if Settings.scope(name) is Scope.LOCAL and name not in READ_BUT_NOT_RESULT
    }
    assert not unaccounted, f"read by the processing core but not in the fingerprint: {sorted(unaccounted)}"


def test_min_text_layer_chars_changes_what_a_page_is(tmp_path: Path) -> None:
    """The field the fingerprint missed: the same page is text layer or OCR depending on it."""
    pdf = text_pdf(tmp_path / "short.pdf", ["Invoice 42"])
    doc_type = "application/pdf"
    strict = Settings(min_text_layer_chars=16)
    loose = Settings(min_text_layer_chars=3)
    [as_image] = loader.iter_pages(pdf, doc_type, strict)
    [as_text] = loader.iter_pages(pdf, doc_type, loose)
    assert as_image.image is not None
    assert as_text.text is not None
    assert "Invoice 42" in as_text.text
    assert strict.fingerprint() != loose.fingerprint()


def test_workers_use_the_flows_settings_not_their_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    flow = Settings(dpi=250, force=True)
    shipped = flow.for_workers()
    assert set(Settings.fields_of(RESULT, OUTCOME)) <= set(shipped)
    assert "s3_secret_key" not in shipped
    # A worker whose own environment disagrees on results, limits, and holds the credentials.
    monkeypatch.setenv("DOCPROC_DPI", "300")
    monkeypatch.setenv("DOCPROC_MIN_TEXT_LAYER_CHARS", "2")
    monkeypatch.setenv("DOCPROC_MAX_PAGES", "5")
    monkeypatch.setenv("DOCPROC_S3_SECRET_KEY", "worker-secret")
    worker = Settings.from_flow(shipped)
    assert worker.fingerprint() == flow.fingerprint()
    assert (worker.dpi, worker.min_text_layer_chars, worker.max_pages, worker.force) == (250, 16, 1000, True)
    assert worker.s3_secret_key.get_secret_value() == "worker-secret"
    # What overrides() ships (only the explicitly set fields) lets the worker's environment in.
    assert Settings(**flow.overrides()).fingerprint() != flow.fingerprint()
