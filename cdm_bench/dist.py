"""Process-group helpers for phases launched by ``torchrun`` or ``accelerate launch``.

Both launchers export RANK / WORLD_SIZE / MASTER_ADDR; we only read them. Without a launcher
everything runs as rank 0 of 1. CPU runs use gloo, GPU runs nccl.
"""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from typing import Any

import torch.distributed as dist


def world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def die_with_launcher() -> None:
    """Under torchrun / accelerate launch (Linux): SIGKILL this worker when its launcher dies,
    so killing only the launcher never leaves workers writing into a run directory."""
    if "TORCHELASTIC_RUN_ID" not in os.environ or not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:  # pragma: no cover - no libc: keep the launcher's own behaviour
        return
    if os.getppid() == 1:  # the launcher died before prctl took effect
        os.kill(os.getpid(), signal.SIGKILL)


def check_launcher() -> None:
    """Refuse the one silent failure of a launcher: ``accelerate launch --num_processes N``
    without ``--multi_gpu`` (the default without a GPU config) starts ONE process through its
    simple launcher, which sets MASTER_ADDR for N > 1 but no WORLD_SIZE."""
    if "ACCELERATE_USE_CPU" in os.environ and "MASTER_ADDR" in os.environ and "WORLD_SIZE" not in os.environ:
        from cdm_bench.errors import SpecError

        raise SpecError("accelerate launch started one process although more were asked for (its simple launcher: "
                        "no --multi_gpu); use `accelerate launch --multi_gpu --num_processes N ...` (CPU too) or "
                        "`torchrun --nproc_per_node N ...`")


@contextmanager
def process_group():
    """Initialise a process group when launched with several processes; tear it down after."""
    check_launcher()
    _, size = world()
    created = False
    die_with_launcher()
    if size > 1 and not dist.is_initialized():
        import torch

        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)
        created = True
    try:
        yield world()
    finally:
        if created:
            dist.destroy_process_group()


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def broadcast(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s object, on every rank."""
    if not (dist.is_available() and dist.is_initialized()):
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_gather(obj: Any) -> list:
    """Every rank's ``obj``, in rank order, on every rank."""
    if not (dist.is_available() and dist.is_initialized()):
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out
