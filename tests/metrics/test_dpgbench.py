"""dpgbench and the DPG-Bench prompt source: a small CSV in ELLA's exact columns, a fake VQA
backend; the reference's zeroing and L1/L2 rules against hand-computed values, single vs grid,
the loader through a real generate + evaluate, the metric kit, and the one-line errors."""

import csv
import hashlib
import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from cdm_bench.cli import main
from cdm_bench.dpg_source import DPG_COLUMNS, DPGBenchSource, read_dpg_csv
from cdm_bench.errors import MetricFailedError, MissingDependencyError, SpecError, UnknownNameError
from cdm_bench.evaluate import build_metric, evaluate
from cdm_bench.generate import generate
from cdm_bench.prompts import PROMPT_SOURCES, load_prompt_set
from cdm_bench.registry import METRICS
from metric_kit import check_metric
from metrics.dpgbench import MPLUG_ID, DPGBench, FakeVQA, MPLUGBackend, dpg_score

# (item_id, proposition_id, dependency, category_broad, category_detailed, tuple, question); the text is TEXT[item_id]
P1, P2, P3 = "partiprompts1", "coco7", "whoops3"
TEXT = {P1: "a red cat on a blue box", P2: "two dogs in a park at night", P3: "a wooden tree"}
QUESTIONS = [
    (P1, 1, "0", "entity", "whole", "entity - whole (cat)", "Is there a cat?"),
    (P1, 2, "0", "entity", "whole", "entity - whole (box)", "Is there a box?"),
    (P1, 3, "1", "attribute", "color", "attribute - color (cat, red)", "Is the cat red?"),
    (P1, 4, "2", "attribute", "color", "attribute - color (box, blue)", "Is the box blue?"),
    (P1, 5, "1,2", "relation", "spatial", "relation - spatial (cat, box, on)", "Is the cat on the box?"),
    (P2, 1, "0", "entity", "whole", "entity - whole (dogs)", "Are there dogs?"),
    (P2, 2, "1", "other", "count", "other - count (dogs, ==2)", "Are there two dogs?"),
    (P2, 3, "0", "global", "time", "global - time (night)", "Is it night?"),
    (P2, 4, "0", "entity", "whole", "entity - whole (park)", "Is there a park?"),
    (P2, 5, "1,4", "relation", "spatial", "relation - spatial (dogs, park, in)", "Are the dogs in the park?"),
    (P3, 1, "0", "entity", "whole", "entity - whole (tree)", "Is there a tree?"),
    (P3, 2, "1", "attribute", "texture", "attribute - texture (tree, wooden)", "Is the tree wooden?"),
]
NO = {"Is there a cat?", "Is it night?"}  # the fake VQA's "no" answers ("Yes" for the tree, else "yes")


def write_csv(path, questions=QUESTIONS, columns=DPG_COLUMNS):
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(columns)
        for item, pid, dep, broad, detailed, tup, q in questions:
            row = {"item_id": item, "text": TEXT[item], "keywords": "dense", "proposition_id": pid,
                   "dependency": dep, "category_broad": broad, "category_detailed": detailed, "tuple": tup,
                   "question_natural_language": q}
            w.writerow([row[c] for c in columns])
    return path


@pytest.fixture(scope="module", autouse=True)
def _register():
    PROMPT_SOURCES.register("dpg", DPGBenchSource, overwrite=True)
    METRICS.register("dpgbench", DPGBench, overwrite=True)


@pytest.fixture
def spec(tmp_path):
    data = write_csv(tmp_path / "dpg_bench.csv")
    path = tmp_path / "dpg-bench.yaml"
    sha = hashlib.sha256(data.read_bytes()).hexdigest()
    path.write_text(yaml.safe_dump({"name": "dpg-bench", "version": "t", "description": "test", "license": "x",
                                    "count": 3, "default_metrics": ["dpgbench"],
                                    "source": {"type": "dpg", "path": "dpg_bench.csv", "sha256": sha}}))
    return path


def by_question(image, question):
    return "no" if question in NO else "Yes" if question == "Is the tree wooden?" else "yes"


def by_pixel(image, question):
    """Depends on the image (so samples differ) and the question."""
    return "yes" if (int(np.asarray(image)[0, 0, 0]) + len(question)) % 3 else "no"


def dpg(tmp_path, rule=by_question, **opts):
    return {"name": "dpgbench", "backend": FakeVQA(rule=rule), "answers_dir": str(tmp_path / "answers"), **opts}


