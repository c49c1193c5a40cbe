"""Compact continuous-time students, SPICE-deployable by construction.

A student is an ODE on a few states plus a readout, written with the layer kinds a Verilog-A emitter can unroll
(linear maps, tanh, bounded exp):

    tau_j dx_j/dt = -x_j + g_j(x, u)              states: Verilog-A internal nodes with ddt()
    I = readout(x, u)                              physics structure as in the teacher's readout

and it is trained through the discretisation a SPICE simulator applies: trapezoidal on the step grid (backward
Euler on a step flagged as following a breakpoint), each implicit step solved by Newton's method to convergence,
as SPICE does, with gradients from the implicit function theorem. The same integration replays a SPICE run in the
verification stage.

- ClusteredTauStudent: states in K clusters; each cluster shares one learned time constant tau_k (seconds, tied in
  the forward pass, initialised from discovery); drive g = W2 tanh(W1 [x; u] + b1) + b2. For a memristor the drive
  is made to vanish at V = 0 (g(x, u) - g(x, 0)), so rests only relax the states.
- LowRankStudent: the teacher's mLSTM path at rank r: a r x r matrix memory M and normaliser n as states,
  tau_i dM_i/dt = -M_i + i(u) v_i(u) k(u)^T, tau_i dn_i/dt = -n_i + i(u) k_i(u) (row i relaxes with the discovered
  time constant i mod K), read out through h = M q / sqrt((n.q)^2 + 1).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numba
import numpy as np
import torch
from torch import Tensor, nn

from ..physics import DevicePhysics, static_structure
from .base import ModelOutput, SequenceModel

EXP_ARG_MAX = 10.0  # the largest exponent of `exp_limited` (gates, log-conductances, junction laws), as exported


def exp_limited(z: Tensor) -> Tensor:
    """exp(min(z, EXP_ARG_MAX)): cannot overflow for any input voltage (Verilog-A: `export.veriloga._exp_limited`)."""
    return torch.exp(torch.clamp(z, max=EXP_ARG_MAX))


@dataclass
class StudentConfig:
    kind: str  # "clustered" or "lowrank"
    n_in: int
    n_out: int
    tau_s: list[float]  # initial time constants (one per cluster / per memory head)
    physics: DevicePhysics = field(default_factory=lambda: DevicePhysics("generic"))
    states_per_cluster: int = 2  # clustered
    drive_hidden: int = 8  # clustered: width of the drive layer
    rank: int = 2  # lowrank: memory is rank x rank
    readout_hidden: int = 8  # MOSFET/BJT static and charge readouts
    # memristor: powers s, s^2, ..., s^order of s = tanh(u) (or of u itself, without squash) in the log-conductance.
    # Order 4, not 2: for I = g(x) sinh(V / v_nl), the best log-conductance affine in the true states plus u, u^2
    # leaves 2.4 % NRMSE on the three-tau memristor's programs; tanh(u) up to ^4 leaves 0.7 %. The squash keeps it
    # bounded beyond the training range |u| <= 1: raw powers sent a student's current to 59x the range under a 2x
    # impulse (the stress test); exp(sum d_p tanh(u)^p) cannot grow by more than exp(sum |d_p|)
    log_conductance_order: int = 4
    log_conductance_squash: bool = True
    input_scale_v: tuple[float, ...] = (1.0,)
    t_scale_s: float = 1e-6
    # s: no time constant below it (the data's finest step: faster ones are not identifiable from the data and only
    # make the ODE stiff, which trapezoidal SPICE steps leave ringing)
    tau_floor_s: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in ("clustered", "lowrank"):
            raise ValueError(f"student kind must be 'clustered' or 'lowrank', got {self.kind!r}")
        if not self.tau_s or any(t <= 0 for t in self.tau_s):
            raise ValueError(f"tau_s must be positive seconds, got {self.tau_s}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> StudentConfig:
        d = dict(d)
        d.pop("newton_iterations", None)  # files before the converged step carried a fixed iteration count
        d.setdefault("log_conductance_order", 2)  # files before the field had u and u^2
        d.setdefault("log_conductance_squash", False)  # ... and raw powers of u
        d["physics"] = DevicePhysics(**d["physics"])
        d["input_scale_v"] = tuple(d["input_scale_v"])
        return cls(**d)


class StudentReadout(nn.Module):
    """Currents from states and inputs. Memristor: I = u exp(min(c.x + d1 s + ... + dp s^p + e, 10)) with
    s = tanh(u) (p the log_conductance_order): the log-conductance is affine in the states (the filament/gap form of
    compact memristor models, where the conductance depends exponentially on the state), pinched and passive.
    MOSFET/BJT: static W tanh(.) (BJT: plus `junction_head`) plus dQ/dt of a charge affine in the states and inputs."""

    def __init__(self, cfg: StudentConfig, n_states: int):
        super().__init__()
        self.cfg = cfg
        kind = cfg.physics.kind
        if kind == "memristor":
            self.g_state = nn.Linear(n_states, cfg.n_out)
            self.g_input = nn.Linear(cfg.log_conductance_order * cfg.n_in, cfg.n_out, bias=False)
            self.charge = None
        else:
            self.static_in = nn.Linear(n_states + cfg.n_in, cfg.readout_hidden)
            self.static_out = nn.Linear(cfg.readout_hidden, cfg.n_out)
            self.charge = nn.Linear(n_states + cfg.n_in, cfg.n_out) if kind in ("mosfet", "bjt") else None
            self.junction = None
            if kind == "bjt" and cfg.physics.v_be_index is not None:
                self.junction = junction_head(cfg)

    def static(self, x: Tensor, u: Tensor) -> Tensor:
        if self.cfg.physics.kind == "memristor":  # log-conductance affine in the states
            s = torch.tanh(u) if self.cfg.log_conductance_squash else u
            powers = torch.cat([s**p for p in range(1, self.cfg.log_conductance_order + 1)], -1)
            return u * exp_limited(self.g_state(x) + self.g_input(powers))
        s = self.static_out(torch.tanh(self.static_in(torch.cat([x, u], -1))))
        if self.junction is not None:  # BJT: plus exp(affine in u), the junction law
            s = s + exp_limited(self.junction(u))
        return static_structure(self.cfg.physics, s, u)

    def charge_of(self, x: Tensor, u: Tensor) -> Tensor | None:
        return None if self.charge is None else self.charge(torch.cat([x, u], -1))


THERMAL_VOLTAGE_V = 0.025852  # kT/q at 300 K


def junction_head(cfg: StudentConfig) -> nn.Linear:
    """BJT static currents: besides the tanh layer, exp(min(e.u + f, 10)) per terminal, a log-current affine in the
    terminal voltages (the junction law I = I_s exp(V_BE / V_T) of Ebers-Moll / Gummel-Poon, ideality and Early slope
    learned). A tanh layer of 8 units cannot follow I_C over decades of V_BE: the trained BJT student's I_C was nearly
    linear in V_BE (1-8 mA from 0.5 to 0.72 V where Gummel-Poon rises 3.6 uA -> 16 mA). Initialised ideal in V_BE,
    at 1/10 of the current scale at V_BE = v_scale: I / i_scale = exp((V_BE - v_scale) / V_T) / 10."""
    head = nn.Linear(cfg.n_in, cfg.n_out)
    k = cfg.physics.v_be_index
    slope = cfg.input_scale_v[k] / THERMAL_VOLTAGE_V  # per normalised unit of V_BE
    with torch.no_grad():
        head.weight.zero_()
        head.weight[:, k] = slope
        head.bias.fill_(-slope - math.log(10.0))
    return head


def backward_euler_steps(t_s: np.ndarray, breakpoints_s: np.ndarray) -> np.ndarray:
    """(N,) bool: True at sample k when the step (t_{k-1}, t_k] is the first one or starts at a breakpoint, the
    steps a SPICE simulator takes with backward Euler (trapezoidal elsewhere). Grid points match breakpoints to
    1e-9 relative (SPICE prints times with rounding)."""
    t = np.asarray(t_s, float)
    bps = np.asarray(breakpoints_s, float)
    flags = np.zeros(t.size, bool)
    flags[1:2] = True
    if bps.size:
        right = np.minimum(np.searchsorted(t, bps), t.size - 1)
        left = np.maximum(right - 1, 0)
        k = np.where(np.abs(t[left] - bps) < np.abs(t[right] - bps), left, right)  # nearest grid point
        hit = (k < t.size - 1) & (np.abs(t[k] - bps) <= 1e-15 + 1e-9 * np.abs(bps))
        flags[k[hit] + 1] = True
    return flags


def spice_charge_current(
    q: Tensor, q_prev: Tensor | None, i_prev: Tensor | None, dt: Tensor, backward_euler: Tensor, t_scale_s: float
) -> tuple[Tensor, Tensor, Tensor]:
    """dQ/dt as a SPICE simulator forms ddt(Q): per step h, i_k = ((q_k - q_{k-1}) / h - (1 - theta) i_{k-1}) / theta
    with theta = 1/2 (trapezoidal) or 1 (backward Euler where `backward_euler` is 1), per t_scale_s. q (B, T, n);
    before the first step q_prev = q[:, 0] and i_prev = 0 (the operating point). Returns (i, last q, last i)."""
    q_before = q[:, 0] if q_prev is None else q_prev
    i_before = torch.zeros_like(q_before) if i_prev is None else i_prev
    theta = 0.5 + 0.5 * backward_euler
    h = dt / t_scale_s
    out = []
    for t in range(q.shape[1]):
        th = theta[:, t, None]
        i_before = ((q[:, t] - q_before) / h[:, t, None] - (1 - th) * i_before) / th
        q_before = q[:, t]
        out.append(i_before)
    return torch.stack(out, 1), q_before, i_before


def linear_steps(x: Tensor, g: Tensor, h: Tensor, theta: Tensor, inv_tau: Tensor) -> Tensor:
    """The implicit steps of tau dx/dt = -x + g(u) (drive independent of x) in closed form, all steps at once:
    x_t = decay_t x_(t-1) + gain_t with decay = (1 - (1 - theta) h / tau) / (1 + theta h / tau) and
    gain = h / tau (theta g_t + (1 - theta) g_(t-1)) / (1 + theta h / tau).
    x (B, N), g (B, T + 1, N) drives at the step ends, h, theta (B, T, 1) -> states (B, T, N)."""
    a = h * inv_tau
    decay = (1 - (1 - theta) * a) / (1 + theta * a)
    gain = a * (theta * g[:, 1:] + (1 - theta) * g[:, :-1]) / (1 + theta * a)
    return _DiagonalRecurrence.apply(decay, gain, x)


class _DiagonalRecurrence(torch.autograd.Function):
    """x_t = decay_t * x_(t-1) + gain_t (elementwise) as a compiled loop, with its reverse loop."""

    @staticmethod
    def forward(ctx, decay, gain, x0):
        xs = np.empty(decay.shape)
        _diagonal_forward(_f64(decay), _f64(gain), _f64(x0), xs)
        ctx.save_for_backward(decay, x0)
        ctx.xs = xs
        return torch.from_numpy(xs).to(decay.dtype)

    @staticmethod
    def backward(ctx, d_xs):
        decay, x0 = ctx.saved_tensors
        d_decay, d_gain, d_x0 = np.empty(decay.shape), np.empty(decay.shape), np.empty(x0.shape)
        _diagonal_backward(_f64(d_xs), _f64(decay), _f64(x0), ctx.xs, d_decay, d_gain, d_x0)
        return tuple(torch.from_numpy(g).to(decay.dtype) for g in (d_decay, d_gain, d_x0))


@numba.njit(cache=True, nogil=True)
def _diagonal_forward(decay, gain, x0, xs):
    for b in range(decay.shape[0]):
        for j in range(decay.shape[2]):
            x = x0[b, j]
            for t in range(decay.shape[1]):
                x = decay[b, t, j] * x + gain[b, t, j]
                xs[b, t, j] = x


@numba.njit(cache=True, nogil=True)
def _diagonal_backward(d_xs, decay, x0, xs, d_decay, d_gain, d_x0):
    for b in range(decay.shape[0]):
        for j in range(decay.shape[2]):
            carry = 0.0
            for t in range(decay.shape[1] - 1, -1, -1):
                g = d_xs[b, t, j] + carry
                d_gain[b, t, j] = g
                d_decay[b, t, j] = g * (xs[b, t - 1, j] if t > 0 else x0[b, j])
                carry = g * decay[b, t, j]
            d_x0[b, j] = carry


class ContinuousStudent(SequenceModel):
    """Shared machinery: implicit integration of tau dx/dt = -x + g(x, u) and the readout."""

    n_states: int
    integrates_like_spice = True  # the training loop hands it the backward-Euler step flags

    def __init__(self, cfg: StudentConfig) -> None:
        super().__init__()
        self.cfg = cfg

    def _init_log_tau(self) -> nn.Parameter:
        """log(tau - tau_floor) of the initial time constants (kept above 1e-3 tau)."""
        tau = torch.tensor(self.cfg.tau_s, dtype=torch.float64)
        return nn.Parameter(torch.log(torch.clamp(tau - self.cfg.tau_floor_s, min=1e-3 * tau)).float())

    def cluster_tau(self) -> Tensor:
        """The learned time constants (s), one per cluster / discovered tau: tau_floor + exp(log_tau)."""
        return self.cfg.tau_floor_s + torch.exp(self.log_tau)

    # ---- to be defined by the two kinds ----
    def tau_per_state(self) -> Tensor:
        raise NotImplementedError

    def drive(self, x: Tensor | None, u: Tensor) -> Tensor:
        """g(x, u)."""
        raise NotImplementedError

    def integrate(self, x: Tensor, u: Tensor, dt: Tensor, backward_euler: Tensor) -> Tensor:
        """States after each step (B, T, N) from x (B, N) at the input u[:, 0]: step t (length dt[:, t], s) goes to
        the input u[:, t + 1] (u is (B, T + 1, n_in)); trapezoidal, or backward Euler where `backward_euler` is 1."""
        raise NotImplementedError

    def readout_features(self, x: Tensor) -> Tensor:
        return x

    # ---- shared ----
    def rate(self, x: Tensor, u: Tensor) -> Tensor:
        """dx/dt (1/s)."""
        return (self.drive(x, u) - x) / self.tau_per_state()

    def step(self, x: Tensor, u0: Tensor, u1: Tensor, h: Tensor, backward_euler: Tensor) -> Tensor:
        """One implicit step of length h (B,) s from (x, u0) to the input u1: it solves
        x1 - x - h (theta F(x1, u1) + (1 - theta) F(x, u0)) = 0 with theta = 1/2 (trapezoidal) or 1."""
        return self.integrate(x, torch.stack([u0, u1], 1), h[:, None], backward_euler[:, None])[:, 0]

    def initial_state(self, u0: Tensor) -> Tensor:
        """The states (B, N) a run starts from at its first input u0 (B, n_in). MOSFET/BJT (STEADY_START_KINDS): the
        steady state x* = g(x*, u0), the operating point their SPICE ground truth starts from (and the exported
        module's transient solves); from x = 0 they made a start-up transient at their fastest time constants that
        SPICE's first, not error-controlled step resolved poorly. Computed as one backward-Euler step from 0 at the
        constant input u0 of STEADY_START_STEP x the largest tau: it solves x - 0 = (h / tau) (g(x, u0) - x), so
        |x - g(x, u0)| = |x| tau / h <= 1e-12 |x|, with the step's exact (implicit-function) gradients. Memristor and
        generic students: 0 (a memristor's drive vanishes at V = 0, where its truth starts)."""
        x = u0.new_zeros(u0.shape[0], self.n_states)
        if self.cfg.physics.kind not in STEADY_START_KINDS:
            return x
        ones = u0.new_ones(u0.shape[0])
        h = STEADY_START_STEP * self.tau_per_state().detach().max().to(u0.dtype) * ones
        return self.step(x, u0, u0, h, ones)

    def forward(self, u: Tensor, dt: Tensor, state=None, backward_euler: Tensor | None = None) -> ModelOutput:
        """u (B, T, n_in), dt (B, T) s (dt[:, t] is the step from t-1 to t); state = (x, u_prev, q_prev, i_q_prev).
        Without a state the run starts at `initial_state(u[:, 0])` with no charge current (an operating point)."""
        b, t_len, _ = u.shape
        if state is None:
            x, u_prev, q_prev, i_q_prev = self.initial_state(u[:, 0]), u[:, 0], None, None
        else:
            x, u_prev, q_prev, i_q_prev = state
        be = backward_euler if backward_euler is not None else u.new_zeros(b, t_len)
        xs = self.integrate(x, torch.cat([u_prev[:, None], u], 1), dt, be)
        y, q_prev, i_q_prev = self.currents(xs, u, dt, be, q_prev, i_q_prev)
        return ModelOutput(y=y, state=(xs[:, -1], u[:, -1], q_prev, i_q_prev), hidden=xs)

    def currents(self, xs: Tensor, u: Tensor, dt: Tensor, be: Tensor, q_prev=None, i_q_prev=None):
        """Terminal currents (B, T, n_out) from a state trajectory xs (B, T, N): static readout plus the charge
        current formed like SPICE's ddt(Q). Returns (currents, last charge, last charge current)."""
        feats = self.readout_features(xs)
        y = self.readout.static(feats, u)
        q = self.readout.charge_of(feats, u)
        if q is None:
            return y, None, None
        i_charge, q_prev, i_q_prev = spice_charge_current(q, q_prev, i_q_prev, dt, be, self.cfg.t_scale_s)
        return y + i_charge, q_prev, i_q_prev

    def time_constants_s(self) -> list[float]:
        return [float(t) for t in self.tau_per_state().detach()]


class ClusteredTauStudent(ContinuousStudent):
    def __init__(self, cfg: StudentConfig) -> None:
        super().__init__(cfg)
        k, m = len(cfg.tau_s), cfg.states_per_cluster
        self.n_states = k * m
        self.log_tau = self._init_log_tau()  # one per cluster
        self.register_buffer("cluster_of_state", torch.arange(k).repeat_interleave(m))
        self.w1 = nn.Linear(self.n_states + cfg.n_in, cfg.drive_hidden)
        self.w2 = nn.Linear(cfg.drive_hidden, self.n_states)
        self.readout = StudentReadout(cfg, self.n_states)

    def tau_per_state(self) -> Tensor:
        return self.cluster_tau()[self.cluster_of_state]  # tied within a cluster

    def drive_weights(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(W1, b1, W2, b2) of g = W2 tanh(W1 [x; u] + b1) + b2 as used (and exported): the state columns of W1 are
        scaled so that |W2|_2 |W1_x|_2 <= LIPSCHITZ_MAX. Then |dg/dx| < 1, the ODE is contracting and every implicit
        step (any h, trapezoidal or backward Euler) has exactly one solution and a nonsingular Newton Jacobian, in
        training and in SPICE alike. Free weights drifted into folds where the solution jumped and gradients
        overflowed."""
        n = self.n_states
        w1x, w1u = self.w1.weight[:, :n], self.w1.weight[:, n:]
        gain = torch.linalg.matrix_norm(self.w2.weight, 2) * torch.linalg.matrix_norm(w1x, 2)
        scale = torch.clamp(LIPSCHITZ_MAX / gain, max=1.0)
        return torch.cat([w1x * scale, w1u], 1), self.w1.bias, self.w2.weight, self.w2.bias

    def drive(self, x: Tensor, u: Tensor) -> Tensor:
        w1, b1, w2, b2 = self.drive_weights()
        g = torch.tanh(torch.cat([x, u], -1) @ w1.T + b1) @ w2.T + b2
        if self.cfg.physics.kind == "memristor":  # no drive at V = 0: rests only relax the states
            g = g - torch.tanh(torch.cat([x, torch.zeros_like(u)], -1) @ w1.T + b1) @ w2.T - b2
        return g

    def integrate(self, x: Tensor, u: Tensor, dt: Tensor, backward_euler: Tensor) -> Tensor:
        theta = 0.5 + 0.5 * backward_euler
        return _ClusteredScan.apply(
            x, *self.drive_weights(), 1.0 / self.tau_per_state(), u, dt, theta, self.cfg.physics.kind == "memristor"
        )

    @property
    def cluster_tau_s(self) -> list[float]:
        return [float(t) for t in self.cluster_tau().detach()]


class LowRankStudent(ContinuousStudent):
    def __init__(self, cfg: StudentConfig) -> None:
        super().__init__(cfg)
        r = cfg.rank
        self.n_states = r * r + r
        k = len(cfg.tau_s)
        self.log_tau = self._init_log_tau()
        # memory row i and normaliser entry i relax with time constant i mod K (the discovered clusters)
        rows = torch.cat([torch.arange(r).repeat_interleave(r), torch.arange(r)])
        self.register_buffer("tau_index", rows % k)
        self.embed = nn.Linear(cfg.n_in, cfg.drive_hidden)
        self.kvi = nn.Linear(cfg.drive_hidden, 2 * r + 1)  # k, v (rank r each) and the input gate
        self.q = nn.Parameter(torch.randn(r) / math.sqrt(r))
        self.readout = StudentReadout(cfg, r)

    def tau_per_state(self) -> Tensor:
        return self.cluster_tau()[self.tau_index]

    def drive(self, x: Tensor | None, u: Tensor) -> Tensor:
        """Independent of the states (a linear ODE), so every implicit step is solved exactly in closed form."""
        r = self.cfg.rank
        e = torch.tanh(self.embed(u))
        kvi = self.kvi(e)
        k, v, i = kvi[..., :r], kvi[..., r : 2 * r], exp_limited(kvi[..., 2 * r :])
        if self.cfg.physics.kind == "memristor":
            e0 = torch.tanh(self.embed(torch.zeros_like(u)))
            i = i - exp_limited(self.kvi(e0)[..., 2 * r :])  # no drive at V = 0
        mem = i[..., None] * (v[..., :, None] * k[..., None, :])
        return torch.cat([mem.flatten(-2), i * k], -1)

    def integrate(self, x: Tensor, u: Tensor, dt: Tensor, backward_euler: Tensor) -> Tensor:
        theta = (0.5 + 0.5 * backward_euler)[..., None]
        return linear_steps(x, self.drive(None, u), dt[..., None], theta, 1.0 / self.tau_per_state())

    def readout_features(self, x: Tensor) -> Tensor:
        r = self.cfg.rank
        mem = x[..., : r * r].unflatten(-1, (r, r))
        n = x[..., r * r :]
        return (mem @ self.q) / torch.sqrt((n @ self.q)[..., None] ** 2 + 1.0)


STEADY_START_KINDS = ("mosfet", "bjt")  # students whose runs start at the steady state (`initial_state`)
STEADY_START_STEP = 1e12  # x the largest time constant: the backward-Euler step that gives the steady state
LIPSCHITZ_MAX = 0.95  # bound on |dg/dx|_2 of the clustered student's drive (see drive_weights)
NEWTON_TOL = 1e-13  # absolute, on the state update (states are O(1)); the step is solved in float64
NEWTON_MAX_ITERATIONS = 50
CHORD_REFRESH_RATIO = 0.25  # an update larger than this x the one before refreshes the step matrix (_forward_sequence)


class _ClusteredScan(torch.autograd.Function):
    """The clustered student's implicit steps over a sequence (`ClusteredTauStudent.integrate`), as compiled loops.

    Forward: Newton's method to convergence on every step, in float64. Backward: the exact adjoint of the converged
    steps (implicit function theorem), so training sees the solution SPICE computes, not a truncated iteration.
    As per-step torch ops the Newton loop cost ~5 ms per step (batch 16); compiled it is a few microseconds."""

    @staticmethod
    def forward(ctx, x0, w1, b1, w2, b2, inv_tau, u, dt, theta, rest_drive: bool):
        arrays = [_f64(a) for a in (x0, w1, b1, w2, b2, inv_tau, u, dt, theta)]
        xs = np.empty((x0.shape[0], dt.shape[1] + 1, x0.shape[1]))
        _clustered_forward(*arrays, rest_drive, xs)
        ctx.arrays, ctx.xs, ctx.rest_drive = arrays, xs, rest_drive
        return torch.from_numpy(xs[:, 1:]).to(x0.dtype)

    @staticmethod
    def backward(ctx, d_xs):
        x0, w1, b1, w2, b2, inv_tau, u, dt, theta = ctx.arrays
        grads = [np.zeros_like(a) for a in (x0, w1, b1, w2, b2, inv_tau)]
        _clustered_backward(_f64(d_xs), w1, b1, w2, b2, inv_tau, u, dt, theta, ctx.rest_drive, ctx.xs, *grads)
        out = [torch.from_numpy(g).to(d_xs.dtype) for g in grads]
        return (*out, None, None, None, None)


def _f64(x: Tensor) -> np.ndarray:
    return x.detach().to(torch.float64).contiguous().numpy()


@numba.njit(cache=True, nogil=True)
def _drive(x, u, w1, b1, w2, b2, inv_tau, rest_drive, a, a0, g, slope, jac, with_jacobian):
    """At (x, u): tanh activations a (and a0 at u = 0), g = W2 a + b2 (or W2 (a - a0) with `rest_drive`), and,
    `with_jacobian`, jac = dF/dx of the rate F = (g - x) / tau (slope: work array of the tanh derivatives)."""
    n_hidden, n = w1.shape[0], x.size
    for k in range(n_hidden):
        z0 = b1[k]
        for j in range(n):
            z0 += w1[k, j] * x[j]
        z = z0
        for j in range(u.size):
            z += w1[k, n + j] * u[j]
        a[k], a0[k] = math.tanh(z), math.tanh(z0)
        slope[k] = 1.0 - a[k] * a[k] - ((1.0 - a0[k] * a0[k]) if rest_drive else 0.0)
    for i in range(n):
        acc = 0.0 if rest_drive else b2[i]
        for k in range(n_hidden):
            acc += w2[i, k] * (a[k] - a0[k] if rest_drive else a[k])
        g[i] = acc
    if with_jacobian:
        for i in range(n):
            for j in range(n):
                d = 0.0
                for k in range(n_hidden):
                    d += w2[i, k] * slope[k] * w1[k, j]
                jac[i, j] = inv_tau[i] * (d - (1.0 if i == j else 0.0))


@numba.njit(cache=True, nogil=True)
def _factor_step_matrix(jac, h_theta, transpose, m, pivots):
    """LU factors of I - h_theta jac (or of its transpose) in m, by Gaussian elimination with partial pivoting (row
    swaps in pivots): for `_solve_factored`."""
    n = m.shape[0]
    for i in range(n):
        for j in range(n):
            m[i, j] = (1.0 if i == j else 0.0) - h_theta * (jac[j, i] if transpose else jac[i, j])
    for col in range(n):
        p = col
        for r in range(col + 1, n):
            if abs(m[r, col]) > abs(m[p, col]):
                p = r
        pivots[col] = p
        if p != col:
            for j in range(n):
                m[col, j], m[p, j] = m[p, j], m[col, j]
        for r in range(col + 1, n):
            f = m[r, col] / m[col, col]
            m[r, col] = f
            for j in range(col + 1, n):
                m[r, j] -= f * m[col, j]


@numba.njit(cache=True, nogil=True)
def _solve_factored(m, pivots, y):
    """Solve with the factors of `_factor_step_matrix`, in place of y."""
    n = y.size
    for col in range(n):
        p = pivots[col]
        if p != col:
            y[col], y[p] = y[p], y[col]
        for r in range(col + 1, n):
            y[r] -= m[r, col] * y[col]
    for r in range(n - 1, -1, -1):
        acc = y[r]
        for j in range(r + 1, n):
            acc -= m[r, j] * y[j]
        y[r] = acc / m[r, r]


@numba.njit(cache=True, nogil=True)
def _step_residual(x1, x, g1, inv_tau, f0, h, th, out):
    """out = x1 - x - h (th F(x1) + (1 - th) F(x)), F(x1) = (g1 - x1) / tau, F(x) = f0; returns |out|_2."""
    total = 0.0
    for i in range(x1.size):
        r = x1[i] - x[i] - h * (th * (g1[i] - x1[i]) * inv_tau[i] + (1.0 - th) * f0[i])
        out[i] = r
        total += r * r
    return math.sqrt(total)


@numba.njit(cache=True, nogil=True)
def _clustered_forward(x0, w1, b1, w2, b2, inv_tau, u, dt, theta, rest_drive, xs):
    """xs (B, T + 1, N): x0 and the state after every step (`_forward_sequence` for each sequence)."""
    for b in range(x0.shape[0]):
        _forward_sequence(x0[b], w1, b1, w2, b2, inv_tau, u[b], dt[b], theta[b], rest_drive, xs[b])


@numba.njit(cache=True, nogil=True)
def _forward_sequence(x0, w1, b1, w2, b2, inv_tau, u, dt, theta, rest_drive, xs):
    """xs (T + 1, N): x0 and the state after every step of one sequence. Step t: r(x1) = x1 - x - h (th F(x1, u[t + 1])
    + (1 - th) F(x, u[t])) = 0, solved from the previous state (as SPICE starts from the last solution) by Newton
    updates with the step matrix I - h th dF/dx factored once at the start (a chord iteration: each update costs a
    drive and two triangular solves, not a Jacobian and a factorisation; the step matrix is refreshed where the
    updates shrink by less than CHORD_REFRESH_RATIO), each update halved until |r| decreases, until |dx| <
    NEWTON_TOL. It converges to the same solution as full Newton (to 1e-15 on a trained 12-state student) in half
    the time. An explicit-Euler start overshoots by h / tau on stiff steps. F(x, u[t]) is the previous step's last
    drive. Work arrays are allocated once per sequence: the step is a few hundred flops."""
    n, n_hidden = x0.size, w1.shape[0]
    a, a0, slope = np.empty(n_hidden), np.empty(n_hidden), np.empty(n_hidden)
    g, f0, x1, resid, delta, x_try = np.empty(n), np.empty(n), np.empty(n), np.empty(n), np.empty(n), np.empty(n)
    jac, m, pivots = np.empty((n, n)), np.empty((n, n)), np.empty(n, np.int64)
    xs[0] = x0
    _drive(x0, u[0], w1, b1, w2, b2, inv_tau, rest_drive, a, a0, g, slope, jac, False)
    for t in range(dt.size):
        h, th = dt[t], theta[t]
        x = xs[t]
        for i in range(n):  # g: the drive at (x, u[t]), from the step before
            f0[i] = (g[i] - x[i]) * inv_tau[i]
            x1[i] = x[i]
        _drive(x1, u[t + 1], w1, b1, w2, b2, inv_tau, rest_drive, a, a0, g, slope, jac, True)
        _factor_step_matrix(jac, h * th, False, m, pivots)
        size = _step_residual(x1, x, g, inv_tau, f0, h, th, resid)
        last = math.inf
        for _ in range(NEWTON_MAX_ITERATIONS):
            delta[:] = resid
            _solve_factored(m, pivots, delta)
            for _halving in range(30):
                for i in range(n):
                    x_try[i] = x1[i] - delta[i]
                _drive(x_try, u[t + 1], w1, b1, w2, b2, inv_tau, rest_drive, a, a0, g, slope, jac, False)
                size_try = _step_residual(x_try, x, g, inv_tau, f0, h, th, resid)
                if size_try <= size:
                    break
                for i in range(n):
                    delta[i] *= 0.5
            x1[:] = x_try
            size = size_try
            update = np.max(np.abs(delta))
            if not update >= NEWTON_TOL:  # converged (or NaN: nothing left to solve)
                break
            if update > CHORD_REFRESH_RATIO * last:  # slow: a full Newton update next
                _drive(x1, u[t + 1], w1, b1, w2, b2, inv_tau, rest_drive, a, a0, g, slope, jac, True)
                _factor_step_matrix(jac, h * th, False, m, pivots)
            last = update
        xs[t + 1] = x1


@numba.njit(cache=True, nogil=True)
def _rate_vjp(w, x, u, w1, w2, inv_tau, rest_drive, a, a0, g, d_w1, d_b1, d_w2, d_b2, d_inv_tau, d_x):
    """Accumulate w^T dF/d(params) at (x, u) (activations a, a0 and drive g already there); d_x = w^T dF/dx."""
    n, n_hidden = x.size, w1.shape[0]
    for i in range(n):
        d_inv_tau[i] += w[i] * (g[i] - x[i])
        d_x[i] = -w[i] * inv_tau[i]
        if not rest_drive:
            d_b2[i] += w[i] * inv_tau[i]
    for k in range(n_hidden):
        back = 0.0
        for i in range(n):
            wi = w[i] * inv_tau[i]
            back += w2[i, k] * wi
            d_w2[i, k] += wi * (a[k] - a0[k] if rest_drive else a[k])
        s = back * (1.0 - a[k] * a[k])
        s0 = back * (1.0 - a0[k] * a0[k]) if rest_drive else 0.0
        d_b1[k] += s - s0
        for j in range(n):
            d_w1[k, j] += (s - s0) * x[j]
            d_x[j] += (s - s0) * w1[k, j]
        for j in range(u.size):
            d_w1[k, n + j] += s * u[j]


@numba.njit(cache=True, nogil=True)
def _clustered_backward(
    d_xs, w1, b1, w2, b2, inv_tau, u, dt, theta, rest_drive, xs, d_x0, d_w1, d_b1, d_w2, d_b2, d_inv_tau
):
    """Adjoint of `_clustered_forward`: `_backward_sequence` for each sequence, accumulating the gradients."""
    for b in range(d_xs.shape[0]):
        _backward_sequence(d_xs[b], w1, b1, w2, b2, inv_tau, u[b], dt[b], theta[b], rest_drive, xs[b],
                           d_x0[b], d_w1, d_b1, d_w2, d_b2, d_inv_tau)  # fmt: skip


@numba.njit(cache=True, nogil=True)
def _backward_sequence(
    d_xs, w1, b1, w2, b2, inv_tau, u, dt, theta, rest_drive, xs, d_x0, d_w1, d_b1, d_w2, d_b2, d_inv_tau
):
    """Adjoint of `_forward_sequence`. For a converged step r(x1; x, p) = 0 with J = dr/dx1 = I - h th dF/dx(x1):
    lam = J^-T dL/dx1, then dL/dp += h th lam^T dF(x1)/dp + h (1 - th) lam^T dF(x)/dp and
    dL/dx = lam + h (1 - th) lam^T dF/dx(x). The drive at the start of step t is the one at the end of step t - 1:
    evaluated once, with its Jacobian, for both."""
    n, n_hidden = d_x0.size, w1.shape[0]
    a, a0, slope = np.empty(n_hidden), np.empty(n_hidden), np.empty(n_hidden)
    g, lam, w, d_x, carry = np.empty(n), np.empty(n), np.empty(n), np.empty(n), np.zeros(n)
    jac, m, pivots = np.empty((n, n)), np.empty((n, n)), np.empty(n, np.int64)
    n_steps = dt.size
    _drive(xs[n_steps], u[n_steps], w1, b1, w2, b2, inv_tau, rest_drive, a, a0, g, slope, jac, True)
    for t in range(n_steps - 1, -1, -1):
        h, th = dt[t], theta[t]
        x, x1 = xs[t], xs[t + 1]
        for i in range(n):
            lam[i] = d_xs[t, i] + carry[i]
        _factor_step_matrix(jac, h * th, True, m, pivots)
        _solve_factored(m, pivots, lam)
        for i in range(n):
            w[i] = h * th * lam[i]
        _rate_vjp(w, x1, u[t + 1], w1, w2, inv_tau, rest_drive, a, a0, g, d_w1, d_b1, d_w2, d_b2, d_inv_tau, d_x)
        _drive(x, u[t], w1, b1, w2, b2, inv_tau, rest_drive, a, a0, g, slope, jac, True)
        for i in range(n):
            w[i] = h * (1.0 - th) * lam[i]
        _rate_vjp(w, x, u[t], w1, w2, inv_tau, rest_drive, a, a0, g, d_w1, d_b1, d_w2, d_b2, d_inv_tau, d_x)
        for i in range(n):
            carry[i] = lam[i] + d_x[i]
    d_x0[:] = carry


def build_student(cfg: StudentConfig) -> ContinuousStudent:
    return ClusteredTauStudent(cfg) if cfg.kind == "clustered" else LowRankStudent(cfg)
