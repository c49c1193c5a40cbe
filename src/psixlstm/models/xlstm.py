"""sLSTM and mLSTM cells (Beck et al. 2024, as the NX-AI xlstm code implements them), made time-step aware.

Every step carries its own dt (seconds). The forget gate is a decay over that step with a time constant in
seconds, and the input gate is scaled by dt, so the cell state is a continuous-time weighted average of its
inputs and the same trained cell runs on any (non-uniform) time grid:

    tau_t = tau_ref * exp(f~_t)                        [s]    forget pre-activation f~ -> time constant
    log f_t = -dt_t / tau_t                                    (exponential gating)
    log i_t = i~_t + log(tau_t (1 - f_t) / dt_ref)             (exponential input gate, scaled by the step's
                                                               exact hold weight, ~dt for dt << tau)
    m_t = max(log f_t + m_{t-1}, log i_t)                      stabilizer:
    i' = exp(log i - m_t),  f' = exp(log f + m_{t-1} - m_t)

sLSTM:  c_t = f' c + i' z,  n_t = f' n + i',  h_t = o * c_t / n_t       (z = tanh, o = sigmoid; R block-diagonal)
mLSTM:  C_t = f' C + i' v k^T,  n_t = f' n + i' k,  h_t = o * (C_t q) / (max(|n_t^T q|, exp(-m_t)) + 1e-6)

Gating variants (h is invariant to the stabilizer m in all of them):
- "exp": the forget gate above (time constant in seconds), exponential input gate;
- "official": the NX-AI gates, log f = (dt/dt_ref) log sigmoid(f~) and exponential input gate (at dt = dt_ref this
  is exactly the official sLSTM/mLSTM recurrence, which the optional cross-check test uses);
- "sigmoid": sigmoid forget and sigmoid input gates, the baseline the exponential-gating claim is tested against.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numba
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

GATINGS = ("exp", "official", "sigmoid")
MLSTM_EPS = 1e-6  # added to the mLSTM normalizer, as in the official code


@dataclass
class CellConfig:
    d_in: int
    d_hidden: int
    n_heads: int = 4
    tau_min_s: float = 1e-7  # initial time constants are log-spaced over [tau_min_s, tau_max_s]
    tau_max_s: float = 1e-2
    dt_ref_s: float = 1e-6  # reference step of the input-gate scaling
    gating: str = "exp"  # "exp", "official" or "sigmoid"

    def __post_init__(self) -> None:
        if self.d_hidden % self.n_heads:
            raise ValueError(f"d_hidden={self.d_hidden} must be divisible by n_heads={self.n_heads}")
        if self.gating not in GATINGS:
            raise ValueError(f"gating must be one of {GATINGS}, got {self.gating!r}")
        if not 0 < self.tau_min_s < self.tau_max_s:
            raise ValueError(f"need 0 < tau_min_s < tau_max_s, got {self.tau_min_s}, {self.tau_max_s}")

    @property
    def tau_ref_s(self) -> float:
        return math.sqrt(self.tau_min_s * self.tau_max_s)


def forget_bias_init(cfg: CellConfig, n: int) -> Tensor:
    """Forget pre-activations giving time constants log-spaced over [tau_min_s, tau_max_s]."""
    tau = torch.exp(torch.linspace(math.log(cfg.tau_min_s), math.log(cfg.tau_max_s), n))
    if cfg.gating == "exp":
        return torch.log(tau / cfg.tau_ref_s)
    return -torch.log(torch.expm1(cfg.dt_ref_s / tau))  # sigmoid(f~) = exp(-dt_ref / tau)


def gate_logs(cfg: CellConfig, f_pre: Tensor, i_pre: Tensor, dt: Tensor) -> tuple[Tensor, Tensor]:
    """(log f, log i) for forget/input pre-activations and step dt (seconds), broadcastable shapes."""
    log_dt = torch.log(dt / cfg.dt_ref_s)
    if cfg.gating == "exp":
        decay = dt / (cfg.tau_ref_s * torch.exp(f_pre))  # dt / tau
        return -decay, i_pre + log_dt + zoh_log_gain(decay)
    log_f = (dt / cfg.dt_ref_s) * F.logsigmoid(f_pre)
    log_i = F.logsigmoid(i_pre) + log_dt if cfg.gating == "sigmoid" else i_pre + log_dt
    return log_f, log_i


def zoh_log_gain(decay: Tensor) -> Tensor:
    """log((1 - e^-a) / a) for a = dt / tau: the input weight of a step that makes the "exp" cell the exact
    (zero-order-hold) solution of dc/dt = -c / tau + (e^i~ / dt_ref) z over the step, so that the result does not
    depend on the sampling for inputs held over a step; -> 0 (plain dt scaling) for dt << tau."""
    a = decay.clamp(1e-12, 1e30)  # finite even where tau underflows to 0 (then f = 0 and the input alone counts)
    return torch.log(-torch.expm1(-a) / a)


def tie_input_to_forget(cfg: CellConfig, w_i: Tensor, b_i: Tensor, w_f: Tensor, b_f: Tensor) -> None:
    """Rate-consistent initialisation: i~ = -f~ + const, so that for small steps i = 1 - f and, with a settled
    normalizer (n = 1), every unit starts as the relaxation ODE tau(x) dc/dt = z - c of a physical state, its
    rate set by the input through tau. Training may untie them (in place, on the given weight and bias views)."""
    const = math.log(cfg.dt_ref_s / cfg.tau_ref_s) if cfg.gating == "exp" else 0.0
    w_i.copy_(-w_f)
    b_i.copy_(-b_f + const)


def forget_tau_s(cfg: CellConfig, f_pre: Tensor) -> Tensor:
    """Time constant (s) that a forget pre-activation encodes, independent of dt: tau = -dt / ln f."""
    if cfg.gating == "exp":
        return cfg.tau_ref_s * torch.exp(f_pre)
    return -cfg.dt_ref_s / F.logsigmoid(f_pre)


class SLSTMCell(nn.Module):
    """Scalar-memory LSTM with exponential gating, normalizer and stabilizer; recurrent matrices per head."""

    def __init__(self, cfg: CellConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d, h = cfg.d_hidden, cfg.n_heads
        self.dh = d // h
        self.W = nn.Linear(cfg.d_in, 4 * d)  # output laid out (head, gate z|i|f|o, unit)
        self.R = nn.Parameter(torch.randn(h, self.dh, 4 * self.dh) / math.sqrt(self.dh) * 0.5)
        with torch.no_grad():
            bias = torch.zeros(h, 4, self.dh)
            bias[:, 2] = forget_bias_init(cfg, d).view(h, self.dh)  # forget: log-spaced time constants
            self.W.bias.copy_(bias.reshape(-1))
            if cfg.gating != "official":
                w, b = self.W.weight.view(h, 4, self.dh, -1), self.W.bias.view(h, 4, self.dh)
                r = self.R.view(h, self.dh, 4, self.dh)
                tie_input_to_forget(cfg, w[:, 1], b[:, 1], w[:, 2], b[:, 2])
                r[:, :, 1].copy_(-r[:, :, 2])
            else:
                self.W.bias.view(h, 4, self.dh)[:, 1] = -1.0  # input gate

    def init_state(self, batch: int, device=None) -> tuple[Tensor, ...]:
        """h, c, n, m. The continuous-time gatings start at rest with a settled normalizer (c = 0, n = 1), so a
        unit's rate does not depend on how long it has run; "official" starts at zeros like the NX-AI code."""
        zeros = torch.zeros(batch, self.cfg.d_hidden, device=device)
        n0 = zeros.clone() if self.cfg.gating == "official" else torch.ones_like(zeros)
        return zeros, zeros.clone(), n0, zeros.clone()

    def forward(self, x: Tensor, dt: Tensor, state: tuple[Tensor, ...] | None = None):
        """x (B, T, d_in), dt (B, T) seconds -> hidden (B, T, d), final state, forget pre-activations (B, T, d)."""
        b, t_len, _ = x.shape
        d, heads, dh = self.cfg.d_hidden, self.cfg.n_heads, self.dh
        h, c, n, m = state if state is not None else self.init_state(b, x.device)
        # input contributions of all steps at once, gate-major: (T, B, 4, d) with d laid out head by head
        wx = self.W(x).view(b, t_len, heads, 4, dh).permute(1, 0, 3, 2, 4).reshape(t_len, b, 4, d)
        hs, fs, h, c, n, m = _SLSTMScan.apply(wx, self.R, dt.transpose(0, 1).contiguous(), h, c, n, m, self.cfg)
        return hs.transpose(0, 1), (h, c, n, m), fs.transpose(0, 1)


