"""Verification: realistic use against the converged PyTorch student, and robustness counts in real simulators
(ngspice and VACASK, reltol 1e-4) for small memristor, MOSFET and BJT students and for modules that fail beyond
2 V."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from psixlstm import spice
from psixlstm import stimuli as st
from psixlstm.data import Scales
from psixlstm.export import emit_veriloga
from psixlstm.models.students import StudentConfig, build_student
from psixlstm.physics import DevicePhysics
from psixlstm.verification import (
    ROBUSTNESS_KINDS,
    ROBUSTNESS_TIME_SCALE,
    _at,
    _peak_v,
    converged_replay,
    robustness,
    robustness_case,
    verify_memristor_student,
)

requires_ngspice = pytest.mark.skipif(shutil.which("ngspice") is None, reason="ngspice not installed")
V_SCALE, I_SCALE = 1.4, 3e-3  # V, A
STIM = (
    st.Pulse(v0_v=0, v1_v=1.2, delay_s=20e-6, rise_s=1e-6, width_s=300e-6, fall_s=1e-6)
    + st.Burst(0.5, 20e3, 500e-6, 5)
    + st.Pwl((0.0, 1e-3, 1.5e-3, 2e-3), (0.0, 0.0, -1.0, 0.0))
)
# I = 1 mS * V * sqrt(2 V - |V|): NaN beyond 2 V, so every run that goes there must fail
FAULTY_VA = """`include "disciplines.vams"
module faulty(p, n);
    inout p, n;
    electrical p, n;
    analog I(p, n) <+ 1e-3 * V(p, n) * sqrt(2.0 - abs(V(p, n)));
endmodule
"""
# the same beyond 2 V between gate and source, and a MOSFET-like drain current below
FAULTY_MOSFET_VA = """`include "disciplines.vams"
module faulty3(d, g, s);
    inout d, g, s;
    electrical d, g, s;
    analog I(d, s) <+ 1e-3 * V(d, s) * sqrt(2.0 - abs(V(g, s)));
