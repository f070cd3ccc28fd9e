"""Each loss against a hand computation on small tensors, incl. the normalisation clamp and the
stop-gradients (the student's gradient equals the analytic one). The replays here use
``sigma_draw="range"`` (U[lo, hi]); test_parity_options.py covers the reference's clamped draws."""

import pytest
import torch

from cdm_bench.distill.losses import (LOSSES, CFGAugmentationLoss, DistributionMatchingLoss, DMD2Loss,
                                      FakeFlowMatchingLoss, OffTrajectoryDMLoss, normalized_update, run_queries)
from cdm_bench.distill.losses.base import Plan, Query
from cdm_bench.distill.simulate import TrajectoryPoint, extrapolate

B, SHAPE = 2, (2, 1, 2, 2)
COND, NULL = torch.ones(B, 1), torch.zeros(B, 1)


def x0_net(x0_cond, x0_uncond, slope=0.3):
    """A net whose x0 prediction is x0_cond / x0_uncond (by the condition row) + slope * x:
    it depends on its input, so a missing stop-gradient would change the student's gradient."""
    def net(x, s, c):
        target = torch.where(c.view(-1, 1, 1, 1) > 0.5, x0_cond.repeat(x.shape[0] // B, 1, 1, 1),
                             x0_uncond.repeat(x.shape[0] // B, 1, 1, 1)) + slope * x
        return (x - target) / s.view(-1, 1, 1, 1)  # v such that x - s v = target
    return net


def student():
    """x0_s = w * inp with a learnable w, so d loss / d w is checkable."""
    torch.manual_seed(0)
    w = torch.tensor(1.5, requires_grad=True)
    inp = torch.randn(SHAPE)
    return w, inp


def test_normalized_update_value_and_gradient():
    x0 = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]], [[[0.0, 0.0], [0.0, 0.0]]]], requires_grad=True)
    direction = torch.tensor([[[[1.0, -1.0], [2.0, 0.0]]], [[[0.5, 0.5], [0.5, 0.5]]]])
    ref = x0.detach() + torch.tensor([[[[2.0, -2.0], [2.0, -2.0]]], [[[0.01, -0.01], [0.01, -0.01]]]])
    loss, logs = normalized_update(x0, direction, ref, floor=0.1)
    # sample 0: mean|ref - x0| = 2; sample 1: 0.01 -> clamped to 0.1
    step = torch.cat([direction[:1] / 2.0, direction[1:] / 0.1])
    assert loss.item() == pytest.approx((step ** 2).mean().item(), rel=1e-6)
    loss.backward()
    torch.testing.assert_close(x0.grad, -2 * step / x0.numel())
    assert logs["norm"] == pytest.approx((2.0 + 0.1) / 2)


def test_ca_matches_hand_computation_and_stops_gradients():
    w, inp = student()
    x0_c, x0_u = torch.randn(SHAPE), torch.randn(SHAPE)
    nets = {"real": x0_net(x0_c, x0_u), "fake": None}
    loss_fn = CFGAugmentationLoss(CFGAugmentationLoss.Params(guidance=3.0, clamp=[0.02, 0.98]))
    sigma_in = torch.tensor([0.9, 0.01])
    x0_s = w * inp
    gen = torch.Generator().manual_seed(1)
    loss, logs = loss_fn.compute(x0_s, sigma_in, gen, nets, COND, NULL)
    loss.backward()
    # replay the draws: s_t ~ U(0, s_i) clamped, eps ~ N(0, 1)
    g = torch.Generator().manual_seed(1)
    s_t = (sigma_in * torch.rand(B, generator=g)).clamp(0.02, 0.98)
    assert s_t[1] == pytest.approx(0.02)  # U(0, 0.01) is clamped up to 0.02
    eps = torch.randn(SHAPE, generator=g)
    x_t = (1 - s_t.view(-1, 1, 1, 1)) * x0_s.detach() + s_t.view(-1, 1, 1, 1) * eps
    pred_c, pred_u = x0_c + 0.3 * x_t, x0_u + 0.3 * x_t
    d = 3.0 * (pred_c - pred_u)
    norm = (pred_c - x0_s.detach()).abs().mean(dim=(1, 2, 3)).clamp_min(0.1).view(-1, 1, 1, 1)
    assert loss.item() == pytest.approx(((d / norm) ** 2).mean().item(), rel=1e-5)
    grad_x0 = -2 * (d / norm) / d.numel()
    assert w.grad.item() == pytest.approx((grad_x0 * inp).sum().item(), rel=1e-5)
    assert logs["sigma_t"] == pytest.approx(s_t.mean().item())


@pytest.mark.parametrize("guidance", [1.0, 2.5])
def test_dm_and_dmd2_match_hand_computation(guidance):
    w, inp = student()
    x0_c, x0_u, x0_f = torch.randn(SHAPE), torch.randn(SHAPE), torch.randn(SHAPE) * 0.01
    nets = {"real": x0_net(x0_c, x0_u), "fake": x0_net(x0_f, x0_f, slope=-0.2)}
    cls = DistributionMatchingLoss if guidance == 1.0 else DMD2Loss
    loss_fn = cls(cls.Params(sigma_range=[0.2, 0.6], real_guidance=guidance), sigma_draw="range")
    x0_s = w * inp
    loss, _ = loss_fn.compute(x0_s, torch.tensor([1.0, 0.5]), torch.Generator().manual_seed(3), nets, COND, NULL)
    loss.backward()
    g = torch.Generator().manual_seed(3)
    s_t = 0.2 + 0.4 * torch.rand(B, generator=g)
    eps = torch.randn(SHAPE, generator=g)
    x_t = (1 - s_t.view(-1, 1, 1, 1)) * x0_s.detach() + s_t.view(-1, 1, 1, 1) * eps
    real_c, real_u, fake = x0_c + 0.3 * x_t, x0_u + 0.3 * x_t, x0_f - 0.2 * x_t
    real = real_u + guidance * (real_c - real_u)
    norm = (real - x0_s.detach()).abs().mean(dim=(1, 2, 3)).clamp_min(0.1).view(-1, 1, 1, 1)
    step = (real - fake) / norm
    assert loss.item() == pytest.approx((step ** 2).mean().item(), rel=1e-5)
    assert w.grad.item() == pytest.approx((-2 * step / step.numel() * inp).sum().item(), rel=1e-5)


