"""Verilog-A that computes exactly the trained student's equations, for OpenVAF (no arrays, no hidden state).

Walks the same layers as the PyTorch forward: every state is an internal node with ddt(), every weight a
full-precision literal, the input and output scaling explicit. Inputs are the voltages of the driven terminals
against the reference terminal (memristor p against n; MOSFET g, d against s; BJT b, c against e):

    u_k = V(node_k, ref) / v_scale_k                                [1]
    tau_j * ddt(V(x_j)) = -V(x_j) + g_j(V(x), u)                    state j, tau_j in seconds
    memristor:   I(p, n) = i_scale * u * exp(min(c . f(V(x)) + d1 u + d2 u^2 + e, 10))        [A]
    MOSFET/BJT:  I(node_k, ref) = i_scale_k * (S_k(V(x), u) + t_scale * ddt(Q_k(V(x), u)))   [A]

so the reference terminal carries minus the sum (KCL) and charge is conserved through ddt(Q). A memristor's initial
state (all zero, what the student was trained from) is held at the transient's operating point and at t = 0 by blending
(DESIGN.md): no if/else between different contributions. DC, operating-point and AC analyses solve the states' steady
state V(x) = g(V(x), u) (model parameter `dc_fixed_point = 1`, the default; what `verification.static_current`
computes), so a DC sweep gives the steady-state I-V and .ac the small-signal response of the whole ODE (tau ddt(x)
included) at the bias, as a physical device has; `dc_fixed_point = 0` holds the states at 0 there as well (DC at x = 0,
.ac quasi-static). A memristor's transient starts at 0 either way; a MOSFET's or BJT's transient starts, like the
student's runs, at the steady state of its operating point (at 0 with `dc_fixed_point = 0`). The same model always gives
byte-identical text.
"""

from __future__ import annotations

import copy
import hashlib
from dataclasses import dataclass

import torch

from ..models.students import EXP_ARG_MAX, ClusteredTauStudent, ContinuousStudent, LowRankStudent
from ..spice.circuit import VACASK_BREAKPOINT_STEP

# driven terminals (in the order of the dataset's inputs and outputs), reference terminal, port order
TERMINALS: dict[str, tuple[tuple[str, ...], str, tuple[str, ...]]] = {
    "memristor": (("p",), "n", ("p", "n")),
    "mosfet": (("g", "d"), "s", ("d", "g", "s")),
    "bjt": (("b", "c"), "e", ("c", "b", "e")),
}


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
    ports: tuple[str, ...] = ("p", "n")
    driven: tuple[str, ...] = ("p",)  # terminals whose voltage against `reference` is an input, in input order
    reference: str = "n"


def _weights(linear: torch.nn.Linear) -> tuple[list[list[float]], list[float]]:
    return _as_lists(linear.weight, linear.bias)


def _as_lists(weight: torch.Tensor, bias: torch.Tensor | None) -> tuple[list[list[float]], list[float]]:
    w = weight.detach().double().tolist()
    b = bias.detach().double().tolist() if bias is not None else [0.0] * len(w)
    return w, b


def _clustered_drive(s: ClusteredTauStudent, us: list[str], lines: list[str], reals: list[str]) -> list[str]:
    w1_eff, b1_eff, w2_eff, b2_eff = copy.deepcopy(s).double().drive_weights()  # as the float64 replay uses them
    n, (w1, b1), (w2, b2) = s.n_states, _as_lists(w1_eff, b1_eff), _as_lists(w2_eff, b2_eff)
    xs = [f"V(x{j})" for j in range(n)]
    rest = s.cfg.physics.kind == "memristor"
    for h in range(len(w1)):
        lines.append(f"        a{h} = tanh({_dot(w1[h], xs + us, b1[h])});")
        reals.append(f"a{h}")
        if rest:  # the same layer at u = 0: the drive vanishes at V = 0
            lines.append(f"        r{h} = tanh({_dot(w1[h][:n], xs, b1[h])});")
            reals.append(f"r{h}")
    if rest:
        return [_dot(w2[j], [f"(a{h} - r{h})" for h in range(len(w1))]) for j in range(n)]
    return [_dot(w2[j], [f"a{h}" for h in range(len(w1))], b2[j]) for j in range(n)]


