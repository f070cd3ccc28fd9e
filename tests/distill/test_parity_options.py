"""Reference-parity options of the trainer (issue 14): LR warm-up, shared step index, clamped
sigma draws, the reference's EMA warm-up, per-rank inner sigmas. Each test fails if its option
does nothing or does something else than the reference (restated here from its semantics)."""

import json

import pytest
import torch
import yaml
from distill_helpers import TINY_MODEL, tiny_overrides

from cdm_bench.distill import train
from cdm_bench.distill.checkpoint import ResumeError, load_state
from cdm_bench.distill.config import (OptimConfig, RecipeError, StudentConfig, TrainConfig, load_recipe,
                                      parse_recipe, recipe_to_dict)
from cdm_bench.distill.ema import EMA
from cdm_bench.distill.losses import (CFGAugmentationLoss, DistributionMatchingLoss, FakeFlowMatchingLoss,
                                      OffTrajectoryDMLoss)
from cdm_bench.distill.losses.base import draw_sigmas
from cdm_bench.distill.lr import LinearWarmup
from cdm_bench.distill.schedules import RandomContinuousParams, RandomContinuousSchedule
from cdm_bench.distill.simulate import Trajectory, TrajectoryPoint
from cdm_bench.distill.trainer import Trainer, draw_schedule

#: the reference's values (its sd3() config, cdm/models/ema.py, scripts/train.py)
PAPER = {"student.optim.warmup_steps": 100, "fake.optim.warmup_steps": 100, "student.ema_warmup": True,
         "student.ema_warmup_offset": 1, "train.share_step_index": True, "train.sigma_draw": "clamp",
         "schedule.per_rank_sigmas": True}
#: the values the toy recipes keep (this trainer's behaviour before the options existed)
LEGACY = {"student.optim.warmup_steps": 0, "fake.optim.warmup_steps": 0, "student.ema_warmup_offset": 0,
          "train.share_step_index": False, "train.sigma_draw": "range", "schedule.per_rank_sigmas": False}


def _leaf(cfg, dotted):
    d = recipe_to_dict(cfg)
    for key in dotted.split("."):
        d = d[key]
    return d


# -- defaults and recipes ---------------------------------------------------------------------------
def test_defaults_are_the_reference_and_toy_recipes_keep_the_earlier_behaviour():
    assert (OptimConfig().warmup_steps, OptimConfig().warmup_scale_world) == (100, True)
    student = StudentConfig()
    assert (student.ema_warmup, student.ema_warmup_offset, student.ema_decay) == (True, 1, 0.999)
    assert (TrainConfig().share_step_index, TrainConfig().sigma_draw) == (True, "clamp")
    assert RandomContinuousParams().per_rank_sigmas is True
    bare = load_recipe({"name": "bare", "model": {"adapter": "toy"}, "losses": {"dm": {}},
                        "schedule": {"kind": "random_continuous"}})
    assert {k: _leaf(bare, k) for k in PAPER} == PAPER
    assert bare.fake.optim.warmup_steps == 100 and bare.fake.optim.lr == 5e-6
    for name in ("cdm", "ddmd", "dmd", "cdm_no_offtraj", "cdm_fixed_schedule"):
        cfg = load_recipe(name)
        keys = [k for k in LEGACY if k != "schedule.per_rank_sigmas" or cfg.schedule.kind == "random_continuous"]
        assert {k: _leaf(cfg, k) for k in keys} == {k: LEGACY[k] for k in keys}, name
        assert parse_recipe(recipe_to_dict(cfg)) == cfg


