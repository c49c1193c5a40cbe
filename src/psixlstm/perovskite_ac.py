"""Small-signal check of an exported two-terminal model against the measured impedance spectra of the perovskite
memristor (figure 4 of Gonzales, Bou, Guerrero, Bisquert, Zenodo 10.5281/zenodo.12656947, CC BY 4.0: dark impedance
spectra at 0, 0.2, 0.3, 0.4, 0.6 and 1.0 V bias, 0.02 Hz to 1 MHz, Z' and Z'' in ohm, Z'' < 0 capacitive).

For each measured bias the exported Verilog-A runs a SPICE .ac analysis (ngspice, a 1 V AC source on top of the DC
bias; Z = V / I), with the states as the module holds them in DC analyses (at 0, the trained initial state) and, if
the module has the `dc_fixed_point` parameter, also at their steady state at the bias. Next to SPICE, the PyTorch
student's own small-signal impedance is computed in closed form from its ODE, tau dx/dt = -x + g(x, u), linearised at
the steady state x* = g(x*, u) (what a physical device at a DC bias shows) and with the states frozen at 0 (what .ac
of a module that pins its states computes):

    Y(jw) = (dI/dV) + (dI/dx) (jw diag(tau) + 1 - dg/dx)^-1 (dg/dV)       [S]

Model and measurement are compared per bias by the RMS error of log10 |Z| (decades) and of the phase (degrees) over
the measured frequencies, and by |Z| at the lowest and the highest measured frequency.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from .data.perovskite import PEROVSKITE_ATTRIBUTION, ImpedanceSpectrum, load_impedance_spectra

STEADY_STATE_TOL = 1e-12  # max |x - g(x, u)| of the steady state (normalised state units)


@torch.no_grad()
def steady_state(student, u: torch.Tensor, iterations: int = 20_000) -> torch.Tensor:
    """x* with x* = g(x*, u) (float64, (n_states,)) by fixed-point iteration from 0; the clustered student's drive
    is contracting (|dg/dx| <= 0.95), so the iteration converges. ValueError if it does not."""
    x = torch.zeros(1, student.n_states, dtype=torch.float64)
    for _ in range(iterations):
        x_new = student.drive(x, u[None])
        if float(torch.max(torch.abs(x_new - x))) < STEADY_STATE_TOL:
            return x_new[0]
        x = x_new
    raise ValueError(f"no steady state after {iterations} fixed-point iterations at u = {u.tolist()}")


def student_impedance(
    student, v_scale: float, i_scale: float, bias_v: float, frequency_hz: np.ndarray, states: str = "steady"
) -> np.ndarray:
    """Complex small-signal impedance (ohm) of a two-terminal student at DC bias `bias_v` (V): its ODE linearised at
    the steady state (`states` "steady") or with the states frozen at 0 ("frozen": the DC operating point of a module
    that holds its states at the initial value)."""
    model = student.double().eval()
    try:
        u0 = torch.tensor([bias_v / v_scale], dtype=torch.float64)
        x0 = steady_state(model, u0) if states == "steady" else torch.zeros(model.n_states, dtype=torch.float64)

        def current(x, u):  # normalised current of the static readout (memristor students have no charge)
            return model.readout.static(model.readout_features(x[None, None]), u[None, None])[0, 0]

        def charge(x, u):
            q = model.readout.charge_of(model.readout_features(x[None, None]), u[None, None])
            return q[0, 0] if q is not None else torch.zeros(1, dtype=torch.float64)

        jac = torch.autograd.functional.jacobian
        i_x, i_u = (j.numpy() for j in jac(current, (x0, u0)))  # (n_out, n), (n_out, n_in)
        q_x, q_u = (j.numpy() for j in jac(charge, (x0, u0)))
        g_x, g_u = (j.numpy() for j in jac(lambda x, u: model.drive(x[None], u[None])[0], (x0, u0)))
        tau = model.tau_per_state().detach().double().numpy()
        t_scale = model.cfg.t_scale_s
    finally:
        model.float()
    w = 2 * np.pi * np.asarray(frequency_hz, float)
    n = tau.size
    y = np.empty(w.size, complex)
    for k, wk in enumerate(w):
        if states == "steady":
            dx = np.linalg.solve(1j * wk * np.diag(tau) + np.eye(n) - g_x, g_u)  # (n, n_in) per unit of u
        else:
            dx = np.zeros((n, 1))
        di = i_x @ dx + i_u + 1j * wk * t_scale * (q_x @ dx + q_u)  # normalised current per unit of u
        y[k] = di[0, 0] * i_scale / v_scale
    return 1.0 / y


def spice_impedance(
    model_dir: str | Path, bias_v: float, frequency_hz: np.ndarray, fixed_point: bool = False
) -> np.ndarray:
    """Complex impedance (ohm) of the exported model in an ngspice .ac at DC bias `bias_v`, interpolated (log f) to
    `frequency_hz` from 200 points per decade; `fixed_point` sets the module's dc_fixed_point = 1 (states at their
    steady state in DC/AC analyses) where the module has that parameter."""
    from . import spice

    model_dir = Path(model_dir)
    meta = json.loads((model_dir / "model.json").read_text())
    params = {}  # modules with dc_fixed_point default to 1: set it either way
    if fixed_point or "dc_fixed_point" in (model_dir / meta["va"]).read_text():
        params = {"dc_fixed_point": 1.0 if fixed_point else 0.0}
    nodes = ("p", "0")
    dut = spice.OsdiDevice("dut", nodes, meta["module"], model_dir / meta["osdi"], params, tuple(meta["state_nodes"]))
    source = spice.VoltageSource("vp", "p", "0", dc_v=float(bias_v), ac_mag_v=1.0)
    f = np.asarray(frequency_hz, float)
    analysis = spice.AC(float(f.min()) / 1.01, float(f.max()) * 1.01, points_per_decade=200)
    w = spice.run_circuit(spice.Circuit("ac_impedance", [source, dut]), analysis, "ngspice")
    f_sim = np.real(np.asarray(w.axis))
    z = np.asarray(w.voltage("p")) / -np.asarray(w.current("vp"))
    logf = np.log10(f_sim)
    return np.interp(np.log10(f), logf, z.real) + 1j * np.interp(np.log10(f), logf, z.imag)


def _errors(z_model: np.ndarray, z_meas: np.ndarray) -> dict:
    """RMS error of log10 |Z| (decades) and of the phase (degrees), and the spans of log10 |Z| over frequency."""
    dlog = np.log10(np.abs(z_model)) - np.log10(np.abs(z_meas))
    dphase = np.angle(z_model / z_meas, deg=True)
    return {
        "log10_abs_z_rms_error": float(np.sqrt(np.mean(dlog**2))),
        "phase_rms_error_deg": float(np.sqrt(np.mean(dphase**2))),
        "abs_z_low_f_ohm": float(np.abs(z_model[0])),
        "abs_z_high_f_ohm": float(np.abs(z_model[-1])),
        "log10_abs_z_span": float(np.ptp(np.log10(np.abs(z_model)))),
        "max_abs_phase_deg": float(np.max(np.abs(np.angle(z_model, deg=True)))),
    }


def compare_impedance(model_dir: str | Path, spectra: list[ImpedanceSpectrum] | None = None) -> dict:
    """The measured figure-4 spectra (default: `load_impedance_spectra()`) against the exported model in `model_dir`
    (from `export_student`): per bias, measured and model |Z| and phase per frequency (SPICE .ac with the states at 0,
    SPICE .ac at the steady state where the module supports it, PyTorch linearised at the steady state and frozen)
    and their errors. JSON-able."""
    from .distillation import load_student

    spectra = load_impedance_spectra() if spectra is None else spectra
    model_dir = Path(model_dir)
    meta = json.loads((model_dir / "model.json").read_text())
    student, scales, _ = load_student(meta["student_dir"])
    v_scale, i_scale = float(scales.input_scale_v[0]), float(scales.output_scale_a[0])
    has_fixed_point = "dc_fixed_point" in (model_dir / meta["va"]).read_text()
    rows = []
    for sp in spectra:
        f = sp.frequency_hz
        z_meas = sp.impedance_ohm
        models = {
            "spice_ac_states_at_0": spice_impedance(model_dir, sp.bias_v, f),
            "pytorch_frozen": student_impedance(student, v_scale, i_scale, sp.bias_v, f, "frozen"),
            "pytorch_steady_state": student_impedance(student, v_scale, i_scale, sp.bias_v, f, "steady"),
        }
        if has_fixed_point:
            models["spice_ac_steady_state"] = spice_impedance(model_dir, sp.bias_v, f, fixed_point=True)
        row = {
            "bias_v": sp.bias_v,
            "frequency_hz": f.tolist(),
            "measured": {"abs_z_ohm": np.abs(z_meas).tolist(), "phase_deg": np.angle(z_meas, deg=True).tolist()},
            "measured_summary": {
                "abs_z_low_f_ohm": float(np.abs(z_meas[0])),
                "abs_z_high_f_ohm": float(np.abs(z_meas[-1])),
                "log10_abs_z_span": float(np.ptp(np.log10(np.abs(z_meas)))),
                "max_abs_phase_deg": float(np.max(np.abs(np.angle(z_meas, deg=True)))),
            },
            "models": {
                name: {
                    "abs_z_ohm": np.abs(z).tolist(),
                    "phase_deg": np.angle(z, deg=True).tolist(),
                    "vs_measured": _errors(z, z_meas),
                }
                for name, z in models.items()
            },
        }
        rows.append(row)
    return {
        "model_dir": str(model_dir.resolve()),
        "module": meta["module"],
        "spice_steady_state_available": has_fixed_point,
        "spectra": rows,
        "attribution": PEROVSKITE_ATTRIBUTION,
    }


def plot_impedance_comparison(report: dict, path: str | Path) -> Path:
    """|Z| and phase vs frequency, measured (points) and model (lines), one colour per bias."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    styles = {
        "spice_ac_states_at_0": "--",
        "spice_ac_steady_state": "-",
        "pytorch_steady_state": ":",
    }
    fig, (ax_m, ax_p) = plt.subplots(2, 1, figsize=(8, 8), sharex=True)
    colours = plt.cm.viridis(np.linspace(0, 0.9, len(report["spectra"])))
    for row, colour in zip(report["spectra"], colours, strict=True):
        f = np.asarray(row["frequency_hz"])
        label = f"{row['bias_v']:g} V"
        ax_m.loglog(f, row["measured"]["abs_z_ohm"], "o", ms=3, color=colour, label=f"measured {label}")
        ax_p.semilogx(f, row["measured"]["phase_deg"], "o", ms=3, color=colour)
        for name, ls in styles.items():
            if name in row["models"]:
                m = row["models"][name]
                ax_m.loglog(f, m["abs_z_ohm"], ls, color=colour, lw=1.2)
                ax_p.semilogx(f, m["phase_deg"], ls, color=colour, lw=1.2)
    handles = [plt.Line2D([], [], ls=ls, color="k", label=name) for name, ls in styles.items()]
    ax_m.legend(handles=ax_m.get_legend_handles_labels()[0] + handles, fontsize=7, ncol=2)
    ax_m.set_ylabel("|Z| (ohm)")
    ax_p.set_ylabel("phase of Z (deg; < 0 capacitive)")
    ax_p.set_xlabel("frequency (Hz)")
    ax_m.set_title("measured (Gonzales et al., Zenodo 12656947, CC BY 4.0) vs exported model", fontsize=10)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def impedance_stage(model_dir: str | Path, out_dir: str | Path) -> dict:
    """`compare_impedance` written as OUT/impedance.json with OUT/impedance.png; returns the per-bias errors."""
    from .artifacts import write_json

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    report = compare_impedance(model_dir)
    write_json(out / "impedance.json", report)
    plot_impedance_comparison(report, out / "impedance.png")
    return {
        f"{row['bias_v']:g} V": {
            "measured": row["measured_summary"],
            **{name: m["vs_measured"] for name, m in row["models"].items()},
        }
        for row in report["spectra"]
    }


if __name__ == "__main__":  # python -m psixlstm.perovskite_ac MODEL_DIR OUT_DIR
    import sys

    print(json.dumps(impedance_stage(sys.argv[1], sys.argv[2]), indent=2))
