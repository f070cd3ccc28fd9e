"""LoRA students and fake teachers on one frozen base (peft).

When a recipe gives ``student.lora`` and ``fake.lora``, the trainer builds **one** copy of the
teacher's architecture (in ``adapter.teacher_dtype``, e.g. bf16, frozen) and injects three peft
LoRA adapters into it: ``student``, ``fake`` and ``ema`` (float32). Each trainer role is a
:class:`LoRAView` of that base: its forward activates its own adapter (the teacher's view runs
with every adapter off), its ``parameters()`` are that adapter's weights only, so the optimisers,
gradient clipping, the EMA and the fake <- student merge touch adapter weights and nothing else.
Checkpoints hold the adapters' weights and optimiser states only; :meth:`LoRAView.merged_state`
gives the plain model's weights with the adapter merged (``W + alpha/r * B @ A``) for validation
and export.

Under torchrun the base and its adapters are sharded together with FSDP2 (the model's blocks,
then the root); only rank 0 holds the teacher's state and the adapters' initial values, which
are broadcast into the shards. Initial values are drawn from ``train.seed`` (peft's "gaussian"
init: ``A ~ N(0, 1/r)``, ``B = 0``, as the reference trains), so a resumed run is exact.

The adapter switch sets peft's own layer flags (``_active_adapter``, ``_disable_adapters``)
without peft's ``set_adapter``, which would also flip ``requires_grad``.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field

import torch
from torch import nn

from cdm_bench.errors import RecipeError

log = logging.getLogger(__name__)
ADAPTER_NAMES = ("student", "fake", "ema")
INITS = ("gaussian",)


@dataclass
class LoRAConfig:
    """A recipe's ``student.lora`` / ``fake.lora`` block (the reference: rank 64, alpha 128, FFN on)."""

    rank: int = 64
    alpha: float = 128.0
    target_modules: list = field(default_factory=list)  # empty: the model adapter's attention layers
    ffn: bool = True  # add the adapter's feed-forward layers to the targets
    dropout: float = 0.0
    init: str = "gaussian"

    def __post_init__(self):
        if self.rank < 1:
            raise RecipeError(f"lora.rank must be >= 1, got {self.rank}")
        if not self.alpha > 0:
            raise RecipeError(f"lora.alpha must be > 0, got {self.alpha}")
        if not 0 <= self.dropout < 1:
            raise RecipeError(f"lora.dropout must be in [0, 1), got {self.dropout}")
        if self.init not in INITS:
            raise RecipeError(f"lora.init must be one of {INITS}, got {self.init!r}")
        if not all(isinstance(t, str) and t for t in self.target_modules):
            raise RecipeError(f"lora.target_modules must be module names, got {self.target_modules!r}")


def check_lora_recipe(student: LoRAConfig | None, fake: LoRAConfig | None, student_merge: float) -> None:
    """Both roles LoRA (one shared base) or neither, as the reference trains."""
    if (student is None) != (fake is None):
        raise RecipeError("LoRA training needs both student.lora and fake.lora (one frozen base carries both "
                          "adapters) or neither (full fine-tuning)")
    if student is not None and student_merge > 0 and (student.rank, student.target_modules, student.ffn) != (
            fake.rank, fake.target_modules, fake.ffn):
        raise RecipeError("fake.student_merge > 0 averages the student's adapter into the fake teacher's: "
                          "student.lora and fake.lora need the same rank, target_modules and ffn")


def target_modules(adapter, cfg: LoRAConfig) -> list[str]:
    if cfg.target_modules:
        return list(cfg.target_modules)
    attn, ffn = getattr(adapter, "lora_targets", ((), ()))
    if not attn:
        raise RecipeError(f"the {adapter.name!r} model adapter names no default LoRA layers: set lora.target_modules")
    return list(attn) + (list(ffn) if cfg.ffn else [])


def peft_config(adapter, cfg: LoRAConfig):
    from peft import LoraConfig

    return LoraConfig(r=cfg.rank, lora_alpha=cfg.alpha, target_modules=target_modules(adapter, cfg),
                      lora_dropout=cfg.dropout, init_lora_weights=cfg.init)


