"""The one-command pipeline: stage bookkeeping (skip, rerun on changed inputs, resume after a kill) and, slow, quick
end-to-end runs: one memristor run (a module fixture, shared by the tests of its metrics.json keys, stress section,
report and rerun) and one MOSFET run with its characterisation."""

from __future__ import annotations

import base64
import json
import math
import re
import shutil

import pytest

from psixlstm.pipeline import RunConfig, Stages, run_pipeline

requires_ngspice = pytest.mark.skipif(shutil.which("ngspice") is None, reason="ngspice not installed")


def test_stages_skip_rerun_and_resume(tmp_path):
    calls = []

    def fn(d):
        calls.append(d.name)
        (d / "artifact").write_text("x")
        return {"n": len(calls)}

    s = Stages(tmp_path, progress=False)
    assert s.run("a", {"k": 1}, fn) == {"n": 1}
    s.run("b", {}, fn, after=("a",))
    s = Stages(tmp_path, progress=False)  # a rerun with the same inputs skips both
    assert s.run("a", {"k": 1}, fn) == {"n": 1}
    s.run("b", {}, fn, after=("a",))
    assert calls == ["a", "b"] and s.ran == {"a": False, "b": False}
    s = Stages(tmp_path, progress=False)  # a changed input reruns the stage and everything after it
    s.run("a", {"k": 2}, fn)
    s.run("b", {}, fn, after=("a",))
    assert calls == ["a", "b", "a", "b"]
    (tmp_path / "b" / "stage.json").unlink()  # killed before finishing: rerun, keeping what the stage left
    s = Stages(tmp_path, progress=False)
    s.run("a", {"k": 2}, fn)
    s.run("b", {}, lambda d: {"kept": (d / "artifact").exists()}, after=("a",))
    assert json.loads((tmp_path / "b" / "stage.json").read_text())["summary"] == {"kept": True}


def test_run_config_names_what_is_wrong():
    with pytest.raises(ValueError, match="unknown device"):
        RunConfig(device="diode")
    with pytest.raises(ValueError, match="unknown preset"):
        RunConfig(preset="huge")
    with pytest.raises(ValueError, match="seeds"):
        RunConfig(seeds=0)


def _real(x) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def _all_real(x) -> bool:
    """A finite number, or a non-empty list / dict of them."""
    if isinstance(x, list):
        return bool(x) and all(_real(v) for v in x)
    if isinstance(x, dict):
        return bool(x) and all(_real(v) for v in x.values())
    return _real(x)


def _strict_json(path) -> dict:
    def no_nan(token):
        raise AssertionError(f"{path} holds {token}")

    return json.loads(path.read_text(), parse_constant=no_nan)


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """One quick memristor run, shared by the tests below (about a minute on 2 cores)."""
    out = tmp_path_factory.mktemp("quick_run")
    return out, run_pipeline(RunConfig(preset="quick"), out, progress=False)


@pytest.mark.slow
@requires_ngspice
def test_quick_run_metrics_carry_every_key_with_real_values(quick_run):
    out, metrics = quick_run
    assert _strict_json(out / "metrics.json") == json.loads(json.dumps(metrics))
    for name in ("teacher", "student_clustered", "student_lowrank", "linear_fit"):
        row = metrics["models"][name]
        for key in ("params", "states", "mse", "nrmse", "r2", "hf_error", "latency_us_per_step"):
            assert _real(row[key]), (name, key, row[key])
    assert metrics["models"]["student_clustered"]["params"] < 0.2 * metrics["models"]["teacher"]["params"]
    assert metrics["models"]["linear_fit"]["states"] == 0
    disc = metrics["discovery"]
    for key in ("tau_s", "tau_true_s", "tau_rel_err", "svd_rank", "svd_energy"):
        assert _all_real(disc[key]), (key, disc[key])
    assert disc["tau_true_s"] == pytest.approx([0.34e-3, 1.2e-3, 8.7e-3])
    for sim in ("ngspice", "vacask"):
        s = metrics["spice"][sim]
        for key in ("replay_max_rel_err", "adaptive_nrmse", "cost_ratio_vs_reference", "failures"):
            assert _real(s[key]), (sim, key, s[key])
        assert s["replay_max_rel_err"] <= 1e-5 and s["failures"] == 0 and s["cost_ratio_vs_reference"] > 0
        assert metrics["spice_test_waveform"][sim]["replay_max_rel_err"] <= 1e-3
    timing = metrics["timing"]
    stages = ("data", "seed0/teacher", "seed0/discovery", "seed0/clustered", "seed0/lowrank", "veriloga_clustered")
    for stage in (*stages, "spice", "spice_waveform", "stress", "report", "total"):
        assert _real(timing[f"{stage}_s"]) and timing[f"{stage}_s"] >= 0, stage
    students = [timing[f"seed0/{kind}_s"] for kind in ("clustered", "lowrank")]  # trained side by side
    serial = sum(v for k, v in timing.items() if k != "total_s") - sum(students) + max(students)
    assert timing["total_s"] >= serial * 0.99
    assert metrics["version"] and metrics["config"]["device"] == "memristor" and metrics["config"]["preset"] == "quick"
    assert "characterize" not in metrics  # MOSFET and BJT only


