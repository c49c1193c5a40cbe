"""The one-command pipeline: stage bookkeeping (skip, rerun on changed inputs, resume after a kill) and, slow, a
quick end-to-end run with its metrics.json keys and report."""

from __future__ import annotations

import json
import shutil

import pytest

from psixlstm.pipeline import RunConfig, Stages, run_pipeline


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


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("ngspice") is None, reason="ngspice not installed")
def test_quick_run_end_to_end_and_rerun_skips(tmp_path):
    metrics = run_pipeline(RunConfig(preset="quick"), tmp_path, progress=False)
    for name in ("teacher", "student_clustered", "student_lowrank", "linear_fit"):
        row = metrics["models"][name]
        assert {"params", "states", "mse", "nrmse", "r2", "hf_error", "latency_us_per_step"} <= set(row)
    assert metrics["models"]["student_clustered"]["params"] < 0.2 * metrics["models"]["teacher"]["params"]
    assert {"tau_s", "tau_true_s", "tau_rel_err", "svd_rank", "svd_energy"} <= set(metrics["discovery"])
    for sim in ("ngspice", "vacask"):
        assert metrics["spice"][sim]["replay_max_rel_err"] <= 1e-5
        assert metrics["spice"][sim]["failures"] == 0
    assert metrics["spice"]["ngspice"]["cost_ratio_vs_reference"] > 0
    assert metrics["timing"]["total_s"] > 0 and metrics["version"]
    html = (tmp_path / "report.html").read_text()
    assert "student_clustered" in html and "data:image/png;base64," in html and "psix_clustered.va" in html
    again = run_pipeline(RunConfig(preset="quick"), tmp_path, progress=False)
    assert not any(again["stages_run"].values())
    assert again["models"]["teacher"]["r2"] == metrics["models"]["teacher"]["r2"]