@pytest.mark.parametrize("override, match", [
    ("train.sigma_draw=uniform", r"train.sigma_draw must be one of \('clamp', 'range'\)"),
    ("student.optim.warmup_steps=-1", r"student.optim: optim.warmup_steps must be >= 0"),
    ("fake.optim.warmup_scale_world=2", r"'fake.optim.warmup_scale_world' must be bool"),
    ("student.ema_warmup_offset=-1", r"student.ema_warmup_offset must be >= 0"),
    ("train.share_step_index=yes please", r"'train.share_step_index' must be bool"),
    ("train.warmup_steps=10", r"'warmup_steps' under 'train'; it belongs under 'fake.optim' or 'student.optim'"),
    ("sigma_draw=clamp", r"'sigma_draw' at the top level; it belongs under 'train'"),
])
def test_bad_parity_keys_fail_clearly(override, match):
    with pytest.raises(RecipeError, match=match):
        load_recipe("cdm", [override])


def test_per_rank_sigmas_belongs_to_the_random_schedule_only():
    with pytest.raises(RecipeError, match=r"'per_rank_sigmas' under 'schedule'; it is a key of schedule kind "
                                          r"'random_continuous'"):
        load_recipe("ddmd", ["schedule.per_rank_sigmas=true"])


# -- 1. LR warm-up ------------------------------------------------------------------------------------
def _reference_lrs(warmup: int, world: int, n_steps: int, lr: float = 0.5) -> list[float]:
    """The reference: LambdaLR with t / warmup for t < warmup, else 1 (it has evaluated t = 0 when
    built), stepped after every optimiser step, ``world`` times (accelerate's AcceleratedScheduler
    with split_batches=False)."""
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: t / max(1, warmup) if t < warmup else 1.0)
    out = []
    for _ in range(n_steps):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        for _ in range(world):
            sched.step()
    return out


@pytest.mark.parametrize("warmup, world", [(100, 8), (100, 1), (10, 3), (0, 8)])
def test_linear_warmup_matches_the_reference_scheduler(warmup, world):
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=0.5)
    sched = LinearWarmup(opt, 0.5, warmup, ticks_per_step=world)
    ours = []
    for _ in range(40):
        ours.append(sched.apply())
        assert opt.param_groups[0]["lr"] == ours[-1]
        opt.step()
        sched.step()
    assert ours == pytest.approx(_reference_lrs(warmup, world, 40), abs=1e-15)
    if warmup:
        assert ours[0] == 0.0 and ours[1] == pytest.approx(0.5 * world / warmup)  # from 0, not lr / warmup
    else:
        assert ours == [0.5] * 40


def test_trainer_warms_up_both_optimisers_from_zero(tmp_path):
    from cdm_bench.toy.adapter import ToyAdapter

    sets = {"student.optim.warmup_steps": 4, "fake.optim.warmup_steps": 8}
    train("ddmd", tiny_overrides(steps=3, **sets), tmp_path)
    lines = [json.loads(x) for x in (tmp_path / "log.jsonl").read_text().splitlines()]
    lr_s, lr_f = 1e-4, 5e-5  # the ddmd recipe's learning rates
    assert [r["lr/student"] for r in lines] == pytest.approx([0.0, lr_s / 4, lr_s / 2])
    # two fake steps (iterations 2s, 2s + 1) per student step s, averaged in the log
    assert [r["lr/fake"] for r in lines] == pytest.approx([lr_f * (0 + 1) / 16, lr_f * (2 + 3) / 16, lr_f * 9 / 16])
    teacher = ToyAdapter(teacher="random", model_config=TINY_MODEL).load_teacher().state_dict()
    first = load_state(tmp_path / "checkpoint-000001")
    assert all(torch.equal(first["student"][k], v) for k, v in teacher.items())  # step 1 ran at lr 0
    assert first["lr_student"] == {"ticks": 1} and first["lr_fake"] == {"ticks": 2}
    assert any(not torch.equal(load_state(tmp_path / "checkpoint-000002")["student"][k], v) for k, v in teacher.items())


