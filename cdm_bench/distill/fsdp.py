"""FSDP2 on CPU or GPU: process group, sharding per transformer block, full state dicts.

Launch with ``torchrun --nproc_per_node N -m cdm_bench.cli.train RECIPE`` (or
``accelerate launch --multi_gpu`` as a launcher only: accelerate's FSDP plugin does not shard
on CPU). Each block class the adapter names (the model's ``_no_split_modules``) is wrapped with
:func:`torch.distributed.fsdp.fully_shard`, then the root. Checkpoints hold full (unsharded)
state dicts, so they load into an unsharded model for export.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch import nn


def _dcp():
    """torch.distributed.checkpoint.state_dict, imported when a state dict is first taken or
    loaded (~0.8 s of imports a run that never checkpoints does not pay)."""
    from torch.distributed.checkpoint import state_dict

    return state_dict


def _full():
    return _dcp().StateDictOptions(full_state_dict=True, cpu_offload=True)


def init_distributed() -> tuple[int, int]:
    """Join the process group that ``torchrun`` describes in the environment; (rank, world)."""
    from cdm_bench.dist import check_launcher, die_with_launcher

    check_launcher()
    die_with_launcher()  # a killed torchrun takes its training workers with it
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:  # several processes: the checkpoint code is imported before any sharding, as it
        _dcp()     # always was (only a single process defers it to its first state dict)
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def device_for_rank() -> torch.device:
    if torch.cuda.is_available():
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        return torch.device("cuda", local)
    return torch.device("cpu")


def shard(model: nn.Module, block_classes: list[str], bf16: bool = False) -> nn.Module:
    """``fully_shard`` every module whose class name is in ``block_classes``, then the root."""
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    kwargs = {}
    if bf16:
        kwargs["mp_policy"] = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    if not block_classes:
        raise ValueError(f"{type(model).__name__}: no block classes to shard (set _no_split_modules)")
    found = 0
    for module in model.modules():
        if type(module).__name__ in block_classes:
            fully_shard(module, **kwargs)
            found += 1
    if found == 0:
        raise ValueError(f"none of the block classes {block_classes} occurs in {type(model).__name__}")
    fully_shard(model, **kwargs)
    return model


def full_model_state(model: nn.Module) -> dict:
    """Full, CPU state dict (under FSDP: complete on rank 0, empty elsewhere; a LoRA view: its
    adapter's weights, on every rank)."""
    if hasattr(model, "full_state"):
        return model.full_state()
    return _dcp().get_model_state_dict(model, options=_full())


def full_state_on_every_rank(model: nn.Module) -> dict:
    """The full state dict on every rank, on the model's device (an unsharded copy for sampling;
    a LoRA view: the plain model's weights with its adapter merged)."""
    if hasattr(model, "merged_state"):
        return model.merged_state()
    dcp = _dcp()
    return dcp.get_model_state_dict(model, options=dcp.StateDictOptions(full_state_dict=True, cpu_offload=False))


def load_full_model_state(model: nn.Module, state: dict, broadcast_from_rank0: bool = False) -> None:
    """Load a full state dict (strict) into a sharded or plain model; every rank passes it, or,
    with ``broadcast_from_rank0``, rank 0 passes it and the others pass ``{}``."""
    if hasattr(model, "load_full_state"):
        return model.load_full_state(state)
    dcp = _dcp()
    dcp.set_model_state_dict(model, state, options=dcp.StateDictOptions(
        full_state_dict=True, strict=True, broadcast_from_rank0=broadcast_from_rank0))


def full_optim_state(model: nn.Module, optim: torch.optim.Optimizer) -> dict:
    """Full optimizer state keyed by parameter names (same format with and without FSDP)."""
    if hasattr(model, "full_optim_state"):
        return model.full_optim_state(optim)
    return _dcp().get_optimizer_state_dict(model, optim, options=_full())


def load_full_optim_state(model: nn.Module, optim: torch.optim.Optimizer, state: dict) -> None:
    if hasattr(model, "load_full_optim_state"):
        return model.load_full_optim_state(optim, state)
    dcp = _dcp()
    dcp.set_optimizer_state_dict(model, optim, state, options=dcp.StateDictOptions(full_state_dict=True))


def all_reduce_max(value: int) -> int:
    if not is_distributed():
        return value
    t = torch.tensor([value], dtype=torch.long)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return int(t.item())


def all_reduce_mean(values: torch.Tensor) -> torch.Tensor:
    """Mean over ranks (a NaN on any rank makes the mean NaN, so all ranks see it)."""
    if not is_distributed():
        return values
    values = values.detach().clone().cpu().double()
    dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values / dist.get_world_size()


def as_local(value: torch.Tensor) -> torch.Tensor:
    """A DTensor (e.g. a clipped grad norm under FSDP) -> its full value as a plain tensor."""
    return value.full_tensor() if hasattr(value, "full_tensor") else value


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
