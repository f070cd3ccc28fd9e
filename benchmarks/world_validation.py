"""Is the toy world hard enough to rank few-step samplers? Validate it with the demo teacher.

For several sampling-seed sets, sample the preset's teacher at 1, 2, 4, 8 and 50 Euler steps,
with and without CFG, on a fixed prompt set, and score toy_fid / toy_align (library metric
classes). Real world images for the same prompts and seeds give the reference row. Writes a
CSV (one row per seed set x setting) and a Markdown summary with the checks:

1. the 1- and 2-step rows are worse than 50 steps (same CFG) by more than the seed noise;
2. toy_align of the teacher at 1-2 steps without CFG is below 0.9 (not saturated);
3. teacher@50+CFG beats the teacher at 1-2 steps without CFG on both metrics by more than the
   seed noise.

Seed noise = the largest spread (max - min over seed sets) of a metric among the rows
compared. With ``--cfg-sweep`` the 50-step teacher is also scored at each listed CFG (its
guidance curve), and ``--grid`` writes a PNG of real images beside the teacher at 1/2/4/50 steps.

The ``bench`` preset (issue 14) is additionally checked against its targets: at 50 steps + CFG
toy_align >= 0.6 and toy_fid <= 34 / 3 (a third of the demo teacher's), alignment below
saturation (< 0.95), and a real few-step gap at equal CFG (teacher@4 toy_fid >= 1.3x teacher@50's
and toy_align >= 0.05 lower). The default prompts are the distillation benchmark's evaluation set
(``benchmarks/distill_world.py``: 256 prompts from seed 987,654, 2 samples each). Usage::

    python benchmarks/world_validation.py --preset demo --seed-sets 0 1
    python benchmarks/world_validation.py --preset bench --cfg-sweep 1.5 2 3 4 6 \
        --grid benchmarks/results/world_validation_bench.png \
        --out benchmarks/results/world_validation_bench.csv --md benchmarks/results/world_validation_bench.md
"""

from __future__ import annotations

import argparse
import csv
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cdm_bench.toy import world  # noqa: E402
from cdm_bench.toy.artifacts import get_scorer, get_teacher, scorer_report, teacher_log  # noqa: E402
from cdm_bench.toy.sampling import sample_images  # noqa: E402
from cdm_bench.toy.train import preset_shift  # noqa: E402
from metrics.toy import ToyAlign, ToyFID  # noqa: E402

FIELDS = ["preset", "seed_set", "setting", "steps", "guidance", "shift", "nfe", "n", "toy_fid", "toy_align",
          "gen_time_s"]
EVAL_PROMPT_SEED = 987_654  # = benchmarks/distill_world.py's evaluation prompts
DEMO_TEACHER_FID = 34.0  # the demo teacher at 50 steps + CFG (issue 14's baseline)


