"""Recipe loading and validation: every shipped recipe loads; bad input fails clearly."""

import pytest

from cdm_bench.distill.config import RecipeError, load_recipe, parse_recipe, recipe_to_dict
from cdm_bench.registry import RECIPES

RECIPE_NAMES = ["dmd", "ddmd", "cdm", "cdm_no_offtraj", "cdm_fixed_schedule"]


@pytest.mark.parametrize("name", RECIPE_NAMES)
def test_shipped_recipes_load_and_round_trip(name):
    assert name in RECIPES.names()
    cfg = load_recipe(name)
    assert cfg.name == name and cfg.model.adapter == "toy"
    assert parse_recipe(recipe_to_dict(cfg)) == cfg


def test_recipes_differ_only_by_losses_and_schedule():
    losses = {n: (load_recipe(n).schedule.kind, sorted(load_recipe(n).losses)) for n in RECIPE_NAMES}
    assert losses == {
        "dmd": ("fixed", ["dmd2"]),
        "ddmd": ("fixed", ["ca", "dm"]),
        "cdm": ("random_continuous", ["ca", "cdm_offtraj", "dm"]),
        "cdm_no_offtraj": ("random_continuous", ["ca", "dm"]),
        "cdm_fixed_schedule": ("fixed", ["ca", "cdm_offtraj", "dm"]),
    }
    cdm = load_recipe("cdm").schedule.params
    assert (cdm.min_steps, cdm.max_steps, cdm.low, cdm.high, cdm.shift) == (1, 28, 0.25, 0.95, "before")


def test_overrides_list_and_dict():
    cfg = load_recipe("cdm", ["train.steps=7", "losses.ca.guidance=2.5", "student.optim.betas=[0.5, 0.9]"])
    assert cfg.train.steps == 7 and cfg.losses["ca"].params.guidance == 2.5
    assert cfg.student.optim.betas == [0.5, 0.9]
    cfg = load_recipe("cdm", {"losses.cdm_offtraj": None, "schedule.kind": "fixed"})
    assert "cdm_offtraj" not in cfg.losses and cfg.schedule.params.sigmas == [1.0, 0.75, 0.5, 0.25]
    assert load_recipe("cdm", ["student.optim.lr=1e-3"]).student.optim.lr == 1e-3  # YAML 1.1 "1e-3"
    # a partial optim section keeps the section's own defaults (the fake teacher's lr)
    assert load_recipe("cdm", ["fake.optim={grad_clip: 0.5}"]).fake.optim.lr == load_recipe("cdm").fake.optim.lr


@pytest.mark.parametrize("override, match", [
    ("trian.steps=3", r"unknown recipe key 'trian' at the top level; did you mean 'train'"),
    ("train.stepz=3", r"'stepz' under 'train'; did you mean 'steps'"),
    # misplaced keys name where they belong
    ("low=0.3", r"unknown recipe key 'low' at the top level; it belongs under 'schedule'"),
    ("train.lr=1e-4", r"'lr' under 'train'; it belongs under 'fake.optim' or 'student.optim'"),
    ("ema_decay=0.9", r"'ema_decay' at the top level; it belongs under 'student'"),
    ("losses.ca.real_guidance=2", r"'real_guidance' under 'losses.ca'; it belongs under .*'losses.<dm loss>'"),
    ("schedule.sigmas=[1.0, 0.5]", r"'sigmas' under 'schedule'; it is a key of schedule kind 'fixed'"),
    ("fake.sigma_range=[0.1, 0.9]", r"'sigma_range' under 'fake'; it belongs under 'fake.loss'"),
    ("model.teachr=quick", r"'teachr' under 'model'; did you mean 'teacher'"),
    # bad sigmas
    ("schedule.low=-0.1", r"schedule.low = -0.1 is outside \[0, 1\]"),
    ("schedule.high=1.5", r"schedule.high = 1.5 is outside \[0, 1\]"),
    ("losses.dm.sigma_range=[0.1, 1.2]", r"losses.dm: sigma_range\[1\] = 1.2 is outside \[0, 1\]"),
    ("losses.cdm_offtraj.extrapolate_range=[-0.2, 0.5]", r"extrapolate_range\[0\] = -0.2 is outside"),
    ("losses.ca.clamp=[0.9, 0.1]", r"ca.clamp = \[0.9, 0.1\]: low > high"),
    # other bad values
    ("train.update_ratio=0", r"train.update_ratio must be >= 1, got 0"),
    ("train.steps=abc", r"'train.steps' must be int"),
    ("train.precision=fp8", r"train.precision must be one of"),
    ("losses.foo={}", r"unknown loss type 'foo'"),
    ("losses.ca.type=fake_fm", r"is a fake loss, not a student loss"),
])
def test_bad_recipes_fail_clearly(override, match):
    with pytest.raises(RecipeError, match=match):
        load_recipe("cdm", [override])


