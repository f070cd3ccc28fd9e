"""DPG-Bench (ELLA): a VQA model answers each prompt's yes/no questions about the image.

Facts of ELLA's reference (``dpg_bench/compute_dpg_bench.py``), reproduced here:

* answer parsing: a question scores 1 when the VQA answer is exactly ``"yes"``, else 0;
* zeroing: questions are visited in the CSV's order; one whose parent (any of several) scores
  0 at that moment is set to 0, so a zeroed parent zeroes its children too;
* the image's score is the mean over its questions after zeroing; the benchmark is the mean
  over prompts, x100;
* the 2x2 grid (ELLA's README: 4 samples per prompt): the grid file is cropped back into its 4
  tiles (top-left, top-right, bottom-left, bottom-right), each tile is scored alone, and the
  prompt's score is the mean of the 4 tile scores. The VQA model never sees the whole grid, so
  mode ``grid`` scores the 4 samples (k = 0..3) themselves -- the same pixels -- and gives each
  the mean; mode ``single`` (the paper's reference code: 1 image per prompt) scores each image
  alone. With 4 samples per prompt both modes give the same benchmark value.
* L1 / L2 categories: L2 = the ``tuple`` column before its ``(`` (``"entity - whole"``), L1 = L2
  before its ``-`` (``"entity"``); a category's score is the mean x100 over every question of
  that category, pooled over images, of the *raw* answers (before zeroing).

Where this differs from the reference: every row of the CSV is used (the reference skips data
row 0 -- ELLA issue #61), and L1/L2 pool the answers of all 4 tiles in grid mode (the reference
keeps only the last tile's -- ELLA issue #60; same expectation, less noise).

Per-question answers are not per-image scores, so evaluate cannot carry them from the ranks
to ``aggregate``: each image's raw answers are written to a content-addressed store (backend
identity x image sha256 x questions; ``answers_dir``, default ``<cache>/dpgbench-answers``),
and ``aggregate`` reads them back for L1/L2. Ranks on several machines need a shared
``answers_dir``.

VQA backends are pluggable (:class:`VQABackend`, registry ``VQA_BACKENDS``, entry-point group
``cdm_bench.vqa_backends``): ``mplug`` (the reference's mPLUG-large through modelscope) and
``fake`` (deterministic answers without a model, for tests and harness timing).
"""

from __future__ import annotations

import hashlib
import json
import os
from abc import ABC, abstractmethod
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from cdm_bench.errors import MissingDependencyError, SpecError
from cdm_bench.metric import PerImageMetric, weights_fingerprint
from cdm_bench.registry import Registry

MPLUG_ID = "damo/mplug_visual-question-answering_coco_large_en"
MODES = ("single", "grid")
GRID = 4
YES = "yes"


# -- the reference's scoring rules ------------------------------------------------------------------
def dpg_score(answers: Sequence[str], questions: Sequence[dict]) -> float:
    """One image's DPG score: 1 per exact "yes", children of a 0-scoring parent zeroed in
    question order, then the mean."""
    scores = {q["id"]: float(a == YES) for q, a in zip(questions, answers, strict=True)}
    for q in questions:
        if any(scores[p] == 0 for p in q["parents"]):
            scores[q["id"]] = 0.0
    return sum(scores.values()) / len(scores)


def l2_category(question: dict) -> str:
    """The reference's category: the ``tuple`` before its "(" (else "broad - detailed")."""
    tup = str(question.get("tuple") or "").split("(")[0].strip()
    return tup or f"{question.get('category_broad', '')} - {question.get('category_detailed', '')}"


def l1_category(l2: str) -> str:
    return l2.split("-")[0].strip()


# -- VQA backends ---------------------------------------------------------------------------------------
class VQABackend(ABC):
    """Answers questions about images, pairwise: ``answer([im1, im1, im2], [q1, q2, q1])``."""

    name: str = ""
    requires: tuple[str, ...] = ()
    extra: str | None = None
    #: how to build the environment that has the packages (None: the extra is enough)
    env_hint: str | None = None

    def __init__(self, device: str = "cpu", dtype: str = "float32"):
        self.device, self.dtype = device, dtype

    def check(self) -> list[str]:
        """What is missing, one phrase each (empty: ready). Never downloads."""
        from cdm_bench.metric import missing_packages

        missing = missing_packages(self.requires)
        if not missing:
            return []
        how = f"pip install 'cdm-bench[{self.extra}]'" if self.extra else "pip install " + " ".join(missing)
        env = f" (or use its env: {self.env_hint})" if self.env_hint else ""
        return [f"needs package(s) {', '.join(missing)}: {how}{env}"]

    def setup(self) -> None:
        """Load the model."""

    def teardown(self) -> None:
        """Drop the model."""

    @abstractmethod
    def answer(self, images: list, questions: list[str]) -> list[str]:
        """One answer per (image, question) pair."""

    def describe(self) -> dict:
        """Everything that changes the answers (part of the metric's identity)."""
        return {"name": self.name, "dtype": self.dtype}