@pytest.mark.slow
@requires_ngspice
def test_quick_run_stress_numbers(quick_run):
    out, metrics = quick_run
    stress = metrics["stress"]
    assert stress["plan"]["amplitudes_rel"] == [2.0] and stress["plan"]["cases"] == 2  # the quick plan
    assert (out / "stress" / "stress.json").exists() and (out / "stress" / "stress.png").stat().st_size > 10_000
    models = stress["models"]
    assert set(models) == {"truth", "teacher", "student_clustered", "student_lowrank", "ngspice", "vacask"}
    assert models["truth"]["worst_peak_current_rel"] > 1.5  # a 2x impulse drives the truth out of its range
    assert _real(models["truth"]["worst_decay_time_s"])
    for name, m in models.items():
        if name == "truth":
            continue
        assert _real(m["worst_peak_error_rel"]) and _real(m["worst_after_peak_error_rel"]), name
        assert m["cases"] == 2 and m["failed_runs"] == 0 and 0 <= m["recovered"] <= 2, name
        assert (m["worst_recovery_time_s"] is None) == (m["recovered"] == 0), name
    for sim in ("ngspice", "vacask"):
        assert models[sim]["replay_max_rel_err"] <= 1e-3  # SPICE at reltol 1e-4 vs the student on its grid
        # SPICE is the clustered student: same peak error as PyTorch's, to SPICE's accuracy
        assert models[sim]["worst_peak_error_rel"] == pytest.approx(
            models["student_clustered"]["worst_peak_error_rel"], abs=2e-3
        )


@pytest.mark.slow
@requires_ngspice
def test_quick_run_report_is_self_contained(quick_run):
    out, metrics = quick_run
    html = (out / "report.html").read_text()
    for heading in ("Models", "Waveforms", "Time constants", "SPICE (clustered student)", "Stress test", "Timing"):
        assert f"<h2>{heading}" in html, heading
    assert "Characterisation" not in html and "Seed paper" not in html  # MOSFET/BJT, vteam-paper only
    for name in ("teacher", "student_clustered", "student_lowrank", "linear_fit"):
        assert f"<td>{name}</td>" in html
    links = re.findall(r'href="([^"]+\.va)"', html)
    assert "veriloga_clustered/psix_clustered.va" in links
    for link in links:
        assert not link.startswith("/") and (out / link).is_file(), link  # relative, to a file of the run
    sources = re.findall(r'<img src="([^"]*)"', html)
    assert len(sources) >= 7  # waveforms, I-V loops, spectra, taus, singular values, SPICE error, stress
    for src in sources:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    assert "missing</em>" not in html
    assert f"{metrics['stress']['models']['ngspice']['replay_max_rel_err']:.2e}" in html


@pytest.mark.slow
@requires_ngspice
def test_quick_run_rerun_skips_every_stage(quick_run):
    out, metrics = quick_run
    again = run_pipeline(RunConfig(preset="quick"), out, progress=False)
    assert not any(again["stages_run"].values())
    assert again["models"]["teacher"]["r2"] == metrics["models"]["teacher"]["r2"]
    assert again["stress"] == metrics["stress"]


@pytest.mark.slow
@requires_ngspice
def test_quick_mosfet_run_characterizes_the_export(tmp_path):
    metrics = run_pipeline(RunConfig(device="mosfet", preset="quick"), tmp_path, progress=False)
    char = metrics["characterize"]
    assert char["device"] == "mosfet"
    for sim in ("ngspice", "vacask"):
        s = char[sim]
        assert s["dc_spice_vs_pytorch"] <= 1e-6 and s["ac_vs_pytorch_worst"] <= 1e-6  # the export is the student
        assert s["kcl_max_rel"] <= 1e-9
        for key in ("gm_max_err_rel_to_max", "gds_max_err_rel_to_max", "ac_vs_native_max_mag_err_db"):
            assert _real(s[key]), key
    assert _all_real(char["gst_odd_asymmetry"])
    assert (tmp_path / "characterize" / "characterize.json").exists()
    assert metrics["timing"]["characterize_s"] > 0
    stress = metrics["stress"]
    assert stress["plan"]["terminals"] == [0, 1] and stress["plan"]["cases"] == 4
    assert stress["models"]["ngspice"]["replay_max_rel_err"] <= 1e-3
    html = (tmp_path / "report.html").read_text()
    assert "<h2>Characterisation" in html and "Gummel symmetry" in html
    reach = metrics["frequency_reach"]
    assert set(reach) == {"teacher", "student_clustered", "student_lowrank"}
    for rep in reach.values():
        bands = rep["channels"]["i_d"]
        assert bands["DC"]["status"] == "ok" and _real(bands["1-10 MHz"]["rel_error"])
        assert bands["<1 kHz"]["status"] == "unresolved"  # 10 us records: bins every 100 kHz
    assert "<h2>Frequency reach" in html
    for plot in ("dc_curves", "gummel_symmetry", "ac_y"):
        assert f'alt="{plot}"' in html, plot
    assert "missing</em>" not in html


@pytest.mark.parametrize("workers", [1, 2])
def test_stages_side_by_side_run_each_stage_once_and_report_failures(tmp_path, workers):
    def stage(d, value):
        (d / "out.txt").write_text(str(value))
        return {"value": value, "pid_differs": __import__("os").getpid() != parent}

    parent = __import__("os").getpid()
    stages = Stages(tmp_path, progress=False, workers=workers)
    specs = [(f"s{k}", {"k": k}, lambda d, k=k: stage(d, k), ()) for k in range(3)]
    summaries = stages.run_side_by_side(specs)
    assert [s["value"] for s in summaries] == [0, 1, 2]
    assert [s["pid_differs"] for s in summaries] == [False, workers > 1, workers > 1]  # the first runs here
    assert all(stages.ran[f"s{k}"] for k in range(3))
    assert stages.run_side_by_side(specs) == summaries and not any(stages.ran.values())  # up to date: skipped

    def failing(d):
        raise ValueError("broken stage")

    bad = [("ok", {}, lambda d: {"fine": True}, ()), ("bad", {}, failing, ())]
    with pytest.raises((RuntimeError, ValueError), match="bad|broken"):
        stages.run_side_by_side(bad)
    assert not (tmp_path / "bad" / "stage.json").exists()