def evaluate(images, prompts, meta, scorer):
    fid, align = ToyFID(scorer=scorer), ToyAlign(scorer=scorer)
    fid.update(images, prompts, meta)
    align.update(images, prompts, meta)
    return fid.compute()["toy_fid"], align.compute()["toy_align"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="demo")
    ap.add_argument("--prompts", type=int, default=256)
    ap.add_argument("--samples", type=int, default=2, help="samples per prompt")
    ap.add_argument("--seed-sets", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--steps", type=int, nargs="+", default=[1, 2, 4, 8, 50])
    ap.add_argument("--guidance", type=float, default=1.5, help="the CFG of the few-step comparison rows")
    ap.add_argument("--cfg-sweep", type=float, nargs="*", default=[], help="more CFG values for the 50-step teacher")
    ap.add_argument("--shift", type=float, default=None, help="sampler shift (default: the preset's; bench: 3)")
    ap.add_argument("--grid", default=None, help="write a PNG: real images beside the teacher at 1/2/4/50 steps")
    ap.add_argument("--prompt-seed", type=int, default=EVAL_PROMPT_SEED)
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/world_validation.csv"))
    ap.add_argument("--md", default=str(ROOT / "benchmarks/results/world_validation.md"))
    args = ap.parse_args(argv)

    t0 = time.time()
    scorer = get_scorer(args.preset)
    t_scorer = time.time() - t0
    t0 = time.time()
    teacher = get_teacher(args.preset)
    t_teacher = time.time() - t0
    base_prompts = world.sample_prompts(args.prompts, args.prompt_seed)
    prompts = [p for p in base_prompts for _ in range(args.samples)]
    shift = preset_shift(args.preset) if args.shift is None else args.shift
    rows, grid = [], {}
    for ss in args.seed_sets:
        seeds = [ss * 1_000_000 + i * 100 + k for i in range(args.prompts) for k in range(args.samples)]
        meta = [{"prompt_id": f"p{i:04d}", "k": k, "seed": s}
                for (i, k), s in zip(((i, k) for i in range(args.prompts) for k in range(args.samples)), seeds)]
        t = time.time()
        real = np.stack([world.render_for_prompt(p, s) for p, s in zip(prompts, seeds)])
        grid.setdefault("real", real[:8])
        fid, align = evaluate(real, prompts, meta, scorer)
        rows.append(dict(preset=args.preset, seed_set=ss, setting="real", steps=0, guidance=0.0, shift=shift,
                         nfe=0, n=len(real), toy_fid=fid, toy_align=align, gen_time_s=round(time.time() - t, 1)))
        print(rows[-1], flush=True)
        plan = [(g, st) for g in (1.0, args.guidance) for st in args.steps]
        plan += [(g, 50) for g in args.cfg_sweep if g not in (1.0, args.guidance)]
        for g, steps in plan:
            t = time.time()
            images = sample_images(teacher, prompts, seeds, steps, guidance=g, shift=shift)
            dt = time.time() - t
            fid, align = evaluate(images, prompts, meta, scorer)
            name = f"teacher{steps}" + ("" if g == 1 else "+cfg" if g == args.guidance else f"+cfg{g:g}")
            grid.setdefault(name, images[:8])
            rows.append(dict(preset=args.preset, seed_set=ss, setting=name, steps=steps, guidance=g, shift=shift,
                             nfe=steps * (2 if g != 1 else 1), n=len(images),
                             toy_fid=fid, toy_align=align, gen_time_s=round(dt, 1)))
            print(rows[-1], flush=True)
    if args.grid:
        write_grid(grid, Path(args.grid), args.guidance)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=FIELDS)
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{v:.4f}" if isinstance(v, float) else v) for k, v in r.items()})
    Path(args.md).write_text(summary(rows, args, t_scorer, t_teacher))
    print(f"wrote {out} and {args.md}")
    return 0