def _modelscope_candidates(model_id: str) -> list[Path]:
    """Where modelscope keeps a downloaded model: its own answer first (1.40:
    ``$MODELSCOPE_CACHE/models/<id>``, default ``~/.cache/modelscope/hub/models/<id>``), then the
    layouts of older versions (``<cache>/<id>``)."""
    try:
        from modelscope.utils.file_utils import get_model_cache_dir

        own = [Path(get_model_cache_dir(model_id))]
    except Exception:  # not installed, or an older layout without this helper
        own = []
    roots = [Path(os.environ["MODELSCOPE_CACHE"]).expanduser()] if os.environ.get("MODELSCOPE_CACHE") else []
    roots.append(Path("~/.cache/modelscope").expanduser())
    return own + [r / sub / model_id for r in roots for sub in ("", "hub", "models", "hub/models")]


class MPLUGBackend(VQABackend):
    """mPLUG-large VQA through modelscope's ``visual_question_answering`` pipeline, as the
    reference runs it (one pair at a time, float32: the reference's accelerate fp16 setting
    wraps only ``MPLUG.forward``, which it never calls). ``model``: the modelscope id (found in
    the local modelscope cache, never downloaded) or a local model folder."""

    name = "mplug"
    # what setup() imports (modelscope's pipeline entry point), and what its mPLUG model and
    # preprocessor import at module level
    requires = ("modelscope.pipelines:pipeline", "modelscope.utils.constant:Tasks",
                "modelscope.pipelines.multi_modal.visual_question_answering_pipeline:VisualQuestionAnsweringPipeline",
                "modelscope.fileio.format.jsonplus", "torch", "transformers", "timm", "torchvision", "decord")
    extra = "dpg"
    env_hint = "make eval-env-dpg, then .venv-dpg/bin/cdm-bench evaluate or eval_python: .venv-dpg/bin/python"
    #: the files of a modelscope mPLUG model folder (configuration.json names the model type)
    MODEL_FILES = ("configuration.json", "config.yaml", "config_bert.json", "vocab.txt", "pytorch_model.bin")

    def __init__(self, device: str = "cpu", dtype: str = "float32", model: str = MPLUG_ID):
        super().__init__(device, dtype)
        if dtype != "float32":
            raise ValueError(f"VQA backend 'mplug' runs in float32 only (as the reference), got dtype {dtype!r}")
        self.model_ref = str(model)
        self.pipe = None

    def _is_path(self) -> bool:
        ref = self.model_ref
        return ref.startswith((".", "/", "~")) or "/" not in ref or Path(ref).expanduser().exists()

    def locate(self) -> Path | None:
        candidates = [Path(self.model_ref).expanduser()] if self._is_path() else _modelscope_candidates(self.model_ref)
        return next((c.resolve() for c in candidates if all((c / f).is_file() for f in self.MODEL_FILES)), None)

    def check(self) -> list[str]:
        parts = super().check()
        if self.locate() is None:
            if self._is_path():
                parts.append(f"needs the mPLUG model folder {self.model_ref} (not found, or without all of "
                             f"{', '.join(self.MODEL_FILES)})")
            else:
                parts.append(
                    f"needs the mPLUG VQA model {self.model_ref} (not in the local modelscope cache): fetch it "
                    f"where the network is reachable with `python -c \"from modelscope.hub.snapshot_download "
                    f"import snapshot_download; print(snapshot_download('{self.model_ref}'))\"` (MODELSCOPE_CACHE "
                    f"set as when scoring), or pass its local folder as backend_options {{\"model\": PATH}}")
        return parts

    def setup(self) -> None:
        from modelscope.pipelines import pipeline
        from modelscope.utils.constant import Tasks

        # an absolute folder: a relative one reads like a hub id and modelscope asks the hub first
        self.pipe = pipeline(Tasks.visual_question_answering, model=str(self.locate()), device=self.device)

    def teardown(self) -> None:
        self.pipe = None

    def answer(self, images, questions):
        out = self.pipe([{"image": im, "question": q} for im, q in zip(images, questions)])
        return [str(o["text"]) for o in (out if isinstance(out, list) else [out])]

    def describe(self) -> dict:
        return {**super().describe(), "model": self.model_ref, "model_fingerprint": weights_fingerprint(self.locate())}


