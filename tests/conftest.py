"""Shared test configuration.

Fixture modules live in ``tests/fixtures/``; every module there is loaded as a pytest plugin,
so a fixture (MinIO server, Prefect server, ...) is defined once and used everywhere.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

_FIXTURES = Path(__file__).parent / "fixtures"
pytest_plugins = sorted(f"tests.fixtures.{p.stem}" for p in _FIXTURES.glob("*.py") if p.stem != "__init__")

CORPUS = Path(__file__).parent / "data" / "corpus"


@pytest.fixture(scope="session")
def corpus() -> Path:
    """Real documents with ground truth (see tests/data/corpus/README.md for licenses)."""
    return CORPUS


@pytest.fixture(scope="session")
def phototest(corpus: Path) -> Image.Image:
    """phototest.tif decoded once: a 1-bit 640x480 page of 12-point text."""
    with Image.open(corpus / "phototest.tif") as image:
        image.load()
        return image