endmodule
"""
# MOSFET v_gs, v_ds / BJT v_be, v_ce: the largest |V| of the training data (V), and current scales (A)
TERMINAL_SCALES = {
    "mosfet": Scales(np.array([1.25, 1.25]), np.array([4e-5, 5e-3]), 5e-10, 5e-8),
    "bjt": Scales(np.array([0.75, 5.2]), np.array([3e-2, 7.5e-2]), 5e-10, 5e-8),
}
PHYSICS = {
    "mosfet": DevicePhysics("mosfet", v_ds_index=1, v_gs_index=0, i_d_index=1, i_g_index=0),
    "bjt": DevicePhysics("bjt", v_be_index=0),
}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A small clustered memristor student with trained-looking weights, exported and compiled at -O0."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    s = build_student(
        StudentConfig(kind="clustered", n_in=1, n_out=1, tau_s=[3e-4, 1e-3, 9e-3], physics=DevicePhysics("memristor"))
    )
    with torch.no_grad():
        for p in s.parameters():
            p.add_(0.3 * torch.randn_like(p))
    va = emit_veriloga(s, Scales(np.array([V_SCALE]), np.array([I_SCALE]), 2e-7, 5e-5), module="t_verify")
    d = tmp_path_factory.mktemp("verify")
    (d / "m.va").write_text(va.text)
    return s, va, spice.compile_va(d / "m.va", opt_level=0, cache_dir=d)


def _terminal_student(device: str):
    """A small clustered MOSFET or BJT student with trained-looking weights (time constants 2-200 ns)."""
    torch.set_num_threads(1)
    torch.manual_seed(1)
    cfg = StudentConfig(
        kind="clustered", n_in=2, n_out=2, tau_s=[2e-9, 2e-8, 2e-7], physics=PHYSICS[device], t_scale_s=1e-9
    )
    s = build_student(cfg)
    with torch.no_grad():
        for p in s.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return s


@pytest.fixture(scope="module", params=["mosfet", "bjt"])
def exported_terminal(request, tmp_path_factory):
    """`_terminal_student`, exported and compiled at -O0."""
    device = request.param
    s = _terminal_student(device)
    va = emit_veriloga(s, TERMINAL_SCALES[device], module=f"t_rob_{device}")
    d = tmp_path_factory.mktemp(f"verify_{device}")
    (d / "m.va").write_text(va.text)
    return device, s, va, spice.compile_va(d / "m.va", opt_level=0, cache_dir=d)


@pytest.mark.parametrize(
    ("device", "v_scale"),
    [("memristor", V_SCALE), ("mosfet", TERMINAL_SCALES["mosfet"].input_scale_v), ("bjt", (0.75, 5.2))],
    ids=["memristor", "mosfet", "bjt"],
)
def test_robustness_cases_are_reproducible_and_stress_the_model(device, v_scale):
    """One stimulus per driven terminal, up to 2 v_scale each (program_2x: exactly), 1 ns edges, durations
    scaled to the device; the same (index, seed) gives the same case, another seed another."""
    edges = {"pulse_1ns", "pwl_1ns", "impulses", "prbs"}
    v = np.atleast_1d(v_scale)
    for index in range(2 * len(ROBUSTNESS_KINDS)):
        kind, stims, t_stop = robustness_case(index, 7, v_scale, device)
        assert kind == ROBUSTNESS_KINDS[index % len(ROBUSTNESS_KINDS)]
        assert len(stims) == v.size
        assert t_stop / ROBUSTNESS_TIME_SCALE[device] in (4e-3, 1e-3, 0.5e-3)
        again = robustness_case(index, 7, v_scale, device)[1]
        assert [a.to_dict() for a in again] == [stim.to_dict() for stim in stims]
        for stim, v_k in zip(stims, v, strict=True):
            peak = _peak_v(stim, t_stop)
            assert peak <= 2 * v_k * (1 + 1e-9), (kind, peak)
            if kind == "program_2x":
                assert peak == pytest.approx(2 * v_k, rel=1e-9)
            if kind in edges:
                assert np.isclose(np.diff(stim.breakpoints(t_stop)), 1e-9, rtol=1e-6).any(), kind
    first = robustness_case(0, 7, v_scale, device)[1][0].to_dict()
    assert robustness_case(0, 8, v_scale, device)[1][0].to_dict() != first


@requires_ngspice
def test_robustness_runs_every_case_in_both_simulators(exported):
    s, va, osdi = exported
    n = len(ROBUSTNESS_KINDS)
    report = robustness(s, V_SCALE, I_SCALE, osdi, va.module, va.state_nodes, ("ngspice", "vacask"), n=n)
    for sim in ("ngspice", "vacask"):
        rob = report[sim]
        assert rob["total"] == {"runs": n, "ok": n, "convergence": 0, "timeout": 0, "error": 0, "nonfinite": 0}
        assert all(c["runs"] == 1 and c["max_abs_current_over_i_scale"] > 0 for c in rob["by_kind"].values())
        assert rob["failures"] == []
        # the DC sweep holds the states at 0: the module's static current is PyTorch's to within the Newton
        # tolerance of reltol 1e-4 (the branch current comes from the last linearisation)
        assert rob["dc_sweep"]["status"] == "ok"
        assert rob["dc_sweep"]["max_rel_err_vs_pytorch"] <= 1e-4


@requires_ngspice
def test_terminal_robustness_runs_every_case_in_both_simulators(exported_terminal):
    """A MOSFET or BJT student: every kind once per simulator with both driven terminals stressed, counts that add
    up, and one DC sweep per driven terminal that converges and matches the PyTorch static currents."""
    device, s, va, osdi = exported_terminal
    scales = TERMINAL_SCALES[device]
    n = len(ROBUSTNESS_KINDS)
    sims = ("ngspice", "vacask")
    report = robustness(s, scales.input_scale_v, scales.output_scale_a, osdi, va.module, va.state_nodes, sims, n=n)
    assert report["driven"] == list(va.driven)
    assert report["max_amplitude_v"] == pytest.approx(list(2 * scales.input_scale_v))
    for sim in sims:
        rob = report[sim]
        assert rob["total"] == {"runs": n, "ok": n, "convergence": 0, "timeout": 0, "error": 0, "nonfinite": 0}
        assert all(c["runs"] == 1 and c["max_abs_current_over_i_scale"] > 0 for c in rob["by_kind"].values())
        assert rob["failures"] == []
        dc = rob["dc_sweep"]
        assert dc["status"] == "ok" and [sweep["source"] for sweep in dc["sweeps"]] == [f"v{n}" for n in va.driven]
        assert dc["sweeps"][0]["held_v"] == {va.driven[1]: scales.input_scale_v[1]}
        assert dc["max_rel_err_vs_pytorch"] <= 1e-4


@requires_ngspice
def test_robustness_counts_and_lists_failures(exported, tmp_path):
    s = exported[0]
    (tmp_path / "faulty.va").write_text(FAULTY_VA)
    osdi = spice.compile_va(tmp_path / "faulty.va", opt_level=0, cache_dir=tmp_path)
    n = len(ROBUSTNESS_KINDS)
    report = robustness(s, V_SCALE, I_SCALE, osdi, "faulty", [], ("ngspice", "vacask"), n=n)
    for sim in ("ngspice", "vacask"):
        rob = report[sim]
        total = rob["total"]
        failed = total["convergence"] + total["timeout"] + total["error"] + total["nonfinite"]
        assert total["runs"] == n and total["ok"] + failed == n
        assert rob["by_kind"]["program"]["ok"] == 1  # stays below 2 V
        assert rob["by_kind"]["program_2x"]["ok"] == 0  # peaks at 2.8 V
        assert len(rob["failures"]) == failed > 0
        assert {f["kind"] for f in rob["failures"]} >= {"program_2x"}
        assert rob["dc_sweep"]["status"] != "ok"


@requires_ngspice
def test_terminal_robustness_counts_and_lists_failures(tmp_path):
    """A three-terminal module with NaN beyond 2 V gate-source: the runs and the gate sweep that go there fail and
    are counted; the drain sweep (gate held at 1.25 V) converges."""
    s = _terminal_student("mosfet")
    (tmp_path / "faulty3.va").write_text(FAULTY_MOSFET_VA)
    osdi = spice.compile_va(tmp_path / "faulty3.va", opt_level=0, cache_dir=tmp_path)
    scales = TERMINAL_SCALES["mosfet"]
    n = len(ROBUSTNESS_KINDS)
    report = robustness(s, scales.input_scale_v, scales.output_scale_a, osdi, "faulty3", [], ("ngspice", "vacask"), n=n)
    for sim in ("ngspice", "vacask"):
        rob = report[sim]
        total = rob["total"]
        failed = total["convergence"] + total["timeout"] + total["error"] + total["nonfinite"]
        assert total["runs"] == n and total["ok"] + failed == n
        assert rob["by_kind"]["program"]["ok"] == 1  # the training range: |V_GS| <= 1.25 V
        assert rob["by_kind"]["program_2x"]["ok"] == 0  # peaks at 2.5 V
        assert len(rob["failures"]) == failed > 0
        gate, drain = rob["dc_sweep"]["sweeps"]
        assert rob["dc_sweep"]["status"] == gate["status"] != "ok"
        assert drain["status"] == "ok"


def _without_wall_times(report: dict, simulators: tuple[str, ...]) -> dict:
    """The report less its wall times (the only part that depends on how the runs were scheduled)."""
    for sim in simulators:
        for counts in report[sim]["by_kind"].values():
            counts.pop("wall_s")
    return report


@requires_ngspice
def test_robustness_fan_out_equals_serial(exported, tmp_path):
    """Two worker processes, or two Ray actors (a local Ray instance with 2 CPUs), give the serial report: counts,
    peaks, failures in order, DC sweep."""
    s = exported[0]
    (tmp_path / "faulty.va").write_text(FAULTY_VA)
    osdi = spice.compile_va(tmp_path / "faulty.va", opt_level=0, cache_dir=tmp_path)
    sims = ("ngspice", "vacask")
    args = (s, V_SCALE, I_SCALE, osdi, "faulty", [], sims)
    with pytest.raises(ValueError, match="unknown executor"):
        robustness(*args, n=1, executor="threads")
    serial = _without_wall_times(robustness(*args, n=6), sims)
    assert sum(len(serial[sim]["failures"]) for sim in sims) > 0
    assert _without_wall_times(robustness(*args, n=6, workers=2), sims) == serial
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False)
    try:
        assert _without_wall_times(robustness(*args, n=6, workers=2, executor="ray"), sims) == serial
    finally:
        ray.shutdown()


@requires_ngspice
def test_spice_at_user_settings_matches_the_converged_student(exported):
    """ngspice at reltol 1e-4 is within NRMSE 1e-4 of the converged PyTorch student; the reference is converged
    (a 4x coarser grid changes it by < 1e-5)."""
    s, va, osdi = exported
    t_stop = 2e-3
    circuit = spice.Circuit(
        "realistic",
        [
            spice.VoltageSource("vp", "p", "0", waveform=STIM),
            spice.OsdiDevice("dut", ("p", "0"), va.module, osdi, {}, tuple(va.state_nodes)),
        ],
    )
    w = spice.run_circuit(circuit, spice.Transient(stop_s=t_stop, step_s=5e-6, max_step_s=5e-6), "ngspice")
    t, keep = np.unique(w.axis, return_index=True)
    i_spice = -w.current("vp")[keep]
    t_ref, y_ref = converged_replay(s, V_SCALE, I_SCALE, STIM, t_stop, [t])
    t_chk, y_chk = converged_replay(s, V_SCALE, I_SCALE, STIM, t_stop, [t], coarsen=4)
    scale = np.std(y_ref)
    at_spice = np.isin(t_ref, t)
    assert np.sqrt(np.mean((y_chk[np.isin(t_chk, t)] - y_ref[at_spice]) ** 2)) / scale <= 1e-5
    # issue 5 asks for <= 1e-3; this slow student (taus >= 0.3 ms) measured 8e-6
    assert np.sqrt(np.mean((i_spice - y_ref[at_spice]) ** 2)) / scale <= 1e-4


def test_converged_charge_current_is_its_limit_at_breakpoints_as_simulators_round_them():
    """A terminal student's converged reference at a breakpoint 1 ulp off the stimulus' own (as SPICE writes it) is
    its value at the breakpoint: the two points are one (joined as two, the ~1e-22 s step between them made the
    charge current noise). And the charge current is dQ/dt itself: a 4x coarser grid changes it by < 1 %."""
    from psixlstm.data.generate import terminal_program

    s = _terminal_student("mosfet")
    scales = TERMINAL_SCALES["mosfet"]
    t_stop = 1e-6
    rng = np.random.default_rng(3)
    stims = [terminal_program(rng, t_stop, 0.0, 1.2) for _ in range(2)]
    bps = np.unique(np.concatenate([x.breakpoints(t_stop) for x in stims]))
    bps = bps[(bps > 0) & (bps < t_stop)]
    args = (s, scales.input_scale_v, scales.output_scale_a, stims, t_stop)
    t_a, y_a = converged_replay(*args, [bps])
    nudged = np.nextafter(np.nextafter(bps, np.inf), np.inf)
    t_b, y_b = converged_replay(*args, [bps, nudged])
    at_bps, at_nudged = _at(t_a, y_a, bps), _at(t_b, y_b, nudged)
    scale = np.std(y_a, axis=0)
    assert np.max(np.abs(at_nudged - at_bps) / scale) < 1e-6
    t_c, y_c = converged_replay(*args, [bps], coarsen=4)
    common = t_c[np.isin(t_c, t_a)]
    err = np.sqrt(np.mean((_at(t_c, y_c, common) - _at(t_a, y_a, common)) ** 2, axis=0)) / scale
    assert np.all(err < 1e-2)


@pytest.mark.slow
@requires_ngspice
def test_verify_reports_the_converged_reference(exported):
    s, va, osdi = exported
    report = verify_memristor_student(s, V_SCALE, I_SCALE, osdi, va.module, va.state_nodes)
    assert report["reference"]["nrmse_of_4x_coarser_grid"] <= 1e-5
    assert 0 < report["pytorch_dataset_grid"]["nrmse"] < 1e-1
    assert report["ngspice"]["adaptive_nrmse"] <= report["realistic_target_nrmse"]
    assert report["ngspice"]["reltol_1e-6_nrmse"] <= 1e-4
    for sim in ("ngspice", "vacask"):
        assert report[sim]["adaptive_nrmse"] < 1e-2


def _export_and_verify_cli(student, scales: Scales, work: Path) -> dict:
    """`psi-xlstm export` then `verify --robustness 8` (ngspice) on a saved student; the robustness report."""
    import json

    from psixlstm.artifacts import save_model
    from psixlstm.cli import main

    (work / "student").mkdir()
    save_model(
        work / "student",
        "student",
        student,
        {"config": student.cfg.to_dict(), "scales": scales.to_dict()},
        {"test": {"vs_clean": {"nrmse": 0.1}}},
    )
    out = work / "export"
    assert main(["export", "--student", str(work / "student"), "--out", str(out), "--opt-level", "0"]) == 0
    assert main(["verify", "--model", str(out), "--simulator", "ngspice", "--robustness", "8", "--quiet"]) == 0
    return json.loads((out / "verify.json").read_text())["robustness"]


@pytest.mark.slow
@requires_ngspice
def test_verify_command_writes_robustness_counts(exported, tmp_path, capsys):
    rob = _export_and_verify_cli(exported[0], Scales(np.array([V_SCALE]), np.array([I_SCALE]), 2e-7, 5e-5), tmp_path)
    assert rob["v_scale_v"] == V_SCALE and rob["max_amplitude_v"] == 2 * V_SCALE
    assert rob["ngspice"]["total"]["runs"] == rob["ngspice"]["total"]["ok"] == 8
    assert "robustness (ngspice): 8/8 runs ok" in capsys.readouterr().out


@requires_ngspice
def test_verify_command_writes_terminal_robustness_counts(tmp_path, capsys):
    """`psi-xlstm verify` on an exported BJT student runs the robustness cases and DC sweeps too."""
    rob = _export_and_verify_cli(_terminal_student("bjt"), TERMINAL_SCALES["bjt"], tmp_path)
    assert rob["driven"] == ["b", "c"] and rob["v_scale_v"] == pytest.approx([0.75, 5.2])
    assert rob["ngspice"]["total"]["runs"] == rob["ngspice"]["total"]["ok"] == 8
    assert [sweep["status"] for sweep in rob["ngspice"]["dc_sweep"]["sweeps"]] == ["ok", "ok"]
    assert "robustness (ngspice): 8/8 runs ok, DC sweep ok" in capsys.readouterr().out


@requires_ngspice
@pytest.mark.slow
def test_verify_terminal_student_end_to_end(tmp_path):
    """A MOSFET student: replay exact per terminal in both simulators, realistic use near the converged student, a
    cost ratio against BSIM4 in the same ngspice testbench, and the ground-truth comparison present."""
    from psixlstm.verification import verify_terminal_student

    torch.manual_seed(2)
    physics = DevicePhysics("mosfet", v_ds_index=1, v_gs_index=0, i_d_index=1, i_g_index=0)
    s = build_student(
        StudentConfig(kind="clustered", n_in=2, n_out=2, tau_s=[2e-9, 2e-8, 2e-7], physics=physics, t_scale_s=1e-9)
    )
    with torch.no_grad():
        for p in s.parameters():
            p.add_(0.3 * torch.randn_like(p))
    scales = Scales(np.array([1.2, 1.2]), np.array([4e-5, 5e-3]), 5e-10, 5e-8)
    va = emit_veriloga(s, scales, module="t_verify3")
    (tmp_path / "m.va").write_text(va.text)
    osdi = spice.compile_va(tmp_path / "m.va", opt_level=0, cache_dir=tmp_path)
    report = verify_terminal_student(
        s,
        "mosfet",
        scales.input_scale_v,
        scales.output_scale_a,
        osdi,
        va.module,
        va.ports,
        va.driven,
        va.reference,
        va.state_nodes,
        duration_s=1e-6,
    )
    assert max(report["ngspice"]["replay_max_rel_err_trap"]) <= 1e-5
    assert max(report["vacask"]["replay_max_rel_err_euler"]) <= 1e-5
    assert all(np.isfinite(report["ngspice"]["adaptive_nrmse"]))  # random weights: no accuracy claim
    native = report["ngspice"]["native_adaptive_nrmse"]  # the native device at the same settings, vs itself
    assert len(native) == 2 and all(0 < e < 1 for e in native)
    assert len(report["reference"]["nrmse_of_4x_coarser_grid"]) == 2
    assert 0 < report["ngspice"]["cost"]["cost_ratio_vs_reference"] < 100
    assert len(report["pytorch_vs_truth"]) == 2


def test_nrmse_over_time_does_not_depend_on_where_the_simulator_puts_its_points():
    """An error around an edge, sampled by a coarse run and by one that steps 50x denser around it: over time
    both score the same; per point the denser run scores about 5x worse."""
    from psixlstm.verification import _nrmse, _nrmse_over_time, _std_over_time

    def error(t):
        return np.exp(-np.abs(t - 0.5) / 0.01)

    coarse = np.linspace(0.0, 1.0, 1001)
    dense = np.unique(np.concatenate([coarse, np.linspace(0.45, 0.55, 5001)]))
    ref = {t.size: np.sin(2 * np.pi * t) for t in (coarse, dense)}
    over_time = [
        _nrmse_over_time(t, ref[t.size] + 1e-3 * error(t), ref[t.size], _std_over_time(t, ref[t.size]))
        for t in (coarse, dense)
    ]
    per_point = [_nrmse(ref[t.size] + 1e-3 * error(t), ref[t.size], np.std(ref[t.size])) for t in (coarse, dense)]
    assert over_time[1] == pytest.approx(1e-3 * np.sqrt(0.01) / np.sqrt(0.5), rel=0.02)  # the integral
    assert over_time[0] == pytest.approx(over_time[1], rel=0.1)  # the coarse run's trapezoid error
    assert per_point[1] > 4 * per_point[0]
