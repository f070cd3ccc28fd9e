"""The reference code's ClipScorer (byliutao/cdm's cdm/rewards/clip_scorer.py) timed in its own
process on the images eval_overhead.py scores: from float tensors in memory, from its own
float32 .pt input path, and from the same PNG files decoded as its ``main()`` decodes an image;
plus its start-up on one image. Used by benchmarks/eval_overhead.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def reference(repo: Path, clip: str, images: np.ndarray, prompts: list[str], batch: int, tmp: Path) -> dict:
    """The reference code's ClipScorer on the same images, loaded as it stores them (a .pt of
    float tensors in [0, 1]); and its start-up on one image, in its own process."""
    pkg = tmp / "refcode"
    for f in ("cdm/__init__.py", "cdm/rewards/__init__.py", "cdm/rewards/clip_scorer.py",
              "cdm/rewards/reward_ckpt_path.py"):
        (pkg / f).parent.mkdir(parents=True, exist_ok=True)
        text = subprocess.run(["git", "-C", str(repo), "show", f"HEAD:{f}"], capture_output=True, text=True).stdout \
            if not (repo / f).exists() else (repo / f).read_text()
        (pkg / f).write_text(text if f != "cdm/rewards/__init__.py" else "")
    import torch

    pt = tmp / "images.pt"
    torch.save(torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0, pt)
    from PIL import Image

    pngs = []
    for i, im in enumerate(images):  # the same images as PNG files (generate writes them so)
        pngs.append(str(tmp / "refpng" / f"{i:05d}.png"))
        Path(pngs[-1]).parent.mkdir(exist_ok=True)
        Image.fromarray(im).save(pngs[-1])
    code = f"""
import sys, time, json, torch
t0 = time.perf_counter()
sys.path.insert(0, {str(pkg)!r})
import cdm.rewards.clip_scorer as cs
cs.CLIP_VIT_LARGE_PATCH14_REPO = {clip!r}
scorer = cs.ClipScorer("cpu")
tl = time.perf_counter()
px = torch.load({str(pt)!r})
load_s = time.perf_counter() - tl
prompts = {prompts!r}
n = int(sys.argv[1])
scorer(px[:1], prompts[:1])
t1 = time.perf_counter()
for i in range(0, n, {batch}):
    scorer(px[i:i + {batch}], prompts[i:min(i + {batch}, n)])
score_s = time.perf_counter() - t1
png_s = None
if len(sys.argv) > 2:  # from the PNG files, decoded as the reference's own main() does (PIL, uint8 / 255)
    import numpy as np
    from PIL import Image
    pngs = {pngs!r}
    t2 = time.perf_counter()
    for i in range(0, n, {batch}):
        arr = np.array([np.array(Image.open(p)) for p in pngs[i:i + {batch}]]).transpose(0, 3, 1, 2)
        scorer(torch.tensor(arr, dtype=torch.uint8) / 255.0, prompts[i:min(i + {batch}, n)])
    png_s = time.perf_counter() - t2
print(json.dumps({{"startup_s": t1 - t0, "score_s": score_s, "load_s": load_s, "png_s": png_s}}))
"""
    t_one = time.perf_counter()
    one = json.loads(subprocess.run([sys.executable, "-c", code, "1"], capture_output=True, text=True, check=True,
                                    env={**os.environ, "PYTHONPATH": str(ROOT)}).stdout.splitlines()[-1])
    one["process_s"] = time.perf_counter() - t_one  # the whole process, as cdm-bench's start-up is timed
    full = json.loads(subprocess.run([sys.executable, "-c", code, str(len(images)), "png"], capture_output=True,
                                     text=True, check=True, env={**os.environ, "PYTHONPATH": str(ROOT)}
                                     ).stdout.splitlines()[-1])
    return {"startup_one_image_s": one["startup_s"], "process_one_image_s": one["process_s"], "score_s": full["score_s"],
            "load_s": full["load_s"], "png_s": full["png_s"]}