def test_resume_with_every_reference_option_reproduces_an_uninterrupted_run(tmp_path):
    """Warm-up longer than the first leg, so the resumed leg depends on the restored LR state."""
    sets = {**PAPER, "student.optim.warmup_steps": 3, "fake.optim.warmup_steps": 5}
    straight = train("cdm", tiny_overrides(steps=4, **sets), tmp_path / "a")
    train("cdm", tiny_overrides(steps=2, **sets), tmp_path / "b")
    resumed = train("cdm", tiny_overrides(steps=4, **sets), tmp_path / "b", resume=True)
    a, b = load_state(straight), load_state(resumed)
    assert a["lr_student"] == b["lr_student"] == {"ticks": 4} and a["lr_fake"] == b["lr_fake"] == {"ticks": 8}
    for key in ("student", "ema", "fake"):
        for name in a[key]:
            torch.testing.assert_close(a[key][name], b[key][name], atol=1e-6, rtol=0)
    log = [json.loads(x) for x in (tmp_path / "b" / "log.jsonl").read_text().splitlines()]
    assert [r["lr/student"] for r in log] == pytest.approx([0.0, 1e-4 / 3, 2e-4 / 3, 1e-4])
    assert log[0]["ema_decay"] == pytest.approx(2 / 11)  # the reference's first EMA decay


def test_resume_refuses_a_changed_parity_key_and_upgrades_older_checkpoints(tmp_path):
    train("cdm", tiny_overrides(steps=1), tmp_path)
    changes = {"student.optim.warmup_steps": 5, "fake.optim.warmup_scale_world": False,
               "student.ema_warmup_offset": 1, "train.share_step_index": True, "train.sigma_draw": "clamp",
               "schedule.per_rank_sigmas": True}
    for key, value in changes.items():
        with pytest.raises(ResumeError, match=rf"changed: {key}: "):
            train("cdm", tiny_overrides(steps=2, **{key: value}), tmp_path, resume=True)
    # a checkpoint written before these keys existed resumes with the values that reproduce it ...
    saved = tmp_path / "checkpoint-000001" / "recipe.yaml"
    recipe = yaml.safe_load(saved.read_text())
    for key in ("warmup_steps", "warmup_scale_world"):
        del recipe["student"]["optim"][key], recipe["fake"]["optim"][key]
    del recipe["student"]["ema_warmup_offset"], recipe["schedule"]["per_rank_sigmas"]
    del recipe["train"]["share_step_index"], recipe["train"]["sigma_draw"]
    saved.write_text(yaml.safe_dump(recipe, sort_keys=False))
    with pytest.raises(ResumeError, match=r"changed: train.share_step_index: False -> True"):
        train("cdm", tiny_overrides(steps=2, **{"train.share_step_index": True}), tmp_path, resume=True)
    assert train("cdm", tiny_overrides(steps=2), tmp_path, resume=True).name == "checkpoint-000002"


# -- 2. the fake teacher's step index -----------------------------------------------------------------
@pytest.mark.parametrize("share", [True, False])
def test_fake_teacher_uses_the_student_step_index_when_shared(tmp_path, monkeypatch, share):
    cfg = load_recipe("ddmd", tiny_overrides(batch=8, **{"train.share_step_index": share}))
    trainer = Trainer(cfg, tmp_path)
    seen, original = [], Trajectory.at

    def recording_at(self, index):
        seen.append(index.clone())
        return original(self, index)

    monkeypatch.setattr(Trajectory, "at", recording_at)
    assert trainer.run_iteration([]) is None and trainer.run_iteration([]) is not None
    assert len(seen) == 3  # fake (iteration 0), then fake and student (iteration 1)
    i_fake, i_student = seen[1], seen[2]
    assert torch.equal(i_fake, i_student) == share  # 8 independent indices in 0..3 never all agree here


