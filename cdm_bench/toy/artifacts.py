"""Cached, config-hash-keyed artefacts of the toy world: the teacher and the scorer per preset.

Layout: ``cdm_bench.paths.cache_dir()/toy/<kind>-<hash12>/`` where ``<hash12>`` hashes the
full training config (world config included), so any change that alters the weights gives a
new folder. A missing artefact is trained on first use (a log line says so and where),
into a temporary folder that is renamed into place when complete, under a file lock so that
concurrent processes (e.g. torchrun ranks) train it once.

Presets (see :data:`cdm_bench.toy.train.PRESETS`): ``demo`` (the real one, ~5 min to train
both on 2 CPU cores), ``quick`` (CI health check, ~1 min), ``tiny`` (seconds; unit tests),
``bench`` (the world benchmark's teacher, ~3.6 h on 2 AMD EPYC cores, sampled with shift 3). A teacher's training
state is kept in ``.partial-teacher-<hash12>/`` while it trains, so a killed run resumes.

``get_scorer`` / ``scorer_report`` never import diffusers (the evaluate phase runs without it).

Example::

    >>> from cdm_bench.toy.artifacts import get_teacher, get_scorer   # doctest: +SKIP
    >>> teacher = get_teacher("quick")      # trains into the cache on first use
    >>> scorer = get_scorer("quick")
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import sys
import tempfile
from pathlib import Path

logger = logging.getLogger("cdm_bench.toy")

PRESET_NAMES = ("demo", "quick", "tiny", "bench")


def _say(msg: str) -> None:
    if logging.getLogger().hasHandlers() or logger.handlers:
        logger.info(msg)
    else:
        print(f"[cdm_bench.toy] {msg}", file=sys.stderr, flush=True)


def toy_cache() -> Path:
    from cdm_bench.paths import cache_dir

    d = cache_dir() / "toy"
    d.mkdir(parents=True, exist_ok=True)
    return d


def _configs(preset: str):
    from cdm_bench.toy.train import preset as get

    return get(preset)


@contextlib.contextmanager
def _lock(path: Path):
    try:
        import fcntl
    except ImportError:  # pragma: no cover - non-POSIX: no locking
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _cached(final: Path, marker: str, cfg) -> bool:
    """A complete artefact made with the config's thread count (the weights depend on it; an
    artefact trained before the count was fixed may have used fewer threads: it is retrained)."""
    if not (final / marker).is_file():
        return False
    try:
        threads = json.loads((final / marker).read_text()).get("threads")
    except (OSError, ValueError, AttributeError):
        return False
    if threads is not None and int(threads) != int(cfg.threads):
        _say(f"{final} was trained with {threads} threads, its config says {cfg.threads}: retraining it")
        return False
    return True


def _ensure(kind: str, cfg, train_fn, marker: str, retrain: bool, preset: str) -> Path:
    final = toy_cache() / f"{kind}-{cfg.hash()}"
    if not retrain and _cached(final, marker, cfg):
        return final
    with _lock(toy_cache() / f".{kind}-{cfg.hash()}.lock"):
        if not retrain and _cached(final, marker, cfg):  # another process made it meanwhile
            return final
        # under the lock nobody else trains this config: leftovers of killed runs are stale
        for stale in toy_cache().glob(f".tmp-{kind}-{cfg.hash()}-*"):
            shutil.rmtree(stale, ignore_errors=True)
        _say(f"training toy {kind} (preset {preset!r}) into {final} ...")
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{kind}-{cfg.hash()}-", dir=toy_cache()))
        try:
            train_fn(cfg, tmp)
            (tmp / "preset.json").write_text(json.dumps({"preset": preset, "kind": kind}))
            from cdm_bench.atomic import replace_dir

            replace_dir(tmp, final)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        _say(f"toy {kind} ready: {final}")
    return final


# ---------------------------------------------------------------------------------------
def teacher_dir(preset: str = "demo", retrain: bool = False, progress: bool = True) -> Path:
    """Folder of the preset's teacher (``save_pretrained`` layout); trains it if missing."""
    from cdm_bench.toy.train import TEACHER_LOG, train_teacher

    cfg = _configs(preset)[1]
    resume = toy_cache() / f".partial-teacher-{cfg.hash()}"  # survives a killed run; resumed next time

    def run(c, d):
        train_teacher(c, d, progress=progress, resume_dir=resume)
        shutil.rmtree(resume, ignore_errors=True)

    return _ensure("teacher", cfg, run, TEACHER_LOG, retrain, preset)


def get_teacher(preset: str = "demo", retrain: bool = False, device: str = "cpu"):
    """The preset's teacher ``ToyFlowModel`` in eval mode (trained and cached on first use)."""
    from cdm_bench.toy.model import ToyFlowModel

    path = teacher_dir(preset, retrain)
    return ToyFlowModel.from_pretrained(str(path)).to(device).eval()


def teacher_log(preset: str = "demo") -> dict:
    """The teacher's training log (time, steps, loss curve, config)."""
    from cdm_bench.toy.train import TEACHER_LOG

    return json.loads((teacher_dir(preset) / TEACHER_LOG).read_text())


def scorer_dir(preset: str = "demo", retrain: bool = False, progress: bool = True) -> Path:
    """Folder of the preset's scorer (``model.safetensors`` + ``config.json``); trains it if missing."""
    from cdm_bench.toy.scorer_training import SCORER_REPORT, train_scorer

    cfg = _configs(preset)[0]
    return _ensure("scorer", cfg, lambda c, d: train_scorer(c, d, progress=progress), SCORER_REPORT,
                   retrain, preset)


def cached_scorer_dir(preset: str = "demo") -> Path | None:
    """The preset's cached scorer folder, or None when it is not trained yet (trains nothing)."""
    from cdm_bench.toy.train import SCORER_REPORT

    final = toy_cache() / f"scorer-{_configs(preset)[0].hash()}"
    return final if (final / SCORER_REPORT).is_file() else None


def get_scorer(preset: str = "demo", retrain: bool = False, device: str = "cpu"):
    """The preset's ``ToyScorer`` in eval mode (trained and cached on first use). No diffusers."""
    from cdm_bench.toy.scorer import ToyScorer

    return ToyScorer.load(scorer_dir(preset, retrain), device=device)


def scorer_report(preset: str = "demo") -> dict:
    """Held-out evaluation of the preset's scorer: ``exact_accuracy``, ``real_alignment``, ..."""
    from cdm_bench.toy.train import SCORER_REPORT

    return json.loads((scorer_dir(preset) / SCORER_REPORT).read_text())
