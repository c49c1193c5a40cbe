"""Stress tests: out-of-range impulses at the model input, with the real ground truth, a real (small) teacher and
student, and the exported student in ngspice and VACASK (no mocks)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from psixlstm import spice, verification
from psixlstm.data import Scales
from psixlstm.export import emit_veriloga
from psixlstm.models.students import StudentConfig, build_student
from psixlstm.models.teacher import Teacher, TeacherConfig
from psixlstm.physics import DevicePhysics
from psixlstm.stress import (
    SPICE_REPLAY_TOL,
    Disturbance,
    Responder,
    SpiceModel,
    error_metrics,
    plot_stress,
    stress_plan,
    stress_report,
    student_responder,
    teacher_responder,
    truth_responder,
)

requires_spice = pytest.mark.skipif(
    shutil.which("ngspice") is None, reason="ngspice not installed (the VACASK wheel ships with the venv)"
)
V_SCALE, I_SCALE = 1.4, 3e-3  # V, A: the memristor data's training range and current range
SCALES = Scales(np.array([V_SCALE]), np.array([I_SCALE]), 2e-7, 5e-5)


def _small_plan(**kw):
    """One disturbance, +2x the training range for 1 us, at 1 ms of a 6 ms held-out program (fast)."""
    args = {"amplitudes": (2.0,), "widths_s": (1e-6,), "signs": (1.0,), "t_stop_s": 6e-3, "t_impulse_s": 1e-3}
    return stress_plan("memristor", V_SCALE, **(args | kw))


@pytest.fixture(scope="module")
def stressed(tmp_path_factory):
    """A small clustered memristor student with trained-looking weights, exported (-O0), an untrained small teacher,
    and the stress report of one disturbance in both simulators."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    s = build_student(
        StudentConfig(kind="clustered", n_in=1, n_out=1, tau_s=[3e-4, 1e-3, 9e-3], physics=DevicePhysics("memristor"))
    )
    with torch.no_grad():
        for p in s.parameters():
            p.add_(0.3 * torch.randn_like(p))
    va = emit_veriloga(s, SCALES, module="t_stress")
    d = tmp_path_factory.mktemp("stress")
    (d / "m.va").write_text(va.text)
    osdi = spice.compile_va(d / "m.va", opt_level=0, cache_dir=d)
    teacher = Teacher(
        TeacherConfig(d_model=8, n_heads=2, head_hidden=8, physics=DevicePhysics("memristor"), input_scale_v=(V_SCALE,))
    )
    plan = _small_plan()
    bench = verification.Testbench(osdi, va.module, tuple(va.state_nodes))
    exported = SpiceModel("t_stress", s, SCALES, bench, "student")
    responders = [teacher_responder(teacher, SCALES), student_responder(s, SCALES, "student")]
    report, waves = stress_report(plan, SCALES, responders, truth_responder("memristor"), exported)
    return plan, report, waves, d


def test_the_impulse_reaches_twice_the_training_range():
    """The memristor's impulse sits in a rest of the program (0 V), so the terminal reaches exactly +-2 v_scale, in
    the sampled stimulus and in the SPICE source; MOSFET impulses ride on the program and go beyond."""
    plan = stress_plan("memristor", V_SCALE, amplitudes=(1.0, 2.0))
    assert len(plan.disturbances) == 2 * 2 * 3  # amplitudes x signs x widths
    assert {d.t_start_s for d in plan.disturbances} == {plan.t_impulse_s}
    for d in plan.disturbances:
        stim = d.apply(plan.base)[0]
        t = np.linspace(d.t_start_s + d.edge_s, d.t_start_s + d.edge_s + d.width_s, 11)
        np.testing.assert_allclose(stim.sample(t), d.amplitude_rel * V_SCALE, rtol=1e-12)
        np.testing.assert_allclose(plan.base[0].sample(t), 0.0)
        assert np.max(np.abs(stim.sample(np.linspace(0, plan.t_stop_s, 20001)))) <= abs(d.amplitude_v) + 1e-12
    worst = max(plan.disturbances, key=lambda d: d.amplitude_v)
    assert worst.amplitude_v == pytest.approx(2 * V_SCALE)
    netlist = "\n".join(worst.apply(plan.base)[0].ngspice_lines("vp", "p", "0", plan.t_stop_s))
    assert repr(worst.amplitude_v) in netlist
    mos = stress_plan("mosfet", (1.25, 1.25), amplitudes=(2.0,), signs=(1.0,))
    assert len(mos.disturbances) == 3 * 2  # widths x driven terminals
    for d in mos.disturbances:
        stims = d.apply(mos.base)
        t_mid = d.t_start_s + d.edge_s + 0.5 * d.width_s
        assert stims[d.terminal].value_at(t_mid) >= 2 * 1.25
        assert stims[1 - d.terminal].value_at(t_mid) == mos.base[1 - d.terminal].value_at(t_mid)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"widths_s": (-1e-6,)}, "widths must be > 0"),
        ({"widths_s": (0.0,)}, "widths must be > 0"),
        ({"amplitudes": (0.0,)}, "amplitudes are multiples"),
        ({"signs": (2.0,)}, "signs must be"),
        ({"edge_s": 0.0}, "edge_s must be > 0"),
        ({"terminals": (1,)}, "terminal 1 does not exist"),
        ({"t_impulse_s": 4e-3}, "before half the run"),
    ],
)
def test_degenerate_disturbances_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        _small_plan(**kwargs)