# -- the loader -----------------------------------------------------------------------------------------
def test_loader_groups_rows_into_prompts_with_question_graphs(spec, tmp_path):
    ps = load_prompt_set(spec)
    assert [p["id"] for p in ps.prompts] == [P1, P2, P3] and ps.default_metrics == ["dpgbench"]
    assert [len(p["questions"]) for p in ps.prompts] == [5, 5, 2]
    p1 = ps.prompts[0]
    assert p1["prompt"] == TEXT[P1]
    assert [q["parents"] for q in p1["questions"]] == [[], [], [1], [2], [1, 2]]
    assert p1["questions"][4] == {"id": 5, "parents": [1, 2], "question": "Is the cat on the box?",
                                  "category_broad": "relation", "category_detailed": "spatial",
                                  "tuple": "relation - spatial (cat, box, on)"}
    doc = yaml.safe_load(spec.read_text())
    doc["count"] = 1065
    spec.write_text(yaml.safe_dump(doc))
    with pytest.raises(SpecError, match="expected 1065 prompts, the data has 3"):
        load_prompt_set(spec)
    write_csv(tmp_path / "dpg_bench.csv", QUESTIONS[:-1])
    with pytest.raises(SpecError, match="not the pinned"):
        load_prompt_set(spec)


@pytest.mark.parametrize("rows,columns,needle", [
    (QUESTIONS, [c for c in DPG_COLUMNS if c != "dependency"], "missing column.*dependency"),
    ([QUESTIONS[0], QUESTIONS[0]], DPG_COLUMNS, "repeats proposition_id"),
    ([QUESTIONS[0], (P1, 2, "3", "e", "w", "e - w (x)", "q?")], DPG_COLUMNS, "depends on \\[3\\]"),
    ([(P1, 1, "zero", "e", "w", "e - w (x)", "q?")], DPG_COLUMNS, "dependency 'zero' is not an integer"),
])
def test_malformed_csv_is_one_line_error(tmp_path, rows, columns, needle):
    path = write_csv(tmp_path / "bad.csv", rows, columns)
    with pytest.raises(SpecError, match=needle) as err:
        read_dpg_csv(path)
    assert "\n" not in str(err.value)


def test_the_shipped_spec():
    from cdm_bench.paths import REPO_ROOT

    doc = yaml.safe_load((REPO_ROOT / "prompts" / "dpg-bench.yaml").read_text())
    assert doc["name"] == "dpg-bench" and doc["count"] == 1065 and doc["default_metrics"] == ["dpgbench"]
    assert doc["source"] == {"type": "dpg", "path": "data/dpg_bench.csv"}


# -- the reference's rules ----------------------------------------------------------------------------------
def _graph(item):
    return [{"id": pid, "parents": [int(d) for d in dep.split(",") if d != "0"], "question": q}
            for it, pid, dep, *_, q in QUESTIONS if it == item]


@pytest.mark.parametrize("answers,want", [
    (["yes"] * 5, 1.0),
    (["no", "yes", "yes", "yes", "yes"], 2 / 5),   # cat "no": "cat red" and "cat on box" zeroed
    (["yes", "no", "yes", "yes", "yes"], 2 / 5),   # box "no": "box blue" and (2nd parent) "cat on box"
    (["yes", "yes", "yes", "yes", "no"], 4 / 5),   # a child's "no" never touches its parents
    (["yes", "yes", "no", "no", "yes"], 3 / 5),
    (["yes", "yes", "Yes", "yes ", "yes"], 3 / 5),  # exactly "yes" only, as the reference
])
def test_a_no_on_a_parent_zeroes_its_children(answers, want):
    assert dpg_score(answers, _graph(P1)) == pytest.approx(want)


def test_zeroing_cascades_down_a_chain():
    chain = [{"id": 1, "parents": [], "question": "a"}, {"id": 2, "parents": [1], "question": "b"},
             {"id": 3, "parents": [2], "question": "c"}]
    assert dpg_score(["no", "yes", "yes"], chain) == 0.0  # 2 zeroed by 1, then 3 by the zeroed 2
    assert dpg_score(["yes", "no", "yes"], chain) == pytest.approx(1 / 3)


# -- through generate + evaluate ----------------------------------------------------------------------------
@pytest.fixture
def prompts(spec):
    return load_prompt_set(spec)


def _run(tmp_path, prompts, samples, name="run"):
    return generate({"generator": "dummy", "name": "d"}, prompts, tmp_path / name, samples, progress=False)