def _lowrank_drive(s: LowRankStudent, us: list[str], lines: list[str], reals: list[str]) -> list[str]:
    r = s.cfg.rank
    we, be = _weights(s.embed)
    wk, bk = _weights(s.kvi)
    rest = s.cfg.physics.kind == "memristor"
    for h in range(len(we)):
        lines.append(f"        em{h} = tanh({_dot(we[h], us, be[h])});")
        reals.append(f"em{h}")
        if rest:
            lines.append(f"        em0_{h} = tanh({_lit(be[h])});")
            reals.append(f"em0_{h}")
    emb = [f"em{h}" for h in range(len(we))]
    for j in range(r):
        lines.append(f"        k{j} = {_dot(wk[j], emb, bk[j])};")
        lines.append(f"        v{j} = {_dot(wk[r + j], emb, bk[r + j])};")
        reals += [f"k{j}", f"v{j}"]
    gate = _exp_limited(_dot(wk[2 * r], emb, bk[2 * r]))
    if rest:
        gate += f" - {_exp_limited(_dot(wk[2 * r], [f'em0_{h}' for h in range(len(we))], bk[2 * r]))}"
    lines.append(f"        ig = {gate};")
    reals.append("ig")
    drives = [f"ig * v{i} * k{j}" for i in range(r) for j in range(r)]
    return drives + [f"ig * k{j}" for j in range(r)]


def _exp_limited(arg: str) -> str:
    """Verilog-A of `models.students.exp_limited`."""
    return f"exp(min({arg}, {EXP_ARG_MAX!r}))"


def _features(student: ContinuousStudent, lines: list[str], reals: list[str]) -> list[str]:
    """The readout's view of the states: the states themselves, or the low-rank memory read with q."""
    if not isinstance(student, LowRankStudent):
        return [f"V(x{j})" for j in range(student.n_states)]
    r, q = student.cfg.rank, student.q.detach().double().tolist()
    lines.append(f"        nq = {_dot(q, [f'V(x{r * r + j})' for j in range(r)])};")
    lines.append("        den = sqrt(nq * nq + 1.0);")
    reals += ["nq", "den"]
    return [f"({_dot(q, [f'V(x{i * r + j})' for j in range(r)])}) / den" for i in range(r)]


def _readout(student: ContinuousStudent, feats: list[str], us: list[str], lines: list[str], reals: list[str]):
    """Contribution expressions (normalised currents, one per driven terminal) of the student's readout."""
    ro, physics = student.readout, student.cfg.physics
    if physics.kind == "memristor":
        gs_w, gs_b = _weights(ro.g_state)
        gi_w = ro.g_input.weight.detach().double().tolist()[0]
        if student.cfg.log_conductance_squash:
            lines.append("        s0 = tanh(u0);  // the log-conductance's input, bounded beyond the training range")
            reals.append("s0")
        s0 = "s0" if student.cfg.log_conductance_squash else "u0"
        powers = [" * ".join([s0] * p) for p in range(1, len(gi_w) + 1)]  # s0, s0 * s0, ...
        lg = f"{_dot(gs_w[0], feats, gs_b[0])} + {_dot(gi_w, powers)}"
        lines.append(f"        lg = {lg};  // log-conductance")
        lines.append(f"        g_norm = {_exp_limited('lg')};  // conductance / (i_scale / v_scale), bounded")
        reals += ["lg", "g_norm"]
        return ["u0 * g_norm"]
    wi, bi = _weights(ro.static_in)
    wo, bo = _weights(ro.static_out)
    for h in range(len(wi)):
        lines.append(f"        sh{h} = tanh({_dot(wi[h], feats + us, bi[h])});")
        reals.append(f"sh{h}")
    wq, bq = _weights(ro.charge)
    outs = []
    for k in range(student.cfg.n_out):
        lines.append(f"        st{k} = {_dot(wo[k], [f'sh{h}' for h in range(len(wi))], bo[k])};")
        if physics.kind == "mosfet" and k == physics.i_d_index:  # I_d = u_ds softplus(.): zero at V_DS = 0
            lines.append(f"        st{k} = u{physics.v_ds_index} * (max(st{k}, 0.0) + ln(1.0 + exp(-abs(st{k}))));")
        if physics.kind == "mosfet" and k == physics.i_g_index:  # insulated gate: dQ_g/dt only
            lines[-1] = f"        st{k} = 0.0;  // gate: no static current"
        if getattr(ro, "junction", None) is not None:  # BJT junction law: exp(affine in u), bounded
            wj, bj = _weights(ro.junction)
            lines.append(f"        st{k} = st{k} + {_exp_limited(_dot(wj[k], us, bj[k]))};")
        lines.append(f"        q{k} = {_dot(wq[k], feats + us, bq[k])};  // charge / (i_scale_{k} * t_scale)")
        reals += [f"st{k}", f"q{k}"]
        outs.append(f"st{k} + t_scale * ddt(q{k})")
    return outs


