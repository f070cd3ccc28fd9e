"""Regression tests for the reliability issue: each reproduces one failure that used to give a
silent wrong number, a crash, a write outside the run, code run from a spec, or a traceback."""

import json
import threading

import numpy as np
import pandas as pd
import pytest

from cdm_bench.cli import main
from cdm_bench.errors import RunConflictError, SpecError
from cdm_bench.evaluate import evaluate
from cdm_bench.generate import generate, read_records
from cdm_bench.leaderboard import write_leaderboard
from cdm_bench.prompts import PromptSet
from cdm_bench.registry import METRICS
from cdm_bench.rundir import RunDir, atomic_write_bytes


@pytest.fixture(scope="module", autouse=True)
def _register():
    from dummy import MeanValue

    METRICS.register("mean_value", MeanValue, overwrite=True)


def _ps(n=4, name="t"):
    return PromptSet(name, "1", [{"id": f"p{i}", "prompt": f"prompt {i}"} for i in range(n)])


def _gen(out, samples=2, seed=0, **spec):
    return generate({"generator": "dummy", "name": "d", **spec}, _ps(), out, samples, seed=seed, progress=False)


# -- 1. silent wrong numbers -----------------------------------------------------------------------------
def test_leaderboard_never_merges_different_metric_identities(tmp_path):
    a, b = _gen(tmp_path / "a", name="a"), _gen(tmp_path / "b", name="b", shade=9)
    evaluate(a, "mean_value", progress=False)
    evaluate(b, [{"name": "mean_value", "scale": 2.0}], progress=False)
    wide = pd.read_csv(write_leaderboard([a, b], tmp_path / "lb")["csv"])
    cols = [c for c in wide.columns if c.startswith("mean_value") and not c.endswith(("_low", "_high", "_delta"))]
    assert len(cols) == 2 and "mean_value" not in cols  # one column per identity
    assert wide[cols].notna().sum().tolist() == [1, 1]


def test_more_samples_then_partial_rescore_drops_the_stale_metric(tmp_path):
    run = _gen(tmp_path / "r", samples=2)
    evaluate(run, ["mean_value", {"name": "mean_value", "alias": "other", "scale": 3.0}], progress=False)
    _gen(tmp_path / "r", samples=4)  # resumes with more samples
    res = evaluate(run, "mean_value", progress=False)
    assert res["metrics"]["mean_value"]["n"] == 16 and "other" not in res["metrics"]
    long = pd.read_csv(write_leaderboard([run], tmp_path / "lb")["long_csv"])
    assert set(long["metric"]) == {"mean_value"}


def test_leaderboard_marks_results_of_an_older_image_set_stale(tmp_path):
    run = _gen(tmp_path / "r", samples=2)
    evaluate(run, "mean_value", progress=False)
    _gen(tmp_path / "r", samples=3)  # not re-evaluated
    long = pd.read_csv(write_leaderboard([run], tmp_path / "lb")["long_csv"])
    assert long["status"].tolist() == ["stale"] and long["mean"].isna().all()


def test_evaluate_out_into_another_runs_directory_is_refused(tmp_path):
    a, b = _gen(tmp_path / "a", name="a"), _gen(tmp_path / "b", name="b", seed=7)
    evaluate(b, "mean_value", progress=False)
    before = (b / "results.json").read_bytes()
    with pytest.raises(RunConflictError, match="another run"):
        evaluate(a, "mean_value", out_dir=b, progress=False)
    assert (b / "results.json").read_bytes() == before


def test_a_second_writer_is_refused_naming_the_holder(tmp_path):
    out = tmp_path / "r"
    with RunDir(out).lock("another generate"):
        with pytest.raises(RunConflictError, match=r"pid \d+ .*another generate"):
            _gen(out)
        with pytest.raises(RunConflictError, match="another generate"):
            evaluate(_gen(tmp_path / "other"), "mean_value", out_dir=out, progress=False)
    _gen(out)  # lock released: runs
    assert len(read_records(out)) == 8


# -- 2. crashes and stuck states ---------------------------------------------------------------------------
def test_leaderboard_with_one_generator_name_and_two_seeds(tmp_path):
    runs = [generate({"generator": "dummy", "name": "d"}, _ps(), tmp_path / f"s{s}", 1, seed=s, progress=False)
            for s in (0, 7)]
    for r in runs:
        evaluate(r, "mean_value", progress=False)
    wide = pd.read_csv(write_leaderboard(runs, tmp_path / "lb")["csv"])
    assert sorted(wide["generator"]) == ["d (seed 0)", "d (seed 7)"]