def test_score_and_l1_l2_categories_as_the_reference(tmp_path, prompts):
    run = _run(tmp_path, prompts, 1)
    res = evaluate(run, [dpg(tmp_path)], progress=False)["metrics"]["dpgbench"]
    # per prompt (zeroed): P1 cat "no" -> 2/5, P2 night "no" (no children) -> 4/5, P3 "Yes" is not "yes" -> 1/2
    assert res["status"] == "ok" and res["value"] == pytest.approx(100 * (0.4 + 0.8 + 0.5) / 3)
    # categories pool the raw answers (before zeroing): "cat red" counts as a yes in attribute
    assert res["values"] == pytest.approx({
        "L1/attribute": 200 / 3, "L1/entity": 80, "L1/global": 0, "L1/other": 100, "L1/relation": 100,
        "L2/attribute - color": 100, "L2/attribute - texture": 0, "L2/entity - whole": 80,
        "L2/global - time": 0, "L2/other - count": 100, "L2/relation - spatial": 100})
    assert pd.read_parquet(run / "scores.parquet")["dpgbench"].tolist() == pytest.approx([0.4, 0.8, 0.5])
    assert res["mode"] == "single" and res["backend"]["name"] == "fake"  # the identity names both


def test_prompt_fields_reach_meta_through_generate_and_evaluate(tmp_path, prompts):
    from cdm_bench.rundir import RunDir

    asked = []

    def recording(image, question):
        asked.append((np.asarray(image).tobytes(), question))
        return "yes"

    run = _run(tmp_path, prompts, 2)
    res = evaluate(run, [dpg(tmp_path, recording)], batch_size=3, chunk_size=4, progress=False)
    assert res["metrics"]["dpgbench"]["value"] == pytest.approx(100.0)
    records = RunDir(run).read_manifest()
    assert len(records) == 6 and all(r["questions"] == p["questions"] for r in records
                                     for p in prompts.prompts if p["id"] == r["prompt_id"])
    want = [(im.tobytes(), q["question"]) for r, im in zip(records, RunDir(run).load_images(records))
            for q in r["questions"]]
    assert asked == want and len(asked) == 2 * len(QUESTIONS)


def test_grid_mode_gives_each_image_its_groups_score(tmp_path, prompts):
    run = _run(tmp_path, prompts, 4)
    res = evaluate(run, [dpg(tmp_path, by_pixel, alias="single"), dpg(tmp_path, by_pixel, mode="grid", alias="grid")],
                   batch_size=3, chunk_size=5, progress=False)["metrics"]
    s = pd.read_parquet(run / "scores.parquet")
    by = s.groupby("prompt_id", sort=False)
    assert (by["grid"].nunique() == 1).all()  # the 4 images of a prompt share the grid's score
    assert (by["single"].nunique() > 1).any()  # ... which is the mean of 4 different tile scores
    np.testing.assert_allclose(s["grid"], by["single"].transform("mean"), rtol=1e-12)
    assert res["grid"]["value"] == pytest.approx(res["single"]["value"], rel=1e-12)
    assert res["grid"]["values"] == pytest.approx(res["single"]["values"], rel=1e-12)
    assert res["grid"]["mode"] == "grid" and res["grid"]["batch_size"] == 4


@pytest.mark.parametrize("samples", [1, 2, 8])
def test_grid_mode_refuses_other_than_4_samples_per_prompt(tmp_path, prompts, samples):
    run = _run(tmp_path, prompts, samples)
    with pytest.raises(MetricFailedError, match="needs exactly 4 samples per prompt") as err:
        evaluate(run, [dpg(tmp_path, mode="grid")], progress=False)
    assert "\n" not in str(err.value)


def test_grid_groups_must_be_one_prompts_k_0_to_3(tmp_path):
    m = DPGBench(mode="grid", backend=FakeVQA(), answers_dir=str(tmp_path))
    assert m.group_size == 4 and DPGBench(backend=FakeVQA()).group_size == 1
    images = [np.zeros((4, 4, 3), np.uint8)] * 4
    meta = [{"prompt_id": P1, "k": k, "sha256": str(k), "questions": _graph(P1)} for k in (0, 1, 3, 2)]
    with pytest.raises(SpecError, match="k = 0..3"):
        m.score(images, ["x"] * 4, meta)


# -- the metric kit ---------------------------------------------------------------------------------------------
GOLDEN = 57.777777777777786  # FakeVQA(p_yes=0.7, seed=0) on the images of rng(0), recorded 2026-11-26


def test_metric_kit_and_golden_value(tmp_path):
    rows = read_dpg_csv(write_csv(tmp_path / "d.csv"))
    images = np.random.default_rng(0).integers(0, 256, (9, 16, 16, 3), dtype=np.uint8)
    meta = [{"prompt_id": rows[i % 3]["id"], "k": i // 3, "prompt": rows[i % 3]["prompt"],
             "questions": rows[i % 3]["questions"], "sha256": hashlib.sha256(images[i].tobytes()).hexdigest()}
            for i in range(9)]

    def make():
        return DPGBench(backend="fake", backend_options={"p_yes": 0.7}, answers_dir=str(tmp_path / "answers"))

    res = check_metric(make, images, [m["prompt"] for m in meta], meta, golden=GOLDEN)
    assert 0 < res.values["dpgbench"] < 100 and np.ptp(res.scores) > 0
    assert {k.split("/")[0] for k in res.values} == {"dpgbench", "L1", "L2"}
    with pytest.raises(RuntimeError, match="answers of 9 image"):  # L1/L2 read the answers written while scoring
        DPGBench(backend="fake", answers_dir=str(tmp_path / "empty")).aggregate(res.scores, meta)


