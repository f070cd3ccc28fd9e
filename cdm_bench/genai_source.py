"""The GenAI-Bench prompt source (``source: {type: genai, path: FOLDER, repo_id: ..., revision: ...}``).

GenAI-Bench-1600 (Li, Lin et al., 2024) as its authors publish it for t2v_metrics
(``dataset.py: GenAIBench_Image`` reads these two files from the dataset BaiqiL/GenAI-Bench-1600):

* ``genai_image.json``: an object keyed by the zero-padded prompt index (``"00000"`` ..
  ``"01599"``), each value an object with ``prompt`` and ``models`` (the human alignment
  ratings of each generator's image: ``{"DALLE_3": [5, 4, 5], ...}``), plus any other fields;
* ``genai_skills.json``: an object ``{skill tag: [prompt index (int), ...]}``, the tags t2v_metrics
  groups as basic (attribute, scene, spatial relation, action relation, part relation, basic) and
  advanced (counting, comparison, differentiation, negation, universal, advanced).

Each prompt becomes one row ``{"id": "00000", "prompt": ..., "skills": [tags in the skills file's
order], "models": ...}`` (every other field kept); ``vqascore`` reports ``skill/<tag>`` from
``skills``. The files are read from ``path`` (a folder, relative to the spec); when it is absent
and ``repo_id`` is set, from the dataset hub through huggingface_hub (its cache and
``HF_HUB_OFFLINE`` honoured; ``revision`` pins a commit). ``sha256`` / ``skills_sha256`` pin the
two files; their hashes are recorded with the set either way.
"""

from __future__ import annotations

import json
from pathlib import Path

from cdm_bench.errors import SpecError
from cdm_bench.prompts import PromptSource, pinned_sha256

IMAGES, SKILLS = "genai_image.json", "genai_skills.json"
HOMEPAGE = "https://huggingface.co/datasets/BaiqiL/GenAI-Bench-1600"


def _files(source: dict, name: str, spec_path: Path) -> tuple[Path, Path]:
    folder = Path(str(source.get("path") or "")).expanduser()
    folder = folder if folder.is_absolute() else spec_path.parent / folder
    if source.get("path") and (folder / IMAGES).is_file() and (folder / SKILLS).is_file():
        return folder / IMAGES, folder / SKILLS
    repo = source.get("repo_id")
    if not repo:
        raise SpecError(f"prompt set {name!r}: {folder / IMAGES} and {folder / SKILLS} not found; download them from "
                        f"{HOMEPAGE} into {folder} (see {spec_path})")
    try:
        from huggingface_hub import hf_hub_download

        got = [Path(hf_hub_download(str(repo), f, repo_type="dataset", revision=source.get("revision")))
               for f in (IMAGES, SKILLS)]
    except Exception as exc:  # offline, not cached, no such repo or package: one line
        first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise SpecError(f"prompt set {name!r}: {folder} holds no {IMAGES} / {SKILLS} and the dataset {repo} could not "
                        f"be read ({type(exc).__name__}: {first}); download both files from {HOMEPAGE} into "
                        f"{folder}") from None
    return got[0], got[1]


def _json(path: Path, name: str, pin: str | None):
    from cdm_bench.hashing import file_sha256
    from cdm_bench.prompts import read_text

    if pin and file_sha256(path) != pin:
        raise SpecError(f"prompt set {name!r}: {path} has sha256 {file_sha256(path)}, not the pinned {pin}: "
                        f"a different version of the file")
    try:
        return json.loads(read_text(path))
    except (json.JSONDecodeError, RecursionError) as exc:
        raise SpecError(f"prompt set {name!r}: {path} is not valid JSON ({getattr(exc, 'msg', 'nested too deeply')})") from None


def _skills_of(skills, path: Path, ids: set[str]) -> dict[str, list[str]]:
    """{prompt id: [tags]} from ``{tag: [int index, ...]}``."""
    if not isinstance(skills, dict):
        raise SpecError(f"{path}: expected an object {{skill tag: [prompt index, ...]}}, got {type(skills).__name__}")
    out: dict[str, list[str]] = {}
    for tag, indices in skills.items():
        if not isinstance(indices, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in indices):
            raise SpecError(f"{path}: skill {tag!r} must list integer prompt indices")
        for i in indices:
            pid = f"{i:05d}"
            if pid not in ids:
                raise SpecError(f"{path}: skill {tag!r} lists prompt {i}, which {IMAGES} does not hold")
            out.setdefault(pid, []).append(str(tag))
    return out


class GenAIBenchSource(PromptSource):
    keys = frozenset({"path", "repo_id", "revision", "sha256", "skills_sha256"})

    def load(self, source, *, name, count, spec_path):
        from cdm_bench.hashing import file_sha256

        images_file, skills_file = _files(source, name, spec_path)
        data = _json(images_file, name, pinned_sha256(source, spec_path))
        skills = _json(skills_file, name, pinned_sha256({"sha256": source.get("skills_sha256")}, spec_path))
        if not isinstance(data, dict) or not all(isinstance(v, dict) and isinstance(v.get("prompt"), str)
                                                 for v in data.values()):
            raise SpecError(f"{images_file}: expected GenAI-Bench's {IMAGES}: an object keyed by prompt index "
                            f"(\"00000\", ...) whose values hold a 'prompt' string")
        tags = _skills_of(skills, skills_file, set(data))
        source["files_sha256"] = {IMAGES: file_sha256(images_file), SKILLS: file_sha256(skills_file)}
        rows = []
        for pid in sorted(data):
            extra = {k: v for k, v in data[pid].items() if k not in ("id", "prompt", "skills")}
            rows.append({"id": str(pid), "prompt": data[pid]["prompt"], "skills": tags.get(pid, []), **extra})
        return rows
