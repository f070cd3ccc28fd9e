"""Schedule samplers (ranges, shapes, the shift) and the backward simulation."""

import pytest
import torch

from cdm_bench.distill.adapter import shift_sigmas
from cdm_bench.distill.config import RecipeError
from cdm_bench.distill.schedules import (FixedParams, FixedSchedule, RandomContinuousParams,
                                         RandomContinuousSchedule)
from cdm_bench.distill.simulate import simulate


def test_random_continuous_schedule_ranges_and_shapes():
    sampler = RandomContinuousSchedule(RandomContinuousParams())
    gen = torch.Generator().manual_seed(0)
    lengths = set()
    for _ in range(3000):
        s = sampler.sample(gen)
        assert s.ndim == 1 and 1 <= s.shape[0] <= 28
        assert s[0] == 1.0
        inner = s[1:]
        assert ((inner >= 0.25) & (inner <= 0.95)).all()
        assert (inner[:-1] >= inner[1:]).all()  # sorted descending
        lengths.add(s.shape[0])
    assert lengths == set(range(1, 29))  # every length 1..28 occurs


def test_shift_before_and_after():
    # the SD3 scheduler (shift 3.0) samples [1, .75, .5, .25] as [1, .9, .75, .5]
    before = FixedSchedule(FixedParams(sigmas=[1.0, 0.75, 0.5, 0.25], shift="before"))
    after = FixedSchedule(FixedParams(sigmas=[1.0, 0.75, 0.5, 0.25], shift="after"))
    shift3 = lambda s: shift_sigmas(s, 3.0)  # noqa: E731
    torch.testing.assert_close(before.draw(torch.Generator(), shift3), torch.tensor([1.0, 0.9, 0.75, 0.5]))
    torch.testing.assert_close(after.draw(torch.Generator(), shift3), torch.tensor([1.0, 0.75, 0.5, 0.25]))
    rc = RandomContinuousSchedule(RandomContinuousParams(min_steps=5, max_steps=5, shift="before"))
    raw = rc.sample(torch.Generator().manual_seed(1))
    torch.testing.assert_close(rc.draw(torch.Generator().manual_seed(1), shift3), shift_sigmas(raw, 3.0).float())


@pytest.mark.parametrize("kwargs, match", [
    ({"sigmas": [1.0, -0.5]}, r"sigmas\[1\] = -0.5 is outside"),
    ({"sigmas": [1.5, 0.5]}, r"sigmas\[0\] = 1.5 is outside"),
    ({"sigmas": [0.5, 0.75]}, "strictly descending"),
    ({"shift": "sideways"}, "schedule.shift"),
])
def test_fixed_schedule_validation(kwargs, match):
    with pytest.raises(RecipeError, match=match):
        FixedParams(**kwargs)


def test_random_schedule_validation():
    with pytest.raises(RecipeError, match="outside"):
        RandomContinuousParams(low=-0.1)
    with pytest.raises(RecipeError, match="schedule.low = 0.9 > schedule.high = 0.3"):
        RandomContinuousParams(low=0.9, high=0.3)
    with pytest.raises(RecipeError, match="min_steps"):
        RandomContinuousParams(min_steps=0)


def _linear_velocity(x, s, rows):
    return 0.5 * x + s.view(-1, 1) + rows.view(-1, 1).float()


def test_simulation_records_euler_steps():
    noise = torch.randn(3, 2)
    sigmas = torch.tensor([1.0, 0.6, 0.3])
    traj = simulate(_linear_velocity, noise, sigmas)
    x = noise.clone()
    rows = torch.arange(3)
    for i, s in enumerate([1.0, 0.6, 0.3]):
        v = _linear_velocity(x, torch.full((3,), s), rows)
        torch.testing.assert_close(traj.latents[i], x)
        torch.testing.assert_close(traj.velocities[i], v)
        torch.testing.assert_close(traj.x0[i], x - s * v)
        x = x + ([0.6, 0.3, 0.0][i] - s) * v
    torch.testing.assert_close(traj.final, x)
    point = traj.at(torch.tensor([2, 0, 1]))
    torch.testing.assert_close(point.sigma, torch.tensor([0.3, 1.0, 0.6]))
    torch.testing.assert_close(point.x[0], traj.latents[2, 0])


def test_truncated_simulation_equals_full_and_keeps_call_count():
    noise = torch.randn(4, 2)
    sigmas = torch.tensor([1.0, 0.8, 0.5, 0.2])
    full = simulate(_linear_velocity, noise, sigmas)
    calls = []

    def counted(x, s, rows):
        calls.append(x.shape[0])
        return _linear_velocity(x, s, rows)

    upto = torch.tensor([0, 2, 1, 0])
    part = simulate(counted, noise, sigmas, upto=upto, num_calls=5)
    assert calls == [4, 2, 1, 1, 1]  # samples drop out once done; padded to 5 calls
    idx = torch.tensor([0, 2, 1, 0])
    for name in ("x", "v", "x0", "sigma"):
        torch.testing.assert_close(getattr(part.at(idx), name), getattr(full.at(idx), name))
    with pytest.raises(IndexError):
        part.at(torch.tensor([1, 3, 1, 0]))  # step 1 of sample 0 was not simulated
