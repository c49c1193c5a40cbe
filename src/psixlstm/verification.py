"""Stage: verify an exported student against SPICE.

Replay exactness: take the simulator's accepted time points, replay the PyTorch student in float64 on exactly that
grid with the same integration rule (trapezoidal; backward Euler on the first step and on the step after each
stimulus breakpoint), Newton to 1e-13 per step, and compare currents and states.
"""

from __future__ import annotations

import numpy as np
import torch

from .models.students import ContinuousStudent, backward_euler_steps


@torch.no_grad()
def replay(
    student: ContinuousStudent, v_scale: float, i_scale: float, t_s: np.ndarray, v_v: np.ndarray, breakpoints_s
) -> tuple[np.ndarray, np.ndarray]:
    """Student currents (A) and states on a given grid (t_s, voltages v_v), float64, the SPICE step rules."""
    model = student.double().eval()
    t = np.asarray(t_s, float)
    u = torch.tensor(np.asarray(v_v, float) / v_scale)[:, None]
    after_bp = backward_euler_steps(t, breakpoints_s)
    x = torch.zeros(1, model.n_states, dtype=torch.float64)
    states = [x[0].clone()]
    for j in range(1, t.size):
        h = torch.tensor([t[j] - t[j - 1]], dtype=torch.float64)
        be = torch.tensor([1.0 if after_bp[j] else 0.0], dtype=torch.float64)
        x = model.step(x, u[j - 1 : j], u[j : j + 1], h, be, newton_tol=1e-13)
        states.append(x[0].clone())
    xs = torch.stack(states)[None]
    feats = model.readout_features(xs)
    y = model.readout.static(feats, u[None])[0, :, 0].numpy() * i_scale
    model.float()
    return y, xs[0].numpy()


def _run(
    model_osdi,
    module: str,
    nodes,
    stim,
    t_stop: float,
    max_step: float,
    reltol: float,
    simulator: str,
    method: str = "trap",
    params: dict | None = None,
):
    from . import spice

    circuit = spice.Circuit(
        "verify",
        [
            spice.VoltageSource("vp", "p", "0", waveform=stim),
            spice.OsdiDevice("dut", ("p", "0"), module, model_osdi, params or {}, tuple(nodes)),
        ],
    )
    return spice.run_circuit(
        circuit,
        spice.Transient(stop_s=t_stop, step_s=max_step, max_step_s=max_step, reltol=reltol, method=method),
        simulator,
    )


def verify_memristor_student(
    student: ContinuousStudent,
    v_scale: float,
    i_scale: float,
    osdi_path,
    module: str,
    state_nodes: list[str],
    simulators: tuple[str, ...] = ("ngspice", "vacask"),
    seed: int = 12345,
    duration_s: float = 5e-3,
) -> dict:
    """Replay exactness (reltol 1e-6), realistic use (reltol 1e-4, maxstep from the stimulus bandwidth) against the
    PyTorch student on its own grid, the ground truth, and the cost per accepted step against the physics memristor
    model in the same testbench, on a held-out random memristor stimulus."""
    from . import spice
    from . import stimuli as st
    from .data.generate import memristor_program
    from .devices import memristor
    from .metrics import regression_metrics

    if duration_s < 5e-3:
        raise ValueError(f"duration_s must be >= 5 ms (a random memristor program needs room), got {duration_s}")
    stim = memristor_program(np.random.default_rng(seed), duration_s)
    bps = stim.breakpoints(duration_s)
    f_tone = max((tone.frequency_hz for tone in stim.active_tones(duration_s)), default=0.0)
    max_step = min(1.0 / (20.0 * f_tone), 5e-6) if f_tone > 0 else 5e-6  # edges are breakpoints already
    grid = st.multirate_grid(stim, duration_s, 0.2e-6, 50e-6)
    y_grid, _ = replay(student, v_scale, i_scale, grid, stim.sample(grid), bps)
    truth = memristor.simulate(stim, grid).current_a
    ref_osdi = spice.compile_va(memristor.va_path(), opt_level=1)
    report: dict = {
        "stimulus": {"seed": seed, "duration_s": duration_s, "max_step_s": max_step},
        "pytorch_vs_truth": regression_metrics(y_grid, truth),
    }
    for sim in simulators:
        methods = ("trap",) if sim == "ngspice" else ("euler", "trap")
        entry: dict = {}
        for method in methods:
            w = _run(osdi_path, module, state_nodes, stim, duration_s, max_step, 1e-6, sim, method)
            t, keep = np.unique(w.axis, return_index=True)
            i_sp = -w.current("vp")[keep]
            y, _ = replay(student, v_scale, i_scale, t, w.voltage("p")[keep], t if method == "euler" else bps)
            entry[f"replay_max_rel_err_{method}"] = float(np.max(np.abs(i_sp - y)) / np.max(np.abs(y)))
        w = _run(osdi_path, module, state_nodes, stim, duration_s, max_step, 1e-4, sim)
        t, keep = np.unique(w.axis, return_index=True)
        i_sp = -w.current("vp")[keep]
        # compared at SPICE's own points; the PyTorch run on the (denser) dataset grid is interpolated onto them
        y_at = np.interp(t, grid, y_grid)
        entry["adaptive_nrmse"] = float(np.sqrt(np.mean((i_sp - y_at) ** 2)) / np.std(y_grid))
        entry["spice_vs_truth"] = regression_metrics(i_sp, np.interp(t, grid, truth))
        ref = _run(
            ref_osdi,
            memristor.VA_MODULE,
            memristor.STATE_NODES,
            stim,
            duration_s,
            max_step,
            1e-4,
            sim,
            params=memristor.MemristorParams().to_dict(),
        )
        per_step = w.stats.wall_time_s / max(w.stats.accepted_points, 1)
        ref_per_step = ref.stats.wall_time_s / max(ref.stats.accepted_points, 1)
        entry["cost"] = {
            "student_us_per_step": 1e6 * per_step,
            "reference_us_per_step": 1e6 * ref_per_step,
            "cost_ratio_vs_reference": per_step / ref_per_step,
            "student_accepted": w.stats.accepted_points,
            "reference_accepted": ref.stats.accepted_points,
            "student_newton": w.stats.newton_iterations,
            "reference_newton": ref.stats.newton_iterations,
        }
        report[sim] = entry
    return report
