"""Recipe configuration: dataclasses and strict validation (YAML reading and ``--set`` overrides are
in :mod:`cdm_bench.distill.recipe_files`).

A recipe is one YAML file under ``recipes/`` (or any path)::

    name: cdm
    base: ddmd              # optional: start from another recipe and deep-merge this one on top
    model:    {adapter: toy, teacher: quick}     # adapter name + its constructor arguments
    schedule: {kind: random_continuous, min_steps: 1, max_steps: 28, low: 0.25, high: 0.95,
               shift: before}                    # 'before': the scheduler's shift is applied
    losses:                                      # name -> {type (default: name), weight, params}
      ca: {weight: 1.0, guidance: 1.0}
      dm: {weight: 1.0}
      cdm_offtraj: {weight: 1.0}
    fake:     {loss: {type: fake_fm}, optim: {lr: 5.0e-6}, student_merge: 0.001}
    student:  {optim: {lr: 1.0e-5, weight_decay: 1.0e-4}, ema_decay: 0.999}
    train:    {steps: 200, batch_size: 32, update_ratio: 2, seed: 0, precision: fp32}

Every key is checked: an unknown or misplaced key is an error that names the key and where it
belongs (a setting at the wrong level must never silently do nothing). Overrides use dotted
paths (``train.steps=10``, ``losses.ca.guidance=2``); a mapping value updates a section, a
``null`` value deletes a key (for a loss entry: drops that loss), and a different ``kind`` /
``type`` replaces the section.

Reference-parity options; the defaults are the reference's SD3 recipe (``sd3()`` in its
config/config.py), the toy recipes set this trainer's earlier behaviour explicitly:

* ``{student,fake}.optim.warmup_steps`` (100): linear LR warm-up from 0 (0: none), counted in
  world-size ticks per optimiser step with ``warmup_scale_world`` (true), as the reference's
  accelerate-prepared scheduler does (:mod:`cdm_bench.distill.lr`);
* ``train.share_step_index`` (true): the fake teacher learns ``x0_i`` at the student losses' step
  index ``i`` (the reference's ``share_latent_indices``); false: at its own random index;
* ``train.sigma_draw`` (clamp): every loss's noise level in ``[lo, hi]`` is ``clamp(U(0, 1), lo,
  hi)`` (the reference's ``sample_sigmas``); range: ``U[lo, hi]`` (CA's ``U(0, s_i)`` is clamped);
* ``student.ema_warmup`` (true), ``student.ema_warmup_offset`` (1): see :class:`~.ema.EMA`;
* ``schedule.per_rank_sigmas`` (random_continuous; true): ranks share the length K and draw their
  own inner sigmas (the reference); false: the whole schedule is shared.
"""

from __future__ import annotations

import dataclasses
import inspect
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cdm_bench.distill.lora import LoRAConfig, check_lora_recipe
from cdm_bench.distill.recipe_files import (  # noqa: F401  (re-exported)
    RecipeError,
    apply_overrides,
    deep_merge,
    resolve_raw,
)
from cdm_bench.distill.recipe_keys import check_keys
from cdm_bench.distill.recipe_keys import dataclass_paths as _dataclass_paths
from cdm_bench.distill.recipe_keys import dotted as _dotted
from cdm_bench.distill.recipe_keys import optional_dataclass as _optional_dataclass
from cdm_bench.distill.validate_config import ValidateConfig

PRECISIONS = ("fp32", "bf16")
#: train.* keys that may change on resume (everything else must match the checkpoint's recipe)
RESUMABLE_KEYS = ("steps", "log_every", "checkpoint_every", "keep_checkpoints", "tensorboard", "progress")


@dataclass
class OptimConfig:
    """AdamW + grad-norm clipping."""

    lr: float = 1e-5
    weight_decay: float = 1e-4
    betas: list = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    grad_clip: float = 1.0  # 0 disables
    warmup_steps: int = 100  # linear LR warm-up from 0 over this many counter ticks; 0: constant lr
    warmup_scale_world: bool = True  # the counter advances by the world size per step (reference)

    def __post_init__(self):
        if not self.lr > 0:
            raise RecipeError(f"optim.lr must be > 0, got {self.lr}")
        if self.warmup_steps < 0:
            raise RecipeError(f"optim.warmup_steps must be >= 0, got {self.warmup_steps}")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise RecipeError(f"optim.betas must be two numbers in [0, 1), got {self.betas}")
        if self.grad_clip < 0 or self.weight_decay < 0:
            raise RecipeError("optim.grad_clip and optim.weight_decay must be >= 0")


