"""Regression tests for the second reliability round (issue 20): each case of its "Why" list,
as a class where one exists (the fuzz suite, tests/test_fuzz.py, generates the inputs)."""

import json
import os
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cdm_bench.cli import main
from cdm_bench.errors import EvaluationInputError, RunConflictError, SpecError
from cdm_bench.evaluate import evaluate
from cdm_bench.generate import generate, read_records
from cdm_bench.leaderboard import write_leaderboard
from cdm_bench.metric import PerImageMetric, Weights
from cdm_bench.prompts import PromptSet, load_prompt_set
from cdm_bench.registry import METRICS
from cdm_bench.rundir import RunDir

ROOT = Path(__file__).resolve().parent.parent

def _ps(n=4, name="t"):
    return PromptSet(name, "1", [{"id": f"p{i}", "prompt": f"prompt {i}"} for i in range(n)])


def _gen(out, samples=1, seed=0, overwrite=False, **spec):
    return generate({"generator": "dummy", "name": "d", **spec}, _ps(), out, samples, seed=seed, overwrite=overwrite,
                    progress=False)


def _tree(root):
    """Every path under ``root`` with its bytes (folders as None): a snapshot to compare."""
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None) for p in sorted(root.rglob("*"))}


def _one_line(capsys, code):
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


class FileWeighted(PerImageMetric):
    """The mean pixel value times the number stored in ``weights_dir/w.bin`` (its weights)."""

    name = "file_weighted"
    version = "1"
    setups = 0

    def __init__(self, device="cpu", dtype="float32", weights_dir: str = ""):
        super().__init__(device, dtype)
        self.weights_dir = weights_dir

    def weights(self):
        return [Weights("file_weighted weights", path=self.weights_dir)]

    def setup(self):
        FileWeighted.setups += 1
        with open(os.path.join(self.weights_dir, "w.bin")) as f:
            self.factor = float(f.read())

    def score(self, images, prompts, meta):
        return np.asarray(images, dtype=np.float64).mean(axis=(1, 2, 3)) * self.factor


class Blocking(PerImageMetric):
    """Waits in setup() until the test lets it go (a slow scorer set-up)."""

    name = "blocking"
    started = threading.Event()
    release = threading.Event()

    def setup(self):
        Blocking.started.set()
        assert Blocking.release.wait(30)

    def score(self, images, prompts, meta):
        return np.asarray(images, dtype=np.float64).mean(axis=(1, 2, 3))


@pytest.fixture(scope="module", autouse=True)
def _register():
    from dummy import MeanValue

    for name, cls in (("mean_value", MeanValue), ("file_weighted", FileWeighted), ("blocking", Blocking)):
        METRICS.register(name, cls, overwrite=True)


# -- silently wrong scores ---------------------------------------------------------------------------------------
def test_evaluate_holds_its_lock_while_a_slow_scorer_loads(tmp_path):
    run = _gen(tmp_path / "r")
    Blocking.started.clear()
    Blocking.release.clear()
    done = {}
    t = threading.Thread(target=lambda: done.update(res=evaluate(run, "blocking", out_dir=tmp_path / "res",
                                                                 progress=False)))
    t.start()
    assert Blocking.started.wait(30)
    with pytest.raises(RunConflictError, match="in use by"):  # generate --overwrite cannot touch the images
        _gen(run, shade=50, overwrite=True)
    Blocking.release.set()
    t.join(30)
    recs = RunDir(run).read_manifest()
    scores = pd.read_parquet(tmp_path / "res" / "scores.parquet")
    assert list(scores["sha256"]) == [r["sha256"] for r in recs]
    assert np.allclose(scores["blocking"], RunDir(run).load_images(recs).mean(axis=(1, 2, 3)))


def test_an_image_changed_while_it_is_scored_stops_the_metric(tmp_path, monkeypatch):
    run = _gen(tmp_path / "r")
    real = RunDir.load_images

    def swap_first(self, records, verify=True):  # a writer that ignored the lock, between check and score
        p = self.image_path(records[0])
        other = RunDir(_gen(tmp_path / "o", shade=9)).image_path(records[0])
        p.write_bytes(other.read_bytes())
        return real(self, records, verify)

    monkeypatch.setattr(RunDir, "load_images", swap_first)
    res = evaluate(run, "mean_value", allow_partial=True, progress=False)
    assert res["metrics"]["mean_value"]["status"] == "failed"
    assert "does not match the manifest's sha256" in res["metrics"]["mean_value"]["error"]