# -- 3. sigma draws -----------------------------------------------------------------------------------
def test_draw_sigmas_clamp_has_point_masses_and_range_has_none():
    n, rng = 4000, [0.2, 0.6]
    u = torch.rand(n, generator=torch.Generator().manual_seed(0))
    clamp = draw_sigmas(n, rng, torch.Generator().manual_seed(0), "clamp")
    spread = draw_sigmas(n, rng, torch.Generator().manual_seed(0), "range")
    torch.testing.assert_close(clamp, u.clamp(0.2, 0.6))
    torch.testing.assert_close(spread, 0.2 + 0.4 * u)
    assert (clamp == 0.2).float().mean() == pytest.approx(0.2, abs=0.03)
    assert (clamp == 0.6).float().mean() == pytest.approx(0.4, abs=0.03)
    assert not ((spread == 0.2) | (spread == 0.6)).any()
    cap = torch.full((n,), 0.5)
    for mode in ("clamp", "range"):  # CA's U(0, s_i), clamped, in both modes
        torch.testing.assert_close(draw_sigmas(n, rng, torch.Generator().manual_seed(0), mode, cap=cap),
                                   (0.5 * u).clamp(0.2, 0.6))


def _point(n=6):
    torch.manual_seed(0)
    return TrajectoryPoint(torch.randn(n, 1, 2, 2), torch.randn(n, 1, 2, 2), torch.randn(n, 1, 2, 2),
                           torch.linspace(1.0, 0.3, n))


@pytest.mark.parametrize("mode", ["clamp", "range"])
def test_every_loss_draws_its_sigmas_as_configured(mode):
    rng = [0.3, 0.5]
    expect = (lambda u: u.clamp(*rng)) if mode == "clamp" else (lambda u: rng[0] + (rng[1] - rng[0]) * u)
    u = torch.rand(6, generator=torch.Generator().manual_seed(9))
    point = _point()
    dm = DistributionMatchingLoss(DistributionMatchingLoss.Params(sigma_range=rng), sigma_draw=mode)
    torch.testing.assert_close(dm.plan(point.x0, point.sigma, torch.Generator().manual_seed(9)).state["sigma_t"],
                               expect(u))
    off = OffTrajectoryDMLoss(OffTrajectoryDMLoss.Params(extrapolate_range=rng), sigma_draw=mode)
    torch.testing.assert_close(off.student_input(point, torch.Generator().manual_seed(9)).sigma, expect(u))
    ca = CFGAugmentationLoss(CFGAugmentationLoss.Params(clamp=rng), sigma_draw=mode)
    torch.testing.assert_close(ca.plan(point.x0, point.sigma, torch.Generator().manual_seed(9)).state["sigma_t"],
                               (point.sigma * u).clamp(*rng))
    fake = FakeFlowMatchingLoss(FakeFlowMatchingLoss.Params(sigma_range=rng, offtraj_fraction=1.0,
                                                            extrapolate_range=rng), sigma_draw=mode)
    seen = []
    fake(lambda x, s: seen.append(s) or x * 0, point.x0, torch.Generator().manual_seed(9))
    fake.select_x0(point, lambda x, s, rows: seen.append(s) or x, torch.Generator().manual_seed(9))
    torch.testing.assert_close(seen[0], expect(u))
    g = torch.Generator().manual_seed(9)
    torch.rand(6, generator=g)  # select_x0 draws its off-trajectory mask first
    torch.testing.assert_close(seen[1], expect(torch.rand(6, generator=g)))


@pytest.mark.parametrize("mode", ["clamp", "range"])
def test_trainer_hands_the_sigma_draw_to_every_loss(tmp_path, mode):
    trainer = Trainer(load_recipe("cdm", tiny_overrides(**{"train.sigma_draw": mode})), tmp_path)
    assert {loss.sigma_draw for loss in trainer.losses.values()} == {mode} and trainer.fake_loss.sigma_draw == mode