@dataclass
class StudentConfig:
    optim: OptimConfig = field(default_factory=OptimConfig)
    ema_decay: float = 0.999
    ema_warmup: bool = True  # decay of update n = 0, 1, ...: min(ema_decay, (1 + m) / (10 + m)),
    ema_warmup_offset: int = 1  # with m = n + offset (reference: 1; earlier versions: 0)
    lora: LoRAConfig | None = None  # a LoRA student on the frozen base (cdm_bench.distill.lora)

    def __post_init__(self):
        if not 0 <= self.ema_decay < 1:
            raise RecipeError(f"student.ema_decay must be in [0, 1), got {self.ema_decay}")
        if self.ema_warmup_offset < 0:
            raise RecipeError(f"student.ema_warmup_offset must be >= 0, got {self.ema_warmup_offset}")


@dataclass
class LossSpec:
    type: str
    weight: float = 1.0
    params: Any = None  # the loss class's Params dataclass instance


@dataclass
class FakeConfig:
    loss: LossSpec = field(default_factory=lambda: LossSpec("fake_fm"))
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=5e-6))
    student_merge: float = 0.001  # theta_fake <- (1 - m) theta_fake + m theta_student per fake step
    lora: LoRAConfig | None = None  # a LoRA fake teacher on the frozen base

    def __post_init__(self):
        if not 0 <= self.student_merge <= 1:
            raise RecipeError(f"fake.student_merge must be in [0, 1], got {self.student_merge}")


@dataclass
class ScheduleConfig:
    kind: str = "fixed"
    params: Any = None


@dataclass
class ModelConfig:
    adapter: str = ""  # required in a recipe: a registered adapter name or "module:Class"
    kwargs: dict = field(default_factory=dict)  # the adapter's constructor arguments


@dataclass
class TrainConfig:
    steps: int = 100  # student steps
    batch_size: int = 16  # per process
    update_ratio: int = 2  # fake-teacher steps per student step
    seed: int = 0
    precision: str = "fp32"  # or bf16 (autocast; FSDP2 mixed-precision policy)
    gradient_checkpointing: bool = False
    share_step_index: bool = True  # the fake teacher uses the student losses' step index i (reference)
    sigma_draw: str = "clamp"  # loss noise levels: clamp(U(0, 1), lo, hi) (reference) or "range": U[lo, hi]
    log_every: int = 1
    checkpoint_every: int = 100
    keep_checkpoints: int = 2  # 0 keeps all
    tensorboard: bool = False
    progress: bool = True

    def __post_init__(self):
        for key in ("steps", "batch_size", "update_ratio", "log_every", "checkpoint_every"):
            if getattr(self, key) < 1:
                raise RecipeError(f"train.{key} must be >= 1, got {getattr(self, key)}"
                                  + (" (fake-teacher steps per student step)" if key == "update_ratio" else ""))
        if self.precision not in PRECISIONS:
            raise RecipeError(f"train.precision must be one of {PRECISIONS}, got {self.precision!r}")
        from cdm_bench.distill.losses.base import SIGMA_DRAWS
        if self.sigma_draw not in SIGMA_DRAWS:
            raise RecipeError(f"train.sigma_draw must be one of {SIGMA_DRAWS} (clamp: clamp(U(0, 1), lo, hi); "
                              f"range: U[lo, hi]), got {self.sigma_draw!r}")


