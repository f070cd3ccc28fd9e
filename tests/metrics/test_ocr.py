"""ocr: the formula (the reference's exact rule), prompt exclusion, the offline rapidocr backend
on text rendered with PIL (a TrueType font), the metric kit, and one-line errors for a missing
package and for paddleocr's missing models."""

import importlib.util
import os
from pathlib import Path

import numpy as np
import pytest

from cdm_bench.errors import MissingDependencyError, SpecError
from metrics.ocr import PADDLE_MODELS, OCRScore, image_target, ocr_target

HAS_RAPIDFUZZ = importlib.util.find_spec("rapidfuzz") is not None
HAS_RAPIDOCR = importlib.util.find_spec("rapidocr_onnxruntime") is not None
needs_rapidfuzz = pytest.mark.skipif(not HAS_RAPIDFUZZ, reason="rapidfuzz not installed: pip install 'cdm-bench[ocr]'")
needs_rapidocr = pytest.mark.skipif(not (HAS_RAPIDOCR and HAS_RAPIDFUZZ),
                                    reason="rapidocr-onnxruntime not installed: pip install 'cdm-bench[ocr]'")


def _meta(prompts, **extra):
    return [{"prompt_id": f"p{i}", "k": 0, "prompt": p, **extra} for i, p in enumerate(prompts)]


# -- the target ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("prompt, want", [
    ('a neon sign that reads "Open Late" above a door', "openlate"),
    ('a poster saying "Sale" next to a banner saying "Today Only"', "sale"),      # first span only
    ("a shop sign “Grand Opening” in gold letters", "grandopening"),              # typographic quotes
    ('a sign “First” and a note "Second"', "first"),                              # earliest opening quote wins
    ('a note "Second" and a sign “First”', "second"),
    ("a mug with “Café Crème” on it", "cafécrème"),                               # unicode kept
    ('a banner with "Unclosed text', "unclosedtext"),                             # runs to the end (reference)
    ("a cat's hat with 'single quotes'", None),                                   # apostrophes are no quotes
    ("a red apple on a table", None),
    ('an empty sign "" on a wall', None),
    ('a blank sign "   " on a wall', None),
])
def test_target_is_the_first_quoted_span(prompt, want):
    assert ocr_target(prompt) == want


def test_a_target_field_wins_over_the_prompt():
    prompt = 'a sign that says "Hello"'
    assert image_target(prompt, {"target": "Good Bye"}) == "goodbye"
    assert image_target(prompt, {"target": None}) == "hello"
    assert image_target(prompt, {"target": float("nan")}) == "hello"   # a missing cell of a table
    assert image_target(prompt, {"target": 2024}) == "2024"
    assert image_target("no quote here", {}) is None


# -- the score ------------------------------------------------------------------------------------------
@needs_rapidfuzz
@pytest.mark.parametrize("read, target, want", [
    ("Hello World", "hello world", 1.0),
    ("GRAND OPENING today only!", "Grand Opening", 1.0),                 # a substring of the read text
    ("Helo World", "Hello World", 1 - 1 / 10),                           # one edit over 10 characters
    ("kitten", "sitting", 1 - 3 / 7),                                    # the textbook distance 3
    ("xx hello", "hellp", 1 - 3 / 5),                                    # against the whole read text
    ("", "Hello", 0.0),                                                  # nothing read
    ("completely unrelated words", "abc", 0.0),                          # clamped at 0
    ("CREME BRULEE", "Crème Brûlée", 1 - 3 / 11),                        # code points: no accent folding
    ("STRASSE", "Straße", 1 - 2 / 6),
])
def test_score_formula(read, target, want):
    from metrics.ocr import ocr_score

    assert ocr_score(read, target) == pytest.approx(want, abs=1e-12)


@needs_rapidfuzz
def test_an_empty_target_is_refused():
    from metrics.ocr import ocr_score

    with pytest.raises(ValueError):
        ocr_score("anything", "  ")


class _FakeEngine:
    """Stands in for RapidOCR: returns fixed lines ([box, text, confidence]) and counts calls."""

    def __init__(self, lines):
        self.lines, self.calls = lines, 0

    def __call__(self, image):
        self.calls += 1
        return self.lines, [0.0]