class _SLSTMScan(torch.autograd.Function):
    """The sLSTM recurrence over all steps with a hand-written backward (BPTT), both as compiled loops.

    Per step the recurrence is a few hundred multiply-adds: as torch ops it spent ~0.3 ms per step on dispatch and
    autograd ~7x the forward, so the loops run in numba (`_slstm_forward`, `_slstm_backward`) on the tensors' own
    memory. The stabilizer m is treated as a constant: h does not depend on it, so the gradients are exact (checked
    against autograd over the same equations in the tests)."""

    @staticmethod
    def forward(ctx, wx, R, dt, h, c, n, m, cfg: CellConfig):
        t_len, b, _, d = wx.shape
        hs, cs, ns = (wx.new_empty(t_len + 1, b, d) for _ in range(3))
        hs[0], cs[0], ns[0] = h, c, n
        acts = wx.new_empty(t_len, 7, b, d)  # z, o, i', f', dlogf/dpf, dlogi/dpi, dlogi/dpf
        fs, m_out = wx.new_empty(t_len, b, d), m.detach().clone()
        _slstm_forward(
            _np(wx), _np(R), _np(dt), _GATING_CODE[cfg.gating], cfg.tau_ref_s, cfg.dt_ref_s,
            hs.numpy(), cs.numpy(), ns.numpy(), m_out.numpy(), acts.numpy(), fs.numpy(),
        )  # fmt: skip
        ctx.save_for_backward(R, hs, cs, ns, acts)
        ctx.mark_non_differentiable(fs, m_out)
        return hs[1:], fs, hs[-1].clone(), cs[-1].clone(), ns[-1].clone(), m_out

    @staticmethod
    def backward(ctx, d_hs, d_fs, d_h, d_c, d_n, d_m):
        R, hs, cs, ns, acts = ctx.saved_tensors
        t_len, b, d = d_hs.shape
        dh_next, dc_next, dn_next = (
            g.detach().clone() if g is not None else hs.new_zeros(b, d) for g in (d_h, d_c, d_n)
        )
        d_wx, d_R = hs.new_empty(t_len, b, 4, d), torch.zeros_like(R)
        _slstm_backward(
            _np(d_hs), _np(R), hs.numpy(), cs.numpy(), ns.numpy(), acts.numpy(),
            dh_next.numpy(), dc_next.numpy(), dn_next.numpy(), d_wx.numpy(), d_R.numpy(),
        )  # fmt: skip
        return d_wx, d_R, None, dh_next, dc_next, dn_next, None, None


