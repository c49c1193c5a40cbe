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


def zoh_log_gain_grad(decay: Tensor) -> Tensor:
    """d zoh_log_gain(dt / tau) / d f~ = 1 - a / (e^a - 1), with tau = tau_ref e^f~ (so da / df~ = -a)."""
    a = decay.clamp(1e-12, 1e30)
    return 1.0 - a / torch.expm1(a)


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
    """The sLSTM recurrence over all steps with a hand-written backward (BPTT).

    Autograd over hundreds of tiny per-step ops spent ~7x the forward time in the backward; this scan keeps the
    per-step activations and runs one reverse loop. The stabilizer m is treated as a constant: h does not depend
    on it, so the gradients are exact (checked against autograd in the tests)."""

    @staticmethod
    def forward(ctx, wx, R, dt, h, c, n, m, cfg: CellConfig):
        t_len, b, _, d = wx.shape
        heads, dh = R.shape[0], R.shape[1]
        exp_forget, exp_input = cfg.gating == "exp", cfg.gating != "sigmoid"
        log_dt = torch.log(dt / cfg.dt_ref_s).unsqueeze(-1)  # (T, B, 1)
        rate = (dt / cfg.tau_ref_s).unsqueeze(-1)
        step_ratio = (dt / cfg.dt_ref_s).unsqueeze(-1)
        hs = wx.new_empty(t_len + 1, b, d)
        cs, ns = wx.new_empty(t_len + 1, b, d), wx.new_empty(t_len + 1, b, d)
        acts = wx.new_empty(t_len, 7, b, d)  # z, o, i', f', dlogf/dpf, dlogi/dpi, dlogi/dpf
        fs = wx.new_empty(t_len, b, d)
        hs[0], cs[0], ns[0] = h, c, n
        for t in range(t_len):
            rh = torch.einsum("bhd,hde->bhe", h.view(b, heads, dh), R)
            pre = wx[t] + rh.view(b, heads, 4, dh).transpose(1, 2).reshape(b, 4, d)
            pz, pi, pf, po = pre.unbind(1)
            if exp_forget:
                log_f = -rate[t] * torch.exp(-pf)
                dlogf = -log_f
                zoh, dzoh = zoh_log_gain(dlogf), zoh_log_gain_grad(dlogf)  # the input weight depends on tau
            else:
                log_f = step_ratio[t] * F.logsigmoid(pf)
                dlogf = step_ratio[t] * torch.sigmoid(-pf)
                zoh, dzoh = 0.0, torch.zeros_like(pf)
            if exp_input:
                log_i, dlogi = pi + log_dt[t] + zoh, torch.ones_like(pi)
            else:
                log_i, dlogi = F.logsigmoid(pi) + log_dt[t], torch.sigmoid(-pi)
            m_new = torch.maximum(log_f + m, log_i)
            i_s, f_s = torch.exp(log_i - m_new), torch.exp(log_f + m - m_new)
            z, o = torch.tanh(pz), torch.sigmoid(po)
            c = f_s * c + i_s * z
            n = f_s * n + i_s
            h = o * c / n
            m = m_new
            hs[t + 1], cs[t + 1], ns[t + 1] = h, c, n
            acts[t] = torch.stack((z, o, i_s, f_s, dlogf, dlogi, dzoh))
            fs[t] = pf
        ctx.save_for_backward(R, hs, cs, ns, acts)
        ctx.mark_non_differentiable(fs, m)
        return hs[1:], fs, h, c, n, m

    @staticmethod
    def backward(ctx, d_hs, d_fs, d_h, d_c, d_n, d_m):
        R, hs, cs, ns, acts = ctx.saved_tensors
        t_len, b, d = d_hs.shape
        heads, dh = R.shape[0], R.shape[1]
        d_wx = d_hs.new_empty(t_len, b, 4, d)
        d_R = torch.zeros_like(R)
        dh_next = d_h if d_h is not None else torch.zeros_like(hs[0])
        dc_next = d_c if d_c is not None else torch.zeros_like(hs[0])
        dn_next = d_n if d_n is not None else torch.zeros_like(hs[0])
        for t in range(t_len - 1, -1, -1):
            z, o, i_s, f_s, dlogf, dlogi, dlogi_df = acts[t].unbind(0)
            c, n = cs[t + 1], ns[t + 1]
            dh_t = d_hs[t] + dh_next
            dc = dh_t * o / n + dc_next
            dn = -dh_t * o * c / (n * n) + dn_next
            d_pre = torch.stack(
                (
                    dc * i_s * (1 - z * z),  # z
                    (dc * z + dn) * i_s * dlogi,  # input gate
                    (dc * cs[t] + dn * ns[t]) * f_s * dlogf + (dc * z + dn) * i_s * dlogi_df,  # forget gate
                    dh_t * c / n * o * (1 - o),  # output gate
                ),
                dim=1,
            )
            d_wx[t] = d_pre
            d_rh = d_pre.view(b, 4, heads, dh).transpose(1, 2).reshape(b, heads, 4 * dh)
            h_prev = hs[t].view(b, heads, dh)
            d_R += torch.einsum("bhd,bhe->hde", h_prev, d_rh)
            dh_next = torch.einsum("bhe,hde->bhd", d_rh, R).reshape(b, d)
            dc_next, dn_next = dc * f_s, dn * f_s
        return d_wx, d_R, None, dh_next, dc_next, dn_next, None, None


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

    def forward(self, x: Tensor, dt: Tensor, state=None, chunk: int | None = 64):
        """x (B, T, d_in), dt (B, T) -> hidden (B, T, d), final (C, n, m), forget pre-activations (B, T, H).

        `chunk=None` runs the step-by-step recurrence; an int runs the chunkwise-parallel form (same numbers,
        O(T * chunk) memory, far fewer sequential steps)."""
        b, t_len, _ = x.shape
        q, k, v, o, log_f, log_i, f_pre = self.projections(x, dt)
        C, n, m = state if state is not None else self.init_state(b, x.device)
        if chunk is None:
            hs = []
            for t in range(t_len):
                m_new = torch.maximum(log_f[:, t] + m, log_i[:, t])
                f_s = torch.exp(log_f[:, t] + m - m_new)[..., None]
                i_s = torch.exp(log_i[:, t] - m_new)[..., None]
                C = f_s[..., None] * C + i_s[..., None] * (v[:, t, :, :, None] * k[:, t, :, None, :])
                n = f_s * n + i_s * k[:, t]
                m = m_new
                num = torch.einsum("bhvk,bhk->bhv", C, q[:, t])
                den = torch.einsum("bhk,bhk->bh", n, q[:, t]).abs()
                hs.append(num / (torch.maximum(den, torch.exp(-m)) + MLSTM_EPS)[..., None])
            h_tilde = torch.stack(hs, 1)
        else:
            outs = []
            for s in range(0, t_len, chunk):
                e = min(s + chunk, t_len)
                out, (C, n, m) = _mlstm_chunk(q[:, s:e], k[:, s:e], v[:, s:e], log_f[:, s:e], log_i[:, s:e], C, n, m)
                outs.append(out)
            h_tilde = torch.cat(outs, 1)
        return o * h_tilde.reshape(b, t_len, -1), (C, n, m), f_pre