@needs_rapidfuzz
def test_read_text_joins_lines_with_positive_confidence():
    m = OCRScore()
    m.engine = _FakeEngine([[None, "Hello", 0.9], [None, "noise", 0.0], [None, "World", 0.4]])
    assert m.read_text(np.zeros((8, 8, 3), np.uint8)) == "HelloWorld"
    m.engine = _FakeEngine(None)   # rapidocr's "nothing found"
    assert m.read_text(np.zeros((8, 8, 3), np.uint8)) == ""


@needs_rapidfuzz
def test_prompts_without_a_target_are_excluded_not_zero():
    m = OCRScore()
    m.engine = _FakeEngine([[None, "Hello", 0.9]])
    prompts = ['a sign "Hello"', "a red apple", "a red apple", 'a sign "Help"']
    meta = _meta(prompts)
    meta[2]["prompt_id"] = "p1"                       # two images of the same un-quoted prompt
    m.update(np.zeros((4, 8, 8, 3), np.uint8), prompts, meta)
    assert m.engine.calls == 2                        # no OCR run for the excluded images
    s = np.concatenate(m._scores)
    assert s[0] == 1.0 and np.isnan(s[1:3]).all() and s[3] == pytest.approx(1 - 2 / 4)
    assert m.compute() == {"ocr": pytest.approx((1.0 + 0.5) / 2), "excluded_prompts": 1.0, "scored_images": 2.0}


def test_no_target_anywhere_is_one_clear_error():
    with pytest.raises(SpecError) as err:
        OCRScore().aggregate(np.full(3, np.nan), _meta(["a", "b", "c"]))
    assert "\n" not in str(err.value) and "quoted" in str(err.value)


# -- errors and identity ----------------------------------------------------------------------------------
def test_options_are_validated():
    with pytest.raises(ValueError):
        OCRScore(backend="tesseract")
    with pytest.raises(ValueError):
        OCRScore(model_dir="/models")          # paddleocr only
    with pytest.raises(ValueError):
        OCRScore(threads=0)


def test_missing_backend_package_is_one_line_naming_the_extra(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "rapidocr_onnxruntime" else real(name, *a))
    with pytest.raises(MissingDependencyError) as err:
        OCRScore().check()
    msg = str(err.value)
    assert "\n" not in msg and "rapidocr_onnxruntime" in msg and "cdm-bench[ocr]" in msg


def test_paddleocr_without_its_models_is_one_clear_line(tmp_path, monkeypatch):
    monkeypatch.setenv("PADDLE_PDX_CACHE_HOME", str(tmp_path / "paddlex"))
    m = OCRScore(backend="paddleocr")
    for call in (m.check, m.setup):           # setup checks first: nothing is downloaded
        with pytest.raises(MissingDependencyError) as err:
            call()
        msg = str(err.value)
        assert "\n" not in msg and "paddleocr" in msg and "'model_dir'" in msg
        assert str(tmp_path / "paddlex" / "official_models") in msg
        assert all(name in msg for name in PADDLE_MODELS.values())
        if importlib.util.find_spec("paddleocr") is None:
            assert "pip install paddleocr" in msg and "paddlepaddle" in msg
    assert m.engine is None


def test_paddleocr_models_in_model_dir_are_found(tmp_path):
    (tmp_path / "UVDoc").mkdir()
    with pytest.raises(MissingDependencyError, match="UVDoc"):   # an empty folder is no model
        OCRScore(backend="paddleocr", model_dir=str(tmp_path)).check()
    for name in PADDLE_MODELS.values():
        (tmp_path / name).mkdir(exist_ok=True)
        (tmp_path / name / "inference.pdiparams").write_bytes(name.encode())
    m = OCRScore(backend="paddleocr", model_dir=str(tmp_path))
    try:
        m.check()
    except MissingDependencyError as err:     # only the packages may be missing here
        assert "needs models" not in str(err) and "paddleocr" in str(err)
    assert [w.path for w in m.weights()] == [str(tmp_path / n) for n in PADDLE_MODELS.values()]
    assert m.weights_sha256() and all(m.fingerprints().values())


def test_backend_is_part_of_the_identity(tmp_path):
    rapid, paddle = OCRScore().describe(), OCRScore(backend="paddleocr", model_dir=str(tmp_path)).describe()
    assert rapid["backend"] == "rapidocr" and paddle["backend"] == "paddleocr"
    assert rapid != paddle and set(paddle["model_fingerprints"]) == set(PADDLE_MODELS.values())
    assert OCRScore(dtype="bfloat16").describe() == rapid   # dtype does not change the numbers
    if HAS_RAPIDOCR:
        assert rapid["packages"]["rapidocr-onnxruntime"] and rapid["model_fingerprints"]["rapidocr_models"]
        assert OCRScore().weights_sha256()