def test_a_cut_part_line_is_dropped_and_its_image_redone(tmp_path):
    out = tmp_path / "r"
    with pytest.raises(RuntimeError, match="boom"):
        generate({"generator": "dummy", "name": "d", "fail_on": "prompt 3"}, _ps(), out, 1, batch_size=1,
                 progress=False)
    part = next((out / "parts").glob("*.jsonl"))
    lines = part.read_text().splitlines()
    assert len(lines) == 3
    part.write_text("\n".join(lines[:-1]) + "\n" + lines[-1][: len(lines[-1]) // 2])  # full disk mid-line
    done = _gen(out, samples=1)  # resumes: the cut record's image is made again
    ref = _gen(tmp_path / "ref", samples=1)
    recs = read_records(done)
    assert len(recs) == 4 and [r["sha256"] for r in recs] == [r["sha256"] for r in read_records(ref)]
    generate({"generator": "dummy", "name": "d", "shade": 3}, _ps(), out, 1, overwrite=True, progress=False)
    assert len(read_records(out)) == 4


def test_concurrent_atomic_writes_never_collide(tmp_path):
    errors = []

    def write(i):
        try:
            for j in range(40):
                atomic_write_bytes(tmp_path / "same.json", f"{i}-{j}".encode())
        except Exception as exc:  # pragma: no cover - the failure being tested for
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and not list(tmp_path.glob("*.tmp"))


def test_a_truncated_png_is_regenerated_on_resume(tmp_path):
    run = _gen(tmp_path / "r")
    png = run / "images" / "p1_0.png"
    good = png.read_bytes()
    png.write_bytes(good[: len(good) // 2])
    _gen(tmp_path / "r")
    assert png.read_bytes() == good
    evaluate(run, "mean_value", progress=False)


def test_a_failed_start_does_not_block_the_corrected_run(tmp_path):
    out = tmp_path / "r"
    with pytest.raises(RuntimeError, match="boom"):
        generate({"generator": "dummy", "name": "d", "fail_on": "prompt"}, _ps(), out, 1, progress=False)
    generate({"generator": "dummy", "name": "d", "shade": 5}, _ps(), out, 1, progress=False)  # no --overwrite
    assert len(read_records(out)) == 4


# -- 3. no writes outside the run directory ------------------------------------------------------------------
@pytest.mark.parametrize("pid", ["../../escaped", "a/b", ".hidden", "a\\b", ""])
def test_unsafe_prompt_ids_are_refused_and_nothing_written(tmp_path, pid):
    ps = PromptSet("t", "1", [{"id": pid or "x y", "prompt": "p"}])
    out = tmp_path / "deep" / "er" / "run"
    with pytest.raises(SpecError, match="not safe as a file name"):
        generate({"generator": "dummy"}, ps, out, 1, progress=False)
    assert not (tmp_path / "deep").exists() and not list(tmp_path.rglob("*.png"))


# -- 4. specs are data ------------------------------------------------------------------------------------
def test_module_attr_references_must_be_subclasses(tmp_path, capsys):
    target = tmp_path / "FILE"
    spec = tmp_path / "g.yaml"
    spec.write_text(f'generator: "os:system"\ncommand: "touch {target}"\n')
    code = main(["generate", "--generator", str(spec), "--prompts", "smoke", "--out", str(tmp_path / "o")])
    assert code == 2 and "not a subclass" in capsys.readouterr().err and not target.exists()
    with pytest.raises(SpecError, match="not a subclass"):
        evaluate(_gen(tmp_path / "r"), "os:getcwd", progress=False)
    bench = tmp_path / "b.yaml"
    bench.write_text(f'prompts: [smoke]\nmetrics: [mean_value]\ngenerators: [{{generator: "os:system", command: "touch {target}"}}]\n')
    assert main(["run", str(bench), "--out", str(tmp_path / "bo")]) == 2 and not target.exists()


# -- 5. one clear line, exit code 2, nothing left behind -------------------------------------------------------
def _one_line(capsys, code):
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def test_user_errors_are_one_line(tmp_path, capsys):
    run = _gen(tmp_path / "r")
    latin = tmp_path / "latin.txt"
    latin.write_bytes("caf\xe9 au lait\n".encode("latin-1"))
    empty = tmp_path / "rows.csv"
    empty.write_text("id,prompt\na,first\nb,\n")
    gen = ["generate", "--generator", "dummy", "--out", str(tmp_path / "g")]
    cases = [
        (gen + ["--prompts", str(latin)], "latin.txt"),
        (gen + ["--prompts", str(empty)], "empty prompt"),
        (gen + ["--prompts", str(tmp_path / "missing.txt")], "not found"),
        (gen + ["--prompts", "smoke", "--samples-per-prompt", "0"], "samples-per-prompt"),
        (["evaluate", "--images", str(run), "--metrics", "nope:Thing"], "nope"),
        (["evaluate", "--images", str(run), "--metrics", "mean_value", "--batch-size", "0"], "batch-size"),
        (["evaluate", "--images", str(run), "--metrics", "mean_value", "--metric-options", '{"mean_value": {"bogus": 1}}'],
         "bogus"),
    ]
    for argv, needle in cases:
        assert needle in _one_line(capsys, main(argv)), argv
    assert not (tmp_path / "g").exists()
    spec = tmp_path / "bad.yaml"
    spec.write_text("generator: toy\npreset: tiny\nnfe: abc\n")
    assert "nfe" in _one_line(capsys, main(["generate", "--generator", str(spec), "--prompts", "smoke",
                                             "--out", str(tmp_path / "g")]))
    assert not (tmp_path / "g").exists()
    assert json.loads((run / "generation.json").read_text())["seed"] == 0
    assert np.isfinite(evaluate(run, "mean_value", progress=False)["metrics"]["mean_value"]["value"])
