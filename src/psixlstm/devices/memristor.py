"""Ground-truth memristor with three known relaxation processes (float64 NumPy/SciPy twin of memristor.va).

States (dimensionless): x_drift (ionic drift), x_thermal, x_trap, each relaxing as
    tau_k dx_k/dt = x_k* - x_k
towards a target set by threshold drives (softplus in V) or by the dissipated power, and a current
    I = g0 exp(a_drift x_drift + a_thermal x_thermal + a_trap x_trap) v_nl sinh(V / v_nl).
The relaxation times are exact everywhere (the ODE is linear in x for a given target), so structure
discovery can be scored against them. The Verilog-A file beside this module computes the same equations.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from .ode import integrate_driven

VA_MODULE = "psix_memristor"
STATE_NODES = ("xd", "xt", "xr")  # Verilog-A internal nodes: drift, thermal, trap


@dataclass(frozen=True)
class MemristorParams:
    """Parameters of the three-tau memristor; names match the Verilog-A model parameters."""

    tau_drift: float = 0.34e-3  # s, ionic drift
    tau_thermal: float = 1.2e-3  # s, thermal
    tau_trap: float = 8.7e-3  # s, trap states
    g0: float = 1.0e-4  # S
    v_nl: float = 0.5  # V, sinh nonlinearity scale
    v_set: float = 0.6  # V, SET threshold
    v_reset: float = 0.6  # V, RESET threshold (magnitude)
    v_s: float = 0.05  # V, softplus sharpness of the thresholds
    k_drift: float = 4.0  # 1/V
    k_trap: float = 1.5  # 1/V
    p_thermal: float = 2.0e-4  # W, power that heats the thermal state to tanh(1)
    a_drift: float = 1.5
    a_thermal: float = 0.8
    a_trap: float = 4.0

    @property
    def tau_s(self) -> tuple[float, float, float]:
        return (self.tau_drift, self.tau_thermal, self.tau_trap)

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def va_path() -> Path:
    """Path of the shipped Verilog-A twin."""
    return Path(str(resources.files("psixlstm.devices") / "memristor.va"))


def _softplus(z: np.ndarray) -> np.ndarray:
    return np.maximum(z, 0.0) + np.log1p(np.exp(-np.abs(z)))


def drive_v(v: np.ndarray, p: MemristorParams) -> np.ndarray:
    """Threshold drive u(V) in volts: positive above v_set, negative below -v_reset, ~0 in between."""
    return p.v_s * _softplus((v - p.v_set) / p.v_s) - p.v_s * _softplus((-v - p.v_reset) / p.v_s)


def current_a(v: np.ndarray, x: np.ndarray, p: MemristorParams) -> np.ndarray:
    """Terminal current (A) for voltage v (V) and states x[..., 3]."""
    g = p.g0 * np.exp(p.a_drift * x[..., 0] + p.a_thermal * x[..., 1] + p.a_trap * x[..., 2])
    return g * p.v_nl * np.sinh(v / p.v_nl)


def state_rate(v: float, x: np.ndarray, p: MemristorParams) -> np.ndarray:
    """dx/dt (1/s) for voltage v and states x[3]."""
    u = drive_v(np.asarray(v), p)
    power = v * current_a(np.asarray(v), x, p)
    target = np.array([np.tanh(p.k_drift * u), np.tanh(power / p.p_thermal), np.tanh(p.k_trap * u)])
    return (target - x) / np.array(p.tau_s)


def _scalar_rate(p: MemristorParams):
    """`state_rate` for one voltage in plain float arithmetic (the integrator calls it ~10^5 times)."""
    inv_tau = np.array([1.0 / t for t in p.tau_s])

    def softplus(z: float) -> float:
        return max(z, 0.0) + math.log1p(math.exp(-abs(z)))

    def rate(v: float, x: np.ndarray) -> np.ndarray:
        x0, x1, x2 = float(x[0]), float(x[1]), float(x[2])
        u = p.v_s * softplus((v - p.v_set) / p.v_s) - p.v_s * softplus((-v - p.v_reset) / p.v_s)
        g = p.g0 * math.exp(p.a_drift * x0 + p.a_thermal * x1 + p.a_trap * x2)
        power = v * g * p.v_nl * math.sinh(v / p.v_nl)
        target = np.array([math.tanh(p.k_drift * u), math.tanh(power / p.p_thermal), math.tanh(p.k_trap * u)])
        return (target - x) * inv_tau

    return rate


@dataclass
class MemristorResponse:
    t_s: np.ndarray  # (N,)
    v: np.ndarray  # (N,) V
    current_a: np.ndarray  # (N,) A
    states: np.ndarray  # (N, 3) drift, thermal, trap


def simulate(
    stimulus, t_s: np.ndarray, params: MemristorParams | None = None, rtol: float = 1e-10, atol: float = 1e-12
) -> MemristorResponse:
    """Integrate the memristor from x = 0 for voltage `stimulus` (a psixlstm.stimuli waveform), sampled at `t_s`."""
    p = params or MemristorParams()
    t_s = np.asarray(t_s, dtype=np.float64)
    states = integrate_driven(_scalar_rate(p), stimulus, t_s, np.zeros(3), rtol=rtol, atol=atol)
    v = stimulus.sample(t_s)
    return MemristorResponse(t_s=t_s, v=v, current_a=current_a(v, states, p), states=states)


def twin_check(
    simulator: str = "ngspice",
    *,
    seed: int = 0,
    duration_s: float = 12e-3,
    opt_level: int = 0,
    reltol: float = 1e-6,
    params: MemristorParams | None = None,
) -> dict:
    """Run the Verilog-A twin in SPICE on benchmark stimuli and compare it with the NumPy model.

    Two stimuli: the paper benchmark (1-5.5 kHz + 50-150 kHz tones + decaying steps, 2 ms) and a random memristor
    program (pulses, trains, triangles, bursts, reads; `duration_s`). The NumPy model is integrated on the
    simulator's own accepted time points. Returns max |I_spice - I_numpy| / (max I - min I) over both, the same
    for the states (relative to their range), and run times.
    """
    from .. import stimuli as st
    from ..data.generate import memristor_program
    from ..spice import Circuit, OsdiDevice, Transient, VoltageSource, compile_va, run_circuit

    p = params or MemristorParams()
    osdi = compile_va(va_path(), opt_level=opt_level)
    cases = {
        "paper_benchmark": (st.paper_benchmark(seed=seed, duration_s=2e-3), 2e-3),
        "memristor_program": (memristor_program(np.random.default_rng(seed), duration_s), duration_s),
    }
    report: dict = {"simulator": simulator, "reltol": reltol, "opt_level": opt_level, "cases": {}}
    for name, (stim, t_stop) in cases.items():
        circuit = Circuit(
            "psixlstm memristor twin check",
            [
                VoltageSource("vp", "p", "0", waveform=stim),
                OsdiDevice("mem", ("p", "0"), VA_MODULE, osdi, p.to_dict(), STATE_NODES),
            ],
        )
        max_step = min(1.0 / (25.0 * stim.max_frequency_hz()), 20e-6)
        analysis = Transient(stop_s=t_stop, step_s=max_step, max_step_s=max_step, reltol=reltol, abstol_a=1e-14)
        waves = run_circuit(circuit, analysis, simulator)
        t, keep = np.unique(waves.axis, return_index=True)
        i_spice = -waves.current("vp")[keep]
        x_spice = np.stack([waves.state("mem", node)[keep] for node in STATE_NODES], axis=1)
        ref = simulate(stim, t, p)
        i_range = float(np.ptp(ref.current_a))
        x_range = np.maximum(np.ptp(ref.states, axis=0), 1e-12)
        report["cases"][name] = {
            "points": int(t.size),
            "max_rel_err": float(np.max(np.abs(i_spice - ref.current_a)) / i_range),
            "state_max_rel_err": [float(e) for e in np.max(np.abs(x_spice - ref.states), axis=0) / x_range],
            "current_range_a": i_range,
            "spice_wall_s": waves.stats.wall_time_s,
            "accepted_points": waves.stats.accepted_points,
        }
    report["max_rel_err"] = max(c["max_rel_err"] for c in report["cases"].values())
    return report