# -- end to end on rendered text (offline backend) -------------------------------------------------------------
def _font() -> str | None:
    """A TrueType font: matplotlib's bundled DejaVu Sans (a core dependency), else the system's."""
    try:
        import matplotlib

        bundled = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
        if bundled.exists():
            return str(bundled)
    except ImportError:
        pass
    for root in ("/usr/share/fonts", "/usr/local/share/fonts"):
        found = sorted(Path(root).rglob("DejaVuSans.ttf")) if os.path.isdir(root) else []
        if found:
            return str(found[0])
    return None


def render(text: str, size: int = 512) -> np.ndarray:
    """``text`` in dark letters centred on a light background, as uint8 (size, size, 3)."""
    from PIL import Image, ImageDraw, ImageFont

    path = _font()
    if path is None:
        pytest.skip("no TrueType font found (matplotlib's DejaVuSans.ttf or fonts-dejavu)")
    im = Image.new("RGB", (size, size), (236, 228, 205))
    draw = ImageDraw.Draw(im)
    font_size = 64
    font = ImageFont.truetype(path, font_size)
    while draw.textlength(text, font=font) > 0.85 * size:
        font_size -= 4
        font = ImageFont.truetype(path, font_size)
    draw.text(((size - draw.textlength(text, font=font)) / 2, (size - font_size) / 2), text, font=font,
              fill=(25, 25, 30))
    return np.asarray(im)


@pytest.fixture(scope="module")
def rapid():
    m = OCRScore(threads=2)
    m.check()
    m.setup()
    yield m
    m.teardown()


@needs_rapidocr
def test_rendered_words_are_read_back(rapid):
    words = ["Hello World", "Forever Yours", "Open 24 Hours"]
    images = np.stack([render(w) for w in words])
    prompts = [f'a photo of a sign that says "{w}"' for w in words]
    assert [rapid.read_text(im).replace(" ", "").lower() for im in images] == \
        [w.replace(" ", "").lower() for w in words]
    np.testing.assert_array_equal(rapid.score(images, prompts, _meta(prompts)), [1.0, 1.0, 1.0])


@needs_rapidocr
def test_a_misspelled_rendering_scores_below_one(rapid):
    image = render("Helo Wrold")[None]
    prompt = ['a neon sign that reads "Hello World"']
    got = rapid.score(image, prompt, _meta(prompt))[0]
    assert rapid.read_text(image[0]).replace(" ", "").lower() == "helowrold"
    assert got == pytest.approx(1 - 3 / 10)      # insert one l, swap r and o: 3 edits over 10
    blank = np.full((1, 512, 512, 3), 200, np.uint8)
    assert rapid.score(blank, prompt, _meta(prompt))[0] == 0.0


# rapidocr-onnxruntime 1.4.4 (PP-OCRv4 ONNX) + onnxruntime 1.32.0, DejaVu Sans, recorded 2026-11-26:
# 5 exact renderings (1.0 each) + "Helo Wrold" for "Hello World" (0.7) + "Opem" for "Open" (0.75)
GOLDEN = (5 * 1.0 + 0.7 + 0.75) / 7
KIT_RENDERED = ["Hello World", "Forever Yours", "Helo Wrold", "Coffee", "Opem", "Step Goal", "No Parking"]
KIT_TARGETS = ["Hello World", "Forever Yours", "Hello World", "Coffee", "Open", "Step Goal", "No Parking"]


@needs_rapidocr
def test_passes_the_kit():
    from metric_kit import check_metric

    images = np.stack([render(w) for w in KIT_RENDERED])
    prompts = [f'a storefront with a sign reading "{t}" at dusk' for t in KIT_TARGETS]
    ref = check_metric(lambda: OCRScore(threads=2), images, prompts, _meta(prompts), golden=GOLDEN, golden_rtol=1e-9)
    assert ref.values["excluded_prompts"] == 0 and ref.values["scored_images"] == 7
    assert sorted(ref.scores)[:2] == pytest.approx([0.7, 0.75])
