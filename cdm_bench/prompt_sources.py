"""Prompt sources for public sets whose published format is more than one flat file.

* ``hpsv2``: the HPSv2 benchmark prompts, a folder holding ``anime.json``, ``concept-art.json``,
  ``paintings.json`` and ``photo.json`` (each a JSON list of 800 prompts, as the hpsv2 package
  ships them); rows keep their style as ``category``.
* ``coco``: COCO-2014 captions from the official ``captions_val2014.json``; a seeded subset of
  ``n`` captions, at most one per image (``numpy.random.default_rng(seed).permutation`` over
  the annotations sorted by id, first caption of each image kept); rows keep ``image_id`` and
  ``file_name`` (the paired real image, for FID references).
* ``coco_list``: the reference code's own COCO-2014 list (``test.txt`` + ``metadata.json``).

All read local files only (``path`` relative to the spec; ``sha256`` pins a file).
"""

from __future__ import annotations

import json

import numpy as np

from cdm_bench.errors import SpecError
from cdm_bench.prompts import PromptSource, data_file

HPS_STYLES = ("anime", "concept-art", "paintings", "photo")


class HPSv2Benchmark(PromptSource):
    keys = frozenset({"path", "styles"})

    def load(self, source, *, name, count, spec_path):
        folder = data_file(source, name, spec_path, "folder")
        rows = []
        for style in source.get("styles") or HPS_STYLES:
            file = folder / f"{style}.json"
            if not file.is_file():
                raise SpecError(f"prompt set {name!r}: {file} not found (the HPSv2 benchmark has "
                                f"{', '.join(s + '.json' for s in HPS_STYLES)})")
            prompts = _read_json_file(file, name, "a JSON list of prompt strings")
            if not isinstance(prompts, list) or not all(isinstance(p, str) for p in prompts):
                raise SpecError(f"prompt set {name!r}: {file} must be a JSON list of prompt strings")
            rows += [{"id": f"{style}-{i:04d}", "prompt": p, "category": style} for i, p in enumerate(prompts)]
        return rows


def _read_json_file(file, name: str, what: str):
    from cdm_bench.prompts import read_text

    try:
        return json.loads(read_text(file))
    except (json.JSONDecodeError, RecursionError) as exc:
        raise SpecError(f"prompt set {name!r}: {file} is not valid JSON ({getattr(exc, 'msg', 'nested too deeply')}); "
                        f"expected {what}") from None


class CocoCaptions(PromptSource):
    keys = frozenset({"path", "sha256", "n", "seed"})

    def load(self, source, *, name, count, spec_path):
        file = data_file(source, name, spec_path)
        data = _read_json_file(file, name, "the official captions_val2014.json")
        try:
            files = {im["id"]: im["file_name"] for im in data["images"]}
            anns = sorted(data["annotations"], key=lambda a: a["id"])
            for a in anns:
                a["image_id"], a["caption"]  # noqa: B018 - every annotation has both
        except (TypeError, KeyError) as exc:
            raise SpecError(f"prompt set {name!r}: {file} is not a COCO captions file (expected 'images' with id "
                            f"and file_name, 'annotations' with id, image_id and caption; missing {exc})") from None
        order = np.random.default_rng(int(source.get("seed", 42))).permutation(len(anns))
        rows, seen = [], set()
        n = int(source.get("n", count or len(anns)))
        for i in order:
            a = anns[int(i)]
            if a["image_id"] in seen:
                continue
            seen.add(a["image_id"])
            rows.append({"id": f"coco-{a['id']}", "prompt": " ".join(str(a["caption"]).split()),
                         "image_id": a["image_id"], "file_name": files.get(a["image_id"])})
            if len(rows) == n:
                break
        return rows


class CocoCaptionList(PromptSource):
    """The reference code's COCO-2014 list: ``test.txt`` (one caption per line, in its order) and
    ``metadata.json`` (``num_samples``, ``random_seed``, ``resolution`` of the real images,
    ``source``, ``total_available``), each pinned by sha256. The metadata is checked against the
    list and recorded with the set (``source.metadata_values``); its real images (the FID reference) are
    the ``fid`` metric's ``reference`` folder at ``reference_resolution: <resolution>``."""

    keys = frozenset({"path", "sha256", "metadata", "metadata_sha256"})
    META_KEYS = ("num_samples", "random_seed", "resolution")

    def load(self, source, *, name, count, spec_path):
        from cdm_bench.prompts import _read_file

        file = data_file(source, name, spec_path)
        meta_file = data_file({"type": "coco_list", "path": source.get("metadata"),
                               "sha256": source.get("metadata_sha256")}, name, spec_path, "metadata file")
        meta = _read_json_file(meta_file, name, "the reference code's metadata.json")
        if not isinstance(meta, dict) or any(not isinstance(meta.get(k), int) for k in self.META_KEYS):
            raise SpecError(f"prompt set {name!r}: {meta_file} must be an object with integer "
                            f"{', '.join(self.META_KEYS)}")
        rows = [{"id": f"coco-{i:05d}", "prompt": r["prompt"]} for i, r in enumerate(_read_file(file))]
        if len(rows) != meta["num_samples"]:
            raise SpecError(f"prompt set {name!r}: {file} has {len(rows)} captions, its metadata says "
                            f"{meta['num_samples']}")
        source["metadata_values"] = {k: meta[k] for k in sorted(meta) if isinstance(meta[k], (int, str))}
        return rows