# -- 4. EMA warm-up -----------------------------------------------------------------------------------
@pytest.mark.parametrize("offset", [0, 1])
def test_ema_warmup_schedule(offset):
    model, source = torch.nn.Linear(1, 1, bias=False), torch.nn.Linear(1, 1, bias=False)
    torch.nn.init.zeros_(model.weight)
    torch.nn.init.ones_(source.weight)
    ema = EMA(model, 0.25, warmup=True, warmup_offset=offset)
    decays = [ema.update(source) for _ in range(4)]
    # the reference: the k-th update (k = 1, 2, ..., the student step after the optimiser step)
    # has decay min(d, (1 + k) / (10 + k)); offset 0 is this trainer's earlier (1 + n) / (10 + n), n from 0
    k = [n + offset for n in range(4)]
    assert decays == pytest.approx([min(0.25, (1 + m) / (10 + m)) for m in k])
    assert decays[0] == pytest.approx(2 / 11 if offset else 1 / 10)
    expected = 0.0
    for d in decays:
        expected = d * expected + (1 - d) * 1.0
    assert model.weight.item() == pytest.approx(expected)
    assert EMA(model, 0.25, warmup=False, warmup_offset=offset).current_decay() == 0.25


@pytest.mark.parametrize("offset", [0, 1])
def test_trainer_uses_the_ema_offset(tmp_path, offset):
    train("dmd", tiny_overrides(steps=2, **{"student.ema_warmup_offset": offset}), tmp_path)
    lines = [json.loads(x) for x in (tmp_path / "log.jsonl").read_text().splitlines()]
    m = [offset, offset + 1]  # updates n = 0, 1
    assert [r["ema_decay"] for r in lines] == pytest.approx([(1 + x) / (10 + x) for x in m])


# -- 5. per-rank inner sigmas -------------------------------------------------------------------------
@pytest.mark.parametrize("per_rank", [True, False])
def test_per_rank_inner_sigmas_share_the_length(per_rank):
    sampler = RandomContinuousSchedule(RandomContinuousParams(per_rank_sigmas=per_rank))
    shared = RandomContinuousSchedule(RandomContinuousParams(per_rank_sigmas=False))
    identity = lambda s: s  # noqa: E731
    differ = 0
    for it in range(40):
        draws = [draw_schedule(sampler, 3, it, rank, identity) for rank in range(4)]
        assert len({d.shape[0] for d in draws}) == 1  # one K for all ranks
        torch.testing.assert_close(draws[0], draw_schedule(shared, 3, it, 0, identity))  # rank 0: the shared one
        if draws[0].shape[0] > 1:
            same = all(torch.equal(d, draws[0]) for d in draws[1:])
            assert same != per_rank
            differ += not same
    assert differ > 10 or not per_rank


def test_trainer_draws_its_schedule_for_its_rank(tmp_path, monkeypatch):
    import cdm_bench.distill.trainer as trainer_module

    trainer = Trainer(load_recipe("cdm", tiny_overrides(**{"schedule.per_rank_sigmas": True})), tmp_path)
    trainer.rank = 1
    seen = []

    def recording(schedule, seed, iteration, rank, shift_fn):
        seen.append((seed, iteration, rank))
        return draw_schedule(schedule, seed, iteration, rank, shift_fn)

    monkeypatch.setattr(trainer_module, "draw_schedule", recording)
    trainer.run_iteration([])
    assert seen == [(0, 0, 1)]


@pytest.mark.parametrize("scale", [True, False])
def test_warmup_counts_world_size_ticks_per_step(tmp_path, scale):
    trainer = Trainer(load_recipe("ddmd", tiny_overrides(**{"student.optim.warmup_scale_world": scale,
                                                            "fake.optim.warmup_scale_world": scale})), tmp_path)
    trainer.world = 8  # as under torchrun with 8 processes
    cfg = trainer.cfg
    for optim, o in ((trainer.opt_student, cfg.student.optim), (trainer.opt_fake, cfg.fake.optim)):
        assert trainer._warmup(optim, o).ticks_per_step == (8 if scale else 1)