# -- identity is content ---------------------------------------------------------------------------------------
def test_replaced_weights_are_a_new_identity_a_new_column_and_no_cached_value(tmp_path):
    w = tmp_path / "weights"
    w.mkdir()
    (w / "w.bin").write_text("1.0")
    a, b = _gen(tmp_path / "a"), _gen(tmp_path / "b", name="e", shade=9)
    entry = [{"name": "file_weighted", "weights_dir": str(w)}]
    first = evaluate(a, entry, progress=False)["metrics"]["file_weighted"]
    (w / "w.bin").write_text("2.0")  # same path, same size, other content
    second = evaluate(a, entry, progress=False)["metrics"]["file_weighted"]
    assert second["identity"] != first["identity"] and second["value"] == pytest.approx(2 * first["value"])
    evaluate(b, entry, progress=False)
    (w / "w.bin").write_text("3.0")
    evaluate(a, entry, progress=False)
    wide = pd.read_csv(write_leaderboard([a, b], tmp_path / "lb")["csv"])
    cols = [c for c in wide.columns if c.startswith("file_weighted[") and "_" not in c[len("file_weighted"):]]
    assert len(cols) == 2 and wide[cols].notna().sum().tolist() == [1, 1]  # never one column, no cross delta
    assert wide.filter(like="_delta").isna().all().all()


def test_default_and_explicit_options_are_one_identity(tmp_path):
    run = _gen(tmp_path / "r")
    a = evaluate(run, "mean_value", progress=False)["metrics"]["mean_value"]["identity"]
    b = evaluate(run, [{"name": "mean_value", "scale": 1.0}], progress=False)["metrics"]["mean_value"]
    assert b["identity"] == a


def test_a_new_display_name_is_the_same_run_and_keeps_its_scores(tmp_path):
    run = _gen(tmp_path / "r", name="first")
    evaluate(run, [{"name": "file_weighted", "weights_dir": str(_weights(tmp_path))}], progress=False)
    setups = FileWeighted.setups
    _gen(run, name="renamed")
    res = evaluate(run, [{"name": "file_weighted", "weights_dir": str(_weights(tmp_path))}], progress=False)
    assert FileWeighted.setups == setups and res["metrics"]["file_weighted"]["status"] == "ok"  # cached
    long = pd.read_csv(write_leaderboard([run], tmp_path / "lb")["long_csv"])
    assert list(long["generator"]) == ["renamed"] and list(long["status"]) == ["ok"]


def _weights(tmp_path):
    w = tmp_path / "w1"
    if not w.exists():
        w.mkdir()
        (w / "w.bin").write_text("1.0")
    return w


# -- a leaderboard never drops a run ---------------------------------------------------------------------------
@pytest.mark.parametrize("same_spec", [False, True])
def test_runs_sharing_name_seed_and_folder_name_each_get_a_row(tmp_path, same_spec):
    a = _gen(tmp_path / "x" / "run")
    b = _gen(tmp_path / "y" / "run", **({} if same_spec else {"shade": 7}))
    for r in (a, b):
        evaluate(r, "mean_value", progress=False)
    wide = pd.read_csv(write_leaderboard([a, b], tmp_path / "lb")["csv"])
    assert len(wide) == 2 and wide["generator"].nunique() == 2 and wide["mean_value"].notna().all()
    for path in ("md", "html"):
        text = (tmp_path / "lb" / f"leaderboard.{path}").read_text()
        assert all(g in text for g in wide["generator"])


# -- files cdm-bench never wrote -------------------------------------------------------------------------------
def test_a_failed_start_then_another_run_keeps_the_users_files(tmp_path):
    out = tmp_path / "r"
    with pytest.raises(RuntimeError, match="boom"):
        generate({"generator": "dummy", "name": "d", "fail_on": "prompt 0"}, _ps(), out, 1, progress=False)
    (out / "images" / "mine.png").write_bytes(b"user data")
    (out / "notes.txt").write_text("mine")
    generate({"generator": "dummy", "name": "d", "shade": 5}, _ps(), out, 1, progress=False)
    assert (out / "images" / "mine.png").read_bytes() == b"user data" and (out / "notes.txt").exists()
    assert len(read_records(out)) == 4


