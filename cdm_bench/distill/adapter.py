"""The model-adapter interface: everything the distillation trainer needs from a model family.

The trainer never branches on a model's name. It talks to a :class:`ModelAdapter`, which knows
how to load the teacher, encode prompts (the empty prompt "" is the unconditional input for
classifier-free guidance), evaluate velocities (with and without CFG, in one batched call),
decode latents, which transformer-block classes FSDP2 shards, and how to export a student so
that the generator registry loads it by path.

Adapters are looked up by name in :data:`ADAPTERS` (lazy ``"module:Class"`` strings); a recipe
may also name one directly as ``"package.module:Class"`` (tests use this for tiny models).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from cdm_bench.registry import Registry, resolve

ADAPTERS = Registry("model adapter")
ADAPTERS.register("toy", "cdm_bench.toy.adapter:ToyAdapter")
ADAPTERS.register("sd3", "cdm_bench.distill.models.sd3:SD3Adapter")
ADAPTERS.register("longcat", "cdm_bench.distill.models.longcat:LongCatAdapter")

Cond = Any  # a tensor, or a dict / tuple of tensors whose first dimension is the batch


def shift_sigmas(sigmas: torch.Tensor, shift: float) -> torch.Tensor:
    """The flow-matching scheduler's time shift: ``shift * s / (1 + (shift - 1) * s)``."""
    return shift * sigmas / (1.0 + (shift - 1.0) * sigmas)


class ModelAdapter(ABC):
    """Interface between one model family and the distillation backend.

    Subclasses take their recipe ``model:`` keys (except ``adapter``) as keyword arguments.
    """

    #: registry name (recorded in checkpoints)
    name: str = "abstract"
    #: the sampling scheduler's shift (1.0 = none); schedules "before shift" go through it
    shift: float = 1.0
    #: how an exported student is sampled (written into its generator.yaml): the paper's 4 steps
    #: without CFG, at its [1.0, 0.75, 0.5, 0.25] before the scheduler's shift
    student_sampling: dict = {"nfe": 4, "guidance": 1.0, "sigmas": [1.0, 0.75, 0.5, 0.25]}

    #: dtype of the frozen teacher's weights (the student, fake teacher and EMA are float32)
    teacher_dtype: torch.dtype = torch.float32
    #: the process's device; the trainer sets it before asking for conditions or latents
    device: torch.device = torch.device("cpu")

    # -- models ---------------------------------------------------------------------------
    @abstractmethod
    def load_teacher(self) -> nn.Module:
        """The pretrained velocity model (float32, on CPU)."""

    def teacher_spec(self) -> dict:
        """The teacher's architecture (:meth:`model_spec`), ideally without loading its weights:
        every working copy is built from it on the meta device."""
        return self.model_spec(self._cached_teacher())

    def load_teacher_state(self) -> dict:
        """The teacher's full float32 state dict (under FSDP2 only rank 0 asks; it is broadcast)."""
        state = self._cached_teacher().state_dict()
        self.__dict__.pop("_teacher", None)
        return state

    def _cached_teacher(self) -> nn.Module:
        if "_teacher" not in self.__dict__:
            self.__dict__["_teacher"] = self.load_teacher()
        return self.__dict__["_teacher"]

    def model_spec(self, model: nn.Module) -> dict:
        """How to rebuild the architecture without the teacher's weights (saved in checkpoints)."""
        cls = type(model)
        return {"class": f"{cls.__module__}:{cls.__qualname__}", "config": dict(model.config)}

    def build_model(self, spec: dict) -> nn.Module:
        """Inverse of :meth:`model_spec` (random weights)."""
        cls = resolve(spec["class"], nn.Module, "model class")
        return cls.from_config(spec["config"])

    def validation_generator(self, model: nn.Module, entry):
        """A :class:`~cdm_bench.generator.Generator` that samples ``model`` (an unsharded copy of the
        student or its EMA) as its export would be sampled, with ``entry``'s steps, sigmas and
        guidance (a :class:`~cdm_bench.distill.validate_config.NFEEntry`): validation during
        training goes through ``cdm_bench.generate`` with it."""
        raise NotImplementedError(f"adapter {self.name!r} cannot sample its student for validation")

    def fsdp_block_classes(self, model: nn.Module) -> list[str]:
        """Class names of the transformer blocks that FSDP2 shards one by one."""
        return list(getattr(model, "_no_split_modules", None) or [])

    def enable_gradient_checkpointing(self, model: nn.Module) -> None:
        if not getattr(model, "_supports_gradient_checkpointing", False):
            raise ValueError(f"{type(model).__name__} does not support gradient checkpointing")
        model.enable_gradient_checkpointing()

    # -- conditioning -----------------------------------------------------------------------
    @abstractmethod
    def encode_prompts(self, prompts: Sequence[str]) -> Cond:
        """Prompts -> the model's condition; ``""`` encodes the unconditional input."""

    def null_condition(self, n: int) -> Cond:
        """The empty-prompt condition for ``n`` samples (cached per adapter)."""
        cache = self.__dict__.setdefault("_null_cache", {})
        if n not in cache:
            cache[n] = self.encode_prompts([""] * n)
        return cache[n]

    @abstractmethod
    def sample_prompts(self, n: int, seed: int) -> list[str]:
        """``n`` training prompts, a pure function of ``seed``."""

    # -- velocities ---------------------------------------------------------------------------
    @abstractmethod
    def forward(self, model: nn.Module, x: torch.Tensor, sigma: torch.Tensor, cond: Cond) -> torch.Tensor:
        """One plain model call: latents (B, ...), sigma (B,) in [0, 1] -> velocity ``eps - x0``."""

    def velocity(self, model: nn.Module, x: torch.Tensor, sigma: torch.Tensor, cond: Cond,
                 guidance: float = 1.0, uncond: Cond | None = None) -> torch.Tensor:
        """Velocity with classifier-free guidance; cond and uncond go through one batched call."""
        if guidance == 1.0:
            return self.forward(model, x, sigma, cond)
        if uncond is None:
            uncond = self.null_condition(x.shape[0])
        v = self.forward(model, torch.cat([x, x]), torch.cat([sigma, sigma]), cond_cat([cond, uncond]))
        v_c, v_u = v.chunk(2)
        return v_u + guidance * (v_c - v_u)

    # -- latents and images -----------------------------------------------------------------------
    @abstractmethod
    def latent_shape(self, model: nn.Module) -> tuple[int, ...]:
        """Shape of one latent, without the batch dimension."""

    def sample_noise(self, n: int, generator: torch.Generator, model: nn.Module) -> torch.Tensor:
        return torch.randn((n, *self.latent_shape(model)), generator=generator)

    @abstractmethod
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents -> uint8 images (B, H, W, 3)."""

    def effective_sigmas(self, sigmas: torch.Tensor) -> torch.Tensor:
        """What the model's scheduler really samples when given ``sigmas`` (the shift applied)."""
        return shift_sigmas(sigmas, self.shift)

    # -- export ---------------------------------------------------------------------------------
    def save_pretrained(self, model: nn.Module, out_dir: Path) -> dict:
        """Write ``model`` so the generator registry loads it; return that generator spec."""
        model.save_pretrained(str(out_dir))
        return {"model": str(out_dir)}