_GATING_CODE = {"exp": 0, "official": 1, "sigmoid": 2}


def _np(x: Tensor) -> np.ndarray:
    return x.detach().contiguous().numpy()


@numba.njit(cache=True, nogil=True)
def _log_sigmoid(x: float) -> float:
    return min(x, 0.0) - math.log1p(math.exp(-abs(x)))


@numba.njit(cache=True, nogil=True)
def _slstm_forward(wx, R, dt, gating, tau_ref_s, dt_ref_s, hs, cs, ns, m, acts, fs):
    """sLSTM steps t = 0..T-1 of the equations in the module docstring, in place.

    wx (T, B, 4, d) input pre-activations (gates z|i|f|o), R (H, dh, 4 dh) recurrent weights per head, dt (T, B)
    in seconds; hs, cs, ns (T+1, B, d) hold the initial state in row 0 and receive every step; m (B, d) the
    stabilizer, updated; acts (T, 7, B, d) the activations the backward needs; fs (T, B, d) forget pre-activations."""
    t_len, b_len, _, d = wx.shape
    heads, dh = R.shape[0], R.shape[1]
    pre = np.empty((4, d))
    for t in range(t_len):
        for b in range(b_len):
            step = dt[t, b]
            log_dt = math.log(step / dt_ref_s)
            for hd in range(heads):  # pre-activations: input part + block-diagonal recurrence
                for g in range(4):
                    for j in range(dh):
                        acc = wx[t, b, g, hd * dh + j]
                        for k in range(dh):
                            acc += hs[t, b, hd * dh + k] * R[hd, k, g * dh + j]
                        pre[g, hd * dh + j] = acc
            for u in range(d):
                pz, pi, pf, po = pre[0, u], pre[1, u], pre[2, u], pre[3, u]
                if gating == 0:  # exp: log f = -dt / tau, tau = tau_ref e^f~, input weight of the exact hold
                    log_f = -step / tau_ref_s * math.exp(-pf)
                    dlogf = -log_f
                    a = min(max(dlogf, 1e-12), 1e30)
                    zoh = math.log(-math.expm1(-a) / a)
                    dzoh = 1.0 - a / math.expm1(a)
                else:  # official / sigmoid: log f = (dt / dt_ref) log sigmoid(f~)
                    log_f = step / dt_ref_s * _log_sigmoid(pf)
                    dlogf = step / dt_ref_s / (1.0 + math.exp(pf))
                    zoh, dzoh = 0.0, 0.0
                if gating == 2:  # sigmoid input gate
                    log_i, dlogi = _log_sigmoid(pi) + log_dt, 1.0 / (1.0 + math.exp(pi))
                else:  # exponential input gate
                    log_i, dlogi = pi + log_dt + zoh, 1.0
                m_prev = m[b, u]
                m_new = max(log_f + m_prev, log_i)
                i_s, f_s = math.exp(log_i - m_new), math.exp(log_f + m_prev - m_new)
                z, o = math.tanh(pz), 1.0 / (1.0 + math.exp(-po))
                c = f_s * cs[t, b, u] + i_s * z
                n = f_s * ns[t, b, u] + i_s
                hs[t + 1, b, u], cs[t + 1, b, u], ns[t + 1, b, u] = o * c / n, c, n
                m[b, u] = m_new
                acts[t, 0, b, u], acts[t, 1, b, u], acts[t, 2, b, u], acts[t, 3, b, u] = z, o, i_s, f_s
                acts[t, 4, b, u], acts[t, 5, b, u], acts[t, 6, b, u] = dlogf, dlogi, dzoh
                fs[t, b, u] = pf