def emit_veriloga(
    student: ContinuousStudent, scales, module: str = "psix_student", provenance: dict | None = None
) -> VerilogAModel:
    """The Verilog-A text of a trained student: two terminals (memristor) or three (MOSFET d g s, BJT c b e)."""
    cfg = student.cfg
    kind = cfg.physics.kind
    if kind not in TERMINALS or cfg.n_in != len(TERMINALS[kind][0]) or cfg.n_out != cfg.n_in:
        raise ValueError(
            f"Verilog-A export supports memristor (1 input), MOSFET and BJT (2 inputs) students with one current "
            f"per driven terminal; got physics {kind!r} with {cfg.n_in} inputs and {cfg.n_out} outputs"
        )
    driven, ref, ports = TERMINALS[kind]
    v_scale = [float(v) for v in scales.input_scale_v]
    i_scale = [float(a) for a in scales.output_scale_a]
    n = student.n_states
    taus = student.tau_per_state().detach().double().tolist()
    us = [f"u{k}" for k in range(cfg.n_in)]
    reals = [*us, "k_init"]
    body = [f"        u{k} = V({node}, {ref}) / v_scale_{k};" for k, node in enumerate(driven)]
    drive_of = _clustered_drive if isinstance(student, ClusteredTauStudent) else _lowrank_drive
    drives = drive_of(student, us, body, reals)
    currents = _readout(student, _features(student, body, reals), us, body, reals)
    for k, node in enumerate(driven):
        body.append(f"        I({node}, {ref}) <+ i_scale_{k} * ({currents[k]});")
    # k_init = 1 holds the states at 0 at an operating point (analysis("static") || $abstime <= 0). By default
    # (dc_fixed_point = 1) a DC, operating-point or AC analysis solves V(x) = g(V(x), u): the steady state a physical
    # device has; dc_fixed_point = 0 holds the states at 0 there. A memristor's transient starts at 0 either way (the
    # trained initial state, in ngspice and VACASK alike: analysis("tran") is true at its operating point); a MOSFET's
    # or BJT's transient starts where the student does (`ContinuousStudent.initial_state`), at the steady state of
    # its operating point, like the DC analyses.
    if kind == "memristor":
        body.append(
            '        k_init = (analysis("tran") || dc_fixed_point < 0.5) ? ((analysis("static") || $abstime <= 0.0) '
            "? 1.0 : 0.0) : 0.0;  // states start at 0"
        )
    else:
        body.append(
            '        k_init = dc_fixed_point < 0.5 ? ((analysis("static") || $abstime <= 0.0) ? 1.0 : 0.0) : 0.0;'
            "  // states start at their steady state"
        )
    for j in range(n):
        body.append(
            f"        I(x{j}) <+ k_init * V(x{j}) + (1.0 - k_init) * (ddt({_lit(taus[j])} * V(x{j})) + V(x{j}) "
            f"- ({drives[j]}));"
        )
    weights_hash = hashlib.sha256(
        b"".join(p.detach().double().numpy().tobytes() for p in student.state_dict().values())
    ).hexdigest()[:16]
    scaling = ", ".join(
        f"u{k} = V({node},{ref}) / {_lit(v_scale[k])} V, I({node},{ref}) = {_lit(i_scale[k])} A * y{k}"
        for k, node in enumerate(driven)
    )
    header = [
        f"// {module}: psixlstm {cfg.kind} student ({kind}), generated; do not edit by hand",
        f"// weights sha256[:16] = {weights_hash}; {student.n_params} parameters, {n} states",
        f"// state time constants (s): {', '.join(_lit(t) for t in taus)}",
        f"// scaling: {scaling}",
    ]
    for key in sorted(provenance or {}):
        header.append(f"// {key}: {provenance[key]}")
    params = [f"    parameter real v_scale_{k} = {_lit(v)};  // V" for k, v in enumerate(v_scale)]
    params.append(
        "    parameter real dc_fixed_point = 1.0;  // 1: DC/AC states at their steady state; 0: at 0 (trained start)"
        if kind == "memristor"
        else "    parameter real dc_fixed_point = 1.0;  // 1: DC/AC/transient start at the steady state; 0: at 0"
    )
    params += [f"    parameter real i_scale_{k} = {_lit(a)};  // A" for k, a in enumerate(i_scale)]
    if kind != "memristor":
        params.append(f"    parameter real t_scale = {_lit(cfg.t_scale_s)};  // s, charge time unit")
    nodes = ", ".join(f"x{j}" for j in range(n))
    text = "\n".join(
        [
            *header,
            '`include "disciplines.vams"',
            "",
            f"module {module}({', '.join(ports)});",
            f"    inout {', '.join(ports)};",
            f"    electrical {', '.join(ports)};",
            f"    electrical {nodes};  // student states (dimensionless)",
            *params,
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
        ports=ports,
        driven=driven,
        reference=ref,
    )


def _sources(model: VerilogAModel, stimulus) -> list[tuple[str, str, object]]:
    """(source name, node, stimulus) per driven terminal; `stimulus` is one stimulus or one per driven terminal."""
    stims = list(stimulus) if isinstance(stimulus, list | tuple) else [stimulus]
    if len(stims) != len(model.driven):
        raise ValueError(f"{model.module} has driven terminals {model.driven}: give {len(model.driven)} stimuli")
    return [(f"v{node}", node, stim) for node, stim in zip(model.driven, stims, strict=True)]


def circuit_nodes(ports, reference: str) -> tuple[str, ...]:
    """Circuit node of each port: driven terminals on their own nodes, the reference terminal on ground."""
    return tuple("0" if port == reference else port for port in ports)


def ngspice_testbench(model: VerilogAModel, osdi_path: str, stimulus, t_stop_s: float, max_step_s: float) -> str:
    """A ready ngspice deck: a source per driven terminal (reference grounded), pre_osdi, transient, tran.raw."""
    sources = _sources(model, stimulus)
    lines = [f"* psixlstm testbench for {model.module}"]
    for name, node, stim in sources:
        lines += stim.ngspice_lines(name, node, "0", t_stop_s)
    saved = [f"v({node}) i({name})" for name, node, _ in sources]
    lines += [
        f"N1 {' '.join(circuit_nodes(model.ports, model.reference))} m_{model.module}",
        f".model m_{model.module} {model.module}",
        ".options klu reltol=1e-4 method=trap",
        ".control",
        "set num_threads=1",
        f"pre_osdi {osdi_path}",
        f"tran {_lit(max_step_s)} {_lit(t_stop_s)} 0 {_lit(max_step_s)}",
        f"write tran.raw {' '.join(saved)} {' '.join(f'v(n1#{x})' for x in model.state_nodes)}",
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
    ]
    for name, node, stim in _sources(model, stimulus):
        lines += stim.vacask_lines(name, node, "0", t_stop_s)
    lines += [
        f"n1 ({' '.join(circuit_nodes(model.ports, model.reference))}) m_{model.module}",
        "control",
        f'  options reltol=1e-4 tran_method="trap" tran_fbr={_lit(VACASK_BREAKPOINT_STEP)}',
        f"  analysis tran1 tran step={_lit(max_step_s)} stop={_lit(t_stop_s)} maxstep={_lit(max_step_s)}",
        "endc",
    ]
    return "\n".join(lines) + "\n"


def example_stimuli(kind: str, seed: int = 0) -> tuple[list, float, float]:
    """Stimuli for a model's ready testbenches, one per driven terminal: the paper benchmark for a memristor, random
    terminal programs inside the reference device's input ranges for a MOSFET or BJT. Returns (stimuli, t_stop s,
    max step s)."""
    import numpy as np

    from .. import stimuli as st

    if kind == "memristor":
        return [st.paper_benchmark(seed=seed, duration_s=2e-3)], 2e-3, 0.2e-6
    from ..data.generate import terminal_program
    from ..devices.spice_reference import BJT, MOSFET

    rng = np.random.default_rng(seed)
    ref = MOSFET if kind == "mosfet" else BJT
    return [terminal_program(rng, 2e-6, lo, hi) for lo, hi in ref.input_range_v], 2e-6, 1e-9
