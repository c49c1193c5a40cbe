"""Cross-check against the official NX-AI `xlstm` package (optional extra; skipped when it is not installed).

With `CellConfig(gating="official")` and every step dt equal to `dt_ref_s`, our cells must reproduce the official
recurrences step by step (CPU, float32, a few hundred steps, max abs error <= 1e-5). The weights are mapped as follows.

sLSTM (official `sLSTMCell`, backend "vanilla"): the official cell takes the input pre-activations Wx (without bias)
laid out gate-major (gate i|f|z|o, head, unit) and holds its own bias (external layout (head, gate i|f|z|o, unit)) and
recurrent kernel (external layout (head, unit in, gate i|f|z|o, unit out)). Ours lays everything out head-major with
the gates in the order z|i|f|o: `W.bias` is (head, gate, unit) flattened and `R[head, unit in, gate * dh + unit out]`.
So R and the bias are the official ones with the gate axis permuted (i, f, z, o) -> (z, i, f, o), and our input
projection W is set to the 0/1 permutation matrix that takes the official gate-major input layout to ours, so both
cells are fed the very same input tensor.

mLSTM (official `recurrent_step_stabilized_simple`, the step function of the official mLSTM cell): it takes q, k, v
(per head; it scales k by 1/sqrt(head_dim) itself, as ours does) and the input/forget gate pre-activations per head.
Our `MLSTMCell` computes those with Linear layers from x; they are set to 0/1 selections, so that x is simply the
concatenation [q | k | v | o | i~ | f~] and both implementations see the same q, k, v and gate pre-activations. The
official step returns h~ before the output gate; our output is sigmoid(o) * h~.

q and k are drawn non-negative: then n^T q cannot cancel, |h~| <= max |v|, and float32 rounding stays at the 1e-6
level even with widely spread gates (random signed q, k make |n^T q| arbitrarily small and the comparison
ill-conditioned for any two float32 implementations, the official parallel and recurrent forms included).

The official step divides by max(|n^T q|, exp(-m)) + 1e-6; ours adds the same eps (this cross-check found it
missing: without it h differed by ~4e-4 for queries 100x smaller than unit scale).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

xlstm = pytest.importorskip("xlstm", reason="optional cross-check: needs the official NX-AI `xlstm` package")

from xlstm.blocks.mlstm.backends import recurrent_step_stabilized_simple  # noqa: E402
from xlstm.blocks.slstm.cell import sLSTMCell, sLSTMCellConfig  # noqa: E402

from psixlstm.models.xlstm import CellConfig, MLSTMCell, SLSTMCell  # noqa: E402

BATCH, HEADS, HEAD_DIM, STEPS = 3, 4, 8, 300
D = HEADS * HEAD_DIM
TOL = 1e-5
OFFICIAL_EPS = 1e-6  # the official mLSTM adds this to h's denominator
OFFICIAL_GATES, OUR_GATES = "ifzo", "zifo"
GATE_PERM = [OFFICIAL_GATES.index(g) for g in OUR_GATES]  # our gate g is official gate GATE_PERM[g]


def _official_slstm(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    cfg = sLSTMCellConfig(
        hidden_size=D,
        num_heads=HEADS,
        backend="vanilla",
        dtype="float32",
        input_shape="BSGNH",
        output_shape="BSH",
    )
    cell = sLSTMCell(cfg)
    cell.recurrent_kernel[:] = torch.randn(HEADS, HEAD_DIM, 4, HEAD_DIM) / HEAD_DIM**0.5
    cell.bias[:] = torch.randn(HEADS, 4, HEAD_DIM)
    return cell


def _our_slstm_from(official: nn.Module) -> SLSTMCell:
    cell = SLSTMCell(CellConfig(d_in=4 * D, d_hidden=D, n_heads=HEADS, gating="official"))
    r_ext = official.recurrent_kernel.clone()  # (head, unit in, gate i|f|z|o, unit out)
    bias_ext = official.bias.clone()  # (head, gate i|f|z|o, unit)
    # for each of our flat input positions (head, gate z|i|f|o, unit): the official one (gate i|f|z|o, head, unit)
    source = torch.arange(4 * D).view(4, HEADS, HEAD_DIM)[GATE_PERM].transpose(0, 1).reshape(-1)
    with torch.no_grad():
        cell.R.copy_(r_ext[:, :, GATE_PERM].reshape(HEADS, HEAD_DIM, 4 * HEAD_DIM))
        cell.W.bias.copy_(bias_ext[:, GATE_PERM].reshape(-1))
        cell.W.weight.zero_()
        cell.W.weight[torch.arange(4 * D), source] = 1.0
    return cell


@pytest.mark.parametrize("seed", [0, 1])
def test_slstm_matches_official_vanilla_cell(seed):
    official = _official_slstm(seed)
    ours = _our_slstm_from(official)
    x = 2.0 * torch.randn(BATCH, STEPS, 4 * D)  # pre-activations with a wide spread: the stabilizer is exercised
    dt = torch.full((BATCH, STEPS), ours.cfg.dt_ref_s)
    with torch.no_grad():
        h_official, state_official = official(x)  # (B, S, D); state (h, c, n, m) of the last step
        h_ours, (h_last, c, n, _), _ = ours(x, dt)
    assert h_official.shape == h_ours.shape == (BATCH, STEPS, D)
    assert (h_ours - h_official).abs().max().item() <= TOL
    assert (h_last - state_official[0]).abs().max().item() <= TOL
    # c and n are scaled by exp(-m); their ratio is not (the two codes pick different m at the first step)
    assert (c / n - state_official[1] / state_official[2]).abs().max().item() <= TOL


def _select(linear: nn.Linear, start: int) -> None:
    """Make `linear` pick x[..., start : start + out_features] unchanged (0/1 weights, zero bias: exact)."""
    with torch.no_grad():
        linear.weight.zero_()
        linear.weight[:, start : start + linear.out_features] = torch.eye(linear.out_features)
        linear.bias.zero_()


def _mlstm_case(seed: int, q_scale: float = 1.0):
    """Our MLSTMCell set to pass its input through, and inputs x = [q | k | v | o | i~ | f~]."""
    torch.manual_seed(seed)
    cell = MLSTMCell(CellConfig(d_in=4 * D + 2 * HEADS, d_hidden=D, n_heads=HEADS, gating="official"))
    for i, layer in enumerate((cell.q, cell.k, cell.v, cell.o)):
        _select(layer, i * D)
    _select(cell.i_gate, 4 * D)
    _select(cell.f_gate, 4 * D + HEADS)
    q = q_scale * torch.randn(BATCH, STEPS, D).abs()
    k = torch.randn(BATCH, STEPS, D).abs()
    v = torch.randn(BATCH, STEPS, D)
    o_pre = torch.randn(BATCH, STEPS, D)
    i_pre = 3.0 * torch.randn(BATCH, STEPS, HEADS)  # exp(i~) over many decades: the stabilizer m moves
    f_pre = 2.0 + 2.0 * torch.randn(BATCH, STEPS, HEADS)  # forget gates from ~0.02 to ~1
    x = torch.cat((q, k, v, o_pre, i_pre, f_pre), dim=-1)
    return cell, x, torch.sigmoid(o_pre), (q, k, v, i_pre, f_pre)


def _official_mlstm_h(q, k, v, i_pre, f_pre, eps: float) -> torch.Tensor:
    """h~ (B, S, D) from the official recurrent step, run from the zero state (as the official cell's step does)."""

    def heads(a):  # (B, S, D) -> (B, NH, S, DH)
        return a.view(BATCH, STEPS, HEADS, HEAD_DIM).transpose(1, 2)

    q, k, v = heads(q), heads(k), heads(v)
    c = torch.zeros(BATCH, HEADS, HEAD_DIM, HEAD_DIM)
    n = torch.zeros(BATCH, HEADS, HEAD_DIM, 1)
    m = torch.zeros(BATCH, HEADS, 1, 1)
    out = []
    with torch.no_grad():
        for t in range(STEPS):
            h, (c, n, m) = recurrent_step_stabilized_simple(
                c,
                n,
                m,
                q[:, :, t : t + 1].clone(),  # the official step squeezes these in place
                k[:, :, t : t + 1].clone(),
                v[:, :, t : t + 1].clone(),
                i_pre[:, t, :, None, None],
                f_pre[:, t, :, None, None],
                eps=eps,
            )
            out.append(h)  # (B, NH, 1, DH)
    return torch.cat(out, 2).transpose(1, 2).reshape(BATCH, STEPS, D)


def _our_mlstm(cell: MLSTMCell, x: torch.Tensor) -> torch.Tensor:
    dt = torch.full((BATCH, STEPS), cell.cfg.dt_ref_s)
    with torch.no_grad():
        return cell(x, dt)[0]


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("q_scale", [1.0, 0.01])
def test_mlstm_matches_official_recurrent_step(seed, q_scale):
    """Gates, stabilizer, C, n and h = (C q) / (max(|n^T q|, exp(-m)) + 1e-6), the official step as shipped,
    for queries of unit scale and 100x smaller (where the eps matters)."""
    cell, x, o, inputs = _mlstm_case(seed, q_scale=q_scale)
    official = o * _official_mlstm_h(*inputs, eps=OFFICIAL_EPS)
    assert (_our_mlstm(cell, x) - official).abs().max().item() <= TOL
