"""OCR: how well an image renders the text its prompt asks for (the paper's text-rendering score).

The formula, checked against the reference code (``cdm/rewards/ocr.py`` of byliutao/cdm at
bacc57f, itself Flow-GRPO's ``flow_grpo/ocr.py`` moved to the PaddleOCR 3.x API):

* target = the first double-quoted span of the prompt (``prompt.split('"')[1]``);
* the OCR-read text = every recognised line whose confidence is > 0, joined with ``""`` in the
  OCR's reading order (the reference filters nothing else);
* both are normalised with ``.replace(" ", "").lower()`` (ASCII spaces only, as the reference);
* score = 1.0 if the target is a substring of the read text, else
  ``1 - min(Levenshtein(read, target), len(target)) / len(target)``, i.e.
  ``max(0, 1 - d / len(target))``. The distance is against the WHOLE read text (all lines
  concatenated), not its best-matching window: extra text in the image costs one edit per extra
  character (the clamp stops it from going below 0).

What this module chose where the reference is silent or unsafe:

* Typographic quotes: a span may also open with ``“`` and then ends at the next ``”``; whichever
  opening quote comes first in the prompt wins. A quote that is never closed runs to the end of
  the prompt (what ``split('"')[1]`` does for a straight quote). Single quotes are not quotes
  (they are apostrophes too often).
* A prompt row's ``target`` field (``meta[i]["target"]``), when present, wins over parsing.
* Prompts without a target (no quote, or a quoted span that is empty after removing spaces) are
  excluded, not scored 0: their per-image score is NaN; ``aggregate`` returns the mean over the
  others with sub-values ``excluded_prompts`` (distinct prompts) and ``scored_images``. If no
  image has a target the metric fails with a clear error. (The reference crashes on them.)
* An OCR error is raised, not turned into a score of 0 as the reference does.
* Images go to the OCR as the reference passes them: the RGB uint8 array, as is (both engines
  treat an array as OpenCV's BGR; the reference never converted).

Backends (part of the metric's identity, with their versions and model fingerprints):

* ``rapidocr`` (default): ``rapidocr-onnxruntime``, whose wheel ships PP-OCRv4 (Chinese+English)
  detection/recognition ONNX models, so it works offline. Run like the reference: no text-line
  angle classifier, no confidence threshold (``text_score=0``). Always on the CPU (onnxruntime).
  The same model family as the paper's scorer, not the same weights: its numbers are close to,
  not equal to, the paper's.
* ``paddleocr``: the paper's scorer as the reference builds it (``PaddleOCR(lang="en",
  use_textline_orientation=False)``) with the paddleocr 3.4-3.6 of its time (3.7 moved
  ``lang="en"`` to PP-OCRv6): document orientation (PP-LCNet_x1_0_doc_ori) and unwarping (UVDoc)
  on, PP-OCRv5_server_det, en_PP-OCRv5_mobile_rec, recognition threshold 0. The model names are
  pinned here, so a newer paddleocr runs the same models (its pipeline defaults may still move:
  the versions are part of the identity). Not in the ``ocr`` extra (about 1.4 GB, downgrades numpy:
  give it its own env); its models are read from ``model_dir`` (default PaddleX's cache,
  ``$PADDLE_PDX_CACHE_HOME/official_models`` or ``~/.paddlex/official_models``), never downloaded.
"""

from __future__ import annotations

import importlib.util
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cdm_bench.errors import MissingDependencyError, SpecError
from cdm_bench.metric import PerImageMetric, Weights, missing_packages, weights_fingerprint

#: opening quote -> its closing quote
QUOTES = {'"': '"', "\u201c": "\u201d"}
BACKENDS = ("rapidocr", "paddleocr")
REQUIRES = {"rapidocr": ("rapidocr_onnxruntime", "rapidfuzz"), "paddleocr": ("paddleocr", "paddle", "rapidfuzz")}
DISTRIBUTIONS = {"rapidocr": ("rapidocr-onnxruntime", "onnxruntime", "rapidfuzz"),
                 "paddleocr": ("paddleocr", "paddlex", "paddlepaddle", "rapidfuzz")}
#: PaddleOCR 3.x pipeline for lang="en" (model kind -> PaddleX model name)
PADDLE_MODELS = {"doc_orientation_classify": "PP-LCNet_x1_0_doc_ori", "doc_unwarping": "UVDoc",
                 "text_detection": "PP-OCRv5_server_det", "text_recognition": "en_PP-OCRv5_mobile_rec"}
