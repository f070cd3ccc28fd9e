import hashlib
import json

import pytest

from cdm_bench.generate import RunConflictError, generate, read_records
from cdm_bench.generator import SpecError, build_generator
from cdm_bench.prompts import PromptSet, load_prompt_set


def _prompts(n=5):
    return PromptSet("t", "1", [{"id": f"p{i}", "prompt": f"prompt number {i}"} for i in range(n)])


def _hashes(d):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted((d / "images").glob("*.png"))}


def test_writes_png_and_manifest_in_prompt_order(tmp_path):
    out = generate("dummy", _prompts(), tmp_path / "g", samples_per_prompt=2, batch_size=3, progress=False)
    recs = [json.loads(ln) for ln in (out / "manifest.jsonl").read_text().splitlines()]
    assert [(r["prompt_id"], r["k"]) for r in recs] == [(f"p{i}", k) for i in range(5) for k in range(2)]
    assert len({r["seed"] for r in recs}) == 10
    assert all(r["sha256"] == hashlib.sha256((out / r["file"]).read_bytes()).hexdigest() for r in recs)
    ident = json.loads((out / "generation.json").read_text())
    assert ident["n_images"] == 10 and ident["prompt_set"]["count"] == 5
    assert ident["environment"]["git"]["commit"]
    assert not (out / "parts").exists()


def test_images_do_not_depend_on_batch_size(tmp_path):
    a = generate("dummy", _prompts(), tmp_path / "a", 2, batch_size=1, progress=False)
    b = generate("dummy", _prompts(), tmp_path / "b", 2, batch_size=4, progress=False)
    assert _hashes(a) == _hashes(b) and len(_hashes(a)) == 10


def test_resume_after_partial_run(tmp_path):
    ps = _prompts(6)
    spec = {"generator": "dummy", "fail_on": "number 4"}
    with pytest.raises(RuntimeError, match="boom"):
        generate(spec, ps, tmp_path / "g", 1, batch_size=2, progress=False)
    assert not (tmp_path / "g" / "manifest.jsonl").exists()  # unfinished: no manifest
    assert len(read_records(tmp_path / "g")) == 4  # the first two batches landed
    # Resume with the same spec minus the fault (fail_on is not part of the spec hash).
    generate({"generator": "dummy"}, ps, tmp_path / "g", 1, batch_size=2, progress=False)
    recs = read_records(tmp_path / "g")
    assert sorted(r["prompt_id"] for r in recs) == [f"p{i}" for i in range(6)]
    full = generate("dummy", ps, tmp_path / "full", 1, batch_size=6, progress=False)
    assert _hashes(full) == _hashes(tmp_path / "g")


def test_writer_error_stops_the_run_and_keeps_earlier_batches(tmp_path, monkeypatch):
    import cdm_bench.generate as g

    real = g._write_png

    def flaky(out, prompt, *a):
        if prompt["id"] == "p3":
            raise OSError("disk full")
        return real(out, prompt, *a)

    monkeypatch.setattr(g, "_write_png", flaky)
    with pytest.raises(OSError, match="disk full"):  # raised from the writer thread
        generate("dummy", _prompts(6), tmp_path / "g", 1, batch_size=2, progress=False)
    assert not (tmp_path / "g" / "manifest.jsonl").exists()
    assert sorted(r["prompt_id"] for r in read_records(tmp_path / "g")) == ["p0", "p1", "p2"]
    monkeypatch.undo()
    generate("dummy", _prompts(6), tmp_path / "g", 1, batch_size=2, progress=False)
    full = generate("dummy", _prompts(6), tmp_path / "full", 1, batch_size=6, progress=False)
    assert _hashes(full) == _hashes(tmp_path / "g") and len(_hashes(full)) == 6


def test_resume_skips_finished_images(tmp_path, monkeypatch):
    generate("dummy", _prompts(), tmp_path / "g", 1, progress=False)
    from dummy import DummyGenerator

    def fail(*a, **k):
        raise AssertionError("regenerated a finished image")

    monkeypatch.setattr(DummyGenerator, "generate", fail)
    generate("dummy", _prompts(), tmp_path / "g", 1, progress=False)
    (tmp_path / "g" / "images" / "p3_0.png").unlink()
    monkeypatch.undo()
    generate("dummy", _prompts(), tmp_path / "g", 1, progress=False)
    assert len(read_records(tmp_path / "g")) == 5 and (tmp_path / "g" / "images" / "p3_0.png").exists()


def test_refuses_directory_of_another_spec_unless_overwrite(tmp_path):
    generate("dummy", _prompts(), tmp_path / "g", 1, progress=False)
    with pytest.raises(RunConflictError, match="different run"):
        generate({"generator": "dummy", "shade": 30}, _prompts(), tmp_path / "g", 1, progress=False)
    before = _hashes(tmp_path / "g")
    generate({"generator": "dummy", "shade": 30}, _prompts(), tmp_path / "g", 1, overwrite=True, progress=False)
    assert _hashes(tmp_path / "g").keys() == before.keys() and _hashes(tmp_path / "g") != before


def test_spec_with_unknown_key_is_rejected(tmp_path):
    (tmp_path / "g.yaml").write_text("generator: dummy\nshade: 1\nstepz: 4\n")
    with pytest.raises(SpecError, match=r"unknown key\(s\) \['stepz'\]"):
        build_generator(str(tmp_path / "g.yaml"))


def test_empty_prompt_set_is_rejected(tmp_path):
    (tmp_path / "empty.txt").write_text("\n\n")
    with pytest.raises(SpecError, match="empty"):
        load_prompt_set(tmp_path / "empty.txt")


def test_prompt_files(tmp_path):
    (tmp_path / "a.jsonl").write_text('{"id": "x", "prompt": "a cat"}\n{"prompt": "a dog"}\n')
    ps = load_prompt_set(tmp_path / "a.jsonl")
    assert [p["id"] for p in ps.prompts] == ["x", "a-00001"] and ps.version.startswith("sha256:")
    (tmp_path / "s.yaml").write_text("name: s\nversion: 2\nsource: {type: inline, prompts: [a, b]}\nbogus: 1\n")
    with pytest.raises(SpecError, match="bogus"):
        load_prompt_set(tmp_path / "s.yaml")


def test_seed_is_a_function_of_prompt_id_and_k_only():
    from cdm_bench.provenance import sample_seed

    assert sample_seed(0, "p1", 0) == sample_seed(0, "p1", 0)
    assert len({sample_seed(0, "p1", 0), sample_seed(0, "p1", 1), sample_seed(0, "p2", 0),
                sample_seed(1, "p1", 0)}) == 4
    assert sample_seed(0, "p1", 0) == 908629143  # pinned: changing it changes every image