@numba.njit(cache=True, nogil=True)
def _slstm_backward(d_hs, R, hs, cs, ns, acts, dh_next, dc_next, dn_next, d_wx, d_R):
    """Reverse loop of `_slstm_forward`: gradients of the pre-activations (d_wx) and recurrent weights (d_R,
    accumulated); dh_next, dc_next, dn_next carry the gradient of the final state in and of the initial state out."""
    t_len, b_len, d = d_hs.shape
    heads, dh = R.shape[0], R.shape[1]
    for t in range(t_len - 1, -1, -1):
        for b in range(b_len):
            for u in range(d):
                z, o, i_s, f_s = acts[t, 0, b, u], acts[t, 1, b, u], acts[t, 2, b, u], acts[t, 3, b, u]
                dlogf, dlogi, dlogi_df = acts[t, 4, b, u], acts[t, 5, b, u], acts[t, 6, b, u]
                c, n = cs[t + 1, b, u], ns[t + 1, b, u]
                dh_t = d_hs[t, b, u] + dh_next[b, u]
                dc = dh_t * o / n + dc_next[b, u]
                dn = -dh_t * o * c / (n * n) + dn_next[b, u]
                d_wx[t, b, 0, u] = dc * i_s * (1.0 - z * z)
                d_wx[t, b, 1, u] = (dc * z + dn) * i_s * dlogi
                d_wx[t, b, 2, u] = (dc * cs[t, b, u] + dn * ns[t, b, u]) * f_s * dlogf + (dc * z + dn) * i_s * dlogi_df
                d_wx[t, b, 3, u] = dh_t * c / n * o * (1.0 - o)
                dc_next[b, u], dn_next[b, u] = dc * f_s, dn * f_s
            for hd in range(heads):  # through the recurrence: d_R += h_prev d_pre^T, dh_prev = R d_pre
                for k in range(dh):
                    h_prev = hs[t, b, hd * dh + k]
                    acc = 0.0
                    for g in range(4):
                        for j in range(dh):
                            dp = d_wx[t, b, g, hd * dh + j]
                            d_R[hd, k, g * dh + j] += h_prev * dp
                            acc += dp * R[hd, k, g * dh + j]
                    dh_next[b, hd * dh + k] = acc


