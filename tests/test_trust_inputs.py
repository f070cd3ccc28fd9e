"""Regression tests for the second reliability round (issue 20), part 2: bad inputs refused
before anything is written, the paper's prompt files, checkpoints, the one name check and the
one hasher (part 1: tests/test_trust.py)."""

import json
import time
from pathlib import Path

import numpy as np
import pytest

from cdm_bench.cli import main
from cdm_bench.errors import EvaluationInputError, SpecError
from cdm_bench.evaluate import evaluate
from cdm_bench.generate import generate, read_records
from cdm_bench.leaderboard import write_leaderboard
from cdm_bench.prompts import load_prompt_set
from cdm_bench.registry import METRICS
from cdm_bench.rundir import RunDir
from trust_helpers import gen, one_line, ps, tree

ROOT = Path(__file__).resolve().parent.parent



@pytest.fixture(scope="module", autouse=True)
def _register():
    from dummy import MeanValue

    METRICS.register("mean_value", MeanValue, overwrite=True)


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
    assert needle in one_line(capsys, code) and time.perf_counter() - t0 < 5
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
    run = gen(tmp_path / "r")
    m = run / "manifest.jsonl"
    m.write_text(m.read_text() * 2)
    with pytest.raises(EvaluationInputError, match="listed twice"):
        evaluate(run, "mean_value", progress=False)
    assert not (run / "results.json").exists()


@pytest.mark.parametrize("name", ["results.json", "scores.parquet"])
def test_truncated_results_name_the_file_and_force(tmp_path, capsys, name):
    run = gen(tmp_path / "r")
    evaluate(run, "mean_value", progress=False)
    f = run / name
    f.write_bytes(f.read_bytes()[: len(f.read_bytes()) // 2])
    err = one_line(capsys, main(["evaluate", "--images", str(run), "--metrics", "mean_value"]))
    assert name in err and "--force" in err
    if name == "results.json":
        assert name in one_line(capsys, main(["leaderboard", str(run), "--out", str(tmp_path / "lb")]))
    assert main(["evaluate", "--images", str(run), "--metrics", "mean_value", "--force"]) == 0
    assert np.isfinite(RunDir(run).read_results()["metrics"]["mean_value"]["value"])


def test_out_at_a_file_or_an_unwritable_place_is_one_line(tmp_path, capsys, monkeypatch):
    f = tmp_path / "file"
    f.write_text("x")
    for out in (f, f / "under"):
        assert "is a file" in one_line(capsys, main(["generate", "--generator", "dummy", "--prompts", "smoke",
                                                      "--out", str(out)]))
    import pathlib

    def denied(self, *a, **k):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(pathlib.Path, "mkdir", denied)  # a read-only place (the tests run as root)
    err = one_line(capsys, main(["generate", "--generator", "dummy", "--prompts", "smoke", "--out",
                                  str(tmp_path / "ro" / "out")]))
    assert "Permission denied" in err


def test_wrong_metric_option_types_fail_before_anything_is_written(tmp_path, capsys):
    run = gen(tmp_path / "r")
    before = tree(run)
    for opts in ({"mean_value": {"scale": "2"}}, {"mean_value": {"scale": [1]}}, {"mean_value": {"batch_size": "8"}},
                 {"mean_value": {"batch_size": 0}}, {"mean_value": {"dtype": 3}}, {"mean_value": {"device": 1}}):
        code = main(["evaluate", "--images", str(run), "--metrics", "mean_value", "--metric-options", json.dumps(opts)])
        one_line(capsys, code)
    deep = '{"mean_value": ' + "[" * 30000 + "]" * 30000 + "}"
    one_line(capsys, main(["evaluate", "--images", str(run), "--metrics", "mean_value", "--metric-options", deep]))
    assert tree(run) == before


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
        assert needle in one_line(capsys, main(argv)), argv
    assert time.perf_counter() - t0 < 10 and not (tmp_path / "o").exists()


def test_a_missing_eval_python_is_found_before_any_image(tmp_path, capsys):
    spec = tmp_path / "s.yaml"
    spec.write_text(json.dumps({"prompts": ["smoke"], "generators": [{"generator": "dummy", "name": "d"}],
                                "metrics": ["mean_value", {"name": "mean_value", "alias": "m2",
                                                           "eval_python": str(tmp_path / "no-env" / "python")}]}))
    assert "no such interpreter" in one_line(capsys, main(["run", str(spec), "--out", str(tmp_path / "o")]))
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
    a, b = gen(tmp_path / "runs" / "a"), gen(tmp_path / "runs" / "b", name="e", shade=3)
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
        run = generate({"generator": "dummy", "name": "d"}, ps(8), tmp_path / "r", 2, batch_size=65536,
                       progress=False)
        res = evaluate(run, "mean_value", batch_size=65536, progress=False)
    ref = gen(tmp_path / "ref", samples=2)
    assert [r["sha256"] for r in read_records(run)][:8] == [r["sha256"] for r in read_records(ref)]
    assert res["metrics"]["mean_value"]["n"] == 16
    assert any("batch size 65536 lowered to 5" in r.getMessage() for r in caplog.records)
