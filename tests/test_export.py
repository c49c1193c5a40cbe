"""Verilog-A export: the generated module compiles with openvaf-r and, in ngspice and VACASK, computes the same
currents as the float64 PyTorch replay of the student on the simulator's own time grid."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from psixlstm import spice
from psixlstm import stimuli as st
from psixlstm.data import Scales
from psixlstm.export import emit_veriloga
from psixlstm.models.students import StudentConfig, build_student
from psixlstm.physics import DevicePhysics
from psixlstm.verification import Testbench, replay, steady_state

requires_ngspice = pytest.mark.skipif(shutil.which("ngspice") is None, reason="ngspice not installed")
SCALES = Scales(np.array([1.4]), np.array([3e-3]), 1e-7, 5e-5)
STIM = (
    st.Pulse(v0_v=0, v1_v=1.2, delay_s=20e-6, rise_s=1e-6, width_s=300e-6, fall_s=1e-6)
    + st.Burst(0.5, 20e3, 500e-6, 5)
    + st.Pwl((0.0, 1e-3, 1.5e-3, 2e-3), (0.0, 0.0, -1.0, 0.0))
)


def _student(kind: str):
    torch.manual_seed(0)
    s = build_student(
        StudentConfig(kind=kind, n_in=1, n_out=1, tau_s=[3e-4, 1e-3, 9e-3], physics=DevicePhysics("memristor"))
    )
    with torch.no_grad():  # trained-looking weights: far from the initialisation
        for p in s.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return s


@pytest.mark.parametrize("kind", ["clustered", "lowrank"])
def test_text_is_deterministic_and_holds_the_weights(kind):
    s = _student(kind)
    a, b = emit_veriloga(s, SCALES), emit_veriloga(s, SCALES)
    assert a.text == b.text and a.sha256 == b.sha256
    w = float(s.readout.g_state.weight[0, 0].detach())
    assert repr(w) in a.text  # full-precision literal of a trained weight
    assert "ddt(" in a.text and "[" not in a.text.split("module")[1]  # states via ddt, no arrays
    with torch.no_grad():
        s.readout.g_state.weight[0, 0] += 1e-3
    assert emit_veriloga(s, SCALES).sha256 != a.sha256


@requires_ngspice
@pytest.mark.parametrize("kind", ["clustered", "lowrank"])
@pytest.mark.parametrize(("simulator", "method"), [("ngspice", "trap"), ("vacask", "euler"), ("vacask", "trap")])
def test_spice_matches_pytorch_replay(kind, simulator, method, tmp_path):
    """Replay exactness: max |I_spice - I_replay| / max |I_replay| <= 1e-5 at reltol 1e-6."""
    s = _student(kind)
    va = emit_veriloga(s, SCALES, module=f"t_{kind}")
    (tmp_path / "m.va").write_text(va.text)
    osdi = spice.compile_va(tmp_path / "m.va", opt_level=0, cache_dir=tmp_path)
    circuit = spice.Circuit(
        "replay",
        [
            spice.VoltageSource("vp", "p", "0", waveform=STIM),
            spice.OsdiDevice("dut", ("p", "0"), va.module, osdi, {}, tuple(va.state_nodes)),
        ],
    )
    analysis = spice.Transient(stop_s=2e-3, step_s=1e-6, max_step_s=5e-6, reltol=1e-6, method=method)
    w = spice.run_circuit(circuit, analysis, simulator)
    t, keep = np.unique(w.axis, return_index=True)
    i_spice = -w.current("vp")[keep]
    # backward Euler: every step; trapezoidal: backward Euler only after the stimulus breakpoints
    bps = t if method == "euler" else STIM.breakpoints(2e-3)
    i_replay, x_replay = replay(s, 1.4, 3e-3, t, w.voltage("p")[keep], bps)
    err = np.max(np.abs(i_spice - i_replay)) / np.max(np.abs(i_replay))
    assert err <= 1e-5, err
    x_spice = np.stack([w.state("dut", node)[keep] for node in va.state_nodes], 1)
    assert np.max(np.abs(x_spice - x_replay)) <= 1e-5 * max(1.0, np.max(np.abs(x_replay)))
    assert np.ptp(i_replay) > 1e-5  # a real waveform, not a trivially zero one


def _terminal_student(kind: str, physics: DevicePhysics):
    torch.manual_seed(1)
    s = build_student(
        StudentConfig(kind=kind, n_in=2, n_out=2, tau_s=[2e-9, 2e-8, 2e-7], physics=physics, t_scale_s=1e-9)
    )
    with torch.no_grad():
        for p in s.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return s


THREE_TERMINAL = {
    "mosfet": DevicePhysics("mosfet", v_ds_index=1, v_gs_index=0, i_d_index=1, i_g_index=0),
    "bjt": DevicePhysics("bjt", v_be_index=0),
}
TERMINAL_STIMS = (  # (first input, second input): MOSFET v_gs, v_ds / BJT v_be, v_ce
    st.Pulse(v0_v=0.1, v1_v=1.1, delay_s=50e-9, rise_s=2e-9, width_s=300e-9, fall_s=2e-9),
    st.Pwl((0.0, 200e-9, 210e-9, 600e-9, 800e-9), (0.0, 0.0, 1.0, 0.4, 0.9)),
)


def _run_terminal_export(va, stims, stop_s: float, simulator: str, method: str, tmp_path):
    """The MOSFET/BJT export `va` compiled (-O0) in verify's testbench, one stimulus per driven terminal, reltol 1e-6:
    (the run, its accepted times, terminal currents, terminal voltages)."""
    (tmp_path / "m.va").write_text(va.text)
    osdi = spice.compile_va(tmp_path / "m.va", opt_level=0, cache_dir=tmp_path)
    bench = Testbench(osdi, va.module, tuple(va.state_nodes), tuple(va.driven), va.reference, tuple(va.ports))
    analysis = spice.Transient(stop_s=stop_s, step_s=1e-9, max_step_s=5e-9, reltol=1e-6, method=method)
    w = spice.run_circuit(bench.circuit(list(stims)), analysis, simulator)
    return (w, *bench.accepted(w))


@requires_ngspice
@pytest.mark.parametrize("kind", ["clustered", "lowrank"])
@pytest.mark.parametrize("device", ["mosfet", "bjt"])
@pytest.mark.parametrize(("simulator", "method"), [("ngspice", "trap"), ("vacask", "euler")])
def test_three_terminal_spice_matches_pytorch_replay(kind, device, simulator, method, tmp_path):
    """Both terminal currents, static part and ddt(Q) alike, within 1e-5 of the replay."""
    s = _terminal_student(kind, THREE_TERMINAL[device])
    scales = Scales(np.array([1.2, 1.2]), np.array([1e-4, 2e-3]), 1e-9, 5e-8)
    va = emit_veriloga(s, scales, module=f"t3_{kind}_{device}")
    stop = 1e-6
    _, t, i_spice, v = _run_terminal_export(va, TERMINAL_STIMS, stop, simulator, method, tmp_path)
    bps = t if method == "euler" else np.concatenate([stim.breakpoints(stop) for stim in TERMINAL_STIMS])
    i_replay, _ = replay(s, scales.input_scale_v, scales.output_scale_a, t, v, bps)
    for k in range(2):
        err = np.max(np.abs(i_spice[:, k] - i_replay[:, k])) / np.max(np.abs(i_replay[:, k]))
        assert err <= 1e-5, (k, err)
        assert np.ptp(i_replay[:, k]) > 1e-3 * scales.output_scale_a[k]  # real waveforms on both terminals


def test_export_refuses_what_it_cannot_write():
    s = build_student(StudentConfig(kind="clustered", n_in=3, n_out=3, tau_s=[1e-9], physics=DevicePhysics("bjt")))
    with pytest.raises(ValueError, match="2 inputs"):
        emit_veriloga(s, Scales(np.ones(3), np.ones(3), 1e-9, 1e-8))


@requires_ngspice
@pytest.mark.parametrize("kind", ["clustered", "lowrank"])
@pytest.mark.parametrize(("simulator", "method"), [("ngspice", "trap"), ("vacask", "euler")])
def test_terminal_transient_starts_at_the_students_steady_state(kind, simulator, method, tmp_path):
    """A MOSFET/BJT student starts every run at the steady state of its first input (`initial_state`), and so does
    the exported module's transient: its operating point solves the same fixed point x* = g(x*, u0)."""
    s = _terminal_student(kind, THREE_TERMINAL["mosfet"])
    scales = Scales(np.array([1.2, 1.2]), np.array([1e-4, 2e-3]), 1e-9, 5e-8)
    v0 = (0.8, 0.5)
    x_star = steady_state(s, np.array([v0]) / scales.input_scale_v)[0]
    with torch.no_grad():
        x_torch = s.double().initial_state(torch.tensor([v0], dtype=torch.float64) / 1.2)[0]
    s.float()
    assert np.max(np.abs(x_torch.numpy() - x_star)) <= 1e-11 * max(1.0, np.max(np.abs(x_star)))
    assert np.max(np.abs(x_star)) > 0.1  # a real offset from 0
    va = emit_veriloga(s, scales, module=f"tss_{kind}")
    stims = (st.Pulse(v0_v=v0[0], v1_v=0.2, delay_s=50e-9, rise_s=2e-9, width_s=100e-9, fall_s=2e-9), st.Dc(v0[1]))
    stop = 200e-9
    w, t, i_spice, v = _run_terminal_export(va, stims, stop, simulator, method, tmp_path)
    _, keep = np.unique(w.axis, return_index=True)
    x_spice = np.stack([w.state("dut", node)[keep] for node in va.state_nodes], 1)
    assert np.max(np.abs(x_spice[0] - x_star)) <= 1e-6 * max(1.0, np.max(np.abs(x_star))), (x_spice[0], x_star)
    # and the whole run replays from there
    bps = t if method == "euler" else np.concatenate([stim.breakpoints(stop) for stim in stims])
    i_replay, x_replay = replay(s, scales.input_scale_v, scales.output_scale_a, t, v, bps)
    assert np.max(np.abs(x_spice - x_replay)) <= 1e-5 * max(1.0, np.max(np.abs(x_replay)))
    for k in range(2):
        err = np.max(np.abs(i_spice[:, k] - i_replay[:, k])) / np.max(np.abs(i_replay[:, k]))
        assert err <= 1e-5, (k, err)