def inject(model: nn.Module, adapter, configs: dict) -> None:
    """Add one float32 LoRA adapter per ``{name: LoRAConfig}`` to ``model`` (on any device)."""
    from peft import inject_adapter_in_model

    for name, cfg in configs.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "multiple adapters in the model": intended
            try:
                inject_adapter_in_model(peft_config(adapter, cfg), model, adapter_name=name)
            except ValueError as exc:
                raise RecipeError(f"lora: {str(exc).splitlines()[0]}") from None
    for layer in lora_layers(model):
        for d in (layer.lora_A, layer.lora_B):
            for name in configs:
                d[name].to(torch.float32)


def lora_layers(model: nn.Module) -> list:
    return [m for _, m in _named_lora_layers(model)]


def activate(model: nn.Module, name: str | None) -> None:
    for m in lora_layers(model):
        m._active_adapter, m._disable_adapters = ([name] if name else m._active_adapter), name is None


def initial_state(model: nn.Module, teacher_state: dict, seed: int, copies: dict) -> dict:
    """The full state of the base with adapters: the teacher's weights under peft's names
    (``...base_layer.weight``) and each adapter's initial values (``A ~ N(0, 1/r)``, ``B = 0``;
    ``copies`` maps an adapter to the one whose initial values it takes, e.g. ema -> student)."""
    out, gen = {}, torch.Generator().manual_seed(seed)
    drawn = {}
    for key, value in model.state_dict().items():
        if ".lora_" not in key:
            out[key] = teacher_state[key.replace(".base_layer.", ".")]
            continue
        layer_key, name = _split(key)
        src = copies.get(name, name)
        if (layer_key, src) not in drawn:
            drawn[(layer_key, src)] = _init(key, value, gen)
        out[key] = drawn[(layer_key, src)].clone()
    return out


def _split(key: str) -> tuple[str, str]:
    """``a.b.lora_A.student.weight`` -> (``a.b.lora_A..weight``, ``student``)."""
    head, tail = key.split(".lora_", 1)
    kind, name, rest = tail.split(".", 2)
    return f"{head}.lora_{kind}..{rest}", name


