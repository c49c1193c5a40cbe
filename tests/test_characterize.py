"""Characterisation of exported MOSFET/BJT students in real simulators (openvaf-r, ngspice, VACASK; no mocks): the
module's DC is the PyTorch student's steady state, its .ac the linearised student ODE, KCL and charge hold, and a
perturbed weight in the exported text shows up in these checks."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil

import numpy as np
import pytest
import torch

from psixlstm import characterize as ch
from psixlstm import spice
from psixlstm.data import Scales
from psixlstm.export import emit_veriloga
from psixlstm.models.students import StudentConfig, build_student
from psixlstm.physics import DevicePhysics
from psixlstm.verification import static_current

requires_ngspice = pytest.mark.skipif(shutil.which("ngspice") is None, reason="ngspice not installed")
PHYSICS = {
    "mosfet": DevicePhysics("mosfet", v_ds_index=1, v_gs_index=0, i_d_index=1, i_g_index=0),
    "bjt": DevicePhysics("bjt", v_be_index=0),
}
SCALES = {  # MOSFET v_gs, v_ds / BJT v_be, v_ce: V per unit; currents A per unit
    "mosfet": Scales(np.array([1.25, 1.25]), np.array([4e-5, 5e-3]), 5e-10, 5e-8),
    "bjt": Scales(np.array([0.75, 5.2]), np.array([3e-2, 7.5e-2]), 5e-10, 5e-8),
}


def _student(device: str, kind: str = "clustered"):
    """A small untrained student with seeded, trained-looking weights (time constants 2-200 ns)."""
    torch.set_num_threads(1)
    torch.manual_seed(1)
    cfg = StudentConfig(kind=kind, n_in=2, n_out=2, tau_s=[2e-9, 2e-8, 2e-7], physics=PHYSICS[device], t_scale_s=1e-9)
    s = build_student(cfg)
    with torch.no_grad():
        for p in s.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return s


def _compile(text: str, module: str, d):
    d.mkdir(parents=True, exist_ok=True)
    (d / "m.va").write_text(text)
    return spice.compile_va(d / "m.va", opt_level=0, cache_dir=d)


def _device(device: str, kind: str, d) -> ch.ExportedDevice:
    s = _student(device, kind)
    va = emit_veriloga(s, SCALES[device], module=f"t_char_{device}_{kind}")
    osdi = _compile(va.text, va.module, d)
    sc = SCALES[device]
    return ch.ExportedDevice(s, device, sc.input_scale_v, sc.output_scale_a, osdi, va.module, tuple(va.state_nodes))


@pytest.fixture(scope="module", params=["mosfet", "bjt"])
def exported(request, tmp_path_factory):
    return _device(request.param, "clustered", tmp_path_factory.mktemp(f"char_{request.param}"))


def _sweep_both(dev: ch.ExportedDevice, simulator: str, fixed_point: bool = True):
    """A DC sweep of each driven input over its training range (the other at its range's midpoint)."""
    vs, cur = [], []
    for k, (lo, hi) in enumerate(dev.native.input_range_v):
        other = 1 - k
        held = {other: 0.5 * sum(dev.native.input_range_v[other])}
        dc = [held.get(j, lo) for j in range(2)]
        circuit, bench = ch._exported_circuit(dev, dc, fixed_point=fixed_point)
        w = spice.run_circuit(circuit, spice.DCSweep(f"v{dev.driven[k]}", lo, hi, 25, ch.DC_RELTOL), simulator)
        vs.append(bench.voltages(w))
        cur.append(bench.currents(w))
    return np.concatenate(vs), np.concatenate(cur)


def _max_rel(a: np.ndarray, b: np.ndarray) -> float:
    """Worst terminal's max |a - b| / max |b|; a terminal with b = 0 throughout (the MOSFET gate in DC) against 1 pA."""
    return float(np.max(np.max(np.abs(a - b), 0) / np.maximum(np.max(np.abs(b), 0), 1e-12)))


@requires_ngspice
@pytest.mark.parametrize("simulator", ["ngspice", "vacask"])
def test_spice_dc_is_the_pytorch_steady_state(exported, simulator):
    """dc_fixed_point = 1 (the default): the module's DC currents are the student's at x* = g(x*, u) (what
    verification's static_current computes), to the Newton tolerance; dc_fixed_point = 0 keeps the states at 0,
    which differs."""
    dev = exported
    v, i_sp = _sweep_both(dev, simulator)
    i_steady = ch.steady_current(dev.student, dev.v_scale, dev.i_scale, v)
    assert _max_rel(i_sp, i_steady) <= 1e-6
    assert _max_rel(static_current(dev.student, dev.v_scale, dev.i_scale, v), i_steady) == 0.0
    i_zero = static_current(dev.student, dev.v_scale, dev.i_scale, v, steady=False)
    assert _max_rel(i_zero, i_steady) > 1e-3  # the steady state is not the trained initial state
    v0, i0 = _sweep_both(dev, simulator, fixed_point=False)
    assert _max_rel(i0, static_current(dev.student, dev.v_scale, dev.i_scale, v0, steady=False)) <= 1e-6
    circuit = dev.bench(True).circuit(dc_v=[0.5, 0.5])  # the module's own default is the steady state
    params = [e for e in circuit.elements if isinstance(e, spice.OsdiDevice)][0].params
    assert params == {"dc_fixed_point": 1.0}
    default = dataclasses.replace(dev.bench(True), params={})
    w = spice.run_circuit(
        default.circuit(dc_v=v[0]),
        spice.DCSweep(f"v{dev.driven[0]}", v[0, 0], v[0, 0] + 0.1, 3, ch.DC_RELTOL),
        simulator,
    )
    i_def = default.currents(w)
    assert _max_rel(i_def, ch.steady_current(dev.student, dev.v_scale, dev.i_scale, default.voltages(w))) <= 1e-6


def test_steady_state_is_a_fixed_point():
    s = _student("mosfet")
    u = np.random.default_rng(0).uniform(-1, 1, (7, 2))
    x = ch.steady_state(s, u)
    g = s.double().drive(torch.as_tensor(x), torch.as_tensor(u)).detach().numpy()
    s.float()
    assert np.max(np.abs(g - x)) <= 1e-12 and np.max(np.abs(x)) > 1e-2


@requires_ngspice
def test_spice_ac_is_the_linearised_student(exported):
    """.ac Y(jw) of the module at a bias equals C (jw - A)^-1 B + D + jw dQ/dV of the student linearised at its
    fixed point, in both simulators, 1 Hz - 10 GHz; the default module (states pinned at 0) gives the pinned
    linearisation instead, which misses the state dynamics."""
    dev = exported
    report = ch.ac_compare(dev, ("ngspice", "vacask"), biases=ch.AC_BIASES[dev.kind][:1], native=False)
    entry = report["biases"][0]
    for sim in ("ngspice", "vacask"):
        assert entry[sim]["vs_pytorch_worst"] <= 1e-6, (sim, entry[sim]["vs_pytorch"])
    pinned = entry["default_pinned"]
    assert pinned["vs_pinned_pytorch_worst"] <= 1e-9
    assert max(e["complex_err_rel_to_max"] for e in pinned["vs_fixed_point"].values()) > 1e-3
    y = entry["ngspice"]["y_s"]
    assert np.ptp(np.abs(y[:, 1, 1])) > 1e-3 * np.max(np.abs(y[:, 1, 1]))  # frequency dependent, not flat


@requires_ngspice
def test_kcl_and_charge_conservation(exported):
    dev = exported
    rep = ch.kcl_and_charge(dev, ("ngspice",))["ngspice"]
    assert rep["kcl_max_rel"] <= 1e-9
    assert rep["charge_vs_state_function_rel"] <= 1e-4
    assert rep["charge_residual_rel"] <= 1e-3
    assert min(rep["charge_swing_c"]) > 0


@requires_ngspice
def test_a_perturbed_exported_weight_is_caught(tmp_path):
    """One drive weight of the exported text changed by 10 %: the module's DC and .ac no longer match the
    student (they did before, see above), while the states-at-0 static current, which does not see the drive, does."""
    dev = _device("mosfet", "clustered", tmp_path / "ok")
    text = (tmp_path / "ok" / "m.va").read_text()
    w2 = dev.student.w2.weight.detach().double()
    lit = repr(float(w2[0, 0]))
    assert len(re.findall(re.escape(lit) + r" \* a0\b", text)) == 1
    bad_text = re.sub(re.escape(lit) + r" \* a0\b", repr(float(w2[0, 0]) * 1.1) + " * a0", text)
    bad = dataclasses.replace(dev, osdi=_compile(bad_text, dev.module, tmp_path / "bad"))
    v, i_sp = _sweep_both(bad, "ngspice")
    assert _max_rel(i_sp, ch.steady_current(dev.student, dev.v_scale, dev.i_scale, v)) > 1e-5
    v0, i0 = _sweep_both(bad, "ngspice", fixed_point=False)
    assert _max_rel(i0, static_current(dev.student, dev.v_scale, dev.i_scale, v0, steady=False)) <= 1e-6
    report = ch.ac_compare(bad, ("ngspice",), biases=ch.AC_BIASES["mosfet"][:1], native=False)
    assert report["biases"][0]["ngspice"]["vs_pytorch_worst"] > 1e-5


@requires_ngspice
def test_gummel_symmetry_of_bsim4_and_the_module(tmp_path):
    """BSIM4 with the bulk at the midpoint is symmetric to rounding (the test bench is right); the module's metrics
    are finite and a random student is not symmetric."""
    dev = _device("mosfet", "clustered", tmp_path)
    rep = ch.gummel_symmetry(dev)
    assert rep["bsim4_bulk_grounded_worst"]["odd_asymmetry"] <= 1e-9
    assert rep["bsim4_bulk_at_source_worst"]["odd_asymmetry"] > 1e-3  # the junction at the source side
    assert 1e-3 < rep["exported_worst"]["odd_asymmetry"] < np.inf


@requires_ngspice
def test_bjt_gummel_plot_native_beta(tmp_path):
    dev = _device("bjt", "clustered", tmp_path)
    rep = ch.bjt_gummel(dev, ("ngspice",), v_ce=(2.0,))
    lo, hi = rep["ngspice"][0]["floor_0.01"]["beta_native_range"]
    assert 50 < lo <= hi < 300  # the 2N2222-like Gummel-Poon model: BF = 256 with high-injection roll-off
    c = rep["curves"][0]
    assert c["native_ic"][-1] > 1e-3 and np.all(np.diff(c["native_ic"][c["v_be"] > 0.3]) > 0)


@requires_ngspice
@pytest.mark.slow
@pytest.mark.parametrize("kind", ["clustered", "lowrank"])
def test_characterize_writes_report_and_plots(kind, tmp_path):
    for device in ("mosfet", "bjt"):
        dev = _device(device, kind, tmp_path / device)
        rep = ch.characterize(dev, ("ngspice", "vacask"), out_dir=tmp_path / f"out_{device}")
        data = json.loads((tmp_path / f"out_{device}" / "characterize.json").read_text())
        assert data["summary"] == rep["summary"]
        for sim in ("ngspice", "vacask"):
            s = rep["summary"][sim]
            assert s["dc_spice_vs_pytorch"] <= 1e-6 and s["ac_vs_pytorch_worst"] <= 1e-6
            assert s["kcl_max_rel"] <= 1e-9
        for name in rep["plots"]:
            assert (tmp_path / f"out_{device}" / name).stat().st_size > 10_000


@requires_ngspice
def test_characterize_command(tmp_path, capsys):
    """`psi-xlstm characterize` on a MOSFET export writes characterize.json; a memristor export is refused."""
    from psixlstm.artifacts import save_model
    from psixlstm.cli import main

    def export(student, scales, name):
        sdir = tmp_path / name
        sdir.mkdir()
        meta = {"config": student.cfg.to_dict(), "scales": scales.to_dict()}
        save_model(sdir, "student", student, meta, {"test": {"vs_clean": {"nrmse": 0.1}}})
        out = tmp_path / f"{name}_export"
        assert main(["export", "--student", str(sdir), "--out", str(out), "--opt-level", "0"]) == 0
        return out

    out = export(_student("mosfet"), SCALES["mosfet"], "mos")
    args = ["characterize", "--model", str(out), "--out", str(tmp_path / "char"), "--no-plots"]
    assert main(args) == 0
    rep = json.loads((tmp_path / "char" / "characterize.json").read_text())
    assert rep["summary"]["ngspice"]["dc_spice_vs_pytorch"] <= 1e-6
    assert "Gummel symmetry" in capsys.readouterr().out
    torch.manual_seed(0)
    mem = build_student(StudentConfig("clustered", 1, 1, [3e-4, 1e-3], physics=DevicePhysics("memristor")))
    out = export(mem, Scales(np.array([1.4]), np.array([3e-3]), 2e-7, 5e-5), "mem")
    assert main(["characterize", "--model", str(out), "--out", str(tmp_path / "c2")]) == 2
    assert "MOSFET or BJT export" in capsys.readouterr().err
