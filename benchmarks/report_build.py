"""Time to build the leaderboard and report from stored scores, and the report's size.

    python benchmarks/report_build.py [--generators 10] [--images 2000] [--metrics 8]

Synthesises evaluated run directories (a manifest, per-image scores, results; 6 real PNGs per
run for the image grid) through cdm_bench.rundir, then times ``write_leaderboard`` (prompt
bootstrap CIs, paired deltas, ranks, Markdown, LaTeX, HTML with charts and thumbnails).
Target (reports issue): <= 30 s for 10 generators x 2,000 images x 8 metrics, HTML <= 20 MB.
Writes benchmarks/results/report_build.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

RESULTS = Path(__file__).parent / "results"


def fake_run(root: Path, g: int, n_images: int, n_metrics: int, samples: int = 2) -> Path:
    from cdm_bench.rundir import SCORE_BASE_COLUMNS, RunDir, image_set_hash

    rd = RunDir(root / f"gen{g:02d}")
    rd.prepare_images()
    rng = np.random.default_rng(g)
    recs = []
    for i in range(n_images):
        pid, k = f"p{i // samples:05d}", i % samples
        name = rd.image_name(pid, k)
        if i < 6 * samples:  # the grid's images are real PNGs
            rd.write_png(name, rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
        recs.append({"prompt_id": pid, "k": k, "prompt": f"prompt {i // samples}", "seed": i, "file": name,
                     "sha256": f"{g}-{i}"})
    rd.write_manifest(recs)
    nfe = [1, 2, 4, 8, 50][g % 5]
    recipe = "teacher" if g < 5 else "student"
    ident = {"generator": {"name": f"gen{g:02d}", "recipe": recipe, "nfe_total": nfe, "cfg": 1.0},
             "spec_hash": str(g), "seed": 0, "prompt_set": {"name": "bench", "version": "1", "sha256": "x"}}
    rd.write_identity(ident)
    frame = pd.DataFrame([{c: r.get(c) for c in SCORE_BASE_COLUMNS} for r in recs])
    metrics = {}
    for m in range(n_metrics):
        name = f"metric{m}"
        frame[name] = rng.normal(g * 0.01 + m, 1.0, n_images)
        metrics[name] = {"metric": name, "name": name, "version": "1", "higher_is_better": m % 2 == 0,
                         "per_image": True, "identity": f"id{m}", "images_sha256": image_set_hash(recs),
                         "status": "ok", "value": float(frame[name].mean()), "values": {}, "n": n_images}
    rd.write_scores(frame)
    rd.write_results({"generation": ident, "metrics": metrics, "environment": {}, "n_images": n_images})
    return rd.root


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--generators", type=int, default=10)
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--metrics", type=int, default=8)
    args = ap.parse_args()
    from cdm_bench.leaderboard import write_leaderboard
    from cdm_bench.provenance import environment

    tmp = Path(tempfile.mkdtemp(prefix="report-bench-"))
    try:
        runs = [fake_run(tmp / "runs", g, args.images, args.metrics) for g in range(args.generators)]
        t0 = time.perf_counter()
        paths = write_leaderboard(runs, tmp / "lb")
        seconds = time.perf_counter() - t0
        size = paths["html"].stat().st_size
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    res = {"generators": args.generators, "images": args.images, "metrics": args.metrics, "seconds": seconds,
           "html_mb": size / 2**20, "cores": os.cpu_count(), "environment": environment()}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "report_build.json").write_text(json.dumps(res, indent=2, default=str))
    (RESULTS / "report_build.md").write_text(
        "# Report build time\n\n"
        f"`python benchmarks/report_build.py --generators {args.generators} --images {args.images} "
        f"--metrics {args.metrics}` on {os.cpu_count()} cores ({res['environment']['time']}).\n\n"
        "| measure | value | target | met |\n|---|---|---|---|\n"
        f"| build time (s) | {seconds:.1f} | <= 30 | {'yes' if seconds <= 30 else 'NO'} |\n"
        f"| leaderboard.html (MB) | {size / 2**20:.2f} | <= 20 | {'yes' if size <= 20 * 2**20 else 'NO'} |\n\n"
        "Everything `cdm-bench leaderboard` does from stored scores: prompt-bootstrap CIs (1,000 resamples), "
        "paired deltas against the highest-NFE teacher, ranks, Markdown, LaTeX, and the HTML report with "
        "matplotlib charts and embedded thumbnails.\n")
    print(json.dumps({k: v for k, v in res.items() if k != "environment"}, indent=2))


if __name__ == "__main__":
    main()
