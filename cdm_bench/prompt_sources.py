"""Prompt sources for public sets whose published format is more than one flat file.

* ``hpsv2``: the HPSv2 benchmark prompts, a folder holding ``anime.json``, ``concept-art.json``,
  ``paintings.json`` and ``photo.json`` (each a JSON list of 800 prompts, as the hpsv2 package
  ships them); rows keep their style as ``category``.
* ``coco``: COCO-2014 captions from the official ``captions_val2014.json``; a seeded subset of
  ``n`` captions, at most one per image (``numpy.random.default_rng(seed).permutation`` over
  the annotations sorted by id, first caption of each image kept); rows keep ``image_id`` and
  ``file_name`` (the paired real image, for FID references).

Both read local files only (``path`` relative to the spec; ``sha256`` pins a file).
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
            prompts = json.loads(file.read_text(encoding="utf-8"))
            if not isinstance(prompts, list) or not all(isinstance(p, str) for p in prompts):
                raise SpecError(f"prompt set {name!r}: {file} must be a JSON list of prompt strings")
            rows += [{"id": f"{style}-{i:04d}", "prompt": p, "category": style} for i, p in enumerate(prompts)]
        return rows


class CocoCaptions(PromptSource):
    keys = frozenset({"path", "sha256", "n", "seed"})

    def load(self, source, *, name, count, spec_path):
        file = data_file(source, name, spec_path)
        data = json.loads(file.read_text(encoding="utf-8"))
        if not isinstance(data, dict) or "annotations" not in data or "images" not in data:
            raise SpecError(f"prompt set {name!r}: {file} is not a COCO captions file "
                            f"(expected 'images' and 'annotations')")
        files = {im["id"]: im["file_name"] for im in data["images"]}
        anns = sorted(data["annotations"], key=lambda a: a["id"])
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
