"""Continuous-time students: the implicit steps solve the SPICE discretisation exactly, taus are tied, physics holds."""

from __future__ import annotations

import pytest
import torch

from psixlstm.models.students import (
    LIPSCHITZ_MAX,
    StudentConfig,
    _ClusteredScan,
    _DiagonalRecurrence,
    build_student,
)
from psixlstm.physics import DevicePhysics

MEM = DevicePhysics("memristor")


def _student(kind: str, **kw):
    torch.manual_seed(0)
    cfg = StudentConfig(kind=kind, n_in=1, n_out=1, tau_s=[3e-4, 1e-3, 9e-3], physics=MEM, **kw)
    return build_student(cfg).double()


@pytest.mark.parametrize("kind", ["clustered", "lowrank"])
@pytest.mark.parametrize("be", [0.0, 1.0])
def test_step_solves_the_implicit_equation(kind, be):
    s = _student(kind)
    with torch.no_grad():
        for p in s.parameters():
            p.add_(0.5 * torch.randn_like(p))
    b = 3
    x = torch.randn(b, s.n_states, dtype=torch.float64) * 0.3
    u0, u1 = torch.rand(b, 1, dtype=torch.float64), torch.rand(b, 1, dtype=torch.float64)
    h = torch.tensor([1e-6, 5e-5, 2e-3], dtype=torch.float64)
    flag = torch.full((b,), be, dtype=torch.float64)
    with torch.no_grad():
        x1 = s.step(x, u0, u1, h, flag)
        theta = 0.5 + 0.5 * be
        resid = x1 - x - h[:, None] * (theta * s.rate(x1, u1) + (1 - theta) * s.rate(x, u0))
    assert resid.abs().max() < 1e-12
    assert (x1 - x).abs().max() > 1e-6  # the step really moved


def test_rest_relaxes_each_cluster_with_its_tau():
    """At V = 0 the memristor drive vanishes, so one trapezoidal step is x (1 - h/2tau) / (1 + h/2tau) exactly."""
    s = _student("clustered", states_per_cluster=2)
    x = torch.ones(1, s.n_states, dtype=torch.float64)
    zero = torch.zeros(1, 1, dtype=torch.float64)
    h = torch.tensor([1e-4], dtype=torch.float64)
    with torch.no_grad():
        x1 = s.step(x, zero, zero, h, torch.zeros(1, dtype=torch.float64))
    tau = s.tau_per_state().detach()
    assert tau.tolist() == pytest.approx([3e-4, 3e-4, 1e-3, 1e-3, 9e-3, 9e-3], rel=1e-6)
    torch.testing.assert_close(x1[0], (1 - 1e-4 / (2 * tau)) / (1 + 1e-4 / (2 * tau)), rtol=1e-12, atol=0)


def test_cluster_taus_are_tied_and_learnable():
    s = _student("clustered", states_per_cluster=3).float()
    assert s.tau_per_state().tolist() == pytest.approx([3e-4] * 3 + [1e-3] * 3 + [9e-3] * 3, rel=1e-6)
    u = torch.rand(2, 50, 1)
    dt = torch.full((2, 50), 2e-5)
    s(u, dt).y.sum().backward()
    assert s.log_tau.grad is not None and s.log_tau.grad.abs().sum() > 0
    assert s.log_tau.numel() == 3  # one parameter per cluster, not per state


@pytest.mark.parametrize("kind", ["clustered", "lowrank"])
def test_students_are_small_pinched_passive_and_grid_agnostic(kind):
    s = _student(kind).float()
    assert s.n_params < 200 and s.n_states <= 9
    t = torch.cumsum(torch.rand(1, 300) * 1e-4 + 1e-7, 1)  # non-uniform grid
    dt = torch.diff(t, prepend=torch.zeros(1, 1))
    u = torch.sin(t * 3e3)[..., None] * 1.2
    with torch.no_grad():
        y = s(u, dt).y
    assert torch.all(u * y >= 0)
    with torch.no_grad():
        y0 = s(torch.zeros_like(u), dt).y
    assert torch.all(y0 == 0)


def test_config_validation():
    with pytest.raises(ValueError, match="kind"):
        StudentConfig(kind="dense", n_in=1, n_out=1, tau_s=[1e-3])
    with pytest.raises(ValueError, match="positive"):
        StudentConfig(kind="clustered", n_in=1, n_out=1, tau_s=[-1e-3])


