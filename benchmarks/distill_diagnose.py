"""Why a world-benchmark student's toy_fid is what it is: where its images differ from real ones.

    python benchmarks/distill_diagnose.py --teacher bench --nfe 4 \
        --runs runs/distill_world/bench/cdm-g7-seed0 runs/distill_world/bench/dmd-g1-seed0 \
        --out benchmarks/results/distill_world_diagnosis.md --grid benchmarks/results/distill_world_grid.png

On the distillation benchmark's evaluation set (``distill_world.eval_set``: the same prompts and
noise seeds), for real renders, the teacher (``--teacher-points``: NFE:CFG pairs) and each run's
exported EMA student (``<run>/export``: its latest evaluation point), it reports:

* ``toy_fid`` split into its two terms, the means' squared distance ``|mu_r - mu_g|^2`` and the
  covariance term ``tr(S_r + S_g - 2 (S_r S_g)^1/2)`` (same scorer features as the metric, float64);
* ``toy_align`` (as the metric);
* ``hf``: the share of each image's spectral power (mean-removed, per channel) above half the
  Nyquist frequency, averaged over images, relative to real renders (1 = as real); grain or noise
  left in the images raises it, blur lowers it;
* ``pix_std``: the mean per-image pixel standard deviation relative to real renders (contrast);
* ``count``: the share of images whose object count (the scorer's count head) is the prompt's;
* ``bg TV``: total-variation distance between the distributions of background kinds (the scorer's
  background head) in these images and in the reference renders (0 = the same mix); ``bg mix``:
  that distribution itself, in the scorer's order of background kinds.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]
import cdm_bench  # noqa: E402,F401  (torchvision shim)


def frechet_terms(real: np.ndarray, fake: np.ndarray) -> tuple[float, float]:
    """(|mu_r - mu_g|^2, tr(S_r + S_g - 2 sqrt(S_r S_g))) of two (N, D) feature sets, float64."""
    from scipy import linalg

    mu_r, mu_g = real.mean(0), fake.mean(0)
    s_r, s_g = np.cov(real, rowvar=False), np.cov(fake, rowvar=False)
    root = linalg.sqrtm(s_r @ s_g)
    root = root.real if np.iscomplexobj(root) else root
    return float(((mu_r - mu_g) ** 2).sum()), float(np.trace(s_r + s_g - 2 * root))


from metrics.toy_diag import high_freq_share  # noqa: E402  (the product's; this script predates it)


def heads(scorer, images: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(float64 features, predicted object counts, background-kind histogram) of uint8 NHWC images."""
    import torch

    feats = scorer.features(images)
    with torch.no_grad():
        counts = scorer.count_head(feats).argmax(1).numpy() + 1
        kinds = scorer.bg_head(feats).argmax(1).numpy()
    hist = np.bincount(kinds, minlength=scorer.bg_head.out_features) / len(kinds)
    return feats.double().numpy(), counts, hist


def describe(name: str, images: np.ndarray, prompts: list[str], scorer, ref: dict) -> dict:
    from cdm_bench.toy.scorer import alignment

    feats, counts, hist = heads(scorer, images)
    mean_term, cov_term = frechet_terms(ref["feats"], feats)
    hf, std = high_freq_share(images).mean(), images.astype(np.float64).std(axis=(1, 2, 3)).mean()
    return {"source": name, "toy_fid": mean_term + cov_term, "mean_term": mean_term, "cov_term": cov_term,
            "toy_align": float(alignment(scorer, images, prompts).mean()),
            "hf": hf / ref["hf"], "pix_std": std / ref["std"], "count": float((counts == ref["objects"]).mean()),
            "bg_tv": 0.5 * float(np.abs(hist - ref["bg"]).sum()), "bg_mix": hist}


def sources(args, prompts, seeds):
    """(name, uint8 NHWC images) for the teacher points and each run's exported student."""
    import torch

    from cdm_bench.toy.artifacts import get_teacher
    from cdm_bench.toy.model import ToyFlowModel
    from cdm_bench.toy.sampling import sample_images

    torch.set_num_threads(args.threads)
    teacher = get_teacher(args.teacher).eval()
    for point in args.teacher_points:
        nfe, cfg = (float(v) for v in point.split(":"))
        yield f"teacher@{nfe:g} CFG {cfg:g}", sample_images(teacher, prompts, seeds, nfe=int(nfe), guidance=cfg,
                                                            shift=args.shift)
    names = [Path(r).name for r in args.runs]
    for run in map(Path, args.runs):  # a run name used twice is told apart by its parent folder
        label = run.name if names.count(run.name) == 1 else f"{run.parent.name}/{run.name}"
        student = ToyFlowModel.from_pretrained(str(run / "export")).eval()
        for nfe in args.nfe:
            yield f"{label}@{nfe}", sample_images(student, prompts, seeds, nfe=nfe, guidance=1.0,
                                                           shift=args.shift)


