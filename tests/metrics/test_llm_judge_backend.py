"""The judge's OpenAI backend against a local OpenAI-compatible server on 127.0.0.1 (scripted
verdicts; injected 429s, 500s, a timeout, unparsable answers) through the real openai client:
the agreement rule on hand-made cases, retries that then succeed, exhausted pairs marked failed,
and a second run that asks nothing already stored (the server counts requests)."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("openai")

from judge_server import Judge, serve  # noqa: E402


@pytest.fixture()
def server():
    yield from serve()

from metrics.llm_judge_backends import OpenAIBackend, Pair, ResponseStore, judge_pairs  # noqa: E402
from metrics.llm_judge_protocol import image_data_url  # noqa: E402


def _pairs(prompts: list[str], a_brighter: list[bool]) -> list[Pair]:
    out = []
    for i, (p, bright) in enumerate(zip(prompts, a_brighter)):
        a, b = np.full((16, 16, 3), 200 if bright else 50, np.uint8), np.full((16, 16, 3), 50 if bright else 200, np.uint8)
        out.append(Pair(str(i), 0, p, f"{i:064x}", f"{i + 1000:064x}", image_data_url(a), image_data_url(b)))
    return out


def test_verdicts_retries_failures_and_a_resumed_run_asks_nothing_twice(server, tmp_path, monkeypatch):
    monkeypatch.setenv("JUDGE_KEY", "EMPTY")
    backend = OpenAIBackend(server, "tiny-judge", api_key_env="JUDGE_KEY", timeout=1.0, max_retries=3)
    prompts = ["plain a", "plain b", "biased", "tie", "rate-limited", "flaky", "slow", "garbage", "down"]
    pairs = _pairs(prompts, [True, False, True, True, True, False, True, True, True])
    store = ResponseStore(tmp_path / "responses.jsonl")
    rows = {p.prompt: r for p, r in zip(pairs, judge_pairs(backend, store, pairs, concurrency=4, parse_retries=1))}
    assert (rows["plain a"]["winner"], rows["plain b"]["winner"]) == ("a", "b")
    assert rows["plain a"]["consistent"] and rows["biased"] == {**rows["biased"], "winner": "tie", "consistent": False}
    assert rows["tie"]["winner"] == "tie" and rows["tie"]["consistent"]
    for p in ("rate-limited", "flaky", "slow"):  # retried by the client, then answered
        assert rows[p]["status"] == "ok", rows[p]
    assert rows["rate-limited"]["winner"] == "a" and rows["flaky"]["winner"] == "b"
    assert Judge.counts["rate-limited"] == 4 and Judge.counts["flaky"] == 3  # 2 x 429 + 2 rounds; 1 x 500 + 2
    for p in ("garbage", "down"):  # never a verdict: failed, not a tie
        assert rows[p]["status"] == "failed" and rows[p]["winner"] is None and rows[p]["error"]
    assert Judge.counts["garbage"] == 2 and Judge.counts["down"] == 4  # parse retry once; 1 + 3 client retries
    before = dict(Judge.counts)
    again = judge_pairs(backend, ResponseStore(tmp_path / "responses.jsonl"), pairs, concurrency=4, parse_retries=1)
    asked = {p: Judge.counts[p] - before.get(p, 0) for p in prompts}
    assert all(asked[p] == 0 for p in prompts if rows[p]["status"] == "ok"), asked  # stored answers reused
    assert [r["winner"] for r in again if r["status"] == "ok"] == [rows[p]["winner"] for p in prompts
                                                                     if rows[p]["status"] == "ok"]
    stored = [json.loads(x) for x in (tmp_path / "responses.jsonl").read_text().splitlines()]
    assert all("EMPTY" not in json.dumps(s) for s in stored) and {s["round"] for s in stored} == {1, 2}


def test_a_missing_key_variable_is_one_line(monkeypatch):
    from cdm_bench.errors import CdmBenchError

    monkeypatch.delenv("NO_SUCH_KEY", raising=False)
    with pytest.raises(CdmBenchError, match="NO_SUCH_KEY is not set"):
        OpenAIBackend("http://127.0.0.1:9/v1", "m", api_key_env="NO_SUCH_KEY")
