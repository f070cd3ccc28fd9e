"""Validation during training: the student is sampled and scored through the product itself.

At step 0, every ``validate.every`` student steps and at the end, for each model in
``validate.models`` (``ema``, ``student``) and each ``validate.nfe`` entry, an unsharded copy of
the model is sampled by :meth:`ModelAdapter.validation_generator` through
:func:`cdm_bench.generate.generate` into a run directory
``TRAIN_DIR/validation/step-<n>/<model>-<entry>/`` (fixed prompts and seeds: the same noise at
every validation), scored by :func:`cdm_bench.evaluate.evaluate` with the recipe's metrics, and
the results go to ``validation.csv`` (step, model, entry, steps, nfe, cfg, metric, value, ci_low, ci_high;
rebuilt from the run directories, so a resumed run ends with the same file), TensorBoard (and
``validate.tracker``): scalars and an image grid per validation (one row per NFE entry), the
log, ``best/`` (the EMA of the best validation by ``validate.select``) and a drift warning when
the latest value is worse than the best beyond both 95 % intervals. Under torchrun every rank
samples and scores its share (generate's and evaluate's own sharding); rank 0 writes.

Metrics whose packages are not in the training env are skipped with one warning naming their
env (score them after training, e.g. with ``cdm-bench train ... --then SPEC``). Metric models are
loaded per validation (evaluate's set-up/teardown), so nothing stays in memory between them.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np

log = logging.getLogger("cdm_bench.distill")
CSV = "validation.csv"
DONE = "validated.json"
SKIP_VALUES = {"n", "ci_low", "ci_high", "ci_level", "n_boot"}  # bookkeeping, not sub-values
COLUMNS = ["step", "model", "entry", "steps", "nfe", "cfg", "metric", "value", "ci_low", "ci_high", "higher_is_better"]


class Validator:
    def __init__(self, trainer):
        self.t, self.cfg = trainer, trainer.cfg.validate
        self.root = Path(trainer.out_dir) / "validation"
        self.metrics = self._available_metrics()
        self.trackers = None
        self._prompts = None

    # -- which metrics run here -------------------------------------------------------------------------
    def _available_metrics(self) -> list:
        from cdm_bench.errors import CdmBenchError
        from cdm_bench.metric_plans import build_plans, parse_metrics

        ready = []
        for entry, plan in zip(self.cfg.metrics, build_plans(self.cfg.metrics, 1, "cpu", "float32")):
            try:
                plan.metric.check()
                ready.append(entry)
            except CdmBenchError as exc:
                env = plan.metric.env_hint or (f"cdm-bench[{plan.metric.extra}]" if plan.metric.extra else "its env")
                log.warning("validation skips %s: %s; score it after training in %s", plan.instance,
                            str(exc).split(":")[0], env)
        if not ready:
            log.warning("validation: none of %s can run in this environment", [i for i, _, _ in parse_metrics(self.cfg.metrics)])
        return ready

    def due(self, step: int, last: int) -> bool:
        return step == 0 or step % self.cfg.every == 0 or step == last

    # -- one validation ----------------------------------------------------------------------------------
    def run(self, step: int) -> dict | None:
        """Validate at ``step`` (nothing when that step was validated before: resume); returns the
        summary {"drift": bool} on rank 0."""
        from cdm_bench.distill import fsdp

        out = self.root / f"step-{step:06d}"
        if (out / DONE).is_file():
            return None
        t0 = time.perf_counter()
        for name in self.cfg.models:
            module = self._unsharded(name)
            for entry in self.cfg.entries:
                self._generate_and_score(module, entry, out / f"{name}-{entry.label}")
            del module
        fsdp.barrier()
        summary = None
        if self.t.rank == 0:
            seconds = time.perf_counter() - t0
            summary = self._report(step, out, seconds)
        summary = broadcast(summary)
        if summary["best"] is not None:  # every rank takes part in gathering the EMA
            self.t.save_best(step, summary["best"])
        if self.t.rank == 0:  # written last: a validation killed before this is redone on resume
            (out / DONE).write_text(json.dumps({"step": step, "seconds": summary["seconds"]}))
        fsdp.barrier()
        return summary

    def _unsharded(self, name: str):
        from cdm_bench.distill import fsdp

        src = self.t.ema.model if name == "ema" else self.t.student
        model = self.t.adapter.build_model(self.t.model_spec)
        model.load_state_dict({k: v.detach().float() for k, v in fsdp.full_state_on_every_rank(src).items()})
        return model.to(self.t.device).eval().requires_grad_(False)

    def prompt_set(self):
        if self._prompts is None:
            from cdm_bench.prompts import load_prompt_set

            self._prompts = load_prompt_set(self.cfg.prompts, limit=self.cfg.limit or None)
        return self._prompts

    def _generate_and_score(self, module, entry, run_dir: Path) -> None:
        from cdm_bench.evaluate import evaluate
        from cdm_bench.generate import generate

        gen = self.t.adapter.validation_generator(module, entry)
        gen.train_step, gen.series = int(run_dir.parent.name.removeprefix("step-")), run_dir.name
        gen.display_name = f"{gen.series}@{gen.train_step}"  # one leaderboard row per validation step
        generate(gen, self.prompt_set(), run_dir, self.cfg.samples_per_prompt, self.cfg.batch_size, self.cfg.seed,
                 progress=False)
        if self.metrics:
            evaluate(run_dir, self.metrics, batch_size=self.cfg.eval_batch_size, chunk_size=self.cfg.chunk_size,
                     progress=False, allow_partial=True, num_workers=0, set_bootstrap=self.cfg.bootstrap)

    # -- what the user sees (rank 0) ---------------------------------------------------------------------
    def _report(self, step: int, out: Path, seconds: float) -> dict:
        frame = write_csv(self.root, pending=step)
        now = frame[frame["step"] == step]
        tr = self._trackers()
        tr.scalars({f"validation/{r.metric}@{r.entry}" + ("" if r.model == "ema" else f"/{r.model}"): r.value
                    for r in now.itertuples() if np.isfinite(r.value)}, step)
        tr.scalars({"time/validation_s": seconds}, step)
        grid = image_grid(out, self.cfg)
        if grid is not None:
            tr.image("validation/grid", grid, step)
        best, drift = self._best_and_drift(frame, step)
        log.info("validation at step %d (%.1f s): %s", step, seconds, headline(frame, step, self.cfg))
        return {"drift": drift, "best": best, "seconds": seconds}

    def _trackers(self):
        if self.trackers is None:
            from cdm_bench.distill.trackers import Trackers

            self.trackers = Trackers(self.t.out_dir, self.cfg.tracker, self.t.cfg.name, self.t.recipe)
        return self.trackers

    def _best_and_drift(self, frame, step: int) -> tuple[dict | None, bool]:
        """(what best/ is to hold when ``step`` is the best validation so far, else None;
        whether ``step`` is worse than the best beyond both intervals)."""
        key = self.cfg.select_key
        if key is None:
            return None, False
        metric, model, nfe = key
        rows = frame[(frame["metric"] == metric) & (frame["model"] == model) & (frame["entry"] == nfe)]
        rows = rows[np.isfinite(rows["value"])].sort_values("step")
        if rows.empty or step not in set(rows["step"]):
            return None, False
        hib = bool(rows["higher_is_better"].iloc[0])
        best = rows.loc[rows["value"].idxmax() if hib else rows["value"].idxmin()]
        if int(best["step"]) == step:
            return {"metric": metric, "model": model, "nfe": nfe, "value": float(best["value"]), "step": step}, False
        latest = rows[rows["step"] == step].iloc[0]
        worse = latest["ci_high"] < best["ci_low"] if hib else latest["ci_low"] > best["ci_high"]
        if worse:
            verb = "fell" if hib else "rose"
            log.warning("%s@%s %s from %.4g at step %d to %.4g at step %d, beyond both 95%% intervals", metric,
                        nfe.removeprefix("nfe"), verb, best["value"], int(best["step"]), latest["value"], step)
        return None, bool(worse)

    def close(self) -> None:
        if self.trackers is not None:
            self.trackers.close()


def broadcast(obj):
    from cdm_bench import dist

    return dist.broadcast(obj)


def collect(root: Path, pending: int | None = None) -> list[dict]:
    """validation.csv's rows from every validated step's run directories (and ``pending``'s, the
    step being validated now)."""
    rows = []
    steps = {d.parent for d in Path(root).glob(f"step-*/{DONE}")}
    if pending is not None:
        steps.add(Path(root) / f"step-{pending:06d}")
    for folder in sorted(steps):
        step = int(folder.name.removeprefix("step-"))
        for run_dir in sorted(p for p in folder.iterdir() if p.is_dir()):
            model, _, label = run_dir.name.partition("-")
            rows += [{"step": step, "model": model, "entry": label, **r} for r in scored_rows(run_dir)]
    return rows


def scored_rows(run_dir: Path) -> list[dict]:
    """One row per metric value of a scored run directory: sampler ``steps``, measured ``nfe``,
    ``cfg``, metric, value, 95 % interval (per-image metrics: the prompt bootstrap; set-level:
    the chunk bootstrap) and direction. A metric's other values (e.g. toy_fid's ``mean_term`` /
    ``cov_term``, toy_diag's ``count_acc``) are rows ``<metric>.<value>`` without an interval."""
    from cdm_bench.report.stats import prompt_bootstrap_ci
    from cdm_bench.rundir import RunDir

    run = RunDir(run_dir)
    res = run.read_results() if run.results_path.is_file() else None
    if not res:
        return []
    gen = res["generation"]
    spec, prov = gen["generator"], gen.get("provenance") or {}
    head = {"steps": spec.get("steps", spec.get("nfe")), "nfe": prov.get("nfe_measured", spec.get("nfe_total")),
            "cfg": spec.get("cfg", spec.get("guidance"))}
    scores, rows = run.read_scores(), []
    for name, m in sorted(res["metrics"].items()):
        if m.get("status") != "ok":
            continue
        values = m.get("values", {})
        lo, hi = (prompt_bootstrap_ci(scores, name) if m.get("per_image") and scores is not None and name in scores
                  else (values.get("ci_low", np.nan), values.get("ci_high", np.nan)))
        hib = m.get("higher_is_better")
        rows.append({**head, "metric": name, "value": m["value"], "ci_low": lo, "ci_high": hi, "higher_is_better": hib})
        for key, v in sorted(values.items()):
            if key not in SKIP_VALUES and key != name and isinstance(v, (int, float)) and not isinstance(v, bool):
                rows.append({**head, "metric": f"{name}.{key}", "value": float(v), "ci_low": np.nan, "ci_high": np.nan,
                             "higher_is_better": hib})
    return rows