def test_overwrite_deletes_only_what_generate_wrote(tmp_path):
    run = _gen(tmp_path / "r")
    (run / "images" / "extra.png").write_bytes(b"user")
    (run / "notes.txt").write_text("user")
    with pytest.raises(RunConflictError, match="different run"):
        _gen(run, shade=3)
    _gen(run, shade=3, overwrite=True)
    assert (run / "images" / "extra.png").read_bytes() == b"user" and (run / "notes.txt").read_text() == "user"
    assert len(read_records(run)) == 4


def test_a_folder_cdm_bench_did_not_make_is_refused_and_never_emptied(tmp_path):
    mine = tmp_path / "photos"
    mine.mkdir()
    (mine / "holiday.jpg").write_bytes(b"jpeg")
    before = _tree(mine)
    with pytest.raises(RunConflictError, match="not empty and was not written by cdm-bench"):
        _gen(mine)
    assert _tree(mine) == before
    (mine / "images").mkdir()
    (mine / "images" / "p0_0.png").write_bytes(b"not ours")  # where the run would write
    with pytest.raises(RunConflictError, match="was not written by cdm-bench but is where this run writes"):
        _gen(mine, overwrite=True)
    (mine / "images" / "p0_0.png").unlink()
    _gen(mine, overwrite=True)
    assert (mine / "holiday.jpg").read_bytes() == b"jpeg" and len(read_records(mine)) == 4


def test_evaluate_and_leaderboard_never_replace_a_file_they_did_not_write(tmp_path, capsys):
    run = _gen(tmp_path / "r")
    out = tmp_path / "res"
    out.mkdir()
    (out / "results.json").write_text('{"hello": 1}')
    for force in ([], ["--force"]):
        code = main(["evaluate", "--images", str(run), "--metrics", "mean_value", "--out", str(out), *force])
        assert "not written by cdm-bench" in _one_line(capsys, code)
    assert (out / "results.json").read_text() == '{"hello": 1}'
    evaluate(run, "mean_value", progress=False)
    lb = tmp_path / "lb"
    lb.mkdir()
    (lb / "leaderboard.csv").write_text("my own table")
    assert "not written by cdm-bench" in _one_line(capsys, main(["leaderboard", str(run), "--out", str(lb)]))
    assert (lb / "leaderboard.csv").read_text() == "my own table"
    (lb / "leaderboard.csv").unlink()
    assert main(["leaderboard", str(run), "--out", str(lb)]) == 0
    assert main(["leaderboard", str(run), "--out", str(lb)]) == 0  # its own files: replaced
    (lb / "leaderboard.md").write_text("edited by hand")
    capsys.readouterr()
    assert "changed since" in _one_line(capsys, main(["leaderboard", str(run), "--out", str(lb)]))


# -- writes outside --out ------------------------------------------------------------------------------------
@pytest.mark.parametrize("instance", ["../../x", "/abs", "a/b", "..", ".hidden", "sha256", "a\nb", "x" * 200])
def test_metric_instance_names_never_become_paths(tmp_path, capsys, instance):
    run = _gen(tmp_path / "r")
    before = _tree(tmp_path)
    code = main(["evaluate", "--images", str(run), "--metrics", "mean_value", "--metric-options",
                 json.dumps({instance: {}})] if "\n" in instance else
                ["evaluate", "--images", str(run), "--metrics", f"{instance}=mean_value"])
    _one_line(capsys, code)
    assert _tree(tmp_path) == before


@pytest.mark.parametrize("name", ["../../x", "/tmp/abs", "a/b", "..", "-rf", "con"])
def test_generator_display_names_in_a_run_spec_never_become_paths(tmp_path, capsys, name):
    spec = tmp_path / "s.yaml"
    spec.write_text(json.dumps({"prompts": ["smoke"], "metrics": ["mean_value"],
                                "generators": [{"generator": "dummy", "name": name}]}))
    before = _tree(tmp_path)
    err = _one_line(capsys, main(["run", str(spec), "--out", str(tmp_path / "o")]))
    assert "generator name" in err and ("not safe as a file name" in err or "reserved" in err)
    assert _tree(tmp_path) == before


# -- bad inputs refused before anything is written ---------------------------------------------------------------
@pytest.mark.parametrize("args,needle", [
    (["--samples-per-prompt", "1000000000"], "samples-per-prompt"),
    (["--limit", "-1"], "--limit"),
    (["--limit", "0"], "--limit"),
    (["--batch-size", "0"], "--batch-size"),
    (["--seed", "-3"], "--seed"),
])
def test_out_of_range_generate_options(tmp_path, capsys, args, needle):
    t0 = time.perf_counter()
    code = main(["generate", "--generator", "dummy", "--prompts", "smoke", "--out", str(tmp_path / "g"), *args])
    assert needle in _one_line(capsys, code) and time.perf_counter() - t0 < 5
    assert not (tmp_path / "g").exists()


