"""The public prompt sets load from a small sample of their published format (same columns /
JSON layout, written here); an unknown set, a wrong count or a hash mismatch is a clear error."""

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import yaml

from cdm_bench.errors import SpecError, UnknownNameError
from cdm_bench.prompts import load_prompt_set

ROOT = Path(__file__).resolve().parent.parent


def _write_samples(data: Path) -> dict:
    """Sample files in each published format; returns {set name: expected rows}."""
    data.mkdir(parents=True)
    (data / "pickapic_test.txt").write_text("a cat wearing a hat\nan astronaut on a horse\n\na red bicycle\n")
    (data / "ocr_test.txt").write_text('A sign that says "Open 24 Hours"\nA mug with the words "cdm bench"\n')
    (data / "drawbench_test.txt").write_text("A red colored car.\nA black colored banana.\n")
    (data / "PartiPrompts.tsv").write_text("Prompt\tCategory\tChallenge\tNote\n"
                                           "bond\tAbstract\tBasic\t\na photo of a cat\tAnimals\tBasic\tnote\n")
    hps = data / "hpsv2_benchmark"
    hps.mkdir()
    for style in ("anime", "concept-art", "paintings", "photo"):
        (hps / f"{style}.json").write_text(json.dumps([f"{style} prompt {i}" for i in range(3)]))
    (data / "geneval_test_metadata.jsonl").write_text(
        '{"tag": "single_object", "include": [{"class": "bench", "count": 1}], "prompt": "a photo of a bench"}\n'
        '{"tag": "two_object", "include": [{"class": "cat", "count": 1}, {"class": "dog", "count": 1}], '
        '"prompt": "a photo of a cat and a dog"}\n')
    coco = {"images": [{"id": i, "file_name": f"COCO_val2014_{i:012d}.jpg"} for i in range(1, 6)],
            "annotations": [{"id": 100 + j, "image_id": 1 + j % 5, "caption": f"  caption {j}\n"} for j in range(12)]}
    (data / "captions_val2014.json").write_text(json.dumps(coco))
    return {"pickapic": 3, "ocr": 2, "drawbench": 2, "partiprompts": 2, "hpsv2-benchmark": 12, "geneval": 2,
            "coco2014-10k": 4}


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A project root holding the real prompt specs (counts set to the samples', pins and repeats
    dropped) and sample data instead of the shipped files."""
    prompts = tmp_path / "prompts"
    shutil.copytree(ROOT / "prompts", prompts, ignore=shutil.ignore_patterns("data"))
    sizes = _write_samples(prompts / "data")
    for name, n in sizes.items():
        spec_path = prompts / f"{name}.yaml"
        spec = yaml.safe_load(spec_path.read_text())
        spec["count"] = n
        for key in ("sha256", "repeats"):
            spec["source"].pop(key, None)
        if spec["source"]["type"] == "coco":
            spec["source"]["n"] = n
        spec_path.write_text(yaml.safe_dump(spec))
    monkeypatch.setenv("CDM_BENCH_HOME", str(tmp_path))
    from cdm_bench import registry

    monkeypatch.setattr(registry.PROMPTS, "_entries", {})
    monkeypatch.setattr(registry.PROMPTS, "_discovered", False)
    return prompts


def test_each_public_set_loads_from_its_published_format(project):
    pick = load_prompt_set("pickapic")
    assert [p["prompt"] for p in pick.prompts] == ["a cat wearing a hat", "an astronaut on a horse", "a red bicycle"]
    assert pick.default_metrics[:2] == ["imagereward", "clipscore"]
    assert len(load_prompt_set("ocr")) == 2 and len(load_prompt_set("drawbench")) == 2
    parti = load_prompt_set("partiprompts").prompts
    assert parti[1]["prompt"] == "a photo of a cat" and parti[1]["Category"] == "Animals" and parti[1]["Challenge"] == "Basic"
    hps = load_prompt_set("hpsv2-benchmark").prompts
    assert len(hps) == 12 and hps[3] == {"id": "concept-art-0000", "prompt": "concept-art prompt 0", "category": "concept-art"}
    gen = load_prompt_set("geneval").prompts
    assert gen[1]["tag"] == "two_object" and gen[1]["include"][1]["class"] == "dog"
    coco = load_prompt_set("coco2014-10k").prompts
    assert len(coco) == 4 and len({r["image_id"] for r in coco}) == 4  # one caption per image
    assert all(r["file_name"].startswith("COCO_val2014_") and r["prompt"].startswith("caption ") for r in coco)
    assert coco == load_prompt_set("coco2014-10k").prompts  # the seeded subset is stable


def test_wrong_count_hash_mismatch_and_unknown_set_are_clear_errors(project):
    spec = yaml.safe_load((project / "pickapic.yaml").read_text())
    spec["count"] = 2048
    (project / "pickapic.yaml").write_text(yaml.safe_dump(spec))
    with pytest.raises(SpecError, match="expected 2048 prompts, the data has 3"):
        load_prompt_set("pickapic")
    spec["count"] = 3
    spec["source"]["sha256"] = hashlib.sha256(b"another file").hexdigest()
    (project / "pickapic.yaml").write_text(yaml.safe_dump(spec))
    with pytest.raises(SpecError, match="not the pinned"):
        load_prompt_set("pickapic")
    spec["source"]["sha256"] = hashlib.sha256((project / "data" / "pickapic_test.txt").read_bytes()).hexdigest()
    (project / "pickapic.yaml").write_text(yaml.safe_dump(spec))
    assert len(load_prompt_set("pickapic")) == 3
    with pytest.raises(UnknownNameError, match="pickapik.*did you mean 'pickapic'"):
        load_prompt_set("pickapik")
    (project / "data" / "ocr_test.txt").unlink()
    with pytest.raises(SpecError, match="ocr_test.txt not found; download it"):
        load_prompt_set("ocr")


def test_the_shipped_specs_validate_without_data():
    for path in sorted((ROOT / "prompts").glob("*.yaml")):
        spec = yaml.safe_load(path.read_text())
        assert {"name", "version", "description", "license", "source"} <= set(spec), path.name
        assert spec["name"] == path.stem


GENAI_SAMPLE = ROOT / "tests" / "samples" / "genai-bench"


def _genai_spec(project: Path, **source) -> None:
    spec = yaml.safe_load((project / "genai-bench.yaml").read_text())
    spec["count"] = 6
    spec["source"] = {"type": "genai", **source}
    (project / "genai-bench.yaml").write_text(yaml.safe_dump(spec))


def test_genai_bench_loads_its_published_layout_with_skill_tags(project):
    shutil.copytree(GENAI_SAMPLE, project / "data" / "genai-bench-1600")
    _genai_spec(project, path="data/genai-bench-1600")
    ps = load_prompt_set("genai-bench")
    assert ps.default_metrics == ["vqascore"] and [r["id"] for r in ps.prompts] == [f"{i:05d}" for i in range(6)]
    first, second = ps.prompts[0], ps.prompts[1]
    assert first["prompt"] == "A red apple on a wooden table."
    assert first["skills"] == ["attribute", "spatial relation", "basic"]  # the skills file's tag order
    assert second["skills"] == ["attribute", "action relation", "counting", "differentiation", "advanced"]
    assert first["models"]["DALLE_3"] == [1, 1, 1]  # every other field of the row is kept
    files = ps.describe()["source"]["files_sha256"]
    assert files["genai_image.json"] == hashlib.sha256((GENAI_SAMPLE / "genai_image.json").read_bytes()).hexdigest()


def test_genai_bench_errors_are_one_line(project, monkeypatch, tmp_path):
    folder = project / "data" / "genai-bench-1600"
    shutil.copytree(GENAI_SAMPLE, folder)
    skills = json.loads((folder / "genai_skills.json").read_text())
    skills["counting"].append(99)
    (folder / "genai_skills.json").write_text(json.dumps(skills))
    _genai_spec(project, path="data/genai-bench-1600")
    with pytest.raises(SpecError, match="skill 'counting' lists prompt 99"):
        load_prompt_set("genai-bench")
    _genai_spec(project, path="data/genai-bench-1600", skills_sha256="0" * 64)
    with pytest.raises(SpecError, match="not the pinned"):
        load_prompt_set("genai-bench")
    # no local copy: the dataset hub, offline and with an empty cache, is a one-line error naming both ways
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    _genai_spec(project, path="data/missing", repo_id="BaiqiL/GenAI-Bench-1600")
    with pytest.raises(SpecError) as err:
        load_prompt_set("genai-bench")
    msg = str(err.value)
    assert len(msg.splitlines()) == 1 and "BaiqiL/GenAI-Bench-1600" in msg and "download both files" in msg, msg