def write_csv(root: Path, pending: int | None = None):
    import pandas as pd

    from cdm_bench.atomic import atomic_write_text

    frame = pd.DataFrame(collect(root, pending), columns=COLUMNS)
    atomic_write_text(Path(root).parent / CSV, frame.to_csv(index=False))
    return frame


def image_grid(out: Path, cfg) -> np.ndarray | None:
    """Sample 0 of the first ``grid_prompts`` prompts, one row per NFE entry (the first model)."""
    from cdm_bench.rundir import RunDir

    rows = []
    for entry in cfg.entries:
        run = RunDir(out / f"{cfg.models[0]}-{entry.label}")
        if not run.is_complete():
            continue
        recs = [r for r in run.read_manifest() if r["k"] == 0][:cfg.grid_prompts]
        rows.append(np.concatenate(list(run.load_images(recs)), axis=1))
    return np.concatenate(rows, axis=0) if rows else None


def headline(frame, step: int, cfg) -> str:
    """The select metric (else the first) per NFE at ``step``: value, change since the last
    validation and since the best."""
    metric = cfg.select_key[0] if cfg.select_key else (frame["metric"].iloc[0] if len(frame) else None)
    parts = []
    for label in [e.label for e in cfg.entries]:
        rows = frame[(frame["metric"] == metric) & (frame["entry"] == label) & (frame["model"] == cfg.models[0])]
        rows = rows.sort_values("step")
        if step not in set(rows["step"]):
            continue
        now = float(rows[rows["step"] == step]["value"].iloc[0])
        text = f"{metric}@{label.removeprefix('nfe')} {now:.4g}"
        before = rows[rows["step"] < step]
        if len(before):
            hib = bool(rows["higher_is_better"].iloc[0])
            at = before["value"].idxmax() if hib else before["value"].idxmin()
            best, best_step = float(before.loc[at, "value"]), int(before.loc[at, "step"])
            better = now > best if hib else now < best
            text += f" ({now - float(before['value'].iloc[-1]):+.3g} since step {int(before['step'].iloc[-1])}, " + \
                    ("a new best)" if better else f"{now - best:+.3g} vs the best, step {best_step})")
        parts.append(text)
    return "; ".join(parts) or "no metric value"