class MLSTMCell(nn.Module):
    """Matrix-memory LSTM: per-head memory C (dk x dv), scalar gates per head, no hidden-to-hidden recurrence."""

    def __init__(self, cfg: CellConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d, h = cfg.d_hidden, cfg.n_heads
        self.dh = d // h
        self.q = nn.Linear(cfg.d_in, d)
        self.k = nn.Linear(cfg.d_in, d)
        self.v = nn.Linear(cfg.d_in, d)
        self.o = nn.Linear(cfg.d_in, d)
        self.i_gate = nn.Linear(cfg.d_in, h)
        self.f_gate = nn.Linear(cfg.d_in, h)
        with torch.no_grad():
            self.f_gate.weight.mul_(0.1)
            self.f_gate.bias.copy_(forget_bias_init(cfg, h))
            if cfg.gating != "official":
                tie_input_to_forget(cfg, self.i_gate.weight, self.i_gate.bias, self.f_gate.weight, self.f_gate.bias)
            else:
                self.i_gate.weight.mul_(0.1)
                self.i_gate.bias.fill_(-1.0)

    def init_state(self, batch: int, device=None) -> tuple[Tensor, Tensor, Tensor]:
        h, dh = self.cfg.n_heads, self.dh
        return (
            torch.zeros(batch, h, dh, dh, device=device),
            torch.zeros(batch, h, dh, device=device),
            torch.zeros(batch, h, device=device),
        )

    def projections(self, x: Tensor, dt: Tensor):
        """q, k, v (B, T, H, dh), o (B, T, d), log f, log i (B, T, H), forget pre-activations (B, T, H)."""
        b, t_len, _ = x.shape
        shape = (b, t_len, self.cfg.n_heads, self.dh)
        q = self.q(x).view(shape)
        k = self.k(x).view(shape) / math.sqrt(self.dh)
        v = self.v(x).view(shape)
        f_pre = self.f_gate(x)
        log_f, log_i = gate_logs(self.cfg, f_pre, self.i_gate(x), dt.unsqueeze(-1))
        return q, k, v, torch.sigmoid(self.o(x)), log_f, log_i, f_pre

    def forward(self, x: Tensor, dt: Tensor, state=None):
        """x (B, T, d_in), dt (B, T) -> hidden (B, T, d), final (C, n, m), forget pre-activations (B, T, H)."""
        b, t_len, _ = x.shape
        q, k, v, o, log_f, log_i, f_pre = self.projections(x, dt)
        C, n, m = state if state is not None else self.init_state(b, x.device)
        h_tilde, C, n, m = _MLSTMScan.apply(q, k, v, log_f, log_i, C, n, m)
        return o * h_tilde.reshape(b, t_len, -1), (C, n, m), f_pre


class _MLSTMScan(torch.autograd.Function):
    """The mLSTM recurrence (module docstring) over all steps with its exact reverse loop, both compiled.

    Unlike the sLSTM, h depends on the stabilizer through the normalizer floor exp(-m) and the eps, so the
    reverse loop carries the gradient of m along with those of C and n (checked against autograd in the tests)."""

    @staticmethod
    def forward(ctx, q, k, v, log_f, log_i, C, n, m):
        b, t_len, heads, dh = q.shape
        Cs = q.new_empty(t_len + 1, b, heads, dh, dh)
        ns, ms = q.new_empty(t_len + 1, b, heads, dh), q.new_empty(t_len + 1, b, heads)
        Cs[0], ns[0], ms[0] = C, n, m
        hs = q.new_empty(b, t_len, heads, dh)
        arrays = [_np(a) for a in (q, k, v, log_f, log_i)]
        _mlstm_forward(*arrays, Cs.numpy(), ns.numpy(), ms.numpy(), hs.numpy())
        ctx.save_for_backward(q, k, v, log_f, log_i, Cs, ns, ms, hs)
        return hs, Cs[-1].clone(), ns[-1].clone(), ms[-1].clone()

    @staticmethod
    def backward(ctx, d_hs, d_C, d_n, d_m):
        q, k, v, log_f, log_i, Cs, ns, ms, hs = ctx.saved_tensors
        b, _, heads, dh = q.shape
        dC = d_C.detach().clone() if d_C is not None else q.new_zeros(b, heads, dh, dh)
        dn = d_n.detach().clone() if d_n is not None else q.new_zeros(b, heads, dh)
        dm = d_m.detach().clone() if d_m is not None else q.new_zeros(b, heads)
        grads = [torch.zeros_like(a) for a in (q, k, v, log_f, log_i)]
        _mlstm_backward(
            _np(d_hs), *[_np(a) for a in (q, k, v, log_f, log_i)], Cs.numpy(), ns.numpy(), ms.numpy(), hs.numpy(),
            dC.numpy(), dn.numpy(), dm.numpy(), *[g.numpy() for g in grads],
        )  # fmt: skip
        return (*grads, dC, dn, dm)


@numba.njit(cache=True, nogil=True)
def _mlstm_forward(q, k, v, log_f, log_i, Cs, ns, ms, hs):
    """q, k, v (B, T, H, dh), log f, log i (B, T, H); Cs (T+1, B, H, dh, dh), ns (T+1, B, H, dh), ms (T+1, B, H)
    hold the initial state in row 0 and receive every step; hs (B, T, H, dh) the normalised readout C q / den."""
    b_len, t_len, heads, dh = q.shape
    for b in range(b_len):
        for hd in range(heads):
            for t in range(t_len):
                m_prev = ms[t, b, hd]
                m_new = max(log_f[b, t, hd] + m_prev, log_i[b, t, hd])
                f_s = math.exp(log_f[b, t, hd] + m_prev - m_new)
                i_s = math.exp(log_i[b, t, hd] - m_new)
                dot = 0.0
                for kk in range(dh):
                    n_new = f_s * ns[t, b, hd, kk] + i_s * k[b, t, hd, kk]
                    ns[t + 1, b, hd, kk] = n_new
                    dot += n_new * q[b, t, hd, kk]
                den = max(abs(dot), math.exp(-m_new)) + MLSTM_EPS
                for a in range(dh):
                    num = 0.0
                    for kk in range(dh):
                        c_new = f_s * Cs[t, b, hd, a, kk] + i_s * v[b, t, hd, a] * k[b, t, hd, kk]
                        Cs[t + 1, b, hd, a, kk] = c_new
                        num += c_new * q[b, t, hd, kk]
                    hs[b, t, hd, a] = num / den
                ms[t + 1, b, hd] = m_new


@numba.njit(cache=True, nogil=True)
def _mlstm_backward(d_hs, q, k, v, log_f, log_i, Cs, ns, ms, hs, dC, dn, dm, d_q, d_k, d_v, d_log_f, d_log_i):
    """Reverse loop of `_mlstm_forward` (hs: its readout). dC, dn, dm carry the gradient of the final state in and
    of the initial state out; the max() of the stabilizer and of the normalizer floor pass the gradient to the
    branch taken."""
    b_len, t_len, heads, dh = q.shape
    d_num = np.empty(dh)
    for b in range(b_len):
        for hd in range(heads):
            for t in range(t_len - 1, -1, -1):
                m_prev, m_new = ms[t, b, hd], ms[t + 1, b, hd]
                lf, li = log_f[b, t, hd], log_i[b, t, hd]
                f_s, i_s = math.exp(lf + m_prev - m_new), math.exp(li - m_new)
                dot = 0.0
                for kk in range(dh):
                    dot += ns[t + 1, b, hd, kk] * q[b, t, hd, kk]
                floor = math.exp(-m_new)
                den = max(abs(dot), floor) + MLSTM_EPS
                d_den = 0.0  # h_a = num_a / den, so d h_a / d den = -h_a / den
                for a in range(dh):
                    d_num[a] = d_hs[b, t, hd, a] / den
                    d_den -= d_num[a] * hs[b, t, hd, a]
                d_dot, dm_new = 0.0, dm[b, hd]
                if abs(dot) >= floor:
                    d_dot = d_den * (1.0 if dot >= 0.0 else -1.0)
                else:
                    dm_new -= d_den * floor
                d_fs, d_is = 0.0, 0.0
                for kk in range(dh):
                    d_q[b, t, hd, kk] += d_dot * ns[t + 1, b, hd, kk]
                    dn_k = dn[b, hd, kk] + d_dot * q[b, t, hd, kk]
                    d_fs += dn_k * ns[t, b, hd, kk]
                    d_is += dn_k * k[b, t, hd, kk]
                    d_k[b, t, hd, kk] += i_s * dn_k
                    dn[b, hd, kk] = f_s * dn_k
                for a in range(dh):
                    dv_a = 0.0
                    for kk in range(dh):
                        d_q[b, t, hd, kk] += d_num[a] * Cs[t + 1, b, hd, a, kk]
                        dc = dC[b, hd, a, kk] + d_num[a] * q[b, t, hd, kk]
                        d_fs += dc * Cs[t, b, hd, a, kk]
                        d_is += dc * v[b, t, hd, a] * k[b, t, hd, kk]
                        dv_a += dc * k[b, t, hd, kk]
                        d_k[b, t, hd, kk] += i_s * dc * v[b, t, hd, a]
                        dC[b, hd, a, kk] = f_s * dc
                    d_v[b, t, hd, a] += i_s * dv_a
                # f' = exp(log f + m_prev - m_new), i' = exp(log i - m_new), m_new = max(log f + m_prev, log i)
                d_lf, d_mp = d_fs * f_s, d_fs * f_s
                d_li = d_is * i_s
                dm_new -= d_fs * f_s + d_is * i_s
                if lf + m_prev >= li:
                    d_lf += dm_new
                    d_mp += dm_new
                else:
                    d_li += dm_new
                d_log_f[b, t, hd] += d_lf
                d_log_i[b, t, hd] += d_li
                dm[b, hd] = d_mp