class FakeVQA(VQABackend):
    """Deterministic answers without a model (tests, harness timing; never a real score):
    ``rule(image, question) -> str`` when given, else "yes" with probability ``p_yes`` from a
    hash of the image's pixels, the question and ``seed``."""

    name = "fake"

    def __init__(self, device: str = "cpu", dtype: str = "float32", p_yes: float = 0.75, seed: int = 0,
                 rule: Callable[[Any, str], str] | None = None):
        super().__init__(device, dtype)
        if not 0.0 <= float(p_yes) <= 1.0:
            raise ValueError(f"p_yes must be in [0, 1], got {p_yes!r}")
        self.p_yes, self.seed, self.rule = float(p_yes), int(seed), rule
        self.asked = 0  # questions answered (for tests)

    def answer(self, images, questions):
        self.asked += len(questions)
        if self.rule is not None:
            return [str(self.rule(im, q)) for im, q in zip(images, questions)]
        digests: dict[int, bytes] = {}
        out = []
        for im, q in zip(images, questions):
            if id(im) not in digests:
                digests[id(im)] = hashlib.sha256(im.tobytes()).digest()
            h = hashlib.sha256(digests[id(im)] + f"{self.seed}\0{q}".encode()).digest()
            out.append(YES if int.from_bytes(h[:8], "little") / 2.0**64 < self.p_yes else "no")
        return out

    def describe(self) -> dict:
        rule = None if self.rule is None else f"{self.rule.__module__}.{self.rule.__qualname__}"
        return {**super().describe(), "p_yes": self.p_yes, "seed": self.seed, "rule": rule}


def _discover_backends(reg: Registry) -> None:
    reg.register("mplug", MPLUGBackend)
    reg.register("fake", FakeVQA)


VQA_BACKENDS = Registry("VQA backend", "cdm_bench.vqa_backends", _discover_backends, base=VQABackend)


# -- the per-image answer store (for L1/L2 in aggregate) ----------------------------------------------------
def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


class AnswerStore:
    """Raw answers per (backend identity, image sha256, questions), one small JSON file each."""

    def __init__(self, root: Path, backend: dict):
        self.root, self.backend_key = Path(root), _digest(backend)

    def path(self, image_sha: str, questions: Sequence[dict]) -> Path:
        texts = [q["question"] for q in questions]
        key = _digest({"backend": self.backend_key, "image": image_sha, "questions": texts})
        return self.root / key[:2] / f"{key}.json"

    def put(self, image_sha: str, questions: Sequence[dict], answers: list[str]) -> None:
        from cdm_bench.atomic import atomic_write_json

        path = self.path(image_sha, questions)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path, {"answers": answers})

    def get(self, image_sha: str, questions: Sequence[dict]) -> list[str] | None:
        path = self.path(image_sha, questions)
        if not path.is_file():
            return None
        answers = json.loads(path.read_text())["answers"]
        return answers if len(answers) == len(questions) else None


# -- the metric ------------------------------------------------------------------------------------------
def _questions(m: dict) -> list[dict]:
    qs = m.get("questions")
    if not qs:
        raise SpecError(f"metric 'dpgbench' needs DPG-Bench prompts (a 'questions' graph per prompt row, from the "
                        f"'dpg' prompt source: prompts/dpg-bench.yaml); prompt {m.get('prompt_id')!r} has none")
    return qs


def _image_sha(m: dict) -> str:
    if not m.get("sha256"):
        raise SpecError(f"metric 'dpgbench': the record of prompt {m.get('prompt_id')!r} k={m.get('k')} has no "
                        f"'sha256' (evaluate's manifest records carry it)")
    return str(m["sha256"])


def _check_grid_groups(meta: Sequence[dict]) -> None:
    for i in range(0, len(meta), GRID):
        group = meta[i:i + GRID]
        ids, ks = sorted({str(m.get("prompt_id")) for m in group}), [m.get("k") for m in group]
        if len(ids) != 1 or ks != list(range(GRID)):
            raise SpecError(f"metric 'dpgbench' mode 'grid' (ELLA's 2x2 grid) needs exactly {GRID} samples per "
                            f"prompt (k = 0..{GRID - 1}, in manifest order); got prompt(s) {ids} with k {ks}: "
                            f"generate with --samples-per-prompt {GRID}, or use mode 'single'")