def test_degenerate_devices_and_impulses_raise():
    with pytest.raises(ValueError, match="no stress test for device 'csv'"):
        stress_plan("csv", 1.0)
    with pytest.raises(ValueError, match="width_s must be > 0"):
        Disturbance(0, 1.0, 1.0, -1e-9, 1e-9, 1e-3)
    with pytest.raises(ValueError, match="terminal 2 does not exist"):
        Disturbance(2, 1.0, 1.0, 1e-9, 1e-9, 1e-3).apply(stress_plan("mosfet", (1.2, 1.2)).base)


def test_error_metrics_recovery_time_and_band():
    """An error that decays exponentially after the impulse recovers when it enters the band for good: the band is
    2x the undisturbed error envelope or 1 % of the range, whichever is larger; one that never decays has not."""
    dist = Disturbance(0, 2.0, 2.0, 1e-6, 1e-9, 1e-3)
    t = np.linspace(0.0, 10e-3, 100_001)
    i_range = 1e-3
    floor = 1e-5  # = 1 % of the range
    err = np.where(t >= dist.t_start_s, 1e-3 * np.exp(-np.maximum(t - dist.t_end_s, 0.0) / 1e-3), 0.0)
    m = error_metrics(t, err, t, np.zeros_like(t), dist, i_range, t[-1], 1e-4)
    expected = 1e-3 * np.log(1e-3 / floor)  # exp decay to the floor
    assert m["peak_error_rel"] == [pytest.approx(1.0)]
    assert m["recovered"] == [True]
    assert m["recovery_time_s"][0] == pytest.approx(expected, abs=2e-7)
    # an undisturbed error of 1e-4 A doubles to a band of 2e-4 A: recovery by the time the decay reaches it
    m2 = error_metrics(t, err, t, np.full_like(t, 1e-4), dist, i_range, t[-1], 1e-4)
    assert m2["recovery_time_s"][0] == pytest.approx(1e-3 * np.log(1e-3 / 2e-4), abs=2e-7)
    # an error that stays: not recovered, no recovery time
    m3 = error_metrics(t, np.where(t > dist.t_start_s, 1e-4, 0.0), t, np.zeros_like(t), dist, i_range, t[-1], 1e-4)
    assert m3["recovered"] == [False] and m3["recovery_time_s"] == [None]
    assert m3["worst"]["recovery_time_s"] is None and not m3["worst"]["recovered"]
    # no error after the impulse at all: recovery time 0
    m4 = error_metrics(t, np.where(t <= dist.t_end_s, err, 0.0), t, np.zeros_like(t), dist, i_range, t[-1], 1e-4)
    assert m4["recovery_time_s"] == [0.0] and m4["peak_error_rel"] == [pytest.approx(1.0)]


def test_the_truth_against_itself_has_no_error_and_recovers_at_once():
    plan = _small_plan()
    truth = truth_responder("memristor")
    itself = Responder("truth itself", truth.currents, True)
    report, _ = stress_report(plan, SCALES, [itself], truth)
    m = report["cases"][0]["models"]["truth itself"]
    assert m["peak_error_a"] == [0.0] and m["after_peak_error_rel"] == [0.0]
    assert m["recovery_time_s"] == [0.0] and m["recovered"] == [True]
    assert m["perturbation"]["error_peak_rel"] == [0.0]
    assert m["perturbation"]["truth_peak_rel"][0] > 1.0  # the impulse drives the device beyond its training range
    assert report["cases"][0]["peak_abs_v_rel"] == pytest.approx(2.0)


