"""sLSTM / mLSTM cells: the compiled scans and their BPTT equal autograd over the equations, dt-awareness."""

from __future__ import annotations

import math

import pytest
import torch

from psixlstm.models.xlstm import MLSTM_EPS, CellConfig, MLSTMCell, SLSTMCell, forget_tau_s, gate_logs


def slstm_reference(cell: SLSTMCell, x, dt):
    """Plain autograd sLSTM written from the equations (official NX-AI semantics + dt-aware gates)."""
    cfg, (b, t_len, _) = cell.cfg, x.shape
    d, heads, dh = cfg.d_hidden, cfg.n_heads, cell.dh
    h, c, n, m = cell.init_state(b)
    wx = cell.W(x).view(b, t_len, heads, 4, dh)
    out = []
    for t in range(t_len):
        rh = torch.einsum("bhd,hde->bhe", h.view(b, heads, dh), cell.R).view(b, heads, 4, dh)
        pre = wx[:, t] + rh  # (B, H, gate, dh)
        z_pre, i_pre, f_pre, o_pre = (pre[:, :, k].reshape(b, d) for k in range(4))
        log_f, log_i = gate_logs(cfg, f_pre, i_pre, dt[:, t : t + 1])
        m_new = torch.maximum(log_f + m, log_i)
        c = torch.exp(log_f + m - m_new) * c + torch.exp(log_i - m_new) * torch.tanh(z_pre)
        n = torch.exp(log_f + m - m_new) * n + torch.exp(log_i - m_new)
        h = torch.sigmoid(o_pre) * c / n
        m = m_new
        out.append(h)
    return torch.stack(out, 1)


@pytest.fixture
def f64():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


@pytest.mark.parametrize("gating", ["exp", "official", "sigmoid"])
def test_slstm_scan_matches_autograd_forward_and_gradients(gating, f64):
    torch.manual_seed(0)
    cell = SLSTMCell(CellConfig(d_in=3, d_hidden=8, n_heads=2, gating=gating))
    x = torch.randn(2, 40, 3)
    dt = torch.exp(torch.randn(2, 40)) * 1e-6
    h_fast, _, _ = cell(x, dt)
    h_ref = slstm_reference(cell, x, dt)
    torch.testing.assert_close(h_fast, h_ref, rtol=1e-10, atol=1e-12)
    weights = torch.randn_like(h_ref)
    g_fast = torch.autograd.grad((h_fast * weights).sum(), list(cell.parameters()))
    g_ref = torch.autograd.grad((h_ref * weights).sum(), list(cell.parameters()))
    for a, b in zip(g_fast, g_ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-10)


def test_slstm_gradient_flows_to_the_initial_state(f64):
    torch.manual_seed(1)
    cell = SLSTMCell(CellConfig(d_in=2, d_hidden=4, n_heads=2))
    x, dt = torch.randn(1, 10, 2), torch.full((1, 10), 1e-6)
    state = tuple(s.clone().requires_grad_(True) for s in cell.init_state(1))
    state[2].data.fill_(1.0)  # n > 0 so that h is defined from the first step
    h, _, _ = cell(x, dt, state)
    assert torch.autograd.grad(h.sum(), state[1])[0].abs().sum() > 0


def mlstm_reference(cell: MLSTMCell, x, dt, state=None):
    """Plain autograd mLSTM recurrence written from the equations (official semantics + dt-aware gates)."""
    q, k, v, o, log_f, log_i, _ = cell.projections(x, dt)
    C, n, m = state if state is not None else cell.init_state(x.shape[0])
    hs = []
    for t in range(x.shape[1]):
        m_new = torch.maximum(log_f[:, t] + m, log_i[:, t])
        f_s = torch.exp(log_f[:, t] + m - m_new)[..., None]
        i_s = torch.exp(log_i[:, t] - m_new)[..., None]
        C = f_s[..., None] * C + i_s[..., None] * (v[:, t, :, :, None] * k[:, t, :, None, :])
        n = f_s * n + i_s * k[:, t]
        m = m_new
        num = torch.einsum("bhvk,bhk->bhv", C, q[:, t])
        den = torch.einsum("bhk,bhk->bh", n, q[:, t]).abs()
        hs.append(num / (torch.maximum(den, torch.exp(-m)) + MLSTM_EPS)[..., None])
    return o * torch.stack(hs, 1).flatten(2), (C, n, m)


