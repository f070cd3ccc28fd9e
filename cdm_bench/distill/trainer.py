"""The one distillation trainer: every recipe is a configuration of it, never a branch in it.

One *iteration* (one batch of prompts per process):

1. draw a schedule (its length shared by all ranks; see :func:`draw_schedule`) and, per sample,
   the step indices the losses will read (with ``train.share_step_index`` the fake teacher's
   index is the student losses' one); simulate the student from noise along the schedule (no
   grad) up to those steps;
2. fake-teacher step: flow matching on the student's ``x0_i`` at a random step, AdamW (with the
   LR warm-up of :mod:`cdm_bench.distill.lr`), clipping,
   then ``theta_fake <- (1 - m) theta_fake + m theta_student``;
3. every ``update_ratio``-th iteration, a student step: the recipe's loss modules name their
   student inputs (shared inputs share one pass; all inputs go through one batched call), plan
   their teacher queries (answered with one batched call per network), and return
   ``(loss, logs)``; the weighted sum is minimised with AdamW + clipping; the EMA is updated.

All randomness of iteration ``n`` on rank ``r`` is derived from ``(seed, n, r)``, so a resumed
run reproduces an uninterrupted one exactly.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import Counter
from pathlib import Path

import torch
import yaml
from torch import nn

from cdm_bench.distill import fsdp
from cdm_bench.distill.adapter import (
    ModelAdapter,
    build_adapter,
    cond_cat,
    cond_index,
    cond_to,
)
from cdm_bench.distill.checkpoint import (
    check_fresh_run,
    check_same_recipe,
    check_same_teacher,
    checkpoint_path,
    latest_checkpoint,
    load_meta,
    load_state,
    save_checkpoint,
    upgrade_saved_recipe,
)
from cdm_bench.distill.config import RecipeConfig, load_recipe, recipe_to_dict
from cdm_bench.distill.ema import EMA, lerp_parameters
from cdm_bench.distill.losses import LOSSES, run_queries
from cdm_bench.distill.losses.base import bview
from cdm_bench.distill.lr import LinearWarmup
from cdm_bench.distill.rng import derive_seed, draw_schedule, make_generator
from cdm_bench.distill.runlog import RunLogger
from cdm_bench.distill.runlog import mean_dicts as _mean_dicts
from cdm_bench.distill.schedules import build_schedule
from cdm_bench.distill.simulate import TrajectoryPoint, simulate

log = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    """A loss term or gradient norm became NaN/inf; training stopped before the update."""


class Trainer:
    """Distil ``cfg``'s teacher into a few-step student; see the module docstring."""

    def __init__(self, cfg: RecipeConfig, out_dir: str | Path, resume: bool = False,
                 adapter: ModelAdapter | None = None):
        self.cfg, self.out_dir = cfg, Path(out_dir)
        self.rank, self.world = fsdp.init_distributed()
        self.device = fsdp.device_for_rank()
        self.adapter = adapter or build_adapter(cfg.model.adapter, **cfg.model.kwargs)
        self.schedule = build_schedule(cfg.schedule.kind, cfg.schedule.params)
        draw = cfg.train.sigma_draw
        self.losses = {n: LOSSES.get(s.type)(s.params, name=n, sigma_draw=draw) for n, s in cfg.losses.items()}
        self.weights = {n: s.weight for n, s in cfg.losses.items()}
        self.fake_loss = LOSSES.get(cfg.fake.loss.type)(cfg.fake.loss.params, sigma_draw=draw)
        self.recipe = recipe_to_dict(cfg)
        self.step = self.iteration = 0
        self.counts: Counter = Counter()
        self.adapter.sample_prompts(1, 0)  # a missing prompt set fails here, before any weights load
        if cfg.validate is not None:  # so do a missing tracker package and validation prompt set
            from cdm_bench.distill.trackers import check_tracker
            from cdm_bench.prompts import load_prompt_set

            check_tracker(cfg.validate.tracker)
            load_prompt_set(cfg.validate.prompts, limit=cfg.validate.limit or None)
        self._build_models()
        self.opt_student = self._optimizer(self.student, cfg.student.optim)
        self.opt_fake = self._optimizer(self.fake, cfg.fake.optim)
        self.lr_student = self._warmup(self.opt_student, cfg.student.optim)
        self.lr_fake = self._warmup(self.opt_fake, cfg.fake.optim)
        self._start_or_resume(resume)

    # -- setup ----------------------------------------------------------------------------------
    def _build_models(self) -> None:
        """Teacher, student, fake teacher and EMA, built on the meta device and filled once
        (:mod:`cdm_bench.distill.init`)."""
        from cdm_bench.distill.init import build_lora_copies, build_working_copies

        train, student = self.cfg.train, self.cfg.student
        self.adapter.device = self.device
        self.model_spec = self.adapter.teacher_spec()
        common = dict(rank=self.rank, world=self.world, device=self.device, bf16=train.precision == "bf16",
                      gradient_checkpointing=train.gradient_checkpointing)
        if student.lora is not None:  # one frozen base, three adapters (cdm_bench.distill.lora)
            models = build_lora_copies(self.adapter, self.model_spec, student.lora, self.cfg.fake.lora,
                                       seed=derive_seed(train.seed, 1 << 21), **common)
        else:
            models = build_working_copies(self.adapter, self.model_spec, **common)
        self.teacher, self.student, self.fake = models["teacher"], models["student"], models["fake"]
        self.ema = EMA(models["ema"], student.ema_decay, student.ema_warmup, student.ema_warmup_offset)

    @staticmethod
    def _optimizer(model: nn.Module, o) -> torch.optim.Optimizer:
        return torch.optim.AdamW(model.parameters(), lr=o.lr, betas=tuple(o.betas), eps=o.eps,
                                 weight_decay=o.weight_decay)

    def _warmup(self, optimizer: torch.optim.Optimizer, o) -> LinearWarmup:
        return LinearWarmup(optimizer, o.lr, o.warmup_steps, self.world if o.warmup_scale_world else 1)

    def _start_or_resume(self, resume: bool) -> None:
        ckpt = latest_checkpoint(self.out_dir)
        if ckpt is None or not resume:
            check_fresh_run(self.out_dir)
        else:
            self._load(ckpt)
        if self.rank == 0:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            (self.out_dir / "recipe.yaml").write_text(yaml.safe_dump(self.recipe, sort_keys=False))
        fsdp.barrier()

    def _load(self, ckpt: Path) -> None:
        saved, meta = load_meta(ckpt)
        check_same_recipe(upgrade_saved_recipe(saved), self.recipe, ckpt)
        check_same_teacher(meta.get("teacher_sha256"), getattr(self.adapter, "teacher_sha256", None), ckpt)
        state = load_state(ckpt)
        for name, model in (("student", self.student), ("fake", self.fake), ("ema", self.ema.model)):
            fsdp.load_full_model_state(model, state[name])
        fsdp.load_full_optim_state(self.student, self.opt_student, state["optim_student"])
        fsdp.load_full_optim_state(self.fake, self.opt_fake, state["optim_fake"])
        self.ema.load_state_dict(state["ema_state"])
        for name, sched in (("lr_student", self.lr_student), ("lr_fake", self.lr_fake)):
            sched.load_state_dict(state.get(name, {"ticks": 0}))  # absent: a run without warm-up
        self.step, self.iteration = int(state["step"]), int(state["iteration"])
        log.info("resumed %s at student step %d", ckpt, self.step)

    # -- the loop -------------------------------------------------------------------------------
    def train(self) -> Path:
        """Run to ``train.steps`` student steps; return the final checkpoint directory."""
        from cdm_bench.progress import progress_bar

        tcfg, last = self.cfg.train, latest_checkpoint(self.out_dir)
        validator = self._validator()
        if self.step >= tcfg.steps and last is not None:
            if validator is not None:  # a run killed in its last validation finishes it
                validator.run(self.step)
                validator.close()
            return last
        logger = RunLogger(self.out_dir, tcfg.tensorboard) if self.rank == 0 else None
        bar = progress_bar(tcfg.steps, f"distill {self.cfg.name}", "step", initial=self.step,
                           disable=self.rank != 0 or not tcfg.progress)
        fake_logs: list[dict] = []
        drifting = 0
        if validator is not None and validator.due(self.step, tcfg.steps):  # step 0, or one a kill interrupted
            validator.run(self.step)
        t0 = time.perf_counter()
        try:
            while self.step < tcfg.steps:
                record = self.run_iteration(fake_logs)
                if record is None:
                    continue
                self.step += 1
                record.update(_mean_dicts(fake_logs), step=self.step, iteration=self.iteration,
                              step_time=time.perf_counter() - t0)
                fake_logs = []
                bar.update(1)
                bar.set_postfix(loss=f"{record['loss/total']:.4g}", refresh=False)
                if logger is not None and self.step % tcfg.log_every == 0:
                    logger.write(record)
                if self.step % tcfg.checkpoint_every == 0 or self.step == tcfg.steps:
                    last = self.save()
                if validator is not None and validator.due(self.step, tcfg.steps):
                    summary = validator.run(self.step)  # (its time is logged apart from the steps')
                    drifting = drifting + 1 if summary and summary["drift"] else 0 if summary else drifting
                    if validator.cfg.stop_on_drift and drifting >= validator.cfg.stop_on_drift:
                        last = self.save() if self.step % tcfg.checkpoint_every else last
                        log.warning("stopping at step %d: %d validations in a row worse than the best "
                                    "(validate.stop_on_drift)", self.step, drifting)
                        break
                t0 = time.perf_counter()
        finally:
            bar.close()
            if logger is not None:
                logger.close()
            if validator is not None:
                validator.close()
        return last

    def _validator(self):
        if self.cfg.validate is None:
            return None
        from cdm_bench.distill.validate import Validator

        return Validator(self)

    def save_best(self, step: int, info: dict) -> None:
        """``best/``: the EMA of the best validation (kept beyond ``keep_checkpoints``)."""
        from cdm_bench.distill.checkpoint import save_best

        state = {"ema": fsdp.full_model_state(self.ema.model), "step": step}
        if self.rank == 0:
            save_best(self.out_dir, step, state, self.recipe, {**self._meta(), "best": info})
        fsdp.barrier()

    def run_iteration(self, fake_logs: list) -> dict | None:
        """One batch: simulate, fake-teacher step, and (every update_ratio-th) a student step."""
        tcfg, it, bsz = self.cfg.train, self.iteration, self.cfg.train.batch_size
        student_turn = (it + 1) % tcfg.update_ratio == 0
        local = make_generator(tcfg.seed, it, self.rank)
        torch.manual_seed(derive_seed(tcfg.seed, it, self.rank, 7))
        prompts = self.adapter.sample_prompts(bsz, derive_seed(tcfg.seed, it, self.rank, 1))
        cond = cond_to(self.adapter.encode_prompts(prompts), self.device)
        sigmas = draw_schedule(self.schedule, tcfg.seed, it, self.rank, self.adapter.effective_sigmas)
        noise = self.adapter.sample_noise(bsz, local, self.teacher).to(self.device)
        k = sigmas.shape[0]
        i_fake = torch.randint(k, (bsz,), generator=local)
        own_index = student_turn and not tcfg.share_step_index
        i_student = torch.randint(k, (bsz,), generator=local) if own_index else i_fake
        upto = torch.maximum(i_fake, i_student)
        calls = fsdp.all_reduce_max(int(upto.max()) + 1)

        def velocity(x, s, rows):
            with self._autocast():
                return self._forward("simulation", self.student, x, s, cond_index(cond, rows.to(self.device)))

        traj = simulate(velocity, noise, sigmas.to(self.device), upto, calls)
        fake_logs.append(self.fake_step(self._fake_x0(traj.at(i_fake), cond, local), cond, local))
        self.iteration += 1
        if not student_turn:
            return None
        record = self.student_step(traj.at(i_student), cond, local)
        record["schedule/length"] = k
        return record

    @torch.no_grad()
    def _fake_x0(self, point: TrajectoryPoint, cond, gen: torch.Generator) -> torch.Tensor:
        """The student predictions the fake teacher learns (its loss module picks them)."""
        def student_x0(x, s, rows):
            empty = rows.numel() == 0
            if empty:  # FSDP: every rank makes the call; evaluate one row, discard it
                x, s, rows = point.x[:1], point.sigma[:1], torch.zeros(1, dtype=torch.long, device=self.device)
            with self._autocast():
                v = self._forward("fake_offtraj", self.student, x, s, cond_index(cond, rows))
            x0 = x.float() - bview(s, x) * v.float()
            return x0[:0] if empty else x0

        return self.fake_loss.select_x0(point, student_x0, gen)

    def fake_step(self, x0: torch.Tensor, cond, gen: torch.Generator) -> dict:
        cfg = self.cfg.fake
        with self._autocast():
            loss, logs = self.fake_loss(lambda x, s: self._forward("fake_train", self.fake, x, s, cond, grad=True),
                                        x0, gen)
        self.opt_fake.zero_grad(set_to_none=True)
        _backward(loss, self.fake)
        gnorm = self._clip(self.fake, cfg.optim.grad_clip)
        values = self._reduce_checked({"loss/fake": loss, "grad_norm/fake": gnorm}, "fake-teacher step")
        values["lr/fake"] = self.lr_fake.apply()
        self.opt_fake.step()
        self.lr_fake.step()
        lerp_parameters(self.fake, self.student, cfg.student_merge)
        return {**values, **{f"fake/{k}": v for k, v in logs.items()}}

    def student_step(self, point: TrajectoryPoint, cond, gen: torch.Generator) -> dict:
        inputs, keys = {}, []
        for loss in self.losses.values():
            si = loss.student_input(point, gen)
            inputs.setdefault(si.key, si)
            keys.append(si.key)
        order = list(inputs)
        x = torch.cat([inputs[k].x for k in order])
        s = torch.cat([inputs[k].sigma for k in order])
        with self._autocast():
            v = self._forward("student", self.student, x, s, cond_cat([cond] * len(order)), grad=True)
        x0 = dict(zip(order, (x.float() - bview(s, x) * v.float()).chunk(len(order))))
        plans = [loss.plan(x0[k].detach(), inputs[k].sigma, gen) for loss, k in zip(self.losses.values(), keys)]
        nets = {"real": lambda a, b, c: self._forward("real", self.teacher, a, b, c),
                "fake": lambda a, b, c: self._forward("fake", self.fake, a, b, c)}
        with self._autocast():
            answers = run_queries(plans, nets, cond, cond_to(self.adapter.null_condition(x0[order[0]].shape[0]), self.device))
        terms, logs = {}, {}
        for (name, loss), k, plan, ans in zip(self.losses.items(), keys, plans, answers):
            terms[name], extra = loss(x0[k], plan, ans)
            logs.update({f"{name}/{key}": val for key, val in extra.items()})
        total = sum(self.weights[n] * terms[n] for n in terms)
        self.opt_student.zero_grad(set_to_none=True)
        _backward(total, self.student)
        gnorm = self._clip(self.student, self.cfg.student.optim.grad_clip)
        checked = {f"loss/{n}": t for n, t in terms.items()}
        values = self._reduce_checked({**checked, "loss/total": total, "grad_norm/student": gnorm}, "student step")
        values["lr/student"] = self.lr_student.apply()
        self.opt_student.step()
        self.lr_student.step()
        decay = self.ema.update(self.student)
        counts, self.counts = self.counts, Counter()
        evals = {f"evals/{k}": v for k, v in counts.items()}
        return {**values, **logs, **evals, "evals": sum(counts.values()), "ema_decay": decay}

    # -- helpers --------------------------------------------------------------------------------
    def _forward(self, kind: str, model: nn.Module, x, sigma, cond, grad: bool = False) -> torch.Tensor:
        """A counted model call (units: full batches; a backward counts 2, +1 with checkpointing)."""
        rows = x.shape[0] / self.cfg.train.batch_size
        self.counts[kind] += rows
        if grad:
            self.counts[f"{kind}_backward"] += rows * (3 if self.cfg.train.gradient_checkpointing else 2)
        return self.adapter.forward(model, x, sigma, cond)

    @staticmethod
    def _clip(model: nn.Module, max_norm: float) -> torch.Tensor:
        params = [p for p in model.parameters() if p.grad is not None]
        norm = torch.nn.utils.clip_grad_norm_(params, max_norm if max_norm > 0 else float("inf"))
        return fsdp.as_local(norm)

    def _reduce_checked(self, values: dict, what: str) -> dict:
        """Average over ranks; stop on any non-finite term (all ranks stop together)."""
        names = list(values)
        vec = fsdp.all_reduce_mean(torch.stack([torch.as_tensor(values[n]).detach().float().cpu() for n in names]))
        bad = [f"{n} = {float(v)}" for n, v in zip(names, vec) if not torch.isfinite(v)]
        if bad:
            last = latest_checkpoint(self.out_dir)
            raise NonFiniteLossError(
                f"non-finite value in the {what} of student step {self.step + 1} (iteration "
                f"{self.iteration}): {', '.join(bad)}; stopped before the update. Last good checkpoint: "
                f"{last if last is not None else 'none (no checkpoint saved yet)'}")
        return {n: float(v) for n, v in zip(names, vec)}

    def _autocast(self):
        if self.cfg.train.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def save(self) -> Path:
        """Gather full state dicts (all ranks) and write a checkpoint (rank 0)."""
        state = {"student": fsdp.full_model_state(self.student), "fake": fsdp.full_model_state(self.fake),
                 "ema": fsdp.full_model_state(self.ema.model),
                 "optim_student": fsdp.full_optim_state(self.student, self.opt_student),
                 "optim_fake": fsdp.full_optim_state(self.fake, self.opt_fake),
                 "ema_state": self.ema.state_dict(), "step": self.step, "iteration": self.iteration,
                 "lr_student": self.lr_student.state_dict(), "lr_fake": self.lr_fake.state_dict()}
        path = checkpoint_path(self.out_dir, self.step)
        if self.rank == 0:
            save_checkpoint(self.out_dir, self.step, state, self.recipe, self._meta(), self.cfg.train.keep_checkpoints)
        fsdp.barrier()
        return path

    def _meta(self) -> dict:
        """What a checkpoint says of itself besides its recipe: what export needs, and the
        teacher's weights (sha256) and torch build it was distilled from."""
        return {"recipe": self.cfg.name, "adapter": self.cfg.model.adapter, "adapter_kwargs": self.cfg.model.kwargs,
                "model_spec": self.model_spec, "world_size": self.world,
                "teacher_sha256": getattr(self.adapter, "teacher_sha256", None), "torch": torch.__version__}


def _backward(loss: torch.Tensor, model: nn.Module) -> None:
    """``loss.backward()``; a LoRA view's adapter is made active first (a checkpointed block
    recomputes its forward during backward, after other roles' calls switched the adapter)."""
    if hasattr(model, "activate"):
        model.activate()
    loss.backward()


def train(recipe_name_or_path, overrides: dict | list | None = None, out_dir: str | Path | None = None,
          *, resume: bool = False, adapter: ModelAdapter | None = None) -> Path:
    """Load a recipe (name, YAML path or dict), apply overrides, train; -> final checkpoint.

    Under ``torchrun`` every process calls this; the models are sharded with FSDP2.
    """
    from cdm_bench.safenames import check_out_dir, safe_name

    cfg = load_recipe(recipe_name_or_path, overrides)
    out_dir = check_out_dir(out_dir if out_dir is not None else Path("runs") / "distill" / safe_name(cfg.name, "recipe name"),
                            "--out")
    owns_group = not torch.distributed.is_initialized()
    try:
        return Trainer(cfg, out_dir, resume=resume, adapter=adapter).train()
    finally:
        if owns_group:
            fsdp.cleanup()