class DPGBench(PerImageMetric):
    """DPG-Bench score (x100) with L1/L2 category sub-values. Options: ``mode`` ("single" |
    "grid"), ``backend`` (a registered name or a :class:`VQABackend` object), ``backend_options``
    (e.g. ``{"model": "/local/mplug"}``), ``answers_dir``."""

    name = "dpgbench"
    version = "1"
    higher_is_better = True
    input_format = "pil"
    extra = "dpg"
    env_hint = "make eval-env-dpg (.venv-dpg)"

    def __init__(self, device: str = "cpu", dtype: str = "float32", mode: str = "single",
                 backend: str | VQABackend = "mplug", backend_options: dict | None = None,
                 answers_dir: str | None = None):
        super().__init__(device, dtype)
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self.mode = mode
        self.group_size = GRID if mode == "grid" else 1
        if isinstance(backend, VQABackend):
            if backend_options:
                raise ValueError("backend_options apply to a backend name, not to a backend object")
            self.backend = backend
        else:
            self.backend = VQA_BACKENDS.get(str(backend))(device=device, dtype=dtype, **dict(backend_options or {}))
        self.answers_dir = answers_dir

    def check(self) -> None:
        parts = self.backend.check()
        if parts:
            raise MissingDependencyError(f"metric {self.name!r} (VQA backend {self.backend.name!r}) "
                                         + " and ".join(parts))

    def setup(self) -> None:
        self.backend.setup()

    def teardown(self) -> None:
        self.backend.teardown()
        super().teardown()

    def store(self) -> AnswerStore:
        from cdm_bench.paths import cache_dir

        root = Path(self.answers_dir).expanduser() if self.answers_dir else cache_dir() / "dpgbench-answers"
        return AnswerStore(root, self.backend.describe())

    def score(self, images, prompts, meta) -> np.ndarray:
        graphs = [_questions(m) for m in meta]
        shas = [_image_sha(m) for m in meta]
        if self.mode == "grid":
            _check_grid_groups(meta)
        pairs = [(im, q["question"]) for im, g in zip(images, graphs) for q in g]
        answers = self.backend.answer([p[0] for p in pairs], [p[1] for p in pairs])
        if len(answers) != len(pairs):
            raise RuntimeError(f"VQA backend {self.backend.name!r} gave {len(answers)} answers to "
                               f"{len(pairs)} questions")
        store, scores, pos = self.store(), [], 0
        for sha, g in zip(shas, graphs):
            mine = [str(a) for a in answers[pos:pos + len(g)]]
            pos += len(g)
            store.put(sha, g, mine)
            scores.append(dpg_score(mine, g))
        out = np.asarray(scores, dtype=np.float64)
        return out.reshape(-1, GRID).mean(axis=1).repeat(GRID) if self.mode == "grid" else out

    def aggregate(self, scores: np.ndarray, meta: Sequence[dict]) -> dict[str, float]:
        by_prompt: dict[str, list[float]] = defaultdict(list)
        for s, m in zip(scores, meta):
            by_prompt[str(m["prompt_id"])].append(float(s))
        value = 100.0 * float(np.mean([np.mean(by_prompt[p]) for p in sorted(by_prompt)]))
        return {self.name: value, **self.category_scores(meta)}

    def category_scores(self, meta: Sequence[dict]) -> dict[str, float]:
        """L1/L2: mean x100 of the raw answers per category, pooled over every image."""
        store, l2, missing = self.store(), defaultdict(list), 0
        for m in meta:
            graph = _questions(m)
            answers = store.get(_image_sha(m), graph)
            if answers is None:
                missing += 1
                continue
            for q, a in zip(graph, answers):
                l2[l2_category(q)].append(float(a == YES))
        if missing:
            raise RuntimeError(f"metric 'dpgbench': the answers of {missing} image(s) are not in {store.root} "
                               f"(written while scoring, read for the L1/L2 sub-values); re-run evaluate with "
                               f"--force, with an answers_dir that every rank shares")
        l1: dict[str, list[float]] = defaultdict(list)
        for cat, vals in l2.items():
            l1[l1_category(cat)] += vals
        return {**{f"L1/{c}": 100.0 * float(np.mean(l1[c])) for c in sorted(l1)},
                **{f"L2/{c}": 100.0 * float(np.mean(l2[c])) for c in sorted(l2)}}

    def describe(self) -> dict:
        return {**super().describe(), "mode": self.mode, "backend": self.backend.describe()}