@dataclass
class RecipeConfig:
    name: str
    description: str = ""
    model: ModelConfig = field(default_factory=ModelConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    losses: dict = field(default_factory=dict)  # name -> LossSpec
    fake: FakeConfig = field(default_factory=FakeConfig)
    student: StudentConfig = field(default_factory=StudentConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    validate: ValidateConfig | None = None  # validation during training (cdm_bench.distill.validate)


PLAIN_SECTIONS = {"student": StudentConfig, "train": TrainConfig, "validate": ValidateConfig}
TOP_KEYS = ("name", "description", "base", "model", "schedule", "losses", "fake", "student", "train", "validate")


# -- loading ---------------------------------------------------------------------------------------
def load_recipe(name_or_path: str | Path | dict, overrides: dict | list | None = None) -> RecipeConfig:
    """A recipe name (``recipes/<name>.yaml``), a YAML path or a dict, plus overrides -> config."""
    raw = resolve_raw(name_or_path)
    raw = apply_overrides(raw, overrides or [])
    return parse_recipe(raw)


# -- parsing and validation --------------------------------------------------------------------------
def parse_recipe(raw: dict) -> RecipeConfig:
    _check_keys(raw, TOP_KEYS, ())
    if "name" not in raw:
        raise RecipeError("recipe lacks 'name'")
    cfg = RecipeConfig(
        name=_coerce(raw["name"], str, ("name",)),
        description=_coerce(raw.get("description", ""), str, ("description",)),
        model=_parse_model(_section(raw, "model")),
        schedule=_parse_schedule(_section(raw, "schedule")),
        losses=_parse_losses(_section(raw, "losses")),
        fake=_parse_fake(_section(raw, "fake")),
        student=parse_dataclass(StudentConfig, _section(raw, "student"), ("student",)),
        train=parse_dataclass(TrainConfig, _section(raw, "train"), ("train",)),
        validate=parse_dataclass(ValidateConfig, _section(raw, "validate"), ("validate",)) if raw.get("validate") else None,
    )
    check_lora_recipe(cfg.student.lora, cfg.fake.lora, cfg.fake.student_merge)
    return cfg


def _section(raw: dict, key: str) -> dict:
    value = raw.get(key, {}) or {}
    if not isinstance(value, dict):
        raise RecipeError(f"recipe section '{key}' must be a mapping, got {value!r}")
    return value


def parse_dataclass(cls: type, data: dict, where: tuple) -> Any:
    """Build dataclass ``cls`` from ``data``, rejecting unknown keys and ill-typed values."""
    if not isinstance(data, dict):
        raise RecipeError(f"'{_dotted(where)}' must be a mapping, got {data!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    _check_keys(data, tuple(fields), where)
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in data.items():
        typ = _optional_dataclass(hints[key])
        optional = typ is not None and typ is not hints[key]
        if optional and value is None:
            kwargs[key] = None
        elif optional:  # an optional block: its own defaults
            kwargs[key] = parse_dataclass(typ, value, where + (key,))
        elif dataclasses.is_dataclass(typ):  # a partial mapping updates the field's default
            default = fields[key].default_factory() if callable(fields[key].default_factory) else None
            if isinstance(value, dict) and default is not None:
                value = {**dataclasses.asdict(default), **value}
            kwargs[key] = parse_dataclass(typ, value, where + (key,))
        else:
            kwargs[key] = _coerce(value, hints[key], where + (key,))
    try:
        return cls(**kwargs)
    except RecipeError as exc:
        if _dotted(where) in str(exc):
            raise
        raise RecipeError(f"{_dotted(where) or 'recipe'}: {exc}") from None


def _coerce(value: Any, typ: Any, where: tuple) -> Any:
    name = getattr(typ, "__name__", str(typ))
    if typ is float and isinstance(value, str):
        try:
            return float(value)  # YAML 1.1 reads "1e-5" as a string
        except ValueError:
            pass
    ok = {float: lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
          int: lambda v: isinstance(v, int) and not isinstance(v, bool),
          bool: lambda v: isinstance(v, bool), str: lambda v: isinstance(v, str),
          list: lambda v: isinstance(v, (list, tuple)), dict: lambda v: isinstance(v, dict)}.get(typ)
    if ok is None:
        return value
    if not ok(value):
        raise RecipeError(f"'{_dotted(where)}' must be {name}, got {value!r}")
    if typ is float:
        return float(value)
    return list(value) if typ is list else value


def _parse_model(data: dict) -> ModelConfig:
    from cdm_bench.distill.adapter import adapter_class

    data = dict(data)
    if "adapter" not in data:
        from cdm_bench.distill.adapter import ADAPTERS

        raise RecipeError(f"'model.adapter' is required: name the model adapter (one of "
                          f"{', '.join(ADAPTERS.names())}, or 'package.module:Class')")
    name = _coerce(data.pop("adapter"), str, ("model", "adapter"))
    params = inspect.signature(adapter_class(name).__init__).parameters
    allowed = tuple(p for p in params if p != "self")
    _check_keys(data, allowed + ("adapter",), ("model",))
    return ModelConfig(name, data)


def _parse_schedule(data: dict) -> ScheduleConfig:
    from cdm_bench.distill.schedules import SCHEDULES

    data = dict(data)
    kind = _coerce(data.pop("kind", "fixed"), str, ("schedule", "kind"))
    cls = SCHEDULES.get(kind)
    try:
        params = parse_dataclass(cls.Params, data, ("schedule",))
    except RecipeError as exc:
        raise RecipeError(f"{exc} (schedule kind {kind!r})") from None
    return ScheduleConfig(kind, params)


def _parse_loss(name: str, data: Any, where: tuple, role: str) -> LossSpec:
    from cdm_bench.distill.losses import LOSSES

    if not isinstance(data, dict):
        raise RecipeError(f"'{_dotted(where)}' must be a mapping (type, weight, parameters), got {data!r}")
    data = dict(data)
    typ = _coerce(data.pop("type", name), str, where + ("type",))
    if typ not in LOSSES:
        raise RecipeError(f"'{_dotted(where)}': unknown loss type {typ!r} (an entry's name is its type "
                          f"unless it sets 'type:'); registered losses: {', '.join(LOSSES.names())}")
    cls = LOSSES.get(typ)
    if getattr(cls, "role", "student") != role:
        raise RecipeError(f"'{_dotted(where)}': loss {typ!r} is a {cls.role} loss, not a {role} loss")
    weight = _coerce(data.pop("weight", 1.0), float, where + ("weight",))
    params = parse_dataclass(cls.Params, data, where)
    return LossSpec(typ, weight, params)


def _parse_losses(data: dict) -> dict:
    if not data:
        raise RecipeError("recipe needs at least one student loss under 'losses'")
    return {name: _parse_loss(name, spec, ("losses", name), "student") for name, spec in data.items()}


def _parse_fake(data: dict) -> FakeConfig:
    data = dict(data)
    _check_keys(data, ("loss", "optim", "student_merge", "lora"), ("fake",))
    loss = _parse_loss("fake_fm", data.pop("loss", {}), ("fake", "loss"), "fake")
    rest = parse_dataclass(FakeConfig, data, ("fake",))
    rest.loss = loss
    return rest


# -- unknown keys: name the key and where it belongs ------------------------------------------------
def _check_keys(data: dict, allowed: tuple, where: tuple) -> None:
    check_keys(data, allowed, where, known_paths)


def known_paths() -> list[tuple[tuple, str]]:
    """Every valid key path of a recipe, with a note (e.g. which schedule kind owns it)."""
    from cdm_bench.distill.losses import LOSSES
    from cdm_bench.distill.schedules import SCHEDULES

    paths = [((k,), "") for k in TOP_KEYS]
    for section, cls in PLAIN_SECTIONS.items():
        paths += [((section,) + p, "") for p in _dataclass_paths(cls)]
    paths += [(("fake",) + p, "") for p in _dataclass_paths(FakeConfig) if p[0] != "loss"]
    paths += [(("schedule", "kind"), "")]
    for kind in SCHEDULES.names():
        paths += [(("schedule",) + p, f"a key of schedule kind '{kind}'") for p in _dataclass_paths(SCHEDULES.get(kind).Params)]
    for typ in LOSSES.names():
        cls = LOSSES.get(typ)
        base = ("fake", "loss") if cls.role == "fake" else ("losses", f"<{typ} loss>")
        paths += [(base + (k,), "") for k in ("type", "weight")]
        paths += [(base + p, f"a parameter of loss type '{typ}'") for p in _dataclass_paths(cls.Params)]
    paths += [(("model", "adapter"), "")]
    return paths


# -- serialisation -----------------------------------------------------------------------------------
def recipe_to_dict(cfg: RecipeConfig) -> dict:
    """The resolved recipe as plain YAML-able data (loads back into an equal config)."""
    def loss(spec: LossSpec) -> dict:
        return {"type": spec.type, "weight": spec.weight, **dataclasses.asdict(spec.params)}

    return {
        "name": cfg.name, "description": cfg.description,
        "model": {"adapter": cfg.model.adapter, **cfg.model.kwargs},
        "schedule": {"kind": cfg.schedule.kind, **dataclasses.asdict(cfg.schedule.params)},
        "losses": {k: loss(v) for k, v in cfg.losses.items()},
        "fake": {"loss": loss(cfg.fake.loss), "optim": dataclasses.asdict(cfg.fake.optim),
                 "student_merge": cfg.fake.student_merge,
                 "lora": dataclasses.asdict(cfg.fake.lora) if cfg.fake.lora is not None else None},
        "student": dataclasses.asdict(cfg.student),
        "train": dataclasses.asdict(cfg.train),
        **({"validate": dataclasses.asdict(cfg.validate)} if cfg.validate is not None else {}),
    }