def _mlstm_chunk(q, k, v, log_f, log_i, C, n, m):
    """One chunk of the parallel mLSTM form, carrying (C, n, m) in and out; equals the recurrence exactly."""
    L = q.shape[1]
    b_cum = torch.cumsum(log_f, dim=1)  # (B, L, H): sum of log f from the chunk start up to t
    # log weight of source s at target t (s <= t): b_t - b_s + log i_s
    log_w = b_cum[:, :, None, :] - b_cum[:, None, :, :] + log_i[:, None, :, :]  # (B, t, s, H)
    causal = torch.ones(L, L, dtype=torch.bool, device=q.device).tril()
    log_w = log_w.masked_fill(~causal[None, :, :, None], float("-inf"))
    log_prev = b_cum + m[:, None, :]  # weight of the carried state at t
    m_t = torch.maximum(log_prev, log_w.amax(dim=2))  # (B, L, H) = the recurrent stabilizer
    w = torch.exp(log_w - m_t[:, :, None, :])  # (B, t, s, H)
    w_prev = torch.exp(log_prev - m_t)  # (B, L, H)
    qk = torch.einsum("bthd,bshd->btsh", q, k)
    num = torch.einsum("btsh,bshd->bthd", w * qk, v) + w_prev[..., None] * torch.einsum("bhvk,bthk->bthv", C, q)
    den = (w * qk).sum(2) + w_prev * torch.einsum("bhk,bthk->bth", n, q)
    h = num / (torch.maximum(den.abs(), torch.exp(-m_t)) + MLSTM_EPS)[..., None]
    # state at the chunk end
    m_end = m_t[:, -1]
    w_end = torch.exp(b_cum[:, -1:, :] - b_cum + log_i - m_end[:, None, :])  # (B, s, H)
    w_prev_end = torch.exp(b_cum[:, -1] + m - m_end)  # (B, H)
    C_end = w_prev_end[..., None, None] * C + torch.einsum("bsh,bshv,bshk->bhvk", w_end, v, k)
    n_end = w_prev_end[..., None] * n + torch.einsum("bsh,bshk->bhk", w_end, k)
    return h, (C_end, n_end, m_end)
