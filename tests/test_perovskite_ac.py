"""The exported model of the measured perovskite memristor in a SPICE .ac analysis against figure 4's impedance
spectra: SPICE and the PyTorch student's closed-form small-signal impedance must agree (states at 0 and, where the
module supports it, at the steady state), and a pinched model must be purely resistive at 0 V."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from psixlstm.data import load_impedance_spectra
from psixlstm.perovskite_ac import compare_impedance, plot_impedance_comparison
from psixlstm.pipeline import RunConfig, run_pipeline

pytestmark = pytest.mark.skipif(shutil.which("ngspice") is None, reason="ngspice not installed")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("perovskite")
    cfg = RunConfig(device="perovskite", preset="quick", simulators=("ngspice",))
    metrics = run_pipeline(cfg, out, progress=False)
    assert metrics["data"]["assumed_sweep_rate_v_per_s"] == 0.1 and "CC BY 4.0" in metrics["data"]["attribution"]
    assert metrics["spice"]["ngspice"]["replay_max_rel_err"] <= 1e-5
    return out / "veriloga_clustered"


def test_spice_ac_agrees_with_the_student_and_is_compared_with_the_measurement(model_dir, tmp_path):
    spectra = [s for s in load_impedance_spectra() if s.bias_v in (0.0, 1.0)]
    report = compare_impedance(model_dir, spectra)
    assert [row["bias_v"] for row in report["spectra"]] == [0.0, 1.0]
    assert "CC BY 4.0" in report["attribution"]
    for row in report["spectra"]:
        m = row["models"]
        z = {name: np.asarray(v["abs_z_ohm"]) * np.exp(1j * np.radians(v["phase_deg"])) for name, v in m.items()}
        np.testing.assert_allclose(z["spice_ac_states_at_0"], z["pytorch_frozen"], rtol=1e-6)
        if report["spice_steady_state_available"]:
            np.testing.assert_allclose(z["spice_ac_steady_state"], z["pytorch_steady_state"], rtol=1e-4)
        for v in m.values():
            assert np.isfinite(v["vs_measured"]["log10_abs_z_rms_error"])
            assert np.isfinite(v["vs_measured"]["phase_rms_error_deg"])
        if row["bias_v"] == 0.0:  # I = V G(x, V): at V = 0 the states cannot move the current, Z is real
            assert all(v["vs_measured"]["max_abs_phase_deg"] < 1e-6 for v in m.values())
            assert row["measured_summary"]["abs_z_low_f_ohm"] == pytest.approx(52055.8, rel=1e-5)  # Fig4a, 0.02 Hz
            assert row["measured_summary"]["log10_abs_z_span"] > 3  # the measured device is far from a resistor
    png = plot_impedance_comparison(report, tmp_path / "impedance.png")
    assert png.stat().st_size > 10_000