def test_prompt_files_every_format_the_same_way(tmp_path):
    (tmp_path / "a.txt").write_bytes("\ufefffirst\nsecond".encode())
    assert [p["prompt"] for p in load_prompt_set(tmp_path / "a.txt").prompts] == ["first", "second"]
    (tmp_path / "b.csv").write_bytes("\ufeffid,prompt\n007,x\n8,y\n".encode())
    assert [p["id"] for p in load_prompt_set(tmp_path / "b.csv").prompts] == ["007", "8"]
    (tmp_path / "c.jsonl").write_bytes('\ufeff{"id": "007", "prompt": "x"}\n'.encode())
    assert load_prompt_set(tmp_path / "c.jsonl").prompts[0]["id"] == "007"
    bad = {"id-newline.jsonl": '{"id": "a\\n", "prompt": "x"}\n', "array.jsonl": '["a prompt"]\n',
           "id-list.jsonl": '{"id": [1], "prompt": "x"}\n', "prompt-number.jsonl": '{"prompt": 5}\n',
           "nested.jsonl": "[" * 50000 + "]" * 50000 + "\n"}
    for name, text in bad.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(SpecError):
            load_prompt_set(tmp_path / name)


def test_a_manifest_joined_with_itself_is_refused(tmp_path):
    run = _gen(tmp_path / "r")
    m = run / "manifest.jsonl"
    m.write_text(m.read_text() * 2)
    with pytest.raises(EvaluationInputError, match="listed twice"):
        evaluate(run, "mean_value", progress=False)
    assert not (run / "results.json").exists()