def test_forward_equals_step_by_step_replay():
    """The batched forward (closed-form path for the low-rank kind) is the same discretisation as `step`."""
    for kind in ("clustered", "lowrank"):
        s = _student(kind)
        u = torch.randn(3, 40, 1, dtype=torch.float64)
        dt = torch.rand(3, 40, dtype=torch.float64) * 1e-4 + 1e-7
        be = (torch.rand(3, 40) > 0.8).double()
        with torch.no_grad():
            fast = s(u, dt, backward_euler=be).hidden
            x, u_prev, xs = torch.zeros(3, s.n_states, dtype=torch.float64), u[:, 0], []
            for t in range(40):
                x = s.step(x, u_prev, u[:, t], dt[:, t], be[:, t])
                u_prev = u[:, t]
                xs.append(x)
        torch.testing.assert_close(fast, torch.stack(xs, 1), rtol=1e-10, atol=1e-12)


def test_clustered_drive_is_contracting_so_every_step_has_one_solution():
    """Whatever the raw weights, |dg/dx| <= LIPSCHITZ_MAX: the stiff implicit step (h = 1e4 tau) is then the unique
    root and Newton reaches it from any start (here: far from it)."""
    s = _student("clustered")
    with torch.no_grad():
        for p in (s.w1.weight, s.w2.weight):
            p.mul_(20.0)
    w1, _, w2, _ = s.drive_weights()
    n = s.n_states
    gain = torch.linalg.matrix_norm(w2, 2) * torch.linalg.matrix_norm(w1[:, :n], 2)
    assert float(gain.detach()) <= LIPSCHITZ_MAX + 1e-9
    h = torch.full((4,), 1e4 * max(s.time_constants_s()), dtype=torch.float64)
    u0, u1 = torch.zeros(4, 1, dtype=torch.float64), torch.linspace(-1.5, 1.5, 4, dtype=torch.float64)[:, None]
    with torch.no_grad():
        x_near = s.step(torch.zeros(4, n, dtype=torch.float64), u0, u1, h, torch.ones(4, dtype=torch.float64))
        x_far = s.step(torch.full((4, n), 50.0, dtype=torch.float64), u0, u1, h, torch.ones(4, dtype=torch.float64))
        for x0, x1 in ((torch.zeros(4, n, dtype=torch.float64), x_near), (torch.full((4, n), 50.0), x_far)):
            # the state is the root: one more exact Newton update (autograd Jacobian of the residual) moves it by
            # rounding only (the residual itself is a difference of terms h / tau = 1e4 x larger than the states)
            for k in range(4):

                def resid(x, k=k, x0=x0):
                    return x - x0[k].double() - h[k] * s.rate(x, u1[k])

                update = torch.linalg.solve(torch.autograd.functional.jacobian(resid, x1[k]), resid(x1[k]))
                assert update.abs().max() < 1e-12
    # backward Euler with h >> tau nearly forgets the start: x1 (1 + h/tau) - (h/tau) g(x1) = x0 moves x1 by at
    # most |x0| / (h/tau) / (1 - LIPSCHITZ_MAX) = 0.1 here
    torch.testing.assert_close(x_near, x_far, rtol=0, atol=0.1)


@pytest.mark.parametrize("rest_drive", [True, False])
def test_clustered_gradients_are_the_adjoint_of_the_converged_steps(rest_drive):
    """The compiled backward (implicit function theorem) against finite differences of the converged forward."""
    physics = MEM if rest_drive else DevicePhysics("generic")
    torch.manual_seed(2)
    cfg = StudentConfig(kind="clustered", n_in=1, n_out=1, tau_s=[3e-5, 1e-4], physics=physics, drive_hidden=5)
    s = build_student(cfg).double()
    with torch.no_grad():
        for p in s.parameters():
            p.add_(0.5 * torch.randn_like(p))
    u = torch.randn(2, 12, 1, dtype=torch.float64)
    dt = torch.rand(2, 12, dtype=torch.float64) * 4e-5 + 1e-6
    be = (torch.rand(2, 12) > 0.7).double()
    x0 = 0.3 * torch.randn(2, s.n_states, dtype=torch.float64, requires_grad=True)
    log_tau = torch.log(s.cluster_tau()).detach().requires_grad_()  # O(1) inputs, so gradcheck's atol means something

    def states(x0, w1, b1, w2, b2, log_tau):
        inv_tau, theta = torch.exp(-log_tau)[s.cluster_of_state], 0.5 + 0.5 * be
        return _ClusteredScan.apply(x0, w1, b1, w2, b2, inv_tau, torch.cat([u[:, :1], u], 1), dt, theta, rest_drive)

    params = (x0, s.w1.weight, s.w1.bias, s.w2.weight, s.w2.bias, log_tau)
    assert torch.autograd.gradcheck(states, params, eps=1e-7, atol=1e-6, rtol=1e-5)