def main(argv: list[str] | None = None) -> int:
    from distill_world import eval_set

    from cdm_bench.toy import world
    from cdm_bench.toy.artifacts import get_scorer
    from cdm_bench.toy.train import preset_shift
    from metrics.toy import REAL_SEED_OFFSET

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--teacher", default="bench")
    ap.add_argument("--scorer", default="demo")
    ap.add_argument("--runs", nargs="*", default=[])
    ap.add_argument("--nfe", type=int, nargs="+", default=[4])
    ap.add_argument("--teacher-points", nargs="*", default=["50:1.5", "4:1"], help="NFE:CFG of teacher rows")
    ap.add_argument("--prompts", type=int, default=128)
    ap.add_argument("--samples", type=int, default=2)
    ap.add_argument("--shift", type=float, default=None)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--grid", type=Path, default=None, help="PNG: the first --grid-n images of every source, a row each")
    ap.add_argument("--grid-n", type=int, default=10)
    args = ap.parse_args(argv)
    args.shift = preset_shift(args.teacher) if args.shift is None else args.shift

    prompts, seeds = eval_set(args.prompts, args.samples)
    scorer = get_scorer(args.scorer).eval()
    args.bg_kinds = list(scorer.config.get("backgrounds") or range(scorer.bg_head.out_features))
    ref = np.stack([world.render_for_prompt(p, (s + REAL_SEED_OFFSET) % 2**32) for p, s in zip(prompts, seeds)])
    feats, _, hist = heads(scorer, ref)  # the toy_fid metric's reference images
    ref = {"feats": feats, "bg": hist, "hf": high_freq_share(ref).mean(),
           "objects": np.array([len(world.scene_for_prompt(p, 0).objects) for p in prompts]),
           "std": ref.astype(np.float64).std(axis=(1, 2, 3)).mean()}
    other = np.stack([world.render_for_prompt(p, s) for p, s in zip(prompts, seeds)])
    rows = [describe("real renders (other seeds)", other, prompts, scorer, ref)]
    strips = [("real renders", other[:args.grid_n])]
    for name, images in sources(args, prompts, seeds):
        rows.append(describe(name, images, prompts, scorer, ref))
        strips.append((name, images[:args.grid_n]))
        print(_line(rows[-1]), flush=True)
    if args.grid:
        save_grid(strips, args.grid)
    text = report(rows, args, argv if argv is not None else sys.argv[1:])
    if args.out:
        args.out.write_text(text)
    print(text)
    return 0


def save_grid(strips: list[tuple[str, np.ndarray]], path: Path, scale: int = 3) -> None:
    """One row of images per source, its name on the left (matplotlib, nearest-neighbour pixels)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [np.concatenate(list(images), axis=1) for _, images in strips]
    width = max(r.shape[1] for r in rows)
    height = rows[0].shape[0]
    fig, axes = plt.subplots(len(rows), 1, figsize=(width * scale / 100, len(rows) * (height * scale / 100 + 0.25)),
                             squeeze=False)
    for ax, (name, _), row in zip(axes[:, 0], strips, rows):
        ax.imshow(row, interpolation="nearest")
        ax.set_xticks([]), ax.set_yticks([])
        ax.set_title(name, loc="left", fontsize=9)
    fig.tight_layout(pad=0.3)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _line(r: dict) -> str:
    return (f"| {r['source']} | {r['toy_fid']:.2f} | {r['mean_term']:.2f} | {r['cov_term']:.2f} | "
            f"{r['toy_align']:.3f} | {r['hf']:.2f} | {r['pix_std']:.2f} | {r['count']:.3f} | {r['bg_tv']:.3f} | "
            + " / ".join(f"{v:.2f}" for v in r["bg_mix"]) + " |")


def report(rows: list[dict], args, argv: list[str]) -> str:
    kinds = " / ".join(args.bg_kinds)
    head = [f"| images | toy_fid | mean term | cov term | toy_align | hf / real | pix_std / real | count | bg TV | bg mix ({kinds}) |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    return "\n".join(head + [_line(r) for r in rows]) + (
        f"\n\n{args.prompts} prompts x {args.samples} samples (the benchmark's evaluation set), shift "
        f"{args.shift:g}; real renders for the Frechet terms use the toy_fid metric's reference seeds.\n"
        f"Command: `python benchmarks/distill_diagnose.py {' '.join(argv)}`\n")


if __name__ == "__main__":
    raise SystemExit(main())