def test_offtrajectory_extrapolates_along_recorded_velocity():
    torch.manual_seed(0)
    point = TrajectoryPoint(torch.randn(SHAPE), torch.randn(SHAPE), torch.randn(SHAPE), torch.tensor([1.0, 0.4]))
    loss_fn = OffTrajectoryDMLoss(OffTrajectoryDMLoss.Params(extrapolate_range=[0.1, 0.3]), name="off",
                                  sigma_draw="range")
    si = loss_fn.student_input(point, torch.Generator().manual_seed(5))
    s_new = 0.1 + 0.2 * torch.rand(B, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(si.sigma, s_new)
    torch.testing.assert_close(si.x, point.x + (s_new - point.sigma).view(-1, 1, 1, 1) * point.v)
    torch.testing.assert_close(extrapolate(point, s_new), si.x)
    assert si.key == "off:off" and ((si.sigma >= 0.1) & (si.sigma <= 0.3)).all()
    # on-trajectory losses share the student input (x_i, s_i)
    on = DistributionMatchingLoss().student_input(point, torch.Generator())
    assert on.key == "on" and on.x is point.x


def test_fake_flow_matching_value_and_gradient_flows_to_fake_only():
    torch.manual_seed(0)
    x0 = torch.randn(SHAPE, requires_grad=True)
    a = torch.tensor(0.7, requires_grad=True)
    loss_fn = FakeFlowMatchingLoss(FakeFlowMatchingLoss.Params(sigma_range=[0.1, 0.5]), sigma_draw="range")
    loss, logs = loss_fn(lambda x, s: a * x, x0, torch.Generator().manual_seed(2))
    loss.backward()
    g = torch.Generator().manual_seed(2)
    s = (0.1 + 0.4 * torch.rand(B, generator=g)).view(-1, 1, 1, 1)
    eps = torch.randn(SHAPE, generator=g)
    x_s = (1 - s) * x0.detach() + s * eps
    assert loss.item() == pytest.approx(((0.7 * x_s - (eps - x0.detach())) ** 2).mean().item(), rel=1e-6)
    assert a.grad.item() == pytest.approx((2 * (0.7 * x_s - (eps - x0.detach())) * x_s).mean().item(), rel=1e-5)
    assert x0.grad is None  # the student's prediction is a constant for the fake teacher


def test_run_queries_batches_one_call_per_network():
    calls = []
    x0_c, x0_u = torch.randn(SHAPE), torch.randn(SHAPE)

    def counted(net):
        def f(x, s, c):
            calls.append(x.shape[0])
            return net(x, s, c)
        return f

    nets = {"real": counted(x0_net(x0_c, x0_u)), "fake": counted(x0_net(x0_u, x0_u))}
    x, s = torch.randn(SHAPE), torch.tensor([0.3, 0.6])
    plans = [Plan({"c": Query("real", x, s), "u": Query("real", x, s, uncond=True)}),
             Plan({"r": Query("real", x, s), "f": Query("fake", x, s)})]
    answers = run_queries(plans, nets, COND, NULL)
    assert calls == [6, 2]  # all real queries in one call, the fake one in another
    torch.testing.assert_close(answers[0]["c"], x0_c + 0.3 * x)
    torch.testing.assert_close(answers[0]["u"], x0_u + 0.3 * x)
    torch.testing.assert_close(answers[1]["r"], answers[0]["c"])


def test_registry_names():
    assert {"ca", "dm", "dmd2", "cdm_offtraj", "fake_fm"} <= set(LOSSES.names())


@pytest.mark.parametrize("fraction", [0.0, 0.5, 1.0])
def test_fake_teacher_offtrajectory_coverage_option(fraction):
    torch.manual_seed(0)
    point = TrajectoryPoint(torch.randn(4, 1, 2, 2), torch.randn(4, 1, 2, 2), torch.randn(4, 1, 2, 2),
                            torch.tensor([1.0, 0.7, 0.4, 0.2]))
    loss_fn = FakeFlowMatchingLoss(FakeFlowMatchingLoss.Params(offtraj_fraction=fraction))
    calls = []

    def student_x0(x, s, rows):
        calls.append(rows.tolist())
        return x * 0 + 100.0  # recognisable

    x0 = loss_fn.select_x0(point, student_x0, torch.Generator().manual_seed(4))
    if fraction == 0.0:
        assert calls == [] and x0 is point.x0  # the paper's algorithm: x0_i only, no extra pass
        return
    g = torch.Generator().manual_seed(4)
    mask = torch.rand(4, generator=g) < fraction
    assert len(calls) == 1 and calls[0] == mask.nonzero().flatten().tolist()
    torch.testing.assert_close(x0[mask], torch.full_like(x0[mask], 100.0))
    torch.testing.assert_close(x0[~mask], point.x0[~mask])