def test_lowrank_linear_steps_gradients():
    """The compiled diagonal recurrence behind the low-rank student's closed-form steps, against finite differences."""
    torch.manual_seed(3)
    decay = torch.rand(2, 15, 3, dtype=torch.float64, requires_grad=True)
    gain = torch.randn(2, 15, 3, dtype=torch.float64, requires_grad=True)
    x0 = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(_DiagonalRecurrence.apply, (decay, gain, x0))


@pytest.mark.parametrize("kind", ["clustered", "lowrank"])
def test_time_constants_stay_above_the_floor(kind):
    """The data's finest step floors every time constant, also for an initial tau below it and after any update."""
    cfg = StudentConfig(
        kind=kind, n_in=1, n_out=1, tau_s=[1e-9, 1e-6, 1e-3], physics=DevicePhysics("memristor"), tau_floor_s=2e-7
    )
    s = build_student(cfg)
    assert float(s.cluster_tau().detach().min()) >= 2e-7 and min(s.time_constants_s()) >= 2e-7
    assert float(s.cluster_tau().detach().max()) == pytest.approx(1e-3, rel=1e-5)
    with torch.no_grad():
        s.log_tau.fill_(-80.0)
    assert float(s.cluster_tau().detach().min()) >= 2e-7


def test_memristor_log_conductance_is_bounded_beyond_the_training_range_and_old_files_keep_raw_powers():
    s = _student("clustered", log_conductance_order=4)
    assert s.readout.g_input.in_features == 4
    with torch.no_grad():  # only the s^4 coefficient: ln(I / u) is then 0.7 tanh(u)^4 and nothing else
        s.readout.g_state.weight.zero_()
        s.readout.g_state.bias.zero_()
        s.readout.g_input.weight.copy_(torch.tensor([[0.0, 0.0, 0.0, 0.7]], dtype=torch.float64))
        u = torch.tensor([[0.5], [2.0], [50.0]], dtype=torch.float64)
        i = s.readout.static(torch.zeros(3, s.n_states, dtype=torch.float64), u)
    assert torch.allclose(torch.log(i / u), 0.7 * torch.tanh(u) ** 4)
    assert float(torch.log(i / u).max()) <= 0.7 + 1e-12  # a raw u^4 would give 0.7 * 50^4
    d = s.cfg.to_dict()
    del d["log_conductance_order"], d["log_conductance_squash"]  # a student.json written before the fields
    old = StudentConfig.from_dict(d)
    assert (old.log_conductance_order, old.log_conductance_squash) == (2, False)


def test_mosfet_gate_static_current_is_zero_by_construction():
    """The insulated gate carries only dQ_g/dt, in the student's and the teacher's readout alike: held at any bias,
    the gate current is 0 once the charge stops moving (the drain's is not)."""
    from psixlstm.models.teacher import Teacher, TeacherConfig

    physics = DevicePhysics.for_dataset("mosfet", ["v_gs", "v_ds"], ["i_g", "i_d"])
    assert physics.i_g_index == 0 and physics.i_d_index == 1
    torch.manual_seed(0)
    s = build_student(StudentConfig("clustered", 2, 2, [1e-9, 1e-7], physics=physics, t_scale_s=1e-9))
    x, u = torch.randn(5, 7, s.n_states), torch.randn(5, 7, 2)
    static = s.readout.static(x, u)
    assert torch.all(static[..., 0] == 0) and torch.all(static[..., 1].abs() > 0)
    u_hold = torch.tensor([0.7, 0.5]).expand(1, 400, 2)
    with torch.no_grad():  # backward Euler: a trapezoidal charge current keeps alternating after the first step
        y = s(u_hold, torch.full((1, 400), 1e-8), backward_euler=torch.ones(1, 400)).y
    assert y[0, -1, 0].abs() < 1e-9 * y[0, -1, 1].abs() and y[0, -1, 1].abs() > 0
    cfg = TeacherConfig(n_in=2, n_out=2, d_model=8, n_heads=2, head_hidden=8, physics=physics, input_scale_v=(1.2, 1.2))
    teacher = Teacher(cfg)
    feat = torch.randn(3, 4, 8)
    static = teacher.readout.static_current(feat, torch.randn(3, 4, 2))
    assert torch.all(static[..., 0] == 0) and torch.all(static[..., 1].abs() > 0)


