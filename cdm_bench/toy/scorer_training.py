"""Training of the toy world's scorer (``ToyScorer``): multi-label BCE over colour x shape
attributes + auxiliary background-kind and object-count heads on a pool of fresh renders under
flip/rot90 augmentation; reports exact attribute-set accuracy on held-out renders. The config
(:class:`~cdm_bench.toy.train.ScorerConfig`) and the shared training helpers live in
:mod:`cdm_bench.toy.train`."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from cdm_bench.toy.train import SCORER_REPORT, ScorerConfig, _progress, _threads, _tick, labeled_batch


def train_scorer(cfg: ScorerConfig, out_dir: str | Path, progress: bool = True) -> dict:
    """Train a :class:`~cdm_bench.toy.scorer.ToyScorer`; save it and ``report.json`` in out_dir.

    Returns the report: held-out exact attribute-set accuracy, mean alignment of real images,
    background accuracy, training time.
    """
    from cdm_bench.toy.scorer import ToyScorer, attribute_targets

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with _threads(cfg.threads) as threads:
        t_start = time.time()
        torch.manual_seed(cfg.seed)
        w = cfg.world
        model = ToyScorer(cfg.channels, cfg.feat_dim, w.colors, w.shapes, w.backgrounds, w.max_objects)
        model = model.to(memory_format=torch.channels_last)
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.steps, pct_start=0.15)
        bar = _progress(cfg.steps, "toy scorer", progress)
        rng = np.random.default_rng([cfg.seed, 101])
        # A pool of renders, reused under the 8 rotations/flips (the world's distribution and
        # every label are invariant to them): rendering is ~25% of a step otherwise.
        pool_n = int(min(cfg.pool_size, cfg.steps * cfg.batch_size))
        pool_images, pool_prompts, pool_bg, pool_count = labeled_batch(rng, pool_n, w)
        pool = (ToyScorer.prepare(pool_images),
                torch.from_numpy(attribute_targets(pool_prompts, model.attribute_names)), pool_bg, pool_count)
        losses = []
        model.train()
        for step in range(cfg.steps):
            loss = _scorer_loss(model, pool, rng, pool_n, cfg.batch_size)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            losses.append(loss.item())
            _tick(bar, step, losses, 3)
        if bar is not None:
            bar.close()
        train_time = time.time() - t_start
        model = model.to(memory_format=torch.contiguous_format).eval()
        report = _scorer_report(model, cfg, train_time, losses, threads)
        model.save(out)
        (out / SCORER_REPORT).write_text(json.dumps(report, indent=1, default=str))
        return report


def _scorer_loss(model, pool, rng, pool_n: int, batch_size: int) -> torch.Tensor:
    """One batch from the render pool under a random rotation/flip -> the scorer's training loss."""
    pool_x, pool_t, pool_bg, pool_count = pool
    idx = torch.from_numpy(rng.choice(pool_n, size=batch_size, replace=False))
    x, target = pool_x[idx], pool_t[idx]
    bg, count = pool_bg[idx.numpy()], pool_count[idx.numpy()]
    k = int(rng.integers(4))  # rot90 / flips keep every attribute
    x = torch.rot90(x, k, dims=(2, 3))
    if rng.random() < 0.5:
        x = torch.flip(x, dims=(3,))
    x = x.contiguous(memory_format=torch.channels_last)
    o = model(x)
    return (F.binary_cross_entropy_with_logits(o["attributes"], target) * len(model.attribute_names) / 3.0
            + 0.3 * F.cross_entropy(o["background"], torch.from_numpy(bg))
            + 0.3 * F.cross_entropy(o["count"], torch.from_numpy(count - 1)))


def _scorer_report(model, cfg: ScorerConfig, train_time: float, losses: list, threads: int) -> dict:
    """Held-out evaluation on fresh renders (a seed the training pool never used)."""
    from cdm_bench.toy.scorer import alignment, exact_accuracy

    images, prompts, bg, count = labeled_batch(np.random.default_rng([cfg.seed, 202]), cfg.eval_n, cfg.world)
    acc = exact_accuracy(model, images, prompts)
    align = float(alignment(model, images, prompts).mean())
    with torch.no_grad():
        bg_acc = float((model.bg_head(model.features(images)).argmax(1).numpy() == bg).mean())
    return {"exact_accuracy": acc, "real_alignment": align, "background_accuracy": bg_acc,
            "eval_n": cfg.eval_n, "train_time_s": round(train_time, 1),
            "final_loss": float(np.mean(losses[-20:])),
            "params": sum(p.numel() for p in model.parameters()),
            "threads": threads, "config": cfg.to_dict(), "config_hash": cfg.hash()}
