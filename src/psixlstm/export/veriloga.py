"""Verilog-A that computes exactly the trained student's equations, for OpenVAF (no arrays, no hidden state).

Walks the same layers as the PyTorch forward: every state is an internal node with ddt(), every weight a
full-precision literal, the input and output scaling explicit. For a two-terminal (memristor) student:

    u = V(p, n) / v_scale                                          [1]
    tau_j * ddt(V(x_j)) = -V(x_j) + g_j(V(x), u)                   state j, tau_j in seconds
    I(p, n) = i_scale * u * softplus(c . f(V(x)) + d1 u + d2 u^2 + e)   [A]

The initial state (all zero) is held at the operating point and at t = 0 by blending (DESIGN.md): no if/else
between different contributions. The same model always gives byte-identical text.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch

from ..models.students import ClusteredTauStudent, ContinuousStudent, LowRankStudent


def _lit(x: float) -> str:
    """A float64 literal that reads back to the same double."""
    text = repr(float(x))
    return text if ("e" in text or "." in text or "inf" in text or "nan" in text) else text + ".0"


def _dot(weights, terms: list[str], bias: float | None = None) -> str:
    parts = [f"{_lit(w)} * {t}" for w, t in zip(weights, terms, strict=True)]
    if bias is not None:
        parts.append(_lit(bias))
    return " + ".join(parts) if parts else "0.0"


@dataclass
class VerilogAModel:
    module: str
    text: str
    state_nodes: list[str]
    sha256: str


def _weights(linear: torch.nn.Linear) -> tuple[list[list[float]], list[float]]:
    w = linear.weight.detach().double().tolist()
    b = linear.bias.detach().double().tolist() if linear.bias is not None else [0.0] * len(w)
    return w, b


def _clustered_drive(s: ClusteredTauStudent, lines: list[str]) -> list[str]:
    n, w1, b1 = s.n_states, *_weights(s.w1)
    w2, b2 = _weights(s.w2)
    xs = [f"V(x{j})" for j in range(n)]
    rest = s.cfg.physics.kind == "memristor"
    for h in range(len(w1)):
        lines.append(f"        a{h} = tanh({_dot(w1[h], xs + ['u'], b1[h])});")
        if rest:  # the same layer at u = 0: the drive vanishes at V = 0
            lines.append(f"        r{h} = tanh({_dot(w1[h][:n], xs, b1[h])});")
    hidden = [f"a{h}" for h in range(len(w1))]
    if rest:
        hidden = [f"(a{h} - r{h})" for h in range(len(w1))]
        return [_dot(w2[j], hidden) for j in range(n)]
    return [_dot(w2[j], hidden, b2[j]) for j in range(n)]


def _lowrank_drive(s: LowRankStudent, lines: list[str]) -> list[str]:
    r = s.cfg.rank
    we, be = _weights(s.embed)
    wk, bk = _weights(s.kvi)
    for h in range(len(we)):
        lines.append(f"        e{h} = tanh({_dot(we[h], ['u'], be[h])});")
        if s.cfg.physics.kind == "memristor":
            lines.append(f"        e0_{h} = tanh({_lit(be[h])});")
    emb = [f"e{h}" for h in range(len(we))]
    for j in range(r):
        lines.append(f"        k{j} = {_dot(wk[j], emb, bk[j])};")
        lines.append(f"        v{j} = {_dot(wk[r + j], emb, bk[r + j])};")
    gate = f"exp(min({_dot(wk[2 * r], emb, bk[2 * r])}, 10.0))"
    if s.cfg.physics.kind == "memristor":
        gate += f" - exp(min({_dot(wk[2 * r], [f'e0_{h}' for h in range(len(we))], bk[2 * r])}, 10.0))"
    lines.append(f"        ig = {gate};")
    drives = [f"ig * v{i} * k{j}" for i in range(r) for j in range(r)]
    return drives + [f"ig * k{j}" for j in range(r)]


def emit_veriloga(
    student: ContinuousStudent, scales, module: str = "psix_student", provenance: dict | None = None
) -> VerilogAModel:
    """The Verilog-A text of a trained two-terminal student (memristor physics)."""
    cfg = student.cfg
    if cfg.physics.kind != "memristor" or cfg.n_in != 1 or cfg.n_out != 1:
        raise ValueError(
            f"Verilog-A export supports two-terminal (memristor) students; got physics "
            f"{cfg.physics.kind!r} with {cfg.n_in} inputs and {cfg.n_out} outputs"
        )
    v_scale, i_scale = float(scales.input_scale_v[0]), float(scales.output_scale_a[0])
    n = student.n_states
    taus = student.tau_per_state().detach().double().tolist()
    body: list[str] = ["        u = V(p, n) / v_scale;"]
    drives = (
        _clustered_drive(student, body) if isinstance(student, ClusteredTauStudent) else _lowrank_drive(student, body)
    )
    if isinstance(student, LowRankStudent):
        r, q = cfg.rank, student.q.detach().double().tolist()
        body.append(f"        nq = {_dot(q, [f'V(x{r * r + j})' for j in range(r)])};")
        body.append("        den = sqrt(nq * nq + 1.0);")
        feats = [f"({_dot(q, [f'V(x{i * r + j})' for j in range(r)])}) / den" for i in range(r)]
    else:
        feats = [f"V(x{j})" for j in range(n)]
    gs_w, gs_b = _weights(student.readout.g_state)
    gi_w = student.readout.g_input.weight.detach().double().tolist()[0]
    body.append(f"        s = {_dot(gs_w[0], feats, gs_b[0])} + {_lit(gi_w[0])} * u + {_lit(gi_w[1])} * u * u;")
    body.append("        sp = max(s, 0.0) + ln(1.0 + exp(-abs(s)));  // softplus, overflow-free")
    body.append("        I(p, n) <+ i_scale * u * sp;")
    body.append('        k_init = (analysis("static") || $abstime <= 0.0) ? 1.0 : 0.0;  // states start at 0')
    for j in range(n):
        body.append(
            f"        I(x{j}) <+ k_init * V(x{j}) + (1.0 - k_init) * (ddt({_lit(taus[j])} * V(x{j})) + V(x{j}) "
            f"- ({drives[j]}));"
        )
    reals = ["u", "s", "sp", "k_init"]
    if isinstance(student, ClusteredTauStudent):
        h = student.w1.out_features
        reals += [f"a{k}" for k in range(h)] + ([f"r{k}" for k in range(h)] if cfg.physics.kind == "memristor" else [])
    else:
        h = student.embed.out_features
        reals += [f"e{k}" for k in range(h)] + [f"e0_{k}" for k in range(h)]
        reals += [f"k{j}" for j in range(cfg.rank)] + [f"v{j}" for j in range(cfg.rank)] + ["ig", "nq", "den"]
    weights_hash = hashlib.sha256(
        b"".join(p.detach().double().numpy().tobytes() for p in student.state_dict().values())
    ).hexdigest()[:16]
    header = [
        f"// {module}: psixlstm {cfg.kind} student, generated; do not edit by hand",
        f"// weights sha256[:16] = {weights_hash}; {student.n_params} parameters, {n} states",
        f"// state time constants (s): {', '.join(_lit(t) for t in taus)}",
        f"// scaling: u = V(p,n) / {_lit(v_scale)} V; I = {_lit(i_scale)} A * y",
    ]
    for key in sorted(provenance or {}):
        header.append(f"// {key}: {provenance[key]}")
    nodes = ", ".join(f"x{j}" for j in range(n))
    text = "\n".join(
        [
            *header,
            '`include "disciplines.vams"',
            "",
            f"module {module}(p, n);",
            "    inout p, n;",
            "    electrical p, n;",
            f"    electrical {nodes};  // student states (dimensionless)",
            f"    parameter real v_scale = {_lit(v_scale)};  // V",
            f"    parameter real i_scale = {_lit(i_scale)};  // A",
            f"    real {', '.join(reals)};",
            "",
            "    analog begin",
            *body,
            "    end",
            "endmodule",
            "",
        ]
    )
    return VerilogAModel(
        module=module,
        text=text,
        state_nodes=[f"x{j}" for j in range(n)],
        sha256=hashlib.sha256(text.encode()).hexdigest(),
    )


def ngspice_testbench(model: VerilogAModel, osdi_path: str, stimulus, t_stop_s: float, max_step_s: float) -> str:
    """A ready ngspice deck: the stimulus across the model, pre_osdi, transient, results to tran.raw."""
    lines = [
        f"* psixlstm testbench for {model.module}",
        *stimulus.ngspice_lines("vp", "p", "0", t_stop_s),
        f"N1 p 0 m_{model.module}",
        f".model m_{model.module} {model.module}",
        ".options klu reltol=1e-4 method=trap",
        ".control",
        "set num_threads=1",
        f"pre_osdi {osdi_path}",
        f"tran {_lit(max_step_s)} {_lit(t_stop_s)} 0 {_lit(max_step_s)}",
        f"write tran.raw v(p) i(vp) {' '.join(f'v(n1#{x})' for x in model.state_nodes)}",
        "quit",
        ".endc",
        ".end",
    ]
    return "\n".join(lines) + "\n"


def vacask_testbench(model: VerilogAModel, osdi_path: str, stimulus, t_stop_s: float, max_step_s: float) -> str:
    """A ready VACASK netlist (writes tran1.raw)."""
    lines = [
        f"psixlstm testbench for {model.module}",
        "ground 0",
        f'load "{osdi_path}"',
        "model vsource vsource",
        f"model m_{model.module} {model.module}",
        *stimulus.vacask_lines("vp", "p", "0", t_stop_s),
        f"n1 (p 0) m_{model.module}",
        "control",
        '  options reltol=1e-4 tran_method="trap"',
        f"  analysis tran1 tran step={_lit(max_step_s)} stop={_lit(t_stop_s)} maxstep={_lit(max_step_s)}",
        "endc",
    ]
    return "\n".join(lines) + "\n"
