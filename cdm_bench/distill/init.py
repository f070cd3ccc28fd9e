"""Build the four working copies (frozen teacher, student, fake teacher, EMA) without ever
materialising more full copies than needed.

Every copy is built from the adapter's architecture spec on the meta device (no memory), cast to
its dtype (the frozen teacher to ``adapter.teacher_dtype``, e.g. bf16 as the reference keeps it;
the others float32), sharded with FSDP2 under torchrun, and only then materialised
(``to_empty``) and filled:

* one process: the teacher's state dict is loaded once; the teacher, fake teacher and EMA copy
  it, and the student takes ownership of its tensors (``assign=True``), so the peak is the
  working copies themselves;
* N processes: only rank 0 loads the state dict; each copy receives it by broadcast into its own
  shards (``set_model_state_dict(broadcast_from_rank0=True)``), so no rank other than 0 ever holds
  a full copy, and rank 0 holds one full copy beside its shards.

A model with non-persistent buffers (not in a state dict, so not restorable after ``to_empty``) is
built on the CPU instead of the meta device.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from cdm_bench.distill import fsdp

log = logging.getLogger(__name__)
ROLES = ("teacher", "fake", "ema", "student")  # the student last: it may take the state's tensors


def has_non_persistent_buffers(model: nn.Module) -> bool:
    return any(getattr(m, "_non_persistent_buffers_set", None) for m in model.modules())


def _empty_model(adapter, spec: dict) -> tuple[nn.Module, bool]:
    """(model, on_meta): built on the meta device unless that would lose buffers."""
    with torch.device("meta"):
        model = adapter.build_model(spec)
    if has_non_persistent_buffers(model):
        return adapter.build_model(spec), False
    return model, True


def _set_mode(model: nn.Module, role: str) -> nn.Module:
    trainable = role in ("student", "fake")
    return model.train(trainable).requires_grad_(trainable)


def _cast(model: nn.Module, dtype: torch.dtype) -> nn.Module:
    if all(p.dtype == dtype for p in model.parameters()):
        return model
    if getattr(model, "_keep_in_fp32_modules", None):
        return model.to(dtype)  # diffusers' own cast keeps those modules in float32
    return nn.Module.to(model, dtype)


def _prepare(model: nn.Module, role: str, adapter, dtype: torch.dtype, checkpointing: bool) -> nn.Module:
    model = _set_mode(_cast(model, dtype), role)
    if role in ("student", "fake") and checkpointing:
        adapter.enable_gradient_checkpointing(model)
    return model


def load_teacher(adapter, rank: int, world: int) -> dict:
    """The teacher's full state on rank 0 (``{}`` elsewhere: it is broadcast). Its content hash is
    kept as ``adapter.teacher_sha256``: checkpoints record it and a resume with other teacher
    weights is refused (a retrained or edited teacher would silently mix two distillations)."""
    if not (rank == 0 or world == 1):
        return {}
    from cdm_bench.generator import state_sha256

    state = adapter.load_teacher_state()
    adapter.teacher_sha256 = state_sha256(state)
    log.info("rank %d: loaded the teacher's state dict (%d tensors, %.1f M parameters, sha256 %s)", rank,
             len(state), sum(v.numel() for v in state.values()) / 1e6, adapter.teacher_sha256[:12])
    return state


def build_working_copies(adapter, spec: dict, *, rank: int, world: int, device: torch.device,
                         bf16: bool = False, gradient_checkpointing: bool = False) -> dict[str, nn.Module]:
    """{role: model} for ``ROLES``, each on ``device`` (sharded when ``world > 1``)."""
    state = load_teacher(adapter, rank, world)
    blocks = None
    models = {}
    for role in ROLES:
        dtype = adapter.teacher_dtype if role == "teacher" else torch.float32
        model, on_meta = _empty_model(adapter, spec)
        model = _prepare(model, role, adapter, dtype, gradient_checkpointing)
        if world > 1:
            blocks = blocks or adapter.fsdp_block_classes(model)
            fsdp.shard(model, blocks, bf16)
            if on_meta:
                model.to_empty(device=device)
            fsdp.load_full_model_state(model, dict(state), broadcast_from_rank0=True)  # torch edits it in place
        elif role == "student" and on_meta:
            state = {k: v.to(torch.float32) for k, v in state.items()}
            model.load_state_dict(state, strict=True, assign=True)
            model = model.to(device)
        else:
            if on_meta:
                model.to_empty(device=device)
            model.load_state_dict(state, strict=True)
        _set_mode(model, role)  # requires_grad again after materialising
        models[role] = model
    del state
    return models


def build_lora_copies(adapter, spec: dict, student_lora, fake_lora, *, rank: int, world: int, device: torch.device,
                      seed: int, bf16: bool = False, gradient_checkpointing: bool = False) -> dict[str, nn.Module]:
    """{role: view} for ``ROLES`` over ONE frozen base (``adapter.teacher_dtype``) carrying the
    ``student``, ``fake`` and ``ema`` LoRA adapters (:mod:`cdm_bench.distill.lora`); the teacher's
    view runs with the adapters off. Only rank 0 reads the teacher's state; the adapters' initial
    values are drawn from ``seed`` (the EMA starts as the student)."""
    from cdm_bench.distill import lora

    state = load_teacher(adapter, rank, world)
    base, on_meta = _empty_model(adapter, spec)
    base = _cast(base, adapter.teacher_dtype)
    lora.inject(base, adapter, {"student": student_lora, "fake": fake_lora, "ema": student_lora})
    if state:
        state = lora.initial_state(base, state, seed, {"ema": "student"})
        log.info("rank %d: loaded the teacher's state dict into one shared LoRA base (%.1f M adapter parameters "
                 "per role)", rank, sum(v.numel() for k, v in state.items() if ".lora_" in k and ".student." in k) / 1e6)
    trains = (".lora_A.student.", ".lora_B.student.", ".lora_A.fake.", ".lora_B.fake.")
    for name, p in base.named_parameters():
        p.requires_grad_(any(t in name for t in trains))
    base.train(True)
    if gradient_checkpointing:
        adapter.enable_gradient_checkpointing(base)
    if world > 1:
        fsdp.shard(base, adapter.fsdp_block_classes(base), bf16)
        if on_meta:
            base.to_empty(device=device)
        fsdp.load_full_model_state(base, state, broadcast_from_rank0=True)
    else:
        if on_meta:
            base.to_empty(device=device)
        base.load_state_dict(state, strict=True)
        base.to(device)
    del state
    return {role: lora.LoRAView(base, None if role == "teacher" else role) for role in ROLES}
