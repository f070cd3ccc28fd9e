"""llm_judge's transformers backend on a tiny random Qwen2-VL built in-process (no download):
end to end through ``cdm-bench evaluate --images A --against B`` (a random model's answers hold no
verdict: retried, stored, counted failed), verdicts flowing from scripted ``generate`` output
through the agreement rule, the message it builds (system prompt, two images, greedy), and one-line
errors for a missing model (exit 2, before any image is read) or misplaced options."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("transformers")

from tiny_qwen2vl import write_model  # noqa: E402

from cdm_bench.errors import MissingDependencyError, SpecError  # noqa: E402
from metrics.llm_judge import LLMJudge  # noqa: E402
from metrics.llm_judge_backends import Pair, ResponseStore, judge_pairs  # noqa: E402
from metrics.llm_judge_local import TransformersBackend, decode_data_url  # noqa: E402
from metrics.llm_judge_protocol import SYSTEM_PROMPT, image_data_url, parse_verdict  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return write_model(tmp_path_factory.mktemp("judge") / "qwen2-vl-judge", seed=5)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from cdm_bench.generate import generate

    base = tmp_path_factory.mktemp("judge-runs")
    prompts = base / "prompts.txt"
    prompts.write_text("a red apple\ntwo cats on a sofa\na lighthouse at dusk\n")
    a = generate({"generator": "dummy", "shade": 200}, prompts, base / "a", progress=False)
    b = generate({"generator": "dummy", "shade": 30}, prompts, base / "b", progress=False)
    return a, b


def cli(*args):
    return subprocess.run([sys.executable, "-m", "cdm_bench", *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})


def _opts(model, **extra) -> str:
    return json.dumps({"llm_judge": {"backend": "transformers", "model": str(model), "max_new_tokens": 6,
                                     "parse_retries": 1, "concurrency": 2, **extra}})


def test_a_random_local_model_runs_end_to_end_and_its_pairs_fail_not_tie(tiny, runs):
    a, b = runs
    strict = cli("evaluate", "--images", a, "--against", b, "--metrics", "llm_judge", "--metric-options", _opts(tiny))
    assert strict.returncode == 2 and "3 of 3 pairs got no verdict" in strict.stderr, strict.stderr[-2000:]
    ok = cli("evaluate", "--images", a, "--against", b, "--metrics", "llm_judge", "--metric-options", _opts(tiny),
             "--allow-partial")
    assert ok.returncode == 0 and "3 failed" in ok.stdout, ok.stderr[-2000:]
    folder = next((a / "pairwise").glob("llm_judge-*"))
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["status"] == "failed" and summary["pairs"] == 3 and summary["failed"] == 3
    judge = summary["identity"]["judge"]
    assert judge["backend"] == "transformers" and judge["model"] == str(tiny) and "config-" in judge["identity"]
    verdicts = pd.read_csv(folder / "verdicts.csv")
    assert (verdicts["status"] == "failed").all() and verdicts["winner"].isna().all()
    stored = [json.loads(line) for line in (folder / "responses.jsonl").read_text().splitlines()]
    # round 1 asked 1 + parse_retries times per pair (round 2 is not asked once round 1 has no verdict);
    # the second run asked again only what had no verdict, and greedy decoding repeats the same answer
    assert len(stored) == 3 * 2 * 2 and {s["round"] for s in stored} == {1}
    assert all(parse_verdict(s["response"]) is None for s in stored)
    for pid in {s["prompt_id"] for s in stored}:
        assert len({s["response"] for s in stored if s["prompt_id"] == pid}) == 1
    assert all(s["model"] == judge["identity"] for s in stored)


def _pairs(n: int) -> list[Pair]:
    out = []
    for i in range(n):
        a, b = np.full((20, 30, 3), 40 * i, np.uint8), np.full((30, 20, 3), 250 - 40 * i, np.uint8)
        out.append(Pair(str(i), 0, f"prompt {i}", f"{i:064x}", f"{i + 99:064x}", image_data_url(a), image_data_url(b)))
    return out


def test_scripted_generations_flow_through_the_agreement_rule(tiny, tmp_path):
    import torch

    backend = TransformersBackend(str(tiny), max_new_tokens=32)
    backend.load()
    tok = backend.processor.tokenizer
    answers = iter(["Both look fine. [[Winner: Image A]]", "[[Winner: Image B]]",  # pair 0: a, consistent
                    "no verdict here", "[[Winner: Tie]]", "[[Winner: Tie]]",       # pair 1: retried, then tie
                    "[[Winner: Image A]]", "[[Winner: Image A]]"])                 # pair 2: disagree -> tie
    calls = []

    def scripted(**kw):
        calls.append(kw)
        new = torch.tensor([tok.encode(next(answers), add_special_tokens=False) + [tok.eos_token_id]])
        return torch.cat([kw["input_ids"], new], dim=1)

    backend.model.generate = scripted
    rows = judge_pairs(backend, ResponseStore(tmp_path / "r.jsonl"), _pairs(3), concurrency=1, parse_retries=1)
    assert [(r["winner"], r["consistent"]) for r in rows] == [("a", True), ("tie", True), ("tie", False)]
    assert len(calls) == 7 and all(c["do_sample"] is False and c["max_new_tokens"] == 32 for c in calls)
    assert all(c["image_grid_thw"].shape[0] == 2 for c in calls)  # both images, each its own grid
    text = tok.decode(calls[0]["input_ids"][0])
    assert text.startswith(f"<|im_start|>system\n{SYSTEM_PROMPT}<|im_end|>") and "prompt 0" in text
    assert text.count("<|vision_start|>") == 2 and text.endswith("<|im_start|>assistant\n")
    stored = [json.loads(x)["response"] for x in (tmp_path / "r.jsonl").read_text().splitlines()]
    assert stored[0] == "Both look fine. [[Winner: Image A]]" and len(stored) == 7  # decoded exactly


def test_data_urls_decode_to_the_same_pixels():
    image = np.random.default_rng(0).integers(0, 256, (24, 40, 3), dtype=np.uint8)
    assert np.array_equal(np.asarray(decode_data_url(image_data_url(image))), image)


def test_a_missing_model_is_one_line_exit_2_before_any_image(runs, tmp_path):
    a, b = runs
    before = sorted(p.name for p in (a / "pairwise").glob("*")) if (a / "pairwise").exists() else []
    bad = cli("evaluate", "--images", a, "--against", b, "--metrics", "llm_judge", "--metric-options",
              _opts(tmp_path / "no-such-model"))
    err = bad.stderr.strip()
    assert bad.returncode == 2 and len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert "no-such-model" in err and "option 'model'" in err and "huggingface-cli download" in err
    after = sorted(p.name for p in (a / "pairwise").glob("*")) if (a / "pairwise").exists() else []
    assert after == before  # nothing judged, nothing written
    with pytest.raises(MissingDependencyError, match="not in the local Hugging Face cache"):
        LLMJudge(backend="transformers", model="Qwen/No-Such-VL").backend()


def test_backend_options_are_checked():
    with pytest.raises(SpecError, match="needs model"):
        LLMJudge(backend="transformers")
    with pytest.raises(SpecError, match="drop base_url"):
        LLMJudge(backend="transformers", model="m", base_url="http://x/v1")
    with pytest.raises(SpecError, match="options of backend 'transformers'"):
        LLMJudge(base_url="http://x/v1", model="m", max_new_tokens=8)
    with pytest.raises(SpecError, match="dtype must be"):
        LLMJudge(backend="transformers", model="m", dtype="int8")
    with pytest.raises(SpecError, match="one of"):
        LLMJudge(backend="vllm", model="m")
