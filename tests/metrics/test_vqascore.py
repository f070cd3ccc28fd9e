"""vqascore on tiny random Qwen2-VL models built in-process (no download): a known answer with the
logits set by hand, the GenAI-Bench set end to end with per-skill sub-values, option and
missing-weights errors (one line, exit 2, before any image is scored), and the comparison with the
t2v-metrics package itself, run inside .venv-t2v (scripts/make_t2v_env.sh)."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

pytest.importorskip("transformers")

from tiny_qwen2vl import write_model  # noqa: E402

from cdm_bench.errors import MissingDependencyError, SpecError  # noqa: E402
from metrics.vqascore import QUESTION, VQAScore  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
ENV_PYTHON = ROOT / ".venv-t2v" / "bin" / "python"
ENV_CHECKS = Path(__file__).with_name("t2v_env_checks.py")
N_ENV_CHECKS = 5
SAMPLE = ROOT / "tests" / "samples" / "genai-bench"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return write_model(tmp_path_factory.mktemp("vqa") / "qwen2-vl-tiny", seed=3, yes_gain=80)


def _images(n=3, seed=0):
    from PIL import Image

    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (32 + 8 * i, 48, 3), dtype=np.uint8)) for i in range(n)]


@pytest.mark.parametrize("penalty", [None, 1.05])
def test_the_score_is_the_softmax_probability_of_yes(tiny, penalty):
    """Output layer zeroed, then a hook sets the logits: "Yes" 3, "No" 1, "<|im_start|>" 2, every
    other token 0. The score is the hand-computed softmax. A repetition penalty in the generation
    config applies as in t2v_metrics (its scores are generate's): it divides the logit of
    "<|im_start|>", which is in the prompt, not that of "Yes" (the question holds " Yes", another token)."""
    import torch

    m = VQAScore(model=str(tiny))
    m.setup()
    head = m.model.get_output_embeddings()
    torch.nn.init.zeros_(head.weight)
    tok = m.processor.tokenizer
    yes, no = tok.encode("Yes", add_special_tokens=False)[0], tok.encode("No", add_special_tokens=False)[0]
    start = tok.convert_tokens_to_ids("<|im_start|>")
    asked = tok.encode(QUESTION.format("a red apple"), add_special_tokens=False)
    assert yes not in asked and no not in asked
    bias = torch.zeros(head.weight.shape[0])
    bias[yes], bias[no], bias[start] = 3.0, 1.0, 2.0
    head.register_forward_hook(lambda _m, _a, out: out + bias)
    if penalty:
        m.model.generation_config.repetition_penalty = penalty
    p = penalty or 1.0
    vocab = head.weight.shape[0]
    want = math.exp(3) / (math.exp(3) + math.exp(1) + math.exp(2 / p) + vocab - 3)
    got = m.score(_images(2), ["a red apple", "two cats"], [{}, {}])
    assert got == pytest.approx([want, want], abs=1e-6)
    m.teardown()


def test_scores_are_probabilities_that_follow_image_and_prompt(tiny):
    from metric_kit import check_metric

    images = np.stack([np.asarray(im.resize((48, 40))) for im in _images(4, seed=2)])
    prompts = ["a red apple", "two cats on a sofa", "x", "a lighthouse"]
    res = check_metric(lambda: VQAScore(model=str(tiny)), images, prompts, [{}] * 4)
    assert np.all((res.scores > 0) & (res.scores < 1)) and len(set(res.scores.round(9))) == 4
    assert res.values == {"vqascore": pytest.approx(float(np.mean(res.scores)))}


def _genai_set(tmp_path: Path) -> Path:
    spec = yaml.safe_load((ROOT / "prompts" / "genai-bench.yaml").read_text())
    spec.update(count=6, source={"type": "genai", "path": str(SAMPLE)})
    path = tmp_path / "genai-sample.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_genai_bench_end_to_end_with_per_skill_values(tiny, tmp_path):
    from cdm_bench.evaluate import evaluate
    from cdm_bench.generate import generate

    run = generate({"generator": "dummy", "name": "d"}, _genai_set(tmp_path), tmp_path / "run", 1, progress=False)
    res = evaluate(run, [{"name": "vqascore", "model": str(tiny)}], progress=False)["metrics"]["vqascore"]
    scores = pd.read_parquet(run / "scores.parquet").set_index("prompt_id")["vqascore"]
    assert res["status"] == "ok" and len(scores) == 6 and res["value"] == pytest.approx(scores.mean())
    skills = json.loads((SAMPLE / "genai_skills.json").read_text())
    want = {f"skill/{t}": scores[[f"{i:05d}" for i in ids]].mean() for t, ids in skills.items() if ids}
    assert res["values"] == pytest.approx(want)  # mean over the prompts with that tag; untagged skills absent
    assert "skill/part relation" not in res["values"] and scores.round(9).nunique() == 6
    assert res["model"] == str(tiny) and len(res["config_sha256"]) == 64 and res["question_template"] == QUESTION


def test_bad_options_are_one_line_errors():
    for kw, needle in [({"question_template": "Does this show it?"}, "exactly one {}"),
                       ({"answer_template": " "}, "non-empty"), ({"model": ""}, "model must be")]:
        with pytest.raises(SpecError, match=re.escape(needle)):
            VQAScore(**kw)


def test_missing_weights_are_one_line_exit_2_before_any_image(tmp_path, capsys, monkeypatch):
    from cdm_bench.cli import main
    from cdm_bench.generate import generate

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    run = generate({"generator": "dummy", "name": "d"}, _genai_set(tmp_path), tmp_path / "run", 1, progress=False)
    for model, needles in [(str(tmp_path / "nope"), ["model folder", "nope", "huggingface-cli download"]),
                           ("Qwen/Qwen2.5-VL-7B-Instruct", ["`huggingface-cli download Qwen/Qwen2.5-VL-7B-Instruct`",
                                                           "option 'model'", "not in the local Hugging Face cache"])]:
        capsys.readouterr()
        code = main(["evaluate", "--images", str(run), "--metrics", "vqascore", "--metric-options",
                     json.dumps({"vqascore": {"model": model}})])
        err = capsys.readouterr().err.strip()
        assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err, err
        assert all(n in err for n in needles), (needles, err)
        assert not (run / "scores.parquet").exists()  # nothing was scored
    with pytest.raises(MissingDependencyError, match="needs the model folder"):
        VQAScore(model=str(tmp_path / "nope")).check()


@pytest.mark.skipif(not ENV_PYTHON.exists(),
                    reason="no .venv-t2v: run `bash scripts/make_t2v_env.sh` (the t2v-metrics package's env)")
def test_vqascore_matches_the_t2v_metrics_package_inside_its_env(tmp_path):
    assert len(re.findall(r"^def test_", ENV_CHECKS.read_text(), flags=re.M)) == 2  # 4 + 1 parametrised cases
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"), "TOKENIZERS_PARALLELISM": "false"}
    cmd = [str(ENV_PYTHON), "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs", "--basetemp", str(tmp_path / "t"),
           str(ENV_CHECKS)]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-6000:]
    assert re.search(rf"\b{N_ENV_CHECKS} passed\b", out) and "skipped" not in out, out[-3000:]
