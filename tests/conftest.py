import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def pytest_collection_modifyitems(config, items):
    if os.environ.get("RUN_SLOW"):
        return
    skip = pytest.mark.skip(reason="slow / real weights: set RUN_SLOW=1")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _restored_environment():
    """No test leaks an environment variable into the next (a leaked TQDM_DISABLE once silenced
    a later test's progress bar, depending on the order)."""
    before = dict(os.environ)
    yield
    if dict(os.environ) != before:
        os.environ.clear()
        os.environ.update(before)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Trained toy artefacts are shared by the whole session, never the user's cache."""
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):  # one cache for all workers (artefacts train under a file lock)
        base = base.parent
    cache = base / "cdm-bench-cache"
    monkeypatch.setenv("CDM_BENCH_CACHE", str(cache))


@pytest.fixture(scope="session", autouse=True)
def _register_dummies():
    from dummy import DummyGenerator, Exploding, MeanBrightness

    from cdm_bench.registry import GENERATORS, METRICS

    GENERATORS.register("dummy", DummyGenerator, overwrite=True)
    METRICS.register("brightness", MeanBrightness, overwrite=True)
    METRICS.register("exploding", Exploding, overwrite=True)


# Tiny real diffusers pipelines (tests/tiny_pipelines.py), built once per session, offline.
@pytest.fixture(scope="session")
def tiny_sd3_dir(tmp_path_factory):
    """A tiny StableDiffusion3Pipeline folder (CLIP x2 + T5, shift 3.0, 32 px images)."""
    pytest.importorskip("diffusers")
    from tiny_pipelines import save_tiny_sd3

    return save_tiny_sd3(tmp_path_factory.mktemp("tiny-sd3"), t5=True, seed=0)


@pytest.fixture(scope="session")
def tiny_sd3_no_t5_dir(tmp_path_factory):
    """The same without T5 (saved with text_encoder_3=None, tokenizer_3=None)."""
    pytest.importorskip("diffusers")
    from tiny_pipelines import save_tiny_sd3

    return save_tiny_sd3(tmp_path_factory.mktemp("tiny-sd3-no-t5"), t5=False, seed=0)


@pytest.fixture(scope="session")
def tiny_longcat_dir(tmp_path_factory):
    """A tiny LongCatImagePipeline folder (Qwen2.5-VL text encoder, 512-token text, 32 px images)."""
    pytest.importorskip("diffusers")
    from tiny_pipelines import save_tiny_longcat

    return save_tiny_longcat(tmp_path_factory.mktemp("tiny-longcat"), seed=0)
