"""vqascore against the t2v-metrics package itself; runs inside .venv-t2v (made by
scripts/make_t2v_env.sh, launched by tests/metrics/test_vqascore.py; the main run does not collect
this file: its name does not start with ``test_``).

The reference is t2v-metrics 3.0's own ``Qwen2VLModel`` (its loader, its ``forward``: chat template,
``process_vision_info``, processor, ``generate(max_new_tokens=1, output_scores=True)``, softmax at
the "Yes" token) on a tiny random Qwen2-VL and Qwen2.5-VL folder. ``import t2v_metrics`` needs
ffmpeg and every other model family's packages, so its Qwen2-VL module is loaded with the
package's folders as namespaces (its code unchanged). Settings of its model table that are changed:
the processor path (a hub id in the package) points at the tiny folder, attention is "sdpa" (3.0
asks for flash_attention_2, CUDA only; 3.1 itself uses sdpa), and, for the float32 check, the dtype
(the package runs bfloat16; that is checked as shipped). Nothing is downloaded.
"""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import copy  # noqa: E402
import functools  # noqa: E402
import importlib  # noqa: E402
import importlib.util  # noqa: E402
import sys  # noqa: E402
import types  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from tiny_qwen2vl import write_model  # noqa: E402

from metrics.vqascore import QUESTION, QUESTION_T2V_3_0, VQAScore  # noqa: E402

PROMPTS = ["a red apple", "two cats on a sofa", "x", "Yes"]


@functools.lru_cache(maxsize=None)
def package_qwen_module():
    """t2v_metrics.models.vqascore_models.qwen2vl_model without the package's __init__ files
    (with an untouched copy of its model table, ``ORIGINAL``)."""
    root = Path(importlib.util.find_spec("t2v_metrics").origin).parent
    for name, sub in (("t2v_metrics", ""), ("t2v_metrics.models", "models"),
                      ("t2v_metrics.models.vqascore_models", "models/vqascore_models")):
        if name not in sys.modules:
            mod = types.ModuleType(name)
            mod.__path__ = [str(root / sub)]
            sys.modules[name] = mod
    qwen = importlib.import_module("t2v_metrics.models.vqascore_models.qwen2vl_model")
    qwen.ORIGINAL = copy.deepcopy(qwen.QWEN2_VL_MODELS)
    return qwen


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("t2v")
    rng = np.random.default_rng(1)
    from PIL import Image

    paths = []
    for i, (h, w) in enumerate([(32, 48), (64, 40), (100, 100), (300, 180)]):
        p = root / f"im{i}.png"
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(p)
        paths.append(str(p))
    return {"qwen2": write_model(root / "qwen2-vl-tiny", seed=3, yes_gain=80), "images": paths,
            "qwen2.5": write_model(root / "qwen2.5-vl-tiny", seed=4, qwen25=True, yes_gain=80)}


def package_scores(folder: Path, name: str, images, prompts, question: str, dtype: str) -> np.ndarray:
    import torch

    qwen = package_qwen_module()
    info = copy.deepcopy(qwen.ORIGINAL[name])
    info["tokenizer"]["path"] = str(folder)
    info["model"]["attn_implementation"] = "sdpa"  # 3.0's flash_attention_2 needs CUDA (3.1 itself uses sdpa)
    if dtype == "float32":
        info["model"]["torch_dtype"] = torch.float32
    qwen.QWEN2_VL_MODELS[name] = info
    scorer = qwen.Qwen2VLModel(model_name=name, device="cpu", checkpoint=str(folder))
    return scorer.forward(images, prompts, question_template=question).float().numpy()


def our_scores(folder: Path, images, prompts, question: str, dtype: str) -> np.ndarray:
    from PIL import Image

    m = VQAScore(model=str(folder), question_template=question, dtype=dtype)
    m.check()
    m.setup()
    try:
        return m.score([Image.open(p) for p in images], prompts, [{}] * len(prompts))
    finally:
        m.teardown()


@pytest.mark.parametrize("family,name", [("qwen2", "qwen2-vl-2b"), ("qwen2.5", "qwen2.5-vl-3b")])
@pytest.mark.parametrize("question", [QUESTION, QUESTION_T2V_3_0])
def test_vqascore_equals_the_packages_float32(folders, family, name, question):
    theirs = package_scores(folders[family], name, folders["images"], PROMPTS, question, "float32")
    ours = our_scores(folders[family], folders["images"], PROMPTS, question, "float32")
    print(f"{family} {question[:20]!r}: package {theirs.tolist()} ours {ours.tolist()}")
    assert np.all(theirs > 0) and theirs.max() > 0.05  # real probabilities, not ~1/vocabulary
    np.testing.assert_allclose(ours, theirs, atol=1e-4, rtol=0)


def test_vqascore_equals_the_packages_bfloat16_as_shipped(folders):
    theirs = package_scores(folders["qwen2.5"], "qwen2.5-vl-7b", folders["images"], PROMPTS, QUESTION, "bfloat16")
    ours = our_scores(folders["qwen2.5"], folders["images"], PROMPTS, QUESTION, "bfloat16")
    print(f"bfloat16: package {theirs.tolist()} ours {ours.tolist()}")
    np.testing.assert_allclose(ours, theirs, atol=1e-4, rtol=0)