def write_grid(grid: dict, path: Path, guidance: float) -> None:
    """Rows of 8 images (seed set 0, the first prompts): real, then the teacher at 1/2/4/50 steps
    with CFG (``guidance``), then without; each row labelled on its left."""
    from PIL import Image, ImageDraw

    names = ["real"] + [f"teacher{n}+cfg" for n in (1, 2, 4, 50)] + [f"teacher{n}" for n in (1, 2, 4, 50)]
    names = [n for n in names if n in grid]
    scale, label_w = 3, 150
    side = grid["real"].shape[1] * scale
    img = Image.new("RGB", (label_w + 8 * (side + 2), len(names) * (side + 2)), "white")
    draw = ImageDraw.Draw(img)
    for r, name in enumerate(names):
        text = name.replace("+cfg", f" + CFG {guidance:g}").replace("teacher", "teacher @")
        draw.text((4, r * (side + 2) + side // 2 - 6), text, fill="black")
        for c, im in enumerate(grid[name]):
            tile = Image.fromarray(im).resize((side, side), Image.NEAREST)
            img.paste(tile, (label_w + c * (side + 2), r * (side + 2)))
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    print(f"wrote {path}")


def _agg(rows, setting, metric):
    v = np.array([r[metric] for r in rows if r["setting"] == setting])
    return v.mean(), v.max() - v.min()


def summary(rows, args, t_scorer, t_teacher) -> str:
    settings = list(dict.fromkeys(r["setting"] for r in rows))
    lines = [f"# Toy-world validation (preset `{args.preset}`)", "",
             f"{args.prompts} prompts x {args.samples} samples = {args.prompts * args.samples} images per seed set; "
             f"seed sets {args.seed_sets}; CFG scale {args.guidance}; sampler shift {rows[0]['shift']:g}; "
             f"generated with `python benchmarks/world_validation.py` on {platform.processor() or platform.machine()}, "
             f"torch {torch.__version__}, {torch.get_num_threads()} threads "
             "(sampling runs 1-thread chunks of 8, two at a time; the machine also ran the distillation benchmark, so times are indicative).", "",
             "| setting | steps | cfg | NFE | toy_fid (mean) | fid spread | toy_align (mean) | align spread | gen s / seed set |",
             "|---|---|---|---|---|---|---|---|---|"]
    for s in settings:
        rs = [r for r in rows if r["setting"] == s]
        f, fs = _agg(rows, s, "toy_fid")
        a, as_ = _agg(rows, s, "toy_align")
        lines.append(f"| {s} | {rs[0]['steps']} | {rs[0]['guidance']:g} | {rs[0]['nfe']} | {f:.2f} | {fs:.2f} | "
                     f"{a:.3f} | {as_:.3f} | {np.mean([r['gen_time_s'] for r in rs]):.1f} |")
    lines += ["", "Spread = max - min over the seed sets (the seed-to-seed noise).", "", "## Checks", ""]

    def worse(a, b, metric, lower_better):
        (ma, sa), (mb, sb) = _agg(rows, a, metric), _agg(rows, b, metric)
        noise = max(sa, sb)
        gap = (ma - mb) if lower_better else (mb - ma)
        return gap > noise, gap, noise

    checks = []
    cfg = "+cfg"
    for few in ("teacher1", "teacher2"):
        for suffix in ("", cfg):
            a, b = few + suffix, "teacher50" + suffix
            if a in settings and b in settings:
                ok_f, gf, nf = worse(a, b, "toy_fid", True)
                ok_a, ga, na = worse(a, b, "toy_align", False)
                checks.append((f"{a} worse than {b} (fid gap {gf:.2f} > noise {nf:.2f}; align gap {ga:.3f} > noise {na:.3f})",
                               ok_f and ok_a))
    for few in ("teacher1", "teacher2"):
        if few in settings:
            a, _ = _agg(rows, few, "toy_align")
            checks.append((f"{few} toy_align {a:.3f} < 0.9", a < 0.9))
            if "teacher50" + cfg in settings:
                ok_f, gf, nf = worse(few, "teacher50" + cfg, "toy_fid", True)
                ok_a, ga, na = worse(few, "teacher50" + cfg, "toy_align", False)
                checks.append((f"teacher50+cfg beats {few} (fid gap {gf:.2f} > noise {nf:.2f}; "
                               f"align gap {ga:.3f} > noise {na:.3f})", ok_f and ok_a))
    checks += bench_checks(rows, settings)
    lines += [f"- [{'x' if ok else ' '}] {c}" for c, ok in checks]
    try:
        tl, sr = teacher_log(args.preset), scorer_report(args.preset)
        lines += ["", "## Training (from the cached artefacts' logs)", "",
                  f"- teacher: {tl['params']:,} params, {tl['steps']} steps x batch {tl['batch_size']}, "
                  f"{tl['train_time_s']:.0f} s on {tl['threads']} thread(s), final loss {tl['final_loss']:.4f}",
                  f"- scorer: {sr['params']:,} params, {sr['train_time_s']:.0f} s on {sr['threads']} thread(s); "
                  f"held-out exact attribute-set accuracy {sr['exact_accuracy']:.3f} (n={sr['eval_n']}), "
                  f"real-image alignment {sr['real_alignment']:.3f}, background accuracy {sr['background_accuracy']:.3f}",
                  f"- this run: loading/training scorer {t_scorer:.0f} s, teacher {t_teacher:.0f} s"]
    except Exception as exc:  # pragma: no cover - logs missing
        lines += ["", f"(training logs unavailable: {exc})"]
    return "\n".join(lines) + "\n"


def bench_checks(rows, settings) -> list:
    """Issue 14's targets for a benchmark teacher (quality, few-step gap, no saturation)."""
    out = []
    if "teacher50+cfg" not in settings:
        return out
    f50, _ = _agg(rows, "teacher50+cfg", "toy_fid")
    a50, _ = _agg(rows, "teacher50+cfg", "toy_align")
    out.append((f"teacher50+cfg toy_align {a50:.3f} >= 0.6", a50 >= 0.6))
    out.append((f"teacher50+cfg toy_fid {f50:.2f} <= {DEMO_TEACHER_FID / 3:.2f} (a third of the demo teacher's)",
                f50 <= DEMO_TEACHER_FID / 3))
    out.append((f"teacher50+cfg toy_align {a50:.3f} < 0.95 (not saturated)", a50 < 0.95))
    for suffix in ("+cfg", ""):
        few, full = "teacher4" + suffix, "teacher50" + suffix
        if few in settings and full in settings:
            (f4, _), (ff, _) = _agg(rows, few, "toy_fid"), _agg(rows, full, "toy_fid")
            (a4, _), (af, _) = _agg(rows, few, "toy_align"), _agg(rows, full, "toy_align")
            out.append((f"{few} vs {full}: toy_fid ratio {f4 / ff:.2f} >= 1.3 and toy_align gap {af - a4:.3f} >= 0.05",
                        f4 >= 1.3 * ff and af - a4 >= 0.05))
    return out


if __name__ == "__main__":
    raise SystemExit(main())