def test_cases_on_worker_processes_give_the_serial_report():
    plan = _small_plan(signs=(1.0, -1.0))
    truth = truth_responder("memristor")
    shifted = Responder("shifted", lambda stims, t_stop, t: 1.1 * truth.currents(stims, t_stop, t), True)
    serial, _ = stress_report(plan, SCALES, [shifted], truth)
    forked, waves = stress_report(plan, SCALES, [shifted], truth, workers=2)
    assert len(forked["cases"]) == 2 and len(waves["cases"]) == 2
    for a, b in zip(serial["cases"], forked["cases"], strict=True):
        assert {k: v for k, v in a.items() if k != "wall_s"} == {k: v for k, v in b.items() if k != "wall_s"}
    assert serial["summary"] == forked["summary"]


@requires_spice
def test_spice_stress_agrees_with_the_pytorch_student(stressed):
    """The exported student's SPICE run of the disturbance matches the student replayed on SPICE's grid to the
    replay tolerance and the converged student closely, so its peak error and recovery are the student's."""
    _, report, _, _ = stressed
    case = report["cases"][0]
    student = case["models"]["student"]
    for sim in ("ngspice", "vacask"):
        sp = case["spice"][sim]
        assert sp["status"] == "ok", sp
        assert sp["replay_max_rel_err"][0] < SPICE_REPLAY_TOL
        assert sp["vs_converged_max_rel_err"][0] < 1e-2
        assert sp["peak_error_rel"][0] == pytest.approx(student["peak_error_rel"][0], rel=1e-2)
        assert sp["recovered"] == student["recovered"]
    assert report["summary"]["spice_ngspice"]["worst_replay_max_rel_err"] < SPICE_REPLAY_TOL


@requires_spice
def test_stress_report_is_json_and_plots_the_worst_case(stressed):
    plan, report, waves, d = stressed
    text = json.dumps(report)
    back = json.loads(text)
    assert set(back["summary"]) == {"teacher", "student", "spice_ngspice", "spice_vacask"}
    assert back["plan"]["disturbances"][0]["amplitude_v"] == pytest.approx(2 * V_SCALE)
    assert back["cases"][0]["models"]["teacher"]["perturbation"]["truth_peak_rel"][0] > 0
    png = plot_stress(report, waves, d / "stress.png")
    assert png.stat().st_size > 10_000


def test_stress_command_names_a_missing_directory(tmp_path, capsys):
    from psixlstm.cli import main

    code = main(["stress", "--teacher", str(tmp_path / "nope"), "--student", str(tmp_path), "--out", str(tmp_path)])
    assert code == 2
    assert "--teacher" in capsys.readouterr().err


@pytest.mark.slow
@requires_spice
def test_stress_command_end_to_end(tmp_path, capsys):
    """`psi-xlstm stress` on a saved teacher, student and export of a tiny dataset: stress.json and stress.png."""
    from psixlstm.cli import main
    from psixlstm.data.generate import DataPreset, make_dataset
    from psixlstm.distillation import save_student
    from psixlstm.fitting import save_teacher
    from psixlstm.training import TrainConfig

    ds = make_dataset("memristor", DataPreset(3, 6e-3, 0.5e-6, 50e-6), seed=0, progress=False, workers=1)
    ds.save(tmp_path / "data")
    (tmp_path / "teacher").mkdir()
    (tmp_path / "student").mkdir()
    torch.manual_seed(0)
    teacher = Teacher(TeacherConfig(d_model=8, n_heads=2, head_hidden=8, physics=DevicePhysics("memristor")))
    save_teacher(teacher, TrainConfig(epochs=1), ds.scales, {}, tmp_path / "teacher", str(tmp_path / "data"))
    s = build_student(
        StudentConfig(kind="clustered", n_in=1, n_out=1, tau_s=[3e-4, 1e-3, 9e-3], physics=DevicePhysics("memristor"))
    )
    save_student(s, ds.scales, {"test": {"vs_clean": {"nrmse": 0.1}}}, tmp_path / "student", {})
    assert (
        main(["export", "--student", str(tmp_path / "student"), "--out", str(tmp_path / "export"), "--opt-level", "0"])
        == 0
    )
    args = ["stress", "--teacher", str(tmp_path / "teacher"), "--student", str(tmp_path / "student")]
    args += ["--model", str(tmp_path / "export"), "--simulator", "ngspice", "--amplitudes", "2", "--widths", "1e-6"]
    assert main([*args, "--out", str(tmp_path / "stress"), "--quiet"]) == 0
    report = json.loads((tmp_path / "stress" / "stress.json").read_text())
    assert len(report["cases"]) == 2  # both signs
    assert report["spice_model"]["pytorch"] == "clustered"  # the exported student is the one given
    assert (tmp_path / "stress" / "stress.png").exists()
    assert "spice_ngspice" in capsys.readouterr().out