def _init(key: str, like: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    if ".lora_A." in key and key.endswith(".weight"):
        rank = like.shape[0]
        return torch.randn(like.shape, generator=gen, dtype=torch.float32) / rank
    return torch.zeros(like.shape, dtype=torch.float32)


class LoRAView(nn.Module):
    """One role of a shared LoRA base: the teacher (``name=None``) or an adapter's model."""

    def __init__(self, base: nn.Module, name: str | None):
        super().__init__()
        object.__setattr__(self, "shared_base", base)  # not a submodule: parameters() are the adapter's
        self.adapter_name = name
        # taken once, sharded (FSDP2 swaps in unsharded parameter objects around a forward; the
        # optimiser and the checkpoints work on the sharded ones)
        object.__setattr__(self, "_params", [(n, p) for n, p in base.named_parameters() if name and (
            f".lora_A.{name}." in n or f".lora_B.{name}." in n)])

    def _own(self) -> list[tuple[str, nn.Parameter]]:
        return list(self._params)

    def named_parameters(self, prefix: str = "", recurse: bool = True, remove_duplicate: bool = True):
        for n, p in self._own():
            yield prefix + n, p

    def parameters(self, recurse: bool = True):
        for _, p in self._own():
            yield p

    def __getattr__(self, item):
        try:
            return super().__getattr__(item)
        except AttributeError:
            base = self.__dict__.get("shared_base")
            if base is None:
                raise
            return getattr(base, item)  # config, dtype, ... of the base

    def train(self, mode: bool = True):
        self.training = mode
        return self

    def forward(self, *args, **kwargs):
        activate(self.shared_base, self.adapter_name)  # stays set: a checkpointed backward recomputes with it
        return self.shared_base(*args, **kwargs)

    def activate(self) -> None:
        activate(self.shared_base, self.adapter_name)

    # -- state ---------------------------------------------------------------------------------
    def full_state(self) -> dict:
        """The adapter's weights, full and on the CPU (every rank takes part under FSDP)."""
        return {n: _full(p).detach().cpu().clone() for n, p in self._own()}

    def load_full_state(self, state: dict) -> None:
        own = self._own()
        missing = sorted({n for n, _ in own} - set(state))
        extra = sorted(set(state) - {n for n, _ in own})
        if missing or extra:
            raise RecipeError(f"LoRA adapter {self.adapter_name!r}: the saved weights do not fit (missing "
                              f"{missing[:3]}, unexpected {extra[:3]}): was the checkpoint trained with this lora block?")
        with torch.no_grad():
            for n, p in own:
                _copy_full(p, state[n])

    def full_optim_state(self, optim: torch.optim.Optimizer) -> dict:
        names = {id(p): n for n, p in self._own()}
        sd = optim.state_dict()
        params = [p for g in optim.param_groups for p in g["params"]]
        state = {names[id(params[i])]: {k: _full(v).cpu().clone() if torch.is_tensor(v) else v for k, v in st.items()}
                 for i, st in sd["state"].items()}
        groups = [{**{k: v for k, v in g.items() if k != "params"}, "params": [names[id(params[i])] for i in g["params"]]}
                  for g in sd["param_groups"]]
        return {"state": state, "param_groups": groups}

    def load_full_optim_state(self, optim: torch.optim.Optimizer, full: dict) -> None:
        params = [p for g in optim.param_groups for p in g["params"]]
        names = {id(p): n for n, p in self._own()}
        index = {names[id(p)]: i for i, p in enumerate(params)}
        state = {}
        for name, st in full["state"].items():
            p = params[index[name]]
            state[index[name]] = {k: _shard_like(v, p) if torch.is_tensor(v) and v.dim() > 0 else v
                                  for k, v in st.items()}
        groups = [{**g, "params": [index[n] for n in g["params"]]} for g in full["param_groups"]]
        optim.load_state_dict({"state": state, "param_groups": groups})

    def merged_state(self) -> dict:
        """The plain model's weights with this adapter merged (the teacher's: none), full, on the
        parameters' device, on every rank."""
        full = {n: _full(p).detach() for n, p in self.shared_base.named_parameters()}
        full.update({n: _full(b).detach() for n, b in self.shared_base.named_buffers()})
        out = {}
        scaling = {n: m.scaling[self.adapter_name] for n, m in _named_lora_layers(self.shared_base)} if self.adapter_name else {}
        for key, value in full.items():
            if ".lora_" in key:
                continue
            plain = key.replace(".base_layer.", ".")
            if ".base_layer." in key and key.endswith(".base_layer.weight") and self.adapter_name:
                prefix = key[: -len(".base_layer.weight")]
                a = full[f"{prefix}.lora_A.{self.adapter_name}.weight"].float()
                b = full[f"{prefix}.lora_B.{self.adapter_name}.weight"].float()
                value = (value.float() + scaling[prefix] * (b @ a)).to(value.dtype)
            out[plain] = value
        return out


def _named_lora_layers(model: nn.Module):
    from peft.tuners.lora import LoraLayer

    return [(n, m) for n, m in model.named_modules() if isinstance(m, LoraLayer)]


def _full(t: torch.Tensor) -> torch.Tensor:
    return t.full_tensor() if hasattr(t, "full_tensor") else t


def _shard_like(full: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    if hasattr(like, "device_mesh"):
        from torch.distributed.tensor import distribute_tensor

        return distribute_tensor(full.to(like.device, like.dtype), like.device_mesh, like.placements)
    return full.to(like.device, like.dtype)


def _copy_full(param: torch.Tensor, full: torch.Tensor) -> None:
    if hasattr(param, "to_local"):
        param.to_local().copy_(_shard_like(full, param).to_local())
    else:
        param.copy_(full.to(param.dtype))