PADDLE_WEIGHTS = "inference.pdiparams"  # the file that marks a PaddleX model folder as present
#: the reference's era (its code: 2026-05): paddleocr 3.4-3.6 pick these models for lang="en"; 3.7 picks PP-OCRv6
PADDLE_INSTALL = "pip install paddleocr==3.6.0 paddlepaddle==3.3.0 rapidfuzz (in its own env: it downgrades numpy)"
PADDLE_FETCH = ("on a machine with internet run `paddleocr ocr -i <any image> --lang en` (paddleocr 3.6.0 downloads "
                "them to ~/.paddlex/official_models) and copy those folders here, or pass option 'model_dir'")


def normalize(text: str) -> str:
    """The reference's normalisation: drop ASCII spaces, lowercase."""
    return text.replace(" ", "").lower()


def ocr_target(prompt: str) -> str | None:
    """The normalised first quoted span of ``prompt``, or None when it has none (or it is empty)."""
    opens = [(i, q) for q in QUOTES if (i := prompt.find(q)) >= 0]
    if not opens:
        return None
    start, quote = min(opens)
    end = prompt.find(QUOTES[quote], start + 1)
    span = prompt[start + 1:] if end < 0 else prompt[start + 1:end]
    return normalize(span) or None


def ocr_score(read_text: str, target: str) -> float:
    """1.0 if ``target`` is in the OCR-read text, else max(0, 1 - Levenshtein(read, target)/len(target)),
    both normalised (spaces removed, lowercased)."""
    from rapidfuzz.distance import Levenshtein

    read, want = normalize(read_text), normalize(target)
    if not want:
        raise ValueError("ocr_score: the target text is empty")
    if want in read:
        return 1.0
    return max(0.0, 1.0 - Levenshtein.distance(read, want) / len(want))


def image_target(prompt: str, record: dict) -> str | None:
    """The target of one image: its prompt row's ``target`` field when present, else the prompt's quote."""
    given = record.get("target")
    if given is None or (isinstance(given, float) and math.isnan(given)):
        return ocr_target(prompt)
    return normalize(str(given)) or None