@pytest.mark.parametrize("q_scale", [1.0, 1e-4])  # 1e-4: the normalizer floor exp(-m) and the eps are active
def test_mlstm_scan_matches_autograd_and_carries_state(q_scale, f64):
    torch.manual_seed(0)
    cell = MLSTMCell(CellConfig(d_in=3, d_hidden=8, n_heads=2))
    with torch.no_grad():
        cell.q.weight.mul_(q_scale)
        cell.q.bias.mul_(q_scale)
    x = torch.randn(2, 150, 3)
    dt = torch.exp(torch.randn(2, 150)) * 1e-6
    h_ref, s_ref = mlstm_reference(cell, x, dt)
    h, s, _ = cell(x, dt)
    torch.testing.assert_close(h, h_ref, rtol=1e-10, atol=1e-12)
    for a, b in zip(s, s_ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    h_a, st, _ = cell(x[:, :70], dt[:, :70])
    h_b, _, _ = cell(x[:, 70:], dt[:, 70:], st)
    torch.testing.assert_close(torch.cat([h_a, h_b], 1), h_ref, rtol=1e-10, atol=1e-12)
    # gradients of the outputs and of the final state, to the parameters and to the initial state
    state0 = tuple((0.3 * torch.rand_like(z)).requires_grad_() for z in cell.init_state(2))
    params = list(cell.parameters()) + list(state0)
    grads = []
    for fn in (lambda: mlstm_reference(cell, x, dt, state0), lambda: cell(x, dt, state0)[:2]):
        out, (C, n, m) = fn()
        loss = (out * torch.cos(torch.arange(out.numel()).view_as(out))).sum() + C.sum() + n.pow(2).sum() + m.sum()
        grads.append(torch.autograd.grad(loss, params))
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("cls", [SLSTMCell, MLSTMCell])
def test_cells_have_memory(cls):
    """Shuffling the time order of the input changes the output (a memoryless model would not care)."""
    torch.manual_seed(0)
    cell = cls(CellConfig(d_in=1, d_hidden=8, n_heads=2, tau_min_s=1e-6, tau_max_s=1e-3))
    x = torch.randn(1, 200, 1)
    dt = torch.full((1, 200), 1e-5)
    perm = torch.randperm(200)
    h, _, _ = cell(x, dt)
    h_shuffled, _, _ = cell(x[:, perm], dt)
    assert (h[:, perm] - h_shuffled).abs().max() > 1e-3


@pytest.mark.parametrize("cls", [SLSTMCell, MLSTMCell])
def test_cells_are_sampling_rate_aware(cls, f64):
    """The same smooth input sampled 4x finer gives nearly the same hidden trajectory (continuous-time cell)."""
    torch.manual_seed(0)
    cfg = CellConfig(d_in=1, d_hidden=8, n_heads=2, tau_min_s=20e-6, tau_max_s=2e-3)
    cell = cls(cfg)
    with torch.no_grad():
        if cls is SLSTMCell:
            cell.R.mul_(0.1)
        t_coarse = torch.linspace(0, 2e-3, 401)
        t_fine = torch.linspace(0, 2e-3, 1601)

        def run(t):
            u = torch.sin(2 * math.pi * 1e3 * t)[None, :, None]
            dt = torch.diff(t, prepend=t[:1] - (t[1] - t[0]))[None]
            return cell(u, dt)[0][0]

        h_c, h_f = run(t_coarse), run(t_fine)[::4]
    late = slice(100, None)
    err = (h_c[late] - h_f[late]).abs().max() / h_f[late].abs().max()
    assert err < 0.05, err


@pytest.mark.parametrize("gating", ["exp", "official", "sigmoid"])
def test_forget_gate_time_constants_are_in_seconds(gating):
    cfg = CellConfig(d_in=1, d_hidden=8, n_heads=2, tau_min_s=1e-6, tau_max_s=1e-2, gating=gating)
    cell = SLSTMCell(cfg)
    f_bias = cell.W.bias.view(2, 4, 4)[:, 2].reshape(-1)
    tau = forget_tau_s(cfg, f_bias)
    assert tau.min().item() == pytest.approx(1e-6, rel=1e-4) and tau.max().item() == pytest.approx(1e-2, rel=1e-4)
    dt = torch.tensor(1e-4)
    log_f, _ = gate_logs(cfg, f_bias, torch.zeros_like(f_bias), dt)
    torch.testing.assert_close(-dt / log_f, tau, rtol=1e-4, atol=0)  # tau = -dt / ln f


def test_config_is_validated():
    with pytest.raises(ValueError, match="divisible"):
        CellConfig(d_in=1, d_hidden=10, n_heads=4)
    with pytest.raises(ValueError, match="gating"):
        CellConfig(d_in=1, d_hidden=8, gating="relu")