def test_fixed_schedule_sigma_validation():
    with pytest.raises(RecipeError, match=r"schedule.sigmas\[1\] = -0.25 is outside"):
        load_recipe("ddmd", ["schedule.sigmas=[1.0, -0.25]"])
    with pytest.raises(RecipeError, match=r"schedule.sigmas\[0\] = 1.2 is outside"):
        load_recipe("ddmd", ["schedule.sigmas=[1.2, 0.5]"])


def test_recipe_file_with_base_and_misplaced_key(tmp_path):
    (tmp_path / "mine.yaml").write_text("base: cdm\nname: mine\ntrain: {steps: 3}\n")
    cfg = load_recipe(tmp_path / "mine.yaml")
    assert cfg.name == "mine" and cfg.train.steps == 3 and "cdm_offtraj" in cfg.losses
    # the sharp edge of the reference code: a schedule field at the wrong level
    (tmp_path / "bad.yaml").write_text("base: cdm\nname: bad\nmax_steps: 8\n")
    with pytest.raises(RecipeError, match="'max_steps' at the top level; it belongs under 'schedule'"):
        load_recipe(tmp_path / "bad.yaml")
    with pytest.raises(RecipeError, match="must look like key.path=value"):
        load_recipe("cdm", ["train.steps"])


EXPERIMENTS = {  # recipes/experiments/<name>.yaml -> (its base, the only leaves that differ from it)
    "cdm_fake_offtraj": ("cdm", {("fake", "loss", "offtraj_fraction"): 0.5}),
    "cdm_half_dm": ("cdm", {("losses", "dm", "weight"): 0.5, ("losses", "cdm_offtraj", "weight"): 0.5}),
    "cdm_offtraj_narrow": ("cdm", {("losses", "cdm_offtraj", "extrapolate_range"): [0.25, 0.98]}),
    "cdm_ca2": ("cdm", {("losses", "ca", "guidance"): 2.0}),
    "ddmd_ca2": ("ddmd", {("losses", "ca", "guidance"): 2.0}),
    "dmd_cfg3": ("dmd", {("losses", "dmd2", "real_guidance"): 3.0}),
}


def _leaves(d, prefix=()):
    for k, v in d.items():
        if isinstance(v, dict):
            yield from _leaves(v, prefix + (k,))
        else:
            yield prefix + (k,), v


@pytest.mark.parametrize("name", sorted(EXPERIMENTS))
def test_experiment_recipes_differ_from_their_base_only_where_intended(name):
    from cdm_bench.paths import recipes_dir

    cfg = load_recipe(recipes_dir() / "experiments" / f"{name}.yaml")
    assert name not in RECIPES.names()  # diagnostics are not registered recipes
    base, expected = EXPERIMENTS[name]
    mine, theirs = dict(_leaves(recipe_to_dict(cfg))), dict(_leaves(recipe_to_dict(load_recipe(base))))
    assert mine.keys() == theirs.keys()
    diff = {k: v for k, v in mine.items() if theirs[k] != v and k[-1] not in ("name", "description")}
    assert cfg.name == name and diff == expected


def test_every_registered_recipe_loads_and_round_trips():
    for name in RECIPES.names():
        cfg = load_recipe(name)
        assert parse_recipe(recipe_to_dict(cfg)) == cfg, name


# the world benchmark's recipes are the paper's except these keys (each commented in the YAML)
WORLD_DIFFERS = {("model", "adapter"), ("model", "teacher"), ("model", "pretrained"), ("model", "prompts"),
                 ("model", "resolution"), ("model", "teacher_dtype"), ("model", "max_sequence_length"),
                 ("model", "pretrained_kwargs"), ("train", "steps"), ("train", "seed"), ("train", "precision"),
                 ("train", "gradient_checkpointing"), ("train", "log_every"), ("train", "checkpoint_every"),
                 ("train", "keep_checkpoints"), ("train", "tensorboard"), ("train", "progress")}


@pytest.mark.parametrize("method", ["cdm", "ddmd", "dmd"])
def test_world_recipes_are_the_papers_but_for_the_model_and_the_hardware(method):
    world, paper = (dict(_leaves(recipe_to_dict(load_recipe(f"{d}/{method}")))) for d in ("world", "sd3_medium"))
    diff = {k[:2] for k in set(world) ^ set(paper)} | {k[:2] for k in world.keys() & paper.keys() if world[k] != paper[k]}
    diff -= {("name",), ("description",)}
    assert diff <= WORLD_DIFFERS, diff - WORLD_DIFFERS