def _version(dist: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return None


def paddle_cache_dir() -> Path:
    """Where PaddleX keeps downloaded models (``$PADDLE_PDX_CACHE_HOME`` or ``~/.paddlex``)."""
    home = os.environ.get("PADDLE_PDX_CACHE_HOME") or str(Path("~/.paddlex").expanduser())
    return Path(home) / "official_models"


class OCRScore(PerImageMetric):
    """Per image: the OCR score of its prompt's quoted text (NaN when it has none)."""

    name = "ocr"
    version = "1"
    higher_is_better = True
    input_format = "uint8_nhwc"
    requires = REQUIRES["rapidocr"]
    extra = "ocr"

    def __init__(self, device: str = "cpu", dtype: str = "float32", backend: str = "rapidocr",
                 model_dir: str | None = None, threads: int | None = None):
        """``dtype`` is accepted and ignored (the OCR models run in float32); ``device`` only
        matters to paddleocr (rapidocr runs on the CPU); ``model_dir``: paddleocr's model folder;
        ``threads``: onnxruntime intra-op threads for rapidocr (None: its default, all cores)."""
        super().__init__(device, dtype)
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {list(BACKENDS)}, got {backend!r}")
        if model_dir is not None and backend != "paddleocr":
            raise ValueError("option 'model_dir' is for backend 'paddleocr' only")
        if threads is not None and int(threads) < 1:
            raise ValueError(f"threads must be >= 1, got {threads!r}")
        self.backend, self.model_dir, self.threads = backend, model_dir, threads
        self.requires = REQUIRES[backend]
        self.extra = "ocr" if backend == "rapidocr" else None
        self.engine: Any = None

    # -- identity and checks ---------------------------------------------------------------------------
    def _paddle_dir(self) -> Path:
        return Path(self.model_dir).expanduser() if self.model_dir else paddle_cache_dir()

    def weights(self) -> list[Weights]:
        if self.backend == "rapidocr":  # shipped inside the package: identified by its version + fingerprint
            return []
        root = self._paddle_dir()
        return [Weights(f"PaddleOCR model {m}", path=str(root / m), option="model_dir") for m in PADDLE_MODELS.values()]

    def check(self) -> None:
        if self.backend == "rapidocr":
            return super().check()
        missing_pkgs = missing_packages(self.requires)
        missing = [m for m in PADDLE_MODELS.values() if not (self._paddle_dir() / m / PADDLE_WEIGHTS).is_file()]
        parts = []
        if missing_pkgs:
            parts.append(f"needs package(s) {', '.join(missing_pkgs)}: {PADDLE_INSTALL}")
        if missing:
            parts.append(f"needs models {', '.join(missing)} in {self._paddle_dir()} (not found): {PADDLE_FETCH}")
        if parts:
            raise MissingDependencyError("metric 'ocr' (backend paddleocr) " + " and ".join(parts))

    def _model_files(self) -> dict[str, Path]:
        if self.backend == "rapidocr":
            spec = importlib.util.find_spec("rapidocr_onnxruntime")
            if spec is None or not spec.submodule_search_locations:
                return {}
            return {"rapidocr_models": Path(next(iter(spec.submodule_search_locations))) / "models"}
        return {m: self._paddle_dir() / m / PADDLE_WEIGHTS for m in PADDLE_MODELS.values()}

    def fingerprints(self) -> dict[str, str | None]:
        return {k: weights_fingerprint(p) for k, p in self._model_files().items()}

    def weights_sha256(self) -> str | None:
        """One fingerprint over the OCR model files (recorded in results as provenance)."""
        import hashlib

        prints = self.fingerprints()
        if not prints or None in prints.values():
            return None
        return hashlib.sha256(repr(sorted(prints.items())).encode()).hexdigest()

    def describe(self) -> dict:
        out = {**super().describe(), "backend": self.backend,
               "packages": {d: _version(d) for d in DISTRIBUTIONS[self.backend]},
               "model_fingerprints": self.fingerprints(), "channel_order": "rgb array passed as is"}
        out.pop("dtype", None)  # ignored: it does not change the numbers
        if self.backend == "rapidocr":
            out["engine_options"] = {"use_cls": False, "text_score": 0.0}
        else:
            out["engine_options"] = {"models": PADDLE_MODELS, "use_textline_orientation": False,
                                     "use_doc_orientation_classify": True, "use_doc_unwarping": True}
        return out

    # -- lifecycle -------------------------------------------------------------------------------------
    def setup(self) -> None:
        self.check()
        self.engine = self._rapidocr() if self.backend == "rapidocr" else self._paddleocr()

    def _rapidocr(self):
        from rapidocr_onnxruntime import RapidOCR

        opts: dict = {"use_cls": False, "text_score": 0.0, "print_verbose": False}
        if self.threads:
            opts["intra_op_num_threads"] = int(self.threads)
        return RapidOCR(**opts)

    def _paddleocr(self):
        os.environ.setdefault("PADDLE_PDX_DISABLE_MODEL_SOURCE_CHECK", "True")
        from paddleocr import PaddleOCR

        root, dev = self._paddle_dir(), str(self.device)
        paddle_device = "gpu" + dev[len("cuda"):] if dev.startswith("cuda") else "cpu"
        kwargs = {}
        for kind, model in PADDLE_MODELS.items():
            kwargs[f"{kind}_model_name"], kwargs[f"{kind}_model_dir"] = model, str(root / model)
        return PaddleOCR(use_doc_orientation_classify=True, use_doc_unwarping=True, use_textline_orientation=False,
                         device=paddle_device, **kwargs)

    def teardown(self) -> None:
        self.engine = None
        super().teardown()

    # -- scoring ---------------------------------------------------------------------------------------
    def read_text(self, image: np.ndarray) -> str:
        """The OCR-read text of one uint8 (H, W, 3) image: recognised lines with confidence > 0,
        joined with "" in reading order (the reference's rule)."""
        image = np.ascontiguousarray(image)
        if self.backend == "rapidocr":
            lines, _ = self.engine(image)
            return "".join(str(text) for _, text, conf in (lines or []) if float(conf) > 0)
        results = self.engine.predict(image)
        if not results:
            return ""
        res = results[0]
        return "".join(str(t) for t, s in zip(res.get("rec_texts", []), res.get("rec_scores", [])) if float(s) > 0)

    def score(self, images, prompts: Sequence[str], meta: Sequence[dict]) -> np.ndarray:
        if self.engine is None:
            raise RuntimeError("metric 'ocr': score() before setup()")
        out = np.full(len(prompts), np.nan)
        for i, (image, prompt) in enumerate(zip(images, prompts)):
            target = image_target(prompt, meta[i])
            if target is not None:  # no target: excluded (NaN), no OCR run
                out[i] = ocr_score(self.read_text(image), target)
        return out

    def aggregate(self, scores: np.ndarray, meta: Sequence[dict]) -> dict:
        scores = np.asarray(scores, dtype=np.float64)
        excluded = np.isnan(scores)
        if excluded.all():
            raise SpecError(f"metric 'ocr': none of the {len(scores)} images' prompts has a quoted target text "
                            "(\"...\") or a 'target' field; score it on a text-rendering prompt set (e.g. the OCR set)")
        dropped = {m.get("prompt_id", m.get("prompt")) for m, e in zip(meta, excluded) if e}
        return {self.name: float(scores[~excluded].mean()), "excluded_prompts": float(len(dropped)),
                "scored_images": float((~excluded).sum())}