# -- errors ---------------------------------------------------------------------------------------------------------
def test_missing_modelscope_is_one_line_exit_2(tmp_path, prompts, capsys, monkeypatch):
    if importlib.util.find_spec("modelscope") is not None:
        pytest.skip("modelscope is installed here")
    monkeypatch.setenv("MODELSCOPE_CACHE", str(tmp_path / "ms"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    run = _run(tmp_path, prompts, 1)
    capsys.readouterr()
    code = main(["evaluate", "--images", str(run), "--metrics", "dpgbench", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err, err
    for needle in ("needs package(s) modelscope", "cdm-bench[dpg]", MPLUG_ID, "snapshot_download", '{"model": PATH}'):
        assert needle in err, (needle, err)
    assert not (tmp_path / "out").exists()


def test_missing_mplug_model_names_it_and_a_local_folder_works(tmp_path, monkeypatch):
    monkeypatch.setattr(MPLUGBackend, "requires", ())  # as if modelscope were installed
    monkeypatch.setenv("MODELSCOPE_CACHE", str(tmp_path / "ms"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    with pytest.raises(MissingDependencyError) as err:
        DPGBench().check()
    msg = str(err.value)
    assert "\n" not in msg and MPLUG_ID in msg and "not in the local modelscope cache" in msg
    assert "needs package" not in msg
    cached = tmp_path / "ms" / "hub" / MPLUG_ID
    cached.mkdir(parents=True)
    for f in MPLUGBackend.MODEL_FILES:
        (cached / f).write_text("{}")
    DPGBench().check()  # found in the modelscope cache
    local = tmp_path / "mplug-local"
    with pytest.raises(MissingDependencyError, match=f"mPLUG model folder {local} "):
        DPGBench(backend_options={"model": str(local)}).check()
    local.mkdir()
    (local / "configuration.json").write_text("{}")
    with pytest.raises(MissingDependencyError, match="without all of"):  # an incomplete folder: in check()
        DPGBench(backend_options={"model": str(local)}).check()
    for f in MPLUGBackend.MODEL_FILES[1:]:
        (local / f).write_bytes(b"weights")
    m = DPGBench(backend_options={"model": str(local)})
    m.check()
    assert m.describe()["backend"]["model_fingerprint"]  # a local model's content is in the identity


def test_bad_options_and_prompts_without_questions_are_one_line_errors(tmp_path):
    from cdm_bench.prompts import PromptSet

    with pytest.raises(SpecError, match="mode must be one of"):
        build_metric("dpgbench", {"mode": "triple"})
    with pytest.raises(UnknownNameError, match="did you mean 'fake'"):
        build_metric("dpgbench", {"backend": "fak"})
    with pytest.raises(SpecError, match="float32 only"):
        build_metric("dpgbench", {"dtype": "float16"})
    plain = PromptSet("plain", "1", [{"id": "a", "prompt": "a cat"}, {"id": "b", "prompt": "a dog"}])
    run = generate({"generator": "dummy", "name": "d"}, plain, tmp_path / "plain", 1, progress=False)
    with pytest.raises(MetricFailedError, match="needs DPG-Bench prompts"):
        evaluate(run, [dpg(tmp_path)], progress=False)


ROOT = Path(__file__).resolve().parents[2]
DPG_ENV_PYTHON = ROOT / ".venv-dpg" / "bin" / "python"
DPG_ENV_CHECKS = Path(__file__).with_name("dpg_env_checks.py")
N_DPG_ENV_CHECKS = 4


@pytest.mark.skipif(not DPG_ENV_PYTHON.exists(),
                    reason="no .venv-dpg: run `make eval-env-dpg` (scripts/make_dpg_env.sh; CI creates it)")
def test_mplug_backend_checks_pass_inside_the_dpg_env(tmp_path):
    import os
    import re
    import subprocess

    assert len(re.findall(r"^def test_", DPG_ENV_CHECKS.read_text(), flags=re.M)) == N_DPG_ENV_CHECKS
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"),
           "MODELSCOPE_CACHE": str(tmp_path / "modelscope"), "TOKENIZERS_PARALLELISM": "false"}
    cmd = [str(DPG_ENV_PYTHON), "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs", "--basetemp",
           str(tmp_path / "t"), str(DPG_ENV_CHECKS)]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-6000:]
    assert re.search(rf"\b{N_DPG_ENV_CHECKS} passed\b", out) and "skipped" not in out, out[-3000:]
