"""Pieces shared by the loss modules: the normalised x0-space update, teacher queries.

A student loss runs in two phases so that the trainer can batch network calls across losses
without changing any loss:

1. ``student_input(point, gen)`` names where the student is evaluated (losses that share an
   input, e.g. CA and DM at ``(x_i, s_i)``, share one student pass);
2. ``plan(x0_sg, sigma_in, point, gen)`` draws the re-noising and returns :class:`Query` s for
   the real / fake teacher (stop-gradient inputs);
3. ``forward(x0_student, plan, answers) -> (loss, logs)`` once the queries are answered.

:func:`run_queries` answers all queries of one step with one call per network.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, ClassVar

import torch
from torch import nn

from cdm_bench.distill.adapter import Cond, cond_cat
from cdm_bench.distill.simulate import TrajectoryPoint

NETS = ("real", "fake")


def bview(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(B,) -> (B, 1, 1, ...) broadcastable against ``like``."""
    return t.view((-1,) + (1,) * (like.ndim - 1))


def normalized_update(x0_student: torch.Tensor, direction: torch.Tensor, reference: torch.Tensor,
                      floor: float = 0.1) -> tuple[torch.Tensor, dict]:
    """The per-sample normalised x0-space update shared by CA, DM and CDM.

    ``d = direction / max(mean|reference - sg(x0)|, floor)`` per sample, and the loss
    ``mean((x0 - sg(x0 + d))^2)``, whose gradient w.r.t. ``x0`` is ``-2 d / numel``.
    """
    x0_sg = x0_student.detach()
    dims = tuple(range(1, x0_sg.ndim))
    norm = (reference.float() - x0_sg.float()).abs().mean(dim=dims).clamp_min(floor)
    step = direction.float() / bview(norm, direction)
    target = (x0_sg.float() + step).detach()
    loss = torch.mean((x0_student.float() - target) ** 2)
    logs = {"norm": norm.mean().item(), "update_abs": step.abs().mean().item()}
    return loss, logs


def renoise(x0: torch.Tensor, sigma: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """``x_s = (1 - s) x0 + s eps`` with fresh noise."""
    eps = torch.randn(x0.shape, generator=generator, dtype=x0.dtype).to(x0.device)
    s = bview(sigma.to(x0.device), x0)
    return (1 - s) * x0 + s * eps


def uniform(n: int, low, high, generator: torch.Generator) -> torch.Tensor:
    """``n`` draws ``~ U[low, high]`` (``low``/``high`` may be per-sample tensors), on their device."""
    u = torch.rand(n, generator=generator)
    if isinstance(low, torch.Tensor) or isinstance(high, torch.Tensor):
        u = u.to((low if isinstance(low, torch.Tensor) else high).device)
    return low + (high - low) * u


#: how a loss draws a noise level in ``[lo, hi]`` (the recipe's ``train.sigma_draw``)
SIGMA_DRAWS = ("clamp", "range")


def draw_sigmas(n: int, sigma_range, generator: torch.Generator, mode: str = "clamp",
                cap: torch.Tensor | None = None) -> torch.Tensor:
    """``n`` noise levels from one ``u ~ U(0, 1)`` per sample; every loss draws its sigmas here.

    * ``cap`` given (CA's ``U(0, s_i)``): ``clamp(cap * u, lo, hi)``, in either mode;
    * mode ``clamp`` (the reference's ``sample_sigmas``, method "uniform": it ignores any upper
      bound and clamps to [sigma_min, sigma_max]): ``clamp(u, lo, hi)``, so ``lo`` and ``hi``
      carry point masses of ``lo`` and ``1 - hi``;
    * mode ``range``: ``lo + (hi - lo) * u ~ U[lo, hi]``.
    """
    if mode not in SIGMA_DRAWS:
        raise ValueError(f"sigma draw mode must be one of {SIGMA_DRAWS}, got {mode!r}")
    lo, hi = sigma_range
    if cap is not None:
        return uniform(n, 0.0, cap.float(), generator).clamp(lo, hi)
    if mode == "clamp":
        return torch.rand(n, generator=generator).clamp(lo, hi)
    return uniform(n, lo, hi, generator)


@dataclass
class Query:
    """Evaluate ``net`` ("real" or "fake") at ``(x, sigma)`` with the sample's prompt
    (``uncond=False``) or the empty prompt; the answer is the x0 prediction."""

    net: str
    x: torch.Tensor
    sigma: torch.Tensor
    uncond: bool = False


@dataclass
class Plan:
    queries: dict[str, Query] = field(default_factory=dict)
    state: dict = field(default_factory=dict)


@dataclass
class StudentInput:
    key: str  # losses with the same key share one student evaluation
    x: torch.Tensor
    sigma: torch.Tensor


class StudentLoss(nn.Module):
    """Base class of the student's loss terms. Subclasses define ``Params`` (a dataclass)."""

    role: ClassVar[str] = "student"
    Params: ClassVar[type]

    def __init__(self, params=None, name: str | None = None, sigma_draw: str = "clamp"):
        super().__init__()
        self.params = params if params is not None else self.Params()
        self.name = name or type(self).__name__
        self.sigma_draw = sigma_draw  # see draw_sigmas

    def draw_sigmas(self, n: int, sigma_range, generator: torch.Generator, cap=None) -> torch.Tensor:
        return draw_sigmas(n, sigma_range, generator, self.sigma_draw, cap)

    def student_input(self, point: TrajectoryPoint, generator: torch.Generator) -> StudentInput:
        """On-trajectory by default: the student at ``(x_i, s_i)``."""
        return StudentInput("on", point.x, point.sigma)

    def plan(self, x0_sg: torch.Tensor, sigma_in: torch.Tensor, generator: torch.Generator) -> Plan:
        raise NotImplementedError

    def forward(self, x0_student: torch.Tensor, plan: Plan, answers: dict) -> tuple[torch.Tensor, dict]:
        raise NotImplementedError

    def compute(self, x0_student: torch.Tensor, sigma_in: torch.Tensor, generator: torch.Generator,
                nets: dict[str, Callable], cond: Cond, null: Cond) -> tuple[torch.Tensor, dict]:
        """Plan, answer and apply in one go (for tests and simple callers)."""
        plan = self.plan(x0_student.detach(), sigma_in, generator)
        return self(x0_student, plan, run_queries([plan], nets, cond, null)[0])


@torch.no_grad()
def run_queries(plans: list[Plan], nets: dict[str, Callable], cond: Cond, null: Cond) -> list[dict]:
    """Answer every plan's queries with one batched call per network.

    ``nets[name](x, sigma, cond) -> v``; answers are x0 predictions ``x - sigma * v`` (float32).
    """
    answers: list[dict] = [{} for _ in plans]
    for net in NETS:
        items = [(i, key, q) for i, p in enumerate(plans) for key, q in p.queries.items() if q.net == net]
        if not items:
            continue
        x = torch.cat([q.x for _, _, q in items])
        s = torch.cat([q.sigma for _, _, q in items])
        c = cond_cat([null if q.uncond else cond for _, _, q in items])
        v = nets[net](x, s, c).float()
        x0 = x.float() - bview(s, x) * v
        for (i, key, q), chunk in zip(items, x0.split([q.x.shape[0] for _, _, q in items])):
            answers[i][key] = chunk
    unknown = {q.net for p in plans for q in p.queries.values()} - set(NETS)
    if unknown:
        raise ValueError(f"unknown network(s) {sorted(unknown)} in a loss query")
    return answers
