"""``cdm-bench evaluate --images A --against B --metrics llm_judge`` end to end through the CLI
and the real openai client against a local OpenAI-compatible server: results in A's pairwise/
folder; a re-run asks nothing; after a SIGKILL it resumes without repeating a stored call (the
server counts requests); runs of different prompts are refused; a missing key or a pair without a
verdict are one-line errors (exit 2 / 1) — the first before any image is read."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("openai")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "metrics"))
from judge_server import Judge, serve  # noqa: E402


@pytest.fixture()
def server():
    yield from serve()

ROOT = Path(__file__).resolve().parents[2]


def cli(*args, env=None, check=True):
    proc = subprocess.run([sys.executable, "-m", "cdm_bench", *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, env={**os.environ, **(env or {})})
    if check:
        assert proc.returncode == 0, proc.stderr[-2000:]
    return proc


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from cdm_bench.generate import generate

    base = tmp_path_factory.mktemp("pairs")
    a = generate({"generator": "toy-real", "preset": "tiny"}, "toy-small", base / "a", limit=6, progress=False)
    b = generate({"generator": "toy", "preset": "tiny", "nfe": 1}, "toy-small", base / "b", limit=6, progress=False)
    other = generate({"generator": "toy", "preset": "tiny", "nfe": 1}, "toy-small", base / "c", limit=5,
                     progress=False)
    return a, b, other


def _opts(url, model="judge", **extra):
    return json.dumps({"llm_judge": {"base_url": url, "model": model, "api_key_env": "JK", "concurrency": 1,
                                     "max_retries": 1, "timeout": 5, **extra}})


def _results(a: Path, model: str) -> dict:
    found = [json.loads(p.read_text()) for p in (a / "pairwise").glob("llm_judge-*/summary.json")]
    return next(r for r in found if r["identity"]["judge"]["model"] == model)


def test_judge_a_run_against_another_and_rerun_asks_nothing(server, runs):
    a, b, _ = runs
    out = cli("evaluate", "--images", a, "--against", b, "--metrics", "llm_judge", "--metric-options", _opts(server),
              env={"JK": "EMPTY"})
    assert "6 pairs, 0 failed" in out.stdout and Judge.total == 12
    res = _results(a, "judge")
    assert res["status"] == "ok" and res["pairs"] == 6 and abs(res["win"] + res["tie"] + res["loss"] - 1) < 1e-9
    assert res["against"]["path"] == str(b) and res["consistency"] == 1.0
    cli("evaluate", "--images", a, "--against", b, "--metrics", "llm_judge", "--metric-options", _opts(server),
        env={"JK": "EMPTY"})
    assert Judge.total == 12  # every answer was stored


def test_a_sigkilled_judge_resumes_without_repeating_a_stored_call(server, runs):
    a, b, _ = runs
    Judge.delay = 0.2
    cmd = [sys.executable, "-m", "cdm_bench", "evaluate", "--images", str(a), "--against", str(b), "--metrics",
           "llm_judge", "--metric-options", _opts(server, model="judge-kill")]
    proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, "JK": "EMPTY"}, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while Judge.total < 5 and time.time() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    at_kill = Judge.total
    store = next(p for p in (a / "pairwise").glob("llm_judge-*/responses.jsonl")
                 if "judge-kill" in p.read_text())
    stored = len(store.read_text().splitlines())
    assert 0 < stored < 12
    Judge.delay = 0.0
    cli("evaluate", "--images", a, "--against", b, "--metrics", "llm_judge", "--metric-options",
        _opts(server, model="judge-kill"), env={"JK": "EMPTY"})
    assert Judge.total - at_kill == 12 - stored  # only what was not stored is asked
    assert _results(a, "judge-kill")["pairs"] == 6


def test_refusals_are_one_line(server, runs):
    a, b, other = runs
    bad = cli("evaluate", "--images", a, "--against", other, "--metrics", "llm_judge", "--metric-options",
              _opts(server), env={"JK": "EMPTY"}, check=False)
    assert bad.returncode == 2 and "same (prompt id, sample) set" in bad.stderr
    before = Judge.total
    os.environ.pop("JK", None)
    nokey = cli("evaluate", "--images", a, "--against", b, "--metrics", "llm_judge", "--metric-options",
                _opts(server, model="k3"), check=False)
    assert nokey.returncode == 2 and "JK is not set" in nokey.stderr and Judge.total == before
    assert len(nokey.stderr.strip().splitlines()) == 1
    wrong = cli("evaluate", "--images", a, "--against", b, "--metrics", "toy_fid", env={"JK": "x"}, check=False)
    assert wrong.returncode == 2 and "not a pairwise metric" in wrong.stderr


def test_pairs_without_a_verdict_fail_the_call_unless_allowed(server, runs, tmp_path):
    from cdm_bench.generate import generate

    a = generate({"generator": "dummy", "shade": 200}, _garbage(tmp_path), tmp_path / "ga", progress=False)
    b = generate({"generator": "dummy", "shade": 20}, _garbage(tmp_path), tmp_path / "gb", progress=False)
    failed = cli("evaluate", "--images", a, "--against", b, "--metrics", "llm_judge", "--metric-options",
                 _opts(server, parse_retries=0), env={"JK": "EMPTY"}, check=False)
    assert failed.returncode == 2 and "got no verdict" in failed.stderr
    ok = cli("evaluate", "--images", a, "--against", b, "--metrics", "llm_judge", "--metric-options",
             _opts(server, parse_retries=0), "--allow-partial", env={"JK": "EMPTY"})
    assert "2 failed" in ok.stdout and _results(a, "judge")["status"] == "partial"


def _garbage(tmp_path: Path) -> Path:
    p = tmp_path / "prompts.txt"
    p.write_text("garbage one\ngarbage two\na red circle\n")
    return p


def test_the_leaderboard_shows_win_tie_loss_and_a_ranking(server, runs, tmp_path):
    from cdm_bench.evaluate import evaluate

    a, b, _ = runs
    cli("evaluate", "--images", a, "--against", b, "--metrics", "llm_judge", "--metric-options", _opts(server),
        env={"JK": "EMPTY"})
    for run in (a, b):
        evaluate(run, [{"name": "toy_align", "scorer": "tiny"}], progress=False)
    cli("leaderboard", a, b, "--out", tmp_path / "lb")
    import pandas as pd

    table = pd.read_csv(tmp_path / "lb" / "pairwise.csv")
    res = _results(a, "judge")
    row = table[table["judge"] == "llm_judge (judge)"].iloc[0]  # (the module's other tests judged with others)
    assert row["win"] == pytest.approx(res["win"]) and row["pairs"] == 6 and row["against"] == "toy-nfe1"
    ranking = pd.read_csv(tmp_path / "lb" / "ranking.csv")
    mine = ranking[ranking["judge"] == "llm_judge (judge)"]
    assert len(mine) == 2 and set(mine["rank"]) <= {1, 2}
    winner = "toy-real" if res["win"] > res["loss"] else "toy-nfe1"
    assert mine.sort_values("rank")["generator"].iloc[0] == winner or res["win"] == res["loss"]
    md = (tmp_path / "lb" / "leaderboard.md").read_text()
    assert "## Pairwise judges" in md and "Bradley-Terry" in md
    assert 'id="pairwise"' in (tmp_path / "lb" / "leaderboard.html").read_text()
    wide = pd.read_csv(tmp_path / "lb" / "leaderboard.csv")
    assert len(wide) == 2  # the pairwise folder is not a run of its own


def test_a_benchmark_spec_judges_every_generator_against_its_reference(server, tmp_path, monkeypatch):
    import pandas as pd

    from cdm_bench.benchmark import BenchmarkSpec, run_benchmark
    from cdm_bench.errors import SpecError

    monkeypatch.setenv("JK", "EMPTY")
    judge = {"name": "llm_judge", "base_url": server, "model": "spec-judge", "api_key_env": "JK", "concurrency": 2}
    spec = {"name": "judged", "samples_per_prompt": 1, "limit": 3,
            "generators": [{"generator": "toy-real", "preset": "tiny", "name": "real"},
                           {"generator": "toy", "preset": "tiny", "nfe": 1, "name": "one"},
                           {"generator": "toy", "preset": "tiny", "nfe": 2, "name": "two"}],
            "prompts": ["toy-small"], "metrics": [{"name": "toy_align", "scorer": "tiny"}],
            "pairwise": [{"metric": judge, "reference": "real"}]}
    out = run_benchmark(BenchmarkSpec.from_dict(spec), tmp_path / "b", progress=False)
    table = pd.read_csv(out / "pairwise.csv")
    assert sorted(table["generator"]) == ["one", "two"] and set(table["against"]) == {"real"}
    assert (table["pairs"] == 3).all() and Judge.total == 2 * 3 * 2
    ranking = pd.read_csv(out / "ranking.csv")
    assert sorted(ranking["generator"]) == ["one", "real", "two"]
    with pytest.raises(SpecError, match="reference must name"):
        run_benchmark(BenchmarkSpec.from_dict({**spec, "pairwise": [{"metric": judge, "reference": "nope"}]}),
                      tmp_path / "c", progress=False)
    assert not (tmp_path / "c").exists()


def test_the_dry_run_lists_the_judged_pairs(monkeypatch):
    from cdm_bench.benchmark import BenchmarkSpec
    from cdm_bench.dryrun import dry_run

    monkeypatch.delenv("JK", raising=False)
    judge = {"name": "llm_judge", "base_url": "http://127.0.0.1:9/v1", "model": "m", "api_key_env": "JK"}
    spec = BenchmarkSpec.from_dict({"generators": [{"generator": "toy-real", "name": "real"},
                                                   {"generator": "toy", "preset": "tiny", "name": "one"}],
                                    "prompts": ["toy-small"], "metrics": ["toy_align"],
                                    "pairwise": [{"metric": judge, "reference": "real"}]})
    text = dry_run(spec)
    row = next(line for line in text.splitlines() if "llm_judge vs real" in line)
    assert "| one " in row and "cdm-bench[judge]" in row and "JK is not set" in row


@pytest.mark.dist
def test_a_sharded_judge_splits_the_pairs_and_matches_one_process(server, runs):
    """torchrun 2 processes: each pair asked once (the server counts), verdicts equal to one process's;
    a later 1-process run reads both ranks' answer files and asks nothing."""
    import socket

    import pandas as pd

    a, b, _ = runs
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(port), "-m", "cdm_bench", "evaluate", "--images", str(a), "--against", str(b),
           "--metrics", "llm_judge", "--metric-options", _opts(server, model="judge-shard")]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "JK": "EMPTY", "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert Judge.counts and Judge.total == 12  # 6 pairs x 2 rounds, none twice
    res = _results(a, "judge-shard")
    folder = next(p.parent for p in (a / "pairwise").glob("llm_judge-*/summary.json")
                  if json.loads(p.read_text())["identity"]["judge"]["model"] == "judge-shard")
    assert sorted(p.name for p in folder.glob("responses*.jsonl")) == ["responses-r0.jsonl", "responses-r1.jsonl"]
    assert res["pairs"] == 6 and res["status"] == "ok"
    cli("evaluate", "--images", a, "--against", b, "--metrics", "llm_judge", "--metric-options",
        _opts(server, model="judge-shard"), env={"JK": "EMPTY"})
    assert Judge.total == 12
    one = cli("evaluate", "--images", a, "--against", b, "--metrics", "llm_judge", "--metric-options",
              _opts(server, model="judge-one"), env={"JK": "EMPTY"})
    assert one.returncode == 0 and Judge.total == 24
    single = next(p.parent for p in (a / "pairwise").glob("llm_judge-*/summary.json")
                  if json.loads(p.read_text())["identity"]["judge"]["model"] == "judge-one")
    cols = ["prompt_id", "k", "round1", "round2", "winner", "consistent"]
    pd.testing.assert_frame_equal(pd.read_csv(folder / "verdicts.csv")[cols], pd.read_csv(single / "verdicts.csv")[cols])
