"""Stage: characterise an exported MOSFET or BJT student in SPICE against its native reference (BSIM4 / Gummel-Poon).

Every measurement runs the compiled module (.osdi) in ngspice and/or VACASK and the native device in ngspice, with
the module parameter `dc_fixed_point = 1` (its default), so that DC, operating-point and AC analyses hold the
student's states at their steady state for the bias (`x* = g(x*, u)`, the DC of a physical device) instead of the
trained initial state 0 that the transient starts from (see `psixlstm.export.veriloga`):

- DC families (`dc_curves`): output (I vs the second input at several values of the first) and transfer curves
  (I vs the first input at several values of the second): MOSFET I_D(V_DS) at V_GS and I_D(V_GS) at V_DS, BJT
  I_C(V_CE) at V_BE and I_C(V_BE) at V_CE; gm = dI/dV_first from the transfer curves and gds = dI/dV_second from
  the output curves (central differences of the swept curves); the module's SPICE DC against the PyTorch student's
  steady state current (`steady_current`), an exactness check of the export.
- MOSFET Gummel symmetry test (`gummel_symmetry`): drain at +V_X, source at -V_X, gate at V_G against ground
  (ngspice, a VCVS ties the source to the drain); I_D must be odd in V_X and its derivatives continuous at 0.
- BJT Gummel plot and current gain (`bjt_gummel`): I_C and I_B vs V_BE at fixed V_CE, beta = I_C / I_B vs I_C,
  errors in decades (|log10(exported / native)|) where the native current is above a floor.
- KCL and charge conservation (`kcl_and_charge`): a transient with every terminal on an ammeter; KCL residual
  max |I_1 + I_2 + I_ref| / max |I|; the charge current (terminal current minus the static readout at SPICE's own
  states) integrated over a closed voltage cycle that starts and ends settled at the same bias, residual relative
  to the charge swing.
- Small signal (`ac_compare`): SPICE .ac of the module at operating points inside the training range against the
  native device and against the PyTorch linearisation (`small_signal_y`), Y_ij = dI_i / dV_j over 1 Hz - 10 GHz,
  per-entry magnitude (dB) and phase (degrees) errors, and per frequency decade (`frequency_bands`).

Units: V, A, S (siemens), Hz, s, C (coulomb); relative errors are dimensionless, magnitude errors in dB, phases in
degrees, current errors of the Gummel plot in decades.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path

import numpy as np
import torch

from . import spice
from . import stimuli as st
from .devices.spice_reference import BJT, MOSFET, SpiceReferenceDevice
from .export.veriloga import TERMINALS
from .models.students import ContinuousStudent, backward_euler_steps
from .verification import Testbench, dc_rel_err, steady_state
from .verification import static_current as steady_current  # states at x* = g(x*, u)

DC_RELTOL = 1e-9  # DC and AC operating points: converged far below the errors measured
DC_POINTS = 61
AC_START_HZ, AC_STOP_HZ, AC_POINTS_PER_DECADE = 1.0, 1e10, 10
DERIVATIVE_FLOOR = 0.01  # median relative gm / gds errors where |native| > 1 % of its max over the sweep
GUMMEL_FLOORS = (1e-2, 1e-3)  # Gummel errors where the native current > floor x its max over the sweep
REFERENCES = {"mosfet": MOSFET, "bjt": BJT}
# DC families: values of the held input (V) per device, inside the training range
OUTPUT_FAMILY = {"mosfet": (0.4, 0.6, 0.8, 1.0, 1.2), "bjt": (0.6, 0.64, 0.68, 0.72)}  # V_GS / V_BE
TRANSFER_FAMILY = {"mosfet": (0.05, 0.1, 0.6, 1.2), "bjt": (0.5, 2.0, 5.0)}  # V_DS / V_CE
# output current of the curves (index of the driven terminal): MOSFET I_D, BJT I_C
MAIN_OUTPUT = {"mosfet": 1, "bjt": 1}
AC_BIASES = {  # (first, second input) V: MOSFET (V_GS, V_DS), BJT (V_BE, V_CE)
    "mosfet": ((0.8, 0.6), (1.2, 1.2), (0.6, 0.1)),
    "bjt": ((0.65, 2.0), (0.7, 1.0), (0.6, 4.0)),
}
GST_GATE_V = (0.6, 0.9)
GST_VX_MAX, GST_POINTS = 0.3, 121


# ---------------------------------------------------------------------------------------------------------------------
# the exported model


@dataclasses.dataclass
class ExportedDevice:
    """An exported MOSFET or BJT student: the PyTorch student, its scales (V, A per unit), the compiled module and
    how it is wired (`TERMINALS`)."""

    student: ContinuousStudent
    kind: str  # "mosfet" or "bjt"
    v_scale: np.ndarray  # (n_in,) V
    i_scale: np.ndarray  # (n_out,) A
    osdi: Path
    module: str
    state_nodes: tuple[str, ...]

    @property
    def driven(self) -> tuple[str, ...]:
        return TERMINALS[self.kind][0]

    @property
    def reference(self) -> str:
        return TERMINALS[self.kind][1]

    @property
    def ports(self) -> tuple[str, ...]:
        return TERMINALS[self.kind][2]

    @property
    def native(self) -> SpiceReferenceDevice:
        return REFERENCES[self.kind]

    def bench(self, fixed_point: bool = True) -> Testbench:
        """The verification testbench (reference terminal grounded) with the DC states at their steady state
        (`fixed_point`, the module's default) or at 0 (dc_fixed_point = 0)."""
        params = {"dc_fixed_point": 1.0 if fixed_point else 0.0}
        return dataclasses.replace(Testbench.of(self.osdi, self.module, self.state_nodes, self.kind), params=params)


def load_exported(model_dir) -> ExportedDevice:
    """An export directory (`psi-xlstm export`) of a MOSFET or BJT student, with the student it came from.
    Raises ValueError (FileNotFoundError) with what is wrong otherwise."""
    from .distillation import load_student

    model_dir = Path(model_dir)
    meta_path = model_dir / "model.json"
    if not meta_path.exists():
        raise FileNotFoundError(f"{model_dir} is not an export directory (no model.json; run psi-xlstm export)")
    meta = json.loads(meta_path.read_text())
    student, scales, _ = load_student(meta["student_dir"])
    kind = student.cfg.physics.kind
    if kind not in REFERENCES:
        raise ValueError(f"{model_dir} holds a {kind} student: characterize needs a MOSFET or BJT export")
    va_text = (model_dir / meta["va"]).read_text()
    if "dc_fixed_point" not in va_text:
        raise ValueError(
            f"{model_dir} was exported before the dc_fixed_point parameter (DC/AC at the steady state): re-export "
            f"it with psi-xlstm export --student {meta['student_dir']} --out DIR"
        )
    return ExportedDevice(
        student=student,
        kind=kind,
        v_scale=np.asarray(scales.input_scale_v, float),
        i_scale=np.asarray(scales.output_scale_a, float),
        osdi=model_dir / meta["osdi"],
        module=meta["module"],
        state_nodes=tuple(meta["state_nodes"]),
    )


# ---------------------------------------------------------------------------------------------------------------------
# PyTorch side: steady state, static currents, linearisation


def _double(student: ContinuousStudent) -> ContinuousStudent:
    return copy.deepcopy(student).double().eval()


def small_signal_y(
    student: ContinuousStudent, v_scale, i_scale, v_op, freqs_hz: np.ndarray, pinned: bool = False
) -> np.ndarray:
    """The student's small-signal admittance Y (F, n_out, n_in) in S at the DC bias v_op (n_in,) V: the ODE
    tau dx/dt = -x + g(x, u) linearised at its fixed point, dx/dt = A x + B u with A = (dg/dx - I) / tau and
    B = (dg/du) / tau, and the readout I = i_scale (S(x, u) + t_scale dQ(x, u)/dt), u = V / v_scale:

        Y(jw) = i_scale [(dS/dx + jw t_scale dQ/dx) (jw I - A)^-1 B + dS/du + jw t_scale dQ/du] / v_scale

    `pinned`: the states held at 0 (what the module with dc_fixed_point = 0 gives in .ac): Y = i_scale
    (dS/du + jw t_scale dQ/du) / v_scale at x = 0."""
    model = _double(student)
    v_scale, i_scale = np.asarray(v_scale, float), np.asarray(i_scale, float)
    u0 = torch.as_tensor(np.asarray(v_op, float) / v_scale)[None]
    x0 = torch.zeros(1, model.n_states, dtype=torch.float64)
    if not pinned:
        x0 = torch.as_tensor(steady_state(student, u0.numpy()))

    def parts(x, u):
        feats = model.readout_features(x[None])
        q = model.readout.charge_of(feats, u[None])
        q = torch.zeros(model.cfg.n_out, dtype=torch.float64) if q is None else q[0]
        return model.drive(x[None], u[None])[0], model.readout.static(feats, u[None])[0], q

    jac = torch.autograd.functional.jacobian(parts, (x0[0], u0[0]))
    (g_x, g_u), (s_x, s_u), (q_x, q_u) = ((a.numpy(), b.numpy()) for a, b in jac)
    w = 2 * np.pi * np.asarray(freqs_hz, float)
    t_scale = model.cfg.t_scale_s
    y = np.empty((w.size, model.cfg.n_out, model.cfg.n_in), complex)
    inv_tau = 1.0 / model.tau_per_state().detach().numpy()
    a_mat = inv_tau[:, None] * (g_x - np.eye(model.n_states))
    b_mat = inv_tau[:, None] * g_u
    for k, wk in enumerate(w):
        y_norm = s_u + 1j * wk * t_scale * q_u
        if not pinned:
            x_u = np.linalg.solve(1j * wk * np.eye(model.n_states) - a_mat, b_mat)
            y_norm = y_norm + (s_x + 1j * wk * t_scale * q_x) @ x_u
        y[k] = i_scale[:, None] * y_norm / v_scale[None, :]
    return y


# ---------------------------------------------------------------------------------------------------------------------
# SPICE runs


def _native_circuit(native: SpiceReferenceDevice, dc_v, ac_source: str | None = None) -> spice.Circuit:
    sources = [
        spice.VoltageSource(f"v{node}", node, "0", dc_v=float(v), ac_mag_v=1.0 if f"v{node}" == ac_source else 0.0)
        for node, v in zip(native.nodes, dc_v, strict=True)
    ]
    return spice.Circuit(f"psixlstm {native.name} characterisation", [*sources, native.device])


def _exported_circuit(dev: ExportedDevice, dc_v, ac_source: str | None = None, fixed_point: bool = True):
    bench = dev.bench(fixed_point)
    circuit = bench.circuit(dc_v=dc_v)
    elements = [
        dataclasses.replace(e, ac_mag_v=1.0) if isinstance(e, spice.VoltageSource) and e.name == ac_source else e
        for e in circuit.elements
    ]
    return spice.Circuit(circuit.title, elements), bench


def _sweep(dev: ExportedDevice, k: int, lo: float, hi: float, held: dict[int, float], simulator: str | None):
    """One DC sweep of driven input k from lo to hi (V), the others held (input index -> V): of the module in
    `simulator`, or of the native device in ngspice (simulator None). Returns (voltages (P, n_in) V,
    currents (P, n_in) A into the driven terminals)."""
    dc = [held.get(j, 0.0) for j in range(len(dev.driven))]
    dc[k] = lo
    analysis = spice.DCSweep(f"v{dev.driven[k]}", lo, hi, DC_POINTS, DC_RELTOL)
    if simulator is None:
        w = spice.run_ngspice(_native_circuit(dev.native, dc), analysis)
        v = np.stack([w.voltage(n) for n in dev.native.nodes], 1)
        return v, dev.native.terminal_currents(w)
    circuit, bench = _exported_circuit(dev, dc)
    w = spice.run_circuit(circuit, analysis, simulator)
    return bench.voltages(w), bench.currents(w)


def _rel_errors(pred: np.ndarray, ref: np.ndarray) -> dict:
    """max |pred - ref| / max |ref| and the RMS error / max |ref| (all points), plus the median of |pred - ref| /
    |ref| where |ref| > DERIVATIVE_FLOOR max |ref|."""
    scale = float(np.max(np.abs(ref)))
    err = np.abs(pred - ref)
    big = np.abs(ref) > DERIVATIVE_FLOOR * scale
    return {
        "max_err_rel_to_max": float(np.max(err) / scale),
        "rms_err_rel_to_max": float(np.sqrt(np.mean(err**2)) / scale),
        "median_rel_err_above_1pct": float(np.median(err[big] / np.abs(ref[big]))) if big.any() else float("nan"),
    }


def dc_curves(dev: ExportedDevice, simulators=("ngspice",)) -> dict:
    """Output and transfer families of the module (each simulator) and of the native device (ngspice), over the
    training range. Output curves: the main current (MOSFET I_D, BJT I_C) vs the second input at each
    `OUTPUT_FAMILY` value of the first; transfer curves: vs the first input at each `TRANSFER_FAMILY` value of the
    second. gm = dI/dV_first (transfer curves), gds = dI/dV_second (output curves), central differences.

    Errors of the module against the native device (`_rel_errors`, per family: current, gm, gds), and the module's
    SPICE DC against the PyTorch steady state current (max |I_spice - I_torch| / max |I_torch| per terminal, all
    curves). Curves are returned for plotting (V, A, S)."""
    (lo0, hi0), (lo1, hi1) = dev.native.input_range_v
    main = MAIN_OUTPUT[dev.kind]
    report: dict = {"inputs": list(dev.native.input_names), "main_current": dev.native.output_names[main]}
    families = {
        "output": (1, lo1, hi1, 0, OUTPUT_FAMILY[dev.kind]),
        "transfer": (0, lo0, hi0, 1, TRANSFER_FAMILY[dev.kind]),
    }
    for sim in simulators:
        report[sim] = {}
    curves: dict = {}
    exactness = {sim: [] for sim in simulators}
    for family, (k, lo, hi, held_k, values) in families.items():
        curves[family] = {"swept": dev.native.input_names[k], "held": dev.native.input_names[held_k], "curves": []}
        nat_i, nat_d, exp_i, exp_d = [], [], {s: [] for s in simulators}, {s: [] for s in simulators}
        for value in values:
            v_n, i_n = _sweep(dev, k, lo, hi, {held_k: value}, None)
            entry = {"held_v": value, "v": v_n[:, k], "native": i_n[:, main]}
            nat_i.append(i_n[:, main])
            nat_d.append(np.gradient(i_n[:, main], v_n[:, k]))
            for sim in simulators:
                v_e, i_e = _sweep(dev, k, lo, hi, {held_k: value}, sim)
                exactness[sim].append(np.stack([i_e, steady_current(dev.student, dev.v_scale, dev.i_scale, v_e)]))
                exp_i[sim].append(i_e[:, main])
                exp_d[sim].append(np.gradient(i_e[:, main], v_e[:, k]))
                entry[sim] = i_e[:, main]
            curves[family]["curves"].append(entry)
        deriv = "gds" if family == "output" else "gm"
        for sim in simulators:
            report[sim][family] = {
                "current": _rel_errors(np.concatenate(exp_i[sim]), np.concatenate(nat_i)),
                deriv: _rel_errors(np.concatenate(exp_d[sim]), np.concatenate(nat_d)),
                "held_v": list(values),
            }
    for sim in simulators:
        pairs = np.concatenate(exactness[sim], axis=1)  # (2, P, n_out)
        err = dc_rel_err(pairs[0], pairs[1], dev.i_scale)
        report[sim]["spice_vs_pytorch_max_rel_err"] = [float(e) for e in err]
    report["curves"] = curves
    return report


def _gst_run(circuit: spice.Circuit) -> tuple[np.ndarray, np.ndarray]:
    w = spice.run_ngspice(circuit, spice.DCSweep("vd", -GST_VX_MAX, GST_VX_MAX, GST_POINTS, DC_RELTOL))
    return w.voltage("d"), -w.current("vd")


def _gst_metrics(vx: np.ndarray, i_d: np.ndarray) -> dict:
    """Oddness of I_D(V_X) and continuity of its derivatives at V_X = 0 (uniform grid symmetric about 0)."""
    h = float(np.mean(np.diff(vx)))
    d1 = np.gradient(i_d, h)
    d2 = np.gradient(d1, h)
    d3 = np.gradient(d2, h)
    mid = vx.size // 2
    inner = slice(3, -3)  # one-sided differences at the ends
    return {
        "odd_asymmetry": float(np.max(np.abs(i_d + i_d[::-1])) / np.max(np.abs(i_d))),  # I(x) + I(-x)
        "d1_even_asymmetry": float(np.max(np.abs(d1 - d1[::-1])[inner]) / np.max(np.abs(d1[inner]))),
        "d2_at_0_rel": float(abs(d2[mid]) / np.max(np.abs(d2[inner]))),
        "d3_jump_at_0_rel": float(abs(d3[mid + 1] - d3[mid - 1]) / np.max(np.abs(d3[inner]))),
    }


def gummel_symmetry(dev: ExportedDevice) -> dict:
    """MOSFET Gummel symmetry test in ngspice: V_D = +V_X, V_S = -V_X (a VCVS), V_G fixed against ground, V_X
    swept over +-GST_VX_MAX V. For the module (no bulk terminal), for BSIM4 with the bulk grounded (the standard
    test) and with the bulk on the source (the device the student was trained on). Metrics per gate voltage
    (`_gst_metrics`): odd_asymmetry = max |I_D(V_X) + I_D(-V_X)| / max |I_D|; d1_even_asymmetry the same for the
    even dI_D/dV_X; d2_at_0_rel = |d2I_D/dV_X^2 (0)| / max |d2I_D/dV_X^2| (zero for an odd function); and
    d3_jump_at_0_rel = |d3I(+h) - d3I(-h)| / max |d3I| (a kink in the derivatives at V_X = 0)."""
    if dev.kind != "mosfet":
        raise ValueError("the Gummel symmetry test is a MOSFET test")
    model = dev.native.device.lines[2]
    follow = spice.NativeDevice("es", ("s", "d"), ("es s 0 d 0 -1.0",))
    report: dict = {"vx_max_v": GST_VX_MAX, "points": GST_POINTS, "gate_v": list(GST_GATE_V), "curves": []}
    for name in ("exported", "bsim4_bulk_grounded", "bsim4_bulk_at_source"):
        report[name] = []
    for vg in GST_GATE_V:
        sources = [spice.VoltageSource("vd", "d", "0", dc_v=0.0), spice.VoltageSource("vg", "g", "0", dc_v=vg)]
        dut = spice.OsdiDevice("dut", ("d", "g", "s"), dev.module, dev.osdi, {"dc_fixed_point": 1.0})
        curves = {"gate_v": vg}
        for name, element in (
            ("exported", dut),
            ("bsim4_bulk_grounded", spice.NativeDevice("m1", ("d", "g", "s"), ("M1 d g s 0 nch W=10u L=0.18u", model))),
            (
                "bsim4_bulk_at_source",
                spice.NativeDevice("m1", ("d", "g", "s"), ("M1 d g s s nch W=10u L=0.18u", model)),
            ),
        ):
            vx, i_d = _gst_run(spice.Circuit("gummel symmetry", [*sources, follow, element]))
            report[name].append(_gst_metrics(vx, i_d))
            curves["vx"], curves[name] = vx, i_d
        report["curves"].append(curves)
    for name in ("exported", "bsim4_bulk_grounded", "bsim4_bulk_at_source"):
        report[f"{name}_worst"] = {k: max(m[k] for m in report[name]) for k in report[name][0]}
    return report


def _decades(pred: np.ndarray, ref: np.ndarray, floor: float) -> dict:
    """|log10(pred / ref)| where ref > floor (A): max and median in decades, and the points where pred <= 0."""
    keep = ref > floor
    bad = keep & (pred <= 0)
    ok = keep & (pred > 0)
    dec = np.abs(np.log10(pred[ok] / ref[ok])) if ok.any() else np.array([np.nan])
    return {
        "floor_a": float(floor),
        "points": int(keep.sum()),
        "nonpositive_points": int(bad.sum()),
        "max_decades": float(np.max(dec)),
        "median_decades": float(np.median(dec)),
    }


def bjt_gummel(dev: ExportedDevice, simulators=("ngspice",), v_ce: tuple[float, ...] = (2.0, 0.5)) -> dict:
    """Gummel plot: I_C and I_B vs V_BE (training range) at each V_CE, module vs Gummel-Poon, and beta = I_C / I_B
    vs I_C. Errors in decades (`_decades`) where the native current is above each `GUMMEL_FLOORS` fraction of its
    maximum over the sweep; beta's where both native currents are."""
    if dev.kind != "bjt":
        raise ValueError("the Gummel plot is a BJT measurement")
    lo, hi = dev.native.input_range_v[0]
    report: dict = {"v_ce": list(v_ce), "curves": []}
    for sim in simulators:
        report[sim] = []
    for vce in v_ce:
        v_n, i_n = _sweep(dev, 0, lo, hi, {1: vce}, None)
        ib_n, ic_n = i_n[:, 0], i_n[:, 1]
        curve = {"v_ce": vce, "v_be": v_n[:, 0], "native_ib": ib_n, "native_ic": ic_n}
        for sim in simulators:
            _, i_e = _sweep(dev, 0, lo, hi, {1: vce}, sim)
            ib_e, ic_e = i_e[:, 0], i_e[:, 1]
            curve[f"{sim}_ib"], curve[f"{sim}_ic"] = ib_e, ic_e
            entry: dict = {"v_ce": vce}
            for frac in GUMMEL_FLOORS:
                fb, fc = frac * np.max(ib_n), frac * np.max(ic_n)
                native = (ib_n > fb) & (ic_n > fc)
                both = native & (ib_e > 0)
                beta_n = ic_n[both] / ib_n[both]
                beta_e = ic_e[both] / ib_e[both]
                beta_native = ic_n[native] / ib_n[native]  # the native range, whatever the module's sign
                entry[f"floor_{frac:g}"] = {
                    "i_c": _decades(ic_e, ic_n, fc),
                    "i_b": _decades(ib_e, ib_n, fb),
                    "beta": _decades(beta_e, beta_n, 0.0),
                    "beta_native_range": [float(beta_native.min()), float(beta_native.max())] if native.any() else [],
                }
            report[sim].append(entry)
        report["curves"].append(curve)
    return report


def _cycle(lo: float, hi: float, hold_s: float, cycle_s: float, phase: float) -> st.Pwl:
    """A closed cycle on one terminal: hold at mid, ramps to hi and lo, back to mid, hold (phase shifts the corners
    so that the two terminals move at different times)."""
    mid = 0.5 * (lo + hi)
    t0 = hold_s
    times = [0.0, t0]
    values = [mid, mid]
    for frac, v in ((0.2 + phase, hi), (0.5 + phase, lo), (0.8, mid)):
        times.append(t0 + frac * cycle_s)
        values.append(v)
    times.append(t0 + cycle_s + hold_s)
    values.append(mid)
    return st.Pwl(tuple(times), tuple(values))


def kcl_and_charge(dev: ExportedDevice, simulators=("ngspice",), seed: int = 0) -> dict:
    """A transient of the module with every terminal (the reference too) on a voltage source, so all three terminal
    currents are measured.

    KCL: on the example stimuli of the export (random terminal programs in the training range, 2 us),
    max_t |I_1 + I_2 + I_ref| / max_t,k |I_k|.

    Charge: both driven terminals go around a closed cycle (100 ns) between two holds of 50 x the slowest time
    constant at the range's midpoint, so voltages and states start and end settled at the same point. The charge
    current of terminal k is the SPICE current minus i_scale_k S_k(x, u) at SPICE's own states x(t); its integral
    (the simulator's own rule: trapezoidal, backward Euler after breakpoints in ngspice, backward Euler in VACASK)
    from the end of the first hold to the end of the run must vanish: residual = |Q_k(end)| / (max Q_k - min Q_k),
    worst terminal (reference included); it is as small as the states' return to their start, |x(end) - x(start)|
    (reported: ngspice's trapezoidal steps leave stiff states ringing in long holds). And at every time point the
    integrated charge against the student's charge function at SPICE's states, max_t |Q_int(t) - (Q(x(t), u(t)) -
    Q(start))| / swing: the charge current is the time derivative of a charge (no charge created or lost on any
    path, closed or not)."""
    from .export.veriloga import example_stimuli

    stims, t_stop, max_step = example_stimuli(dev.kind, seed)
    tau_max = float(max(dev.student.time_constants_s()))
    hold, cycle = 50.0 * tau_max, 100e-9
    ranges = dev.native.input_range_v
    cyc = [_cycle(lo, hi, hold, cycle, 0.1 * k) for k, (lo, hi) in enumerate(ranges)]
    t_cycle = cyc[0].times_s[-1]
    report: dict = {"kcl_stop_s": t_stop, "charge_hold_s": hold, "charge_cycle_s": cycle}
    model = _double(dev.student)
    for sim in simulators:
        entry: dict = {}
        for what, waves, stop, step in (("kcl", stims, t_stop, max_step), ("charge", cyc, t_cycle, None)):
            sources = [spice.VoltageSource(f"v{n}", n, "0", waveform=w) for n, w in zip(dev.driven, waves, strict=True)]
            sources.append(spice.VoltageSource(f"v{dev.reference}", dev.reference, "0", dc_v=0.0))
            dut = spice.OsdiDevice("dut", dev.ports, dev.module, dev.osdi, {}, dev.state_nodes)
            method = "euler" if sim == "vacask" and what == "charge" else "trap"
            analysis = spice.Transient(
                stop_s=stop, step_s=1e-10, max_step_s=step if step else cycle / 200, reltol=1e-6, method=method
            )
            if what == "charge":  # hold steps may be long: the ramps are breakpoints
                analysis = dataclasses.replace(analysis, max_step_s=max(cycle / 200, hold / 200))
            w = spice.run_circuit(spice.Circuit(f"{what} check", [*sources, dut]), analysis, sim)
            t, keep = np.unique(w.axis, return_index=True)
            i_all = np.stack([-w.current(f"v{n}")[keep] for n in (*dev.driven, dev.reference)], 1)
            if what == "kcl":
                entry["kcl_max_rel"] = float(np.max(np.abs(i_all.sum(1))) / np.max(np.abs(i_all)))
                entry["kcl_points"] = int(t.size)
                continue
            x = np.stack([w.state("dut", n)[keep] for n in dev.state_nodes], 1)
            v = np.stack([w.voltage(n)[keep] for n in dev.driven], 1)
            with torch.no_grad():
                feats = model.readout_features(torch.as_tensor(x))
                s = model.readout.static(feats, torch.as_tensor(v / dev.v_scale)).numpy() * dev.i_scale
            i_q = i_all[:, :2] - s
            i_q = np.concatenate([i_q, -i_q.sum(1, keepdims=True)], 1)  # the reference's charge current: KCL
            bps = t if method == "euler" else np.concatenate([c.breakpoints(stop) for c in cyc])
            theta = np.where(backward_euler_steps(t, bps), 1.0, 0.5)[1:, None]
            dq = np.diff(t)[:, None] * (theta * i_q[1:] + (1 - theta) * i_q[:-1])
            start = int(np.searchsorted(t, hold))
            q = np.cumsum(dq[start:], 0)
            swing = np.ptp(np.concatenate([np.zeros((1, 3)), q]), 0)
            entry["charge_residual_rel"] = float(np.max(np.abs(q[-1]) / swing))
            entry["charge_swing_c"] = [float(a) for a in swing]
            entry["charge_end_c"] = [float(a) for a in q[-1]]
            entry["state_return_max_abs"] = float(np.max(np.abs(x[-1] - x[start])))
            with torch.no_grad():  # the charge function itself at SPICE's states: Q_int(t) = Q(t) - Q(start)
                q_fn = model.readout.charge_of(feats, torch.as_tensor(v / dev.v_scale)).numpy()
            q_fn = q_fn * dev.i_scale * model.cfg.t_scale_s
            q_fn = np.concatenate([q_fn, -q_fn.sum(1, keepdims=True)], 1)
            dev_fn = np.max(np.abs(q - (q_fn[start + 1 :] - q_fn[start])), 0) / swing
            entry["charge_vs_state_function_rel"] = float(np.max(dev_fn))
        report[sim] = entry
    return report


def _ac_run(dev: ExportedDevice, bias, simulator: str | None, fixed_point: bool = True) -> tuple[np.ndarray, ...]:
    """Y (F, n, n) in S of the module (simulator) or the native device (None) at the bias, one .ac per driven
    source (its ac magnitude 1 V, the others 0): Y_ij = current into terminal i / V_j."""
    analysis = spice.AC(AC_START_HZ, AC_STOP_HZ, AC_POINTS_PER_DECADE, DC_RELTOL)
    cols = []
    for node in dev.driven:
        if simulator is None:
            w = spice.run_ngspice(_native_circuit(dev.native, bias, f"v{node}"), analysis)
        else:
            circuit, _ = _exported_circuit(dev, bias, f"v{node}", fixed_point)
            w = spice.run_circuit(circuit, analysis, simulator)
        cols.append(np.stack([-w.current(f"v{n}") for n in dev.driven], 1))
    return w.axis, np.stack(cols, 2)


def _y_errors(y: np.ndarray, y_ref: np.ndarray, names: list[str]) -> dict:
    """Per entry: max over frequency of |Y - Y_ref| / max_f |Y_ref| (complex), and of the magnitude error
    |20 log10 |Y| / |Y_ref|| (dB) and the phase error (degrees, wrapped to +-180)."""
    out = {}
    for i, a in enumerate(names):
        for j, b in enumerate(names):
            e, r = y[:, i, j], y_ref[:, i, j]
            with np.errstate(divide="ignore", invalid="ignore"):
                db = np.abs(20 * np.log10(np.abs(e) / np.abs(r)))
            phase = np.abs(np.angle(e / r, deg=True))
            out[f"Y_{a}{b}"] = {
                "complex_err_rel_to_max": float(np.max(np.abs(e - r)) / np.max(np.abs(r))),
                "max_mag_err_db": float(np.nanmax(db)),
                "max_phase_err_deg": float(np.nanmax(phase)),
            }
    return out


def frequency_bands(freqs: np.ndarray, y: np.ndarray, y_ref: np.ndarray, names: list[str]) -> list[dict]:
    """Accuracy per decade of frequency: per band [f, 10 f) and entry, the median magnitude error (dB) and phase
    error (degrees) of Y against Y_ref, and the worst entry's."""
    bands = []
    lo = AC_START_HZ
    while lo < AC_STOP_HZ * (1 - 1e-9):
        sel = (freqs >= lo * (1 - 1e-9)) & (freqs < 10 * lo * (1 - 1e-9))
        entry: dict = {"f_lo_hz": lo, "f_hi_hz": 10 * lo}
        for i, a in enumerate(names):
            for j, b in enumerate(names):
                e, r = y[sel, i, j], y_ref[sel, i, j]
                with np.errstate(divide="ignore", invalid="ignore"):
                    db = float(np.nanmedian(np.abs(20 * np.log10(np.abs(e) / np.abs(r)))))
                ph = float(np.nanmedian(np.abs(np.angle(e / r, deg=True))))
                entry[f"Y_{a}{b}"] = {"median_mag_err_db": db, "median_phase_err_deg": ph}
        entry["worst_median_mag_err_db"] = max(v["median_mag_err_db"] for k, v in entry.items() if k[:2] == "Y_")
        entry["worst_median_phase_err_deg"] = max(v["median_phase_err_deg"] for k, v in entry.items() if k[:2] == "Y_")
        bands.append(entry)
        lo *= 10
    return bands


def ac_compare(dev: ExportedDevice, simulators=("ngspice",), biases=None, native: bool = True) -> dict:
    """SPICE .ac of the module (dc_fixed_point = 1) at each bias (V per driven input) against the PyTorch
    linearisation (`small_signal_y`, an exactness check) and the native device (`_y_errors`, `frequency_bands`),
    1 Hz - 10 GHz. At the first bias also the module's default (states pinned at 0) against the pinned
    linearisation, in ngspice."""
    names = list(dev.driven)
    biases = AC_BIASES[dev.kind] if biases is None else biases
    report: dict = {"entries": [f"Y_{a}{b}" for a in names for b in names], "biases": []}
    for n, bias in enumerate(biases):
        entry: dict = {"bias_v": dict(zip(dev.native.input_names, map(float, bias), strict=True))}
        f_nat = y_nat = None
        if native:
            f_nat, y_nat = _ac_run(dev, bias, None)
            entry["native_y_s"] = y_nat
        for sim in simulators:
            f, y = _ac_run(dev, bias, sim)
            y_pt = small_signal_y(dev.student, dev.v_scale, dev.i_scale, bias, f)
            res = {"vs_pytorch": _y_errors(y, y_pt, names), "y_s": y}
            res["vs_pytorch_worst"] = max(e["complex_err_rel_to_max"] for e in res["vs_pytorch"].values())
            if native:
                res["vs_native"] = _y_errors(y, y_nat, names)
                res["bands_vs_native"] = frequency_bands(f, y, y_nat, names)
            entry[sim] = res
        if n == 0:
            f, y0 = _ac_run(dev, bias, "ngspice", fixed_point=False)
            y0_pt = small_signal_y(dev.student, dev.v_scale, dev.i_scale, bias, f, pinned=True)
            y_fp = entry.get("ngspice", {}).get("y_s")
            entry["default_pinned"] = {
                "vs_pinned_pytorch_worst": max(
                    e["complex_err_rel_to_max"] for e in _y_errors(y0, y0_pt, names).values()
                ),
                "vs_fixed_point": _y_errors(y0, y_fp, names) if y_fp is not None else None,
            }
        entry["freq_hz"] = f
        report["biases"].append(entry)
    return report


# ---------------------------------------------------------------------------------------------------------------------
# the stage


def _strip(obj):
    """JSON-ready: arrays out (kept for the plots), NaN -> None."""
    if isinstance(obj, dict):
        return {k: _strip(v) for k, v in obj.items() if not isinstance(v, np.ndarray)}
    if isinstance(obj, list):
        return [_strip(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not np.isfinite(obj):
        return None  # no point above the floor, say: strict JSON has no NaN
    return obj


def summary(report: dict) -> dict:
    """The headline numbers of a `characterize` report (worst over families, biases, entries)."""
    out: dict = {"device": report["device"]}
    for sim in report["simulators"]:
        s: dict = {}
        dc = report["dc"][sim]
        s["dc_spice_vs_pytorch"] = max(dc["spice_vs_pytorch_max_rel_err"])
        s["current_max_err_rel_to_max"] = {f: dc[f]["current"]["max_err_rel_to_max"] for f in ("output", "transfer")}
        for f, d in (("output", "gds"), ("transfer", "gm")):
            s[f"{d}_max_err_rel_to_max"] = dc[f][d]["max_err_rel_to_max"]
            s[f"{d}_median_rel_err_above_1pct"] = dc[f][d]["median_rel_err_above_1pct"]
        kc = report["kcl_charge"][sim]
        s["kcl_max_rel"], s["charge_residual_rel"] = kc["kcl_max_rel"], kc["charge_residual_rel"]
        ac = [b[sim] for b in report["ac"]["biases"]]
        s["ac_vs_pytorch_worst"] = max(a["vs_pytorch_worst"] for a in ac)
        s["ac_vs_native_max_mag_err_db"] = max(e["max_mag_err_db"] for a in ac for e in a["vs_native"].values())
        s["ac_vs_native_max_phase_err_deg"] = max(e["max_phase_err_deg"] for a in ac for e in a["vs_native"].values())
        if "gummel" in report:
            g = report["gummel"][sim][0][f"floor_{GUMMEL_FLOORS[-1]:g}"]
            s["gummel_ic_max_decades"], s["gummel_ib_max_decades"] = g["i_c"]["max_decades"], g["i_b"]["max_decades"]
            s["beta_max_decades"] = g["beta"]["max_decades"]
        out[sim] = s
    if "gummel_symmetry" in report:
        gst = report["gummel_symmetry"]
        out["gst_odd_asymmetry"] = {
            k: gst[f"{k}_worst"]["odd_asymmetry"] for k in ("exported", "bsim4_bulk_grounded", "bsim4_bulk_at_source")
        }
    return out


def characterize(dev: ExportedDevice, simulators=("ngspice",), out_dir=None, plots: bool = True) -> dict:
    """All measurements of this module for one exported device; with `out_dir`, characterize.json and the plots
    (dc_curves.png, gummel_symmetry.png or gummel.png, ac_y.png) there. Returns the JSON-ready report."""
    report: dict = {"device": dev.kind, "module": dev.module, "simulators": list(simulators)}
    report["dc"] = dc_curves(dev, simulators)
    if dev.kind == "mosfet":
        report["gummel_symmetry"] = gummel_symmetry(dev)
    else:
        report["gummel"] = bjt_gummel(dev, simulators)
    report["kcl_charge"] = kcl_and_charge(dev, simulators)
    report["ac"] = ac_compare(dev, simulators)
    report["summary"] = summary(report)
    if out_dir is not None:
        from .artifacts import write_json

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        if plots:
            report["plots"] = [p.name for p in _plots(report, dev, out)]
        write_json(out / "characterize.json", _strip(report))
    return _strip(report)


def characterize_export(model_dir, simulators=("ngspice",), out_dir=None, plots: bool = True) -> dict:
    """`characterize` of an export directory (see `load_exported`)."""
    return characterize(load_exported(model_dir), simulators, out_dir, plots)


def _plots(report: dict, dev: ExportedDevice, out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sims = report["simulators"]
    sim = sims[0]
    paths = []
    curves = report["dc"]["curves"]
    fig, axes = plt.subplots(2, 2, figsize=(11, 8))
    for col, family in enumerate(("output", "transfer")):
        fam = curves[family]
        for c in fam["curves"]:
            v = c["v"]
            (line,) = axes[0, col].plot(v, c["native"], label=f"{fam['held']} = {c['held_v']:g} V")
            axes[0, col].plot(v, c[sim], "--", color=line.get_color())
            axes[1, col].plot(v, np.gradient(c["native"], v), color=line.get_color())
            axes[1, col].plot(v, np.gradient(c[sim], v), "--", color=line.get_color())
        axes[0, col].set(xlabel=f"{fam['swept']} (V)", ylabel=f"{report['dc']['main_current']} (A)")
        axes[1, col].set(xlabel=f"{fam['swept']} (V)", ylabel=("gds" if family == "output" else "gm") + " (S)")
        axes[0, col].legend(fontsize=7)
        axes[0, col].set_title(f"{family}: native (solid) vs exported in {sim} (dashed)")
    fig.tight_layout()
    paths.append(out / "dc_curves.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    if "gummel_symmetry" in report:
        gst = report["gummel_symmetry"]
        fig, axes = plt.subplots(1, 4, figsize=(16, 4))
        for c in gst["curves"]:
            vx = c["vx"]
            for name, style in (("exported", "--"), ("bsim4_bulk_grounded", "-"), ("bsim4_bulk_at_source", ":")):
                d = c[name]
                for k, ax in enumerate(axes):
                    ax.plot(vx, d, style, label=f"{name}, V_G = {c['gate_v']:g} V" if k == 0 else None)
                    d = np.gradient(d, vx)
        for k, ax in enumerate(axes):
            ax.set(xlabel="V_X (V)", ylabel=f"d^{k} I_D / dV_X^{k}" if k else "I_D (A)")
        axes[0].legend(fontsize=6)
        fig.suptitle("Gummel symmetry test: V_D = +V_X, V_S = -V_X")
        fig.tight_layout()
        paths.append(out / "gummel_symmetry.png")
        fig.savefig(paths[-1], dpi=110)
        plt.close(fig)
    if "gummel" in report:
        fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
        for c in report["gummel"]["curves"]:
            vbe = c["v_be"]
            (l1,) = axes[0].semilogy(vbe, np.abs(c["native_ic"]), label=f"I_C, V_CE = {c['v_ce']:g} V")
            axes[0].semilogy(vbe, np.abs(c[f"{sim}_ic"]), "--", color=l1.get_color())
            (l2,) = axes[0].semilogy(vbe, np.abs(c["native_ib"]), label=f"I_B, V_CE = {c['v_ce']:g} V")
            axes[0].semilogy(vbe, np.abs(c[f"{sim}_ib"]), "--", color=l2.get_color())
            pos = (c["native_ib"] > 0) & (c["native_ic"] > 0)
            axes[1].semilogx(c["native_ic"][pos], c["native_ic"][pos] / c["native_ib"][pos], color=l1.get_color())
            pos_e = (c[f"{sim}_ib"] > 0) & (c[f"{sim}_ic"] > 0)
            axes[1].semilogx(
                c[f"{sim}_ic"][pos_e], c[f"{sim}_ic"][pos_e] / c[f"{sim}_ib"][pos_e], "--", color=l1.get_color()
            )
        axes[0].set(xlabel="V_BE (V)", ylabel="|I| (A)", title="Gummel plot: native (solid), exported (dashed)")
        axes[1].set(xlabel="I_C (A)", ylabel="beta = I_C / I_B", ylim=(0, None))
        axes[0].legend(fontsize=7)
        fig.tight_layout()
        paths.append(out / "gummel.png")
        fig.savefig(paths[-1], dpi=110)
        plt.close(fig)

    names = list(dev.driven)
    biases = report["ac"]["biases"]
    fig, axes = plt.subplots(2, 2 * len(names), figsize=(16, 7))
    for b in biases:
        f = b["freq_hz"]
        label = ", ".join(f"{k} = {v:g}" for k, v in b["bias_v"].items())
        for i, a in enumerate(names):
            for j, c in enumerate(names):
                ax_m, ax_p = axes[0, 2 * i + j], axes[1, 2 * i + j]
                (line,) = ax_m.loglog(f, np.abs(b["native_y_s"][:, i, j]), label=label)
                ax_m.loglog(f, np.abs(b[sim]["y_s"][:, i, j]), "--", color=line.get_color())
                ax_p.semilogx(f, np.angle(b["native_y_s"][:, i, j], deg=True), color=line.get_color())
                ax_p.semilogx(f, np.angle(b[sim]["y_s"][:, i, j], deg=True), "--", color=line.get_color())
                ax_m.set(title=f"|Y_{a}{c}| (S)")
                ax_p.set(xlabel="f (Hz)", ylabel=f"phase Y_{a}{c} (deg)")
    axes[0, 0].legend(fontsize=6)
    fig.suptitle(f"small-signal Y: native (solid) vs exported in {sim} (dashed)")
    fig.tight_layout()
    paths.append(out / "ac_y.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
    return paths
