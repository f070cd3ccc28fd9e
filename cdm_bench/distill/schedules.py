"""Schedule samplers: the sigma schedule the student is simulated along, once per iteration.

A sampler returns the *nominal* sigmas (descending, starting at 1.0); with
``shift: before`` the adapter's scheduler shift is then applied (as the SD3 pipeline does to
any custom ``sigmas=`` list), with ``shift: after`` the list is used as given. The losses see
the effective (post-shift) sigmas.

* ``fixed``: one discrete schedule, e.g. ``[1.0, 0.75, 0.5, 0.25]`` (DMD-style baselines).
* ``random_continuous``: the CDM schedule: length ``K ~ U{min_steps..max_steps}``, ``K - 1``
  inner sigmas ``~ U[low, high]`` sorted descending, 1.0 prepended. ``K`` comes from a random
  stream all ranks share; with ``per_rank_sigmas: true`` (the reference: it draws ``K`` from
  ``random.Random((epoch, batch))`` and the inner sigmas from Python's ``random`` seeded with
  seed + rank) each rank draws its own inner sigmas from its own stream, otherwise all ranks
  share the whole schedule. Rank 0 draws from the shared stream either way, so a single
  process draws the same schedules with either setting.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, ClassVar

import torch

from cdm_bench.registry import Registry

SCHEDULES = Registry("schedule")
SHIFT_MODES = ("before", "after")


def _check_sigma(name: str, value: float, allow_zero: bool = True) -> None:
    from cdm_bench.errors import RecipeError

    if not isinstance(value, (int, float)) or value != value:
        raise RecipeError(f"{name} must be a number, got {value!r}")
    if value < 0 or value > 1 or (value == 0 and not allow_zero):
        raise RecipeError(f"{name} = {value} is outside (0, 1]" if not allow_zero
                          else f"{name} = {value} is outside [0, 1]")


def check_sigma_range(name: str, rng: list) -> None:
    """A ``[low, high]`` pair of sigmas with ``0 <= low <= high <= 1``."""
    from cdm_bench.errors import RecipeError

    if not isinstance(rng, (list, tuple)) or len(rng) != 2:
        raise RecipeError(f"{name} must be a [low, high] pair, got {rng!r}")
    for i, v in enumerate(rng):
        _check_sigma(f"{name}[{i}]", v)
    if rng[0] > rng[1]:
        raise RecipeError(f"{name} = {list(rng)}: low > high")


class ScheduleSampler:
    """Base class: ``sample(generator, rank_generator) -> nominal sigmas (K,)``; ``effective``
    applies the shift. ``generator`` is shared by all ranks, ``rank_generator`` is this rank's own."""

    Params: ClassVar[type]
    shift_mode: str = "before"

    def __init__(self, params):
        self.params = params
        self.shift_mode = params.shift

    def sample(self, generator: torch.Generator, rank_generator: torch.Generator | None = None) -> torch.Tensor:
        raise NotImplementedError

    def effective(self, sigmas: torch.Tensor, shift_fn: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        return shift_fn(sigmas) if self.shift_mode == "before" else sigmas

    def draw(self, generator: torch.Generator, shift_fn, rank_generator: torch.Generator | None = None) -> torch.Tensor:
        """Effective sigmas (K,) float32, descending, of one sampled schedule."""
        return self.effective(self.sample(generator, rank_generator), shift_fn).to(torch.float32)

    @property
    def max_steps(self) -> int:
        raise NotImplementedError


@dataclass
class FixedParams:
    """``sigmas``: the schedule (descending, in (0, 1]); ``shift``: 'before' or 'after'."""

    sigmas: list = field(default_factory=lambda: [1.0, 0.75, 0.5, 0.25])
    shift: str = "before"

    def __post_init__(self):
        from cdm_bench.errors import RecipeError

        _check_shift(self.shift)
        if not isinstance(self.sigmas, (list, tuple)) or not self.sigmas:
            raise RecipeError(f"schedule.sigmas must be a non-empty list, got {self.sigmas!r}")
        for i, s in enumerate(self.sigmas):
            _check_sigma(f"schedule.sigmas[{i}]", s, allow_zero=False)
        if any(a <= b for a, b in zip(self.sigmas, self.sigmas[1:])):
            raise RecipeError(f"schedule.sigmas must be strictly descending, got {list(self.sigmas)}")


@SCHEDULES.register("fixed")
class FixedSchedule(ScheduleSampler):
    Params = FixedParams

    def sample(self, generator: torch.Generator, rank_generator: torch.Generator | None = None) -> torch.Tensor:
        return torch.tensor(self.params.sigmas, dtype=torch.float64)

    @property
    def max_steps(self) -> int:
        return len(self.params.sigmas)


@dataclass
class RandomContinuousParams:
    """``K ~ U{min_steps..max_steps}``; ``K-1`` inner sigmas ``~ U[low, high]``; 1.0 prepended."""

    min_steps: int = 1
    max_steps: int = 28
    low: float = 0.25
    high: float = 0.95
    shift: str = "before"
    per_rank_sigmas: bool = True  # K shared by all ranks, inner sigmas per rank (the reference)

    def __post_init__(self):
        from cdm_bench.errors import RecipeError

        _check_shift(self.shift)
        _check_sigma("schedule.low", self.low)
        _check_sigma("schedule.high", self.high)
        if self.low > self.high:
            raise RecipeError(f"schedule.low = {self.low} > schedule.high = {self.high}")
        if not (isinstance(self.min_steps, int) and isinstance(self.max_steps, int)
                and 1 <= self.min_steps <= self.max_steps):
            raise RecipeError(f"schedule needs integers 1 <= min_steps <= max_steps, got "
                              f"{self.min_steps}, {self.max_steps}")


@SCHEDULES.register("random_continuous")
class RandomContinuousSchedule(ScheduleSampler):
    Params = RandomContinuousParams

    def sample(self, generator: torch.Generator, rank_generator: torch.Generator | None = None) -> torch.Tensor:
        p = self.params
        k = int(torch.randint(p.min_steps, p.max_steps + 1, (1,), generator=generator))
        own = rank_generator if p.per_rank_sigmas and rank_generator is not None else generator
        inner = p.low + (p.high - p.low) * torch.rand(k - 1, generator=own, dtype=torch.float64)
        inner = inner.sort(descending=True).values
        return torch.cat([torch.ones(1, dtype=torch.float64), inner])

    @property
    def max_steps(self) -> int:
        return self.params.max_steps


def _check_shift(mode: str) -> None:
    from cdm_bench.errors import RecipeError

    if mode not in SHIFT_MODES:
        raise RecipeError(f"schedule.shift must be 'before' (the scheduler's shift is applied to "
                          f"these sigmas) or 'after' (used as given), got {mode!r}")


def build_schedule(kind: str, params) -> ScheduleSampler:
    return SCHEDULES.get(kind)(params)