ADAPTERS.base = ModelAdapter  # every adapter, registered or "module:Class", must subclass it


def build_adapter(name: str, **kwargs) -> ModelAdapter:
    """A registered adapter name or a ``"module:Class"`` string -> adapter instance."""
    return adapter_class(name)(**kwargs)


def adapter_class(name: str) -> type:
    return ADAPTERS.get(name)


# -- small helpers for conditions that may be tensors or containers of tensors ---------------------
def cond_cat(conds: Sequence[Cond]) -> Cond:
    first = conds[0]
    if isinstance(first, torch.Tensor):
        return torch.cat(list(conds))
    if isinstance(first, dict):
        return {k: cond_cat([c[k] for c in conds]) for k in first}
    if isinstance(first, (tuple, list)):
        return type(first)(cond_cat([c[i] for c in conds]) for i in range(len(first)))
    raise TypeError(f"unsupported condition type {type(first).__name__}")


def cond_index(cond: Cond, index: torch.Tensor | slice) -> Cond:
    if isinstance(cond, torch.Tensor):
        return cond[index]
    if isinstance(cond, dict):
        return {k: cond_index(v, index) for k, v in cond.items()}
    if isinstance(cond, (tuple, list)):
        return type(cond)(cond_index(v, index) for v in cond)
    raise TypeError(f"unsupported condition type {type(cond).__name__}")


def cond_to(cond, device: torch.device):
    """A condition (tensor, or a dict/tuple/list of them) on ``device``."""
    if isinstance(cond, torch.Tensor):
        return cond.to(device)
    if isinstance(cond, dict):
        return {k: cond_to(v, device) for k, v in cond.items()}
    if isinstance(cond, (tuple, list)):
        return type(cond)(cond_to(v, device) for v in cond)
    return cond
