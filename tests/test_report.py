"""report.html's tables from metrics alone (fast): mean +- std over seeds, the seed paper's published numbers for
vteam-paper, the stress and characterisation sections."""

from __future__ import annotations

from pathlib import Path

from psixlstm.report import (
    SEED_PAPER_VTEAM,
    _characterize_section,
    _model_rows,
    _reach_section,
    _seed_paper_section,
    _stress_section,
)


def _row(params, mse, r2, lat, seeds=None):
    row = {"params": params, "states": 4, "mse": mse, "nrmse": 0.1, "r2": r2, "hf_error": 0.2}
    row["latency_us_per_step"] = lat
    if seeds:
        row["over_seeds"] = seeds
    return row


MODELS = {
    "teacher": _row(4000, 1e-10, 0.99, 8.0),
    "student_clustered": _row(
        200, 2e-10, 0.98, 2.0, {"mse": {"mean": 2.5e-10, "std": 5e-11}, "r2": {"mean": 0.975, "std": 0.004}}
    ),
    "linear_fit": _row(2, 1e-8, 0.5, 0.04),
}


def test_model_table_has_every_column_and_mean_std_over_seeds():
    html = "\n".join(_model_rows(MODELS, "memristor"))
    for col in ("Params", "MSE", "NRMSE", "R&sup2;", "HF error", "Latency", "Speedup", "Compression"):
        assert col in html
    assert "2.500e-10 &plusmn; 5e-11" in html and "0.9750 &plusmn; 0.004" in html  # mean +- std where seeds ran
    assert "<td>4.00</td>" in html  # speedup: the teacher's latency / the student's
    assert "95.0% (20x)" in html  # compression: parameters saved, and the teacher's / the model's
    assert SEED_PAPER_VTEAM["label"] not in html  # the seed paper row belongs to the vteam-paper device only


def test_vteam_paper_shows_the_seed_paper_numbers_side_by_side():
    rows = "\n".join(_model_rows(MODELS, "vteam-paper"))
    assert "seed paper teacher (published)" in rows and "about 7.4e-08" in rows and "about 0.55" in rows
    section = "\n".join(_seed_paper_section(MODELS))
    assert "about 46K" in section and "this run: teacher" in section
    assert "<td>740x</td>" in section  # the seed paper's MSE / this teacher's


def test_stress_section_lists_every_model():
    stress = {
        "plan": {
            "amplitudes_rel": [1.0, 2.0],
            "signs": [-1.0, 1.0],
            "widths_s": [1e-8, 1e-4],
            "terminals": [0],
            "edge_s": 1e-9,
            "t_impulse_s": 2e-3,
            "t_stop_s": 2e-2,
            "seed": 12345,
            "cases": 8,
        },
        "i_range_a": [3e-3],
        "band_floor_rel": 0.01,
        "reltol": 1e-4,
        "worst_case": "T0 +2x 100 us",
        "models": {
            "truth": {"cases": 8, "worst_peak_current_rel": 4.7, "worst_decay_time_s": 5e-4},
            "teacher": {"cases": 8, "failed_runs": 0, "recovered": 8, "worst_peak_error_rel": 2.8}
            | {"worst_after_peak_error_rel": 0.1, "worst_recovery_time_s": 5.2e-3},
            "ngspice": {"cases": 8, "failed_runs": 1, "recovered": 0, "worst_peak_error_rel": 7.7}
            | {"worst_after_peak_error_rel": 0.3, "worst_recovery_time_s": None, "replay_max_rel_err": 8e-5}
            | {"vs_converged_max_rel_err": 9e-5},
        },
    }
    html = "\n".join(_stress_section(Path("/nonexistent"), stress))
    assert "1x, 2x" in html and "10 ns, 100 &micro;s" in html and "both signs" in html
    assert "peak current 4.7 x" in html and "500 &micro;s" in html
    assert "<td>5.2 ms</td>" in html and "<td>8 / 8</td>" in html
    assert "not recovered" in html and "0 / 7 (1 failed)" in html and "8.00e-05" in html
    skipped = "\n".join(_stress_section(Path("/nonexistent"), {"skipped": "no stress test for 'csv'"}))
    assert "Not run: no stress test for &#x27;csv&#x27;" in skipped


def test_characterize_section_shows_the_summary(tmp_path):
    sim = {"dc_spice_vs_pytorch": 5.6e-8, "ac_vs_pytorch_worst": 2e-8, "kcl_max_rel": 8e-13}
    sim |= {"charge_residual_rel": 1.1e-5, "gm_max_err_rel_to_max": 0.274, "gds_max_err_rel_to_max": 0.209}
    sim |= {"ac_vs_native_max_mag_err_db": 152.9, "current_max_err_rel_to_max": {"output": 0.11, "transfer": 0.1}}
    char = {"device": "mosfet", "ngspice": sim, "gst_odd_asymmetry": {"exported": 0.41, "bsim4_bulk_grounded": 2e-15}}
    html = "\n".join(_characterize_section(tmp_path, char))
    assert "5.6e-08" in html and "0.274" in html and "152.9" in html and "0.110" in html
    assert "exported 0.41" in html and "dc_curves.png missing" in html  # plots embedded where they exist


def test_reach_section_shows_errors_and_statuses_per_band():
    band = {"energy_share": 0.5, "rel_error": 0.123, "status": "ok"}
    missing = {"energy_share": 0.0, "rel_error": None, "status": "unresolved"}
    rep = {"record": {"sequences": 2, "resolution_hz": 5e4}, "channels": {"i_d": {"DC": band, "<1 kHz": missing}}}
    html = "\n".join(_reach_section({"teacher": rep, "student_clustered": rep}))
    assert "<h2>Frequency reach" in html and "0.123" in html and "unresolved" in html and "50 kHz" in html
    assert _reach_section(None) == []