@pytest.mark.parametrize("name", ["results.json", "scores.parquet"])
def test_truncated_results_name_the_file_and_force(tmp_path, capsys, name):
    run = _gen(tmp_path / "r")
    evaluate(run, "mean_value", progress=False)
    f = run / name
    f.write_bytes(f.read_bytes()[: len(f.read_bytes()) // 2])
    err = _one_line(capsys, main(["evaluate", "--images", str(run), "--metrics", "mean_value"]))
    assert name in err and "--force" in err
    if name == "results.json":
        assert name in _one_line(capsys, main(["leaderboard", str(run), "--out", str(tmp_path / "lb")]))
    assert main(["evaluate", "--images", str(run), "--metrics", "mean_value", "--force"]) == 0
    assert np.isfinite(RunDir(run).read_results()["metrics"]["mean_value"]["value"])


def test_out_at_a_file_or_an_unwritable_place_is_one_line(tmp_path, capsys, monkeypatch):
    f = tmp_path / "file"
    f.write_text("x")
    for out in (f, f / "under"):
        assert "is a file" in _one_line(capsys, main(["generate", "--generator", "dummy", "--prompts", "smoke",
                                                      "--out", str(out)]))
    import pathlib

    def denied(self, *a, **k):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(pathlib.Path, "mkdir", denied)  # a read-only place (the tests run as root)
    err = _one_line(capsys, main(["generate", "--generator", "dummy", "--prompts", "smoke", "--out",
                                  str(tmp_path / "ro" / "out")]))
    assert "Permission denied" in err


def test_wrong_metric_option_types_fail_before_anything_is_written(tmp_path, capsys):
    run = _gen(tmp_path / "r")
    before = _tree(run)
    for opts in ({"mean_value": {"scale": "2"}}, {"mean_value": {"scale": [1]}}, {"mean_value": {"batch_size": "8"}},
                 {"mean_value": {"batch_size": 0}}, {"mean_value": {"dtype": 3}}, {"mean_value": {"device": 1}}):
        code = main(["evaluate", "--images", str(run), "--metrics", "mean_value", "--metric-options", json.dumps(opts)])
        _one_line(capsys, code)
    deep = '{"mean_value": ' + "[" * 30000 + "]" * 30000 + "}"
    _one_line(capsys, main(["evaluate", "--images", str(run), "--metrics", "mean_value", "--metric-options", deep]))
    assert _tree(run) == before


@pytest.mark.parametrize("text,needle", [
    ("generator: [unclosed\n", "not valid YAML"),
    ("a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
     "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
     "e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]\nf: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]\n"
     "generator: [*f, *f, *f, *f, *f, *f, *f, *f, *f]\n", "refused"),
    ("generator: " + "[" * 20000 + "]" * 20000 + "\n", "refused"),
    ("- just\n- a list\n", "must be a mapping"),
])
def test_malformed_and_hostile_yaml_is_one_line(tmp_path, capsys, text, needle):
    spec = tmp_path / "g.yaml"
    spec.write_text(text)
    t0 = time.perf_counter()
    for argv in (["generate", "--generator", str(spec), "--prompts", "smoke", "--out", str(tmp_path / "o")],
                 ["run", str(spec), "--out", str(tmp_path / "o")], ["train", str(spec), "--out", str(tmp_path / "o")]):
        assert needle in _one_line(capsys, main(argv)), argv
    assert time.perf_counter() - t0 < 10 and not (tmp_path / "o").exists()


def test_a_missing_eval_python_is_found_before_any_image(tmp_path, capsys):
    spec = tmp_path / "s.yaml"
    spec.write_text(json.dumps({"prompts": ["smoke"], "generators": [{"generator": "dummy", "name": "d"}],
                                "metrics": ["mean_value", {"name": "mean_value", "alias": "m2",
                                                           "eval_python": str(tmp_path / "no-env" / "python")}]}))
    assert "no such interpreter" in _one_line(capsys, main(["run", str(spec), "--out", str(tmp_path / "o")]))
    assert not (tmp_path / "o").exists()
    assert main(["run", "--dry-run", str(spec)]) == 0
    assert "no: eval_python" in capsys.readouterr().out


# -- the paper's prompt files ---------------------------------------------------------------------------------
PAPER_SETS = {"pickapic": 2048, "ocr": 1018, "drawbench": 1000, "geneval": 553, "coco2014-paper": 9986}


@pytest.mark.parametrize("name", sorted(PAPER_SETS))
def test_the_reference_codes_files_load_as_they_are(name):
    from cdm_bench.hashing import file_sha256

    ps = load_prompt_set(name)
    assert len(ps) == PAPER_SETS[name]
    pin = ps.source["sha256"]
    assert len(pin) == 64 and file_sha256(ROOT / "prompts" / ps.source["path"]) == pin
    if name == "coco2014-paper":
        assert ps.source["metadata_values"]["num_samples"] == 9986 and ps.source["metadata_values"]["resolution"] == 256
    if name == "geneval":
        assert ps.prompts[0]["tag"] == "counting" and "include" in ps.prompts[0]


def _spec(tmp_path, source, count=None):
    spec = tmp_path / "s.yaml"
    spec.write_text(json.dumps({"name": "s", "source": source, **({"count": count} if count else {})}))
    return spec


def test_pins_are_full_quoted_hashes_and_mismatches_show_both(tmp_path):
    (tmp_path / "p.txt").write_text("".join(f"junk {i}\n" for i in range(2048)))
    spec = tmp_path / "s.yaml"
    spec.write_text("name: s\ncount: 2048\nsource: {type: file, path: p.txt, sha256: 1234567890123456789}\n")
    with pytest.raises(SpecError, match="quoted 64-character hex string"):
        load_prompt_set(spec)
    pin = "d75c025fa451866e70f7e36243f7cdd93095523cb51f5f9651f2ce3236d20262"
    spec.write_text(f'name: s\ncount: 2048\nsource: {{type: file, path: p.txt, sha256: "{pin}"}}\n')
    with pytest.raises(SpecError) as exc:
        load_prompt_set(spec)
    from cdm_bench.hashing import file_sha256

    assert pin in str(exc.value) and file_sha256(tmp_path / "p.txt") in str(exc.value)


def test_repeats_and_coco_files_are_checked(tmp_path):
    (tmp_path / "g.jsonl").write_text('{"prompt": "a"}\n{"prompt": "b"}\n' * 3 + '{"prompt": "c"}\n')
    with pytest.raises(SpecError, match="repeated 4 times"):
        load_prompt_set(_spec(tmp_path, {"type": "file", "path": "g.jsonl", "repeats": 4}))
    (tmp_path / "g.jsonl").write_text('{"prompt": "a"}\n{"prompt": "b"}\n' * 4)
    assert [p["prompt"] for p in load_prompt_set(_spec(tmp_path, {"type": "file", "path": "g.jsonl",
                                                                  "repeats": 4})).prompts] == ["a", "b"]
    for text in ('{"images": [{"id": 1}], "annotations": [{"id": 1}]}', '{"images": 5}', "[1, 2", "[]"):
        (tmp_path / "c.json").write_text(text)
        with pytest.raises(SpecError):
            load_prompt_set(_spec(tmp_path, {"type": "coco", "path": "c.json", "n": 1}))


def test_a_checkpoint_is_swapped_in_whole(tmp_path):
    torch = pytest.importorskip("torch")
    from cdm_bench.distill.checkpoint import list_checkpoints, load_state, save_checkpoint

    stale = tmp_path / ".checkpoint-000002.123.abcdef12.tmp"
    stale.mkdir(parents=True)
    save_checkpoint(tmp_path, 2, {"x": torch.zeros(1)}, {"name": "r"}, {})
    save_checkpoint(tmp_path, 2, {"x": torch.ones(1)}, {"name": "r"}, {})  # the same step again
    assert [p.name for p in list_checkpoints(tmp_path)] == ["checkpoint-000002"]
    assert float(load_state(tmp_path / "checkpoint-000002")["x"]) == 1.0
    assert not stale.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_runs_never_evaluated_are_listed_not_dropped_silently(tmp_path):
    a, b = _gen(tmp_path / "runs" / "a"), _gen(tmp_path / "runs" / "b", name="e", shade=3)
    evaluate(a, "mean_value", progress=False)
    paths = write_leaderboard([tmp_path / "runs"], tmp_path / "lb")
    assert f"Not evaluated (no results.json yet): {b}" in paths["md"].read_text()
    assert str(b) in paths["html"].read_text() and 'id="not-evaluated"' in paths["html"].read_text()
    assert "not evaluated" not in write_leaderboard([a], tmp_path / "lb2")["md"].read_text().lower()


# -- the one door for names, and the one hasher ----------------------------------------------------------------
def test_every_name_safe_name_accepts_is_one_plain_child_of_its_folder(tmp_path):
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from cdm_bench.safenames import safe_name

    @settings(max_examples=300, deadline=None, database=None)
    @given(st.one_of(st.text(max_size=40), st.text(alphabet="./\\:@+-_ aZ09\n\x00", max_size=12)))
    def prop(name):
        try:
            safe_name(name, "x")
        except SpecError as exc:
            assert "\n" not in str(exc)
            return
        child = (tmp_path / name).resolve()
        assert child.parent == tmp_path.resolve() and child.name == name and not name.startswith((".", "-"))
        assert len(name) <= 160 and name.isascii() and name.isprintable() and " " not in name

    prop()


def test_file_hashes_are_whole_content_and_cached_per_size_and_mtime(tmp_path, monkeypatch):
    from cdm_bench import hashing

    big = tmp_path / "w.bin"
    big.write_bytes(b"a" * (70 << 20))  # over the old partial-fingerprint threshold
    first = hashing.file_sha256(big)
    with open(big, "r+b") as f:  # one byte in the middle, same size
        f.seek(35 << 20)
        f.write(b"b")
    second = hashing.file_sha256(big)
    assert first != second
    calls = []
    monkeypatch.setattr(hashing, "_stream_sha256", lambda p: calls.append(p) or "x")
    assert hashing.file_sha256(big) == second and not calls  # cached: not read again
    monkeypatch.undo()
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / ".cache").mkdir()
    (folder / ".cache" / "meta").write_text("changes every download")
    h1 = hashing.tree_sha256(folder)
    (folder / ".cache" / "meta").write_text("other")
    assert hashing.tree_sha256(folder) == h1  # hidden files are not content
    (folder / "config.json").write_text('{"a": 1}')
    assert hashing.tree_sha256(folder) != h1


def test_batches_are_lowered_to_what_fits_in_memory(tmp_path, monkeypatch, caplog):
    import logging

    from cdm_bench import validate

    monkeypatch.setattr(validate, "BATCH_BYTES", 5 * 8 * 8 * 3)  # five 8x8 images
    with caplog.at_level(logging.WARNING):
        run = generate({"generator": "dummy", "name": "d"}, _ps(8), tmp_path / "r", 2, batch_size=65536,
                       progress=False)
        res = evaluate(run, "mean_value", batch_size=65536, progress=False)
    ref = _gen(tmp_path / "ref", samples=2)
    assert [r["sha256"] for r in read_records(run)][:8] == [r["sha256"] for r in read_records(ref)]
    assert res["metrics"]["mean_value"]["n"] == 16
    assert any("batch size 65536 lowered to 5" in r.getMessage() for r in caplog.records)