def test_bjt_junction_head_makes_log_current_affine_in_v_be():
    """BJT students (v_be_index set, as for_dataset does) add exp(e.u + f) to the static currents, initialised to the
    ideal junction law: I / i_scale = exp((V_BE - v_scale) / V_T) / 10; files without the index have no head."""
    from psixlstm.models.students import THERMAL_VOLTAGE_V

    physics = DevicePhysics.for_dataset("bjt", ["v_be", "v_ce"], ["i_b", "i_c"])
    assert physics.v_be_index == 0
    cfg = StudentConfig("clustered", 2, 2, [1e-9, 1e-7], physics=physics, input_scale_v=(0.75, 5.0), t_scale_s=1e-9)
    s = build_student(cfg).double()
    with torch.no_grad():
        s.readout.static_out.weight.zero_()
        s.readout.static_out.bias.zero_()
        v_be = torch.linspace(0.4, 0.75, 8, dtype=torch.float64)
        u = torch.stack([v_be / 0.75, torch.full_like(v_be, 0.4)], -1)
        i = s.readout.static(torch.zeros(8, s.n_states, dtype=torch.float64), u)
    expected = torch.exp((v_be - 0.75) / THERMAL_VOLTAGE_V) / 10
    torch.testing.assert_close(i, expected[:, None].expand(8, 2), rtol=1e-6, atol=0)  # float32 weights
    assert (
        build_student(StudentConfig("clustered", 2, 2, [1e-9], physics=DevicePhysics("bjt"))).readout.junction is None
    )


@pytest.mark.parametrize("kind", ["clustered", "lowrank"])
@pytest.mark.parametrize("device", ["mosfet", "bjt"])
def test_terminal_students_start_at_their_steady_state_with_exact_gradients(kind, device):
    """MOSFET/BJT runs start at x* = g(x*, u0) (their SPICE truth starts at its operating point), to 1e-12, with no
    charge current there; gradients through the start are the exact ones (gradcheck); memristors start at 0."""
    from psixlstm.verification import steady_state

    physics = {
        "mosfet": DevicePhysics("mosfet", v_ds_index=1, v_gs_index=0, i_d_index=1, i_g_index=0),
        "bjt": DevicePhysics("bjt", v_be_index=0),
    }[device]
    torch.manual_seed(1)
    cfg = StudentConfig(kind=kind, n_in=2, n_out=2, tau_s=[2e-9, 2e-7], states_per_cluster=2, drive_hidden=4,
                        rank=2, physics=physics, t_scale_s=1e-9)  # fmt: skip
    s = build_student(cfg).double()
    with torch.no_grad():
        for p in s.parameters():
            p.add_(0.3 * torch.randn_like(p))
    u0 = torch.tensor([[0.3, 0.7], [-0.5, 1.0], [0.0, 0.0]], dtype=torch.float64)
    with torch.no_grad():
        x0 = s.initial_state(u0)
        assert torch.max(torch.abs(x0 - torch.as_tensor(steady_state(s, u0.numpy())))) <= 1e-11
        assert torch.max(torch.abs(x0)) > 0.1
        u = u0[:, None].repeat(1, 6, 1)
        out = s(u, torch.full((3, 6), 1e-9, dtype=torch.float64), backward_euler=torch.ones(3, 6, dtype=torch.float64))
        assert torch.max(torch.abs(out.hidden - x0[:, None])) <= 1e-11  # at rest: constant input, no start-up
        assert torch.max(torch.abs(out.y - out.y[:, :1])) <= 1e-11  # and no charge current at any step
    names = [n for n, _ in s.named_parameters()]
    values = tuple(p.detach().clone().requires_grad_() for p in s.parameters())

    def start(*v):
        return torch.func.functional_call(_Start(s), {f"s.{n}": x for n, x in zip(names, v, strict=True)}, (u0,))

    assert torch.autograd.gradcheck(start, values, eps=1e-6, atol=1e-6)
    mem = _student(kind)
    assert torch.equal(mem.initial_state(torch.ones(2, 1, dtype=torch.float64)), torch.zeros(2, mem.n_states).double())


class _Start(torch.nn.Module):
    def __init__(self, s):
        super().__init__()
        self.s = s

    def forward(self, u0):
        return self.s.initial_state(u0)
