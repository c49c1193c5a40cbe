"""Smoke tests of the benchmarks: they run end to end and report finite, positive ratios (no timing assertions:
speed is compared as ratios measured side by side in one run, on noisy machines)."""

from __future__ import annotations

import importlib.util
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from psixlstm.data import Scales
from psixlstm.distillation import save_student
from psixlstm.export import export_student
from psixlstm.models.students import StudentConfig, build_student
from psixlstm.physics import DevicePhysics

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
requires_ngspice = pytest.mark.skipif(shutil.which("ngspice") is None, reason="ngspice not installed")


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"benchmark_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@requires_ngspice
def test_spice_cost_reports_ratios_and_breakdown(tmp_path, capsys):
    """spice_cost on a tiny exported memristor student (opt level 0), one pair per simulator."""
    torch.manual_seed(0)
    s = build_student(
        StudentConfig(kind="clustered", n_in=1, n_out=1, tau_s=[3e-4, 1e-3, 9e-3], physics=DevicePhysics("memristor"))
    )
    scales = Scales(np.array([1.4]), np.array([3e-3]), 2e-7, 5e-5)
    (tmp_path / "student").mkdir()
    save_student(s, scales, {"test": {"vs_clean": {"nrmse": 0.1}}}, tmp_path / "student", {})
    export_student(tmp_path / "student", tmp_path / "export", opt_level=0)
    out = tmp_path / "cost.json"
    args = ["--model", str(tmp_path / "export"), "--repeats", "1", "--memristor-duration", "5e-3", "--json", str(out)]
    report = _load("spice_cost").main(args)
    assert json.loads(out.read_text()) == json.loads(json.dumps(report))
    (model,) = report["models"]
    assert model["device"] == "memristor" and model["name"] == "memristor clustered"
    assert set(model["simulators"]) == {"ngspice", "vacask"}
    for entry in model["simulators"].values():
        assert len(entry["repeats"]) == 1
        for key in ("wall_per_step", "sim_per_step", "newton", "newton_per_step", "sim_per_newton"):
            stats = entry["summary"][key]
            assert math.isfinite(stats["median"]) and stats["median"] > 0, (key, stats)
            assert stats["iqr"] == 0.0  # one repeat
        student, reference = entry["breakdown"]["student"], entry["breakdown"]["reference"]
        assert student["states"] == s.n_states and reference["states"] == 3
        assert student["params"] == s.n_params and student["literals"] >= s.n_params
        assert student["internal"] >= student["states"] and student["unknowns"] > student["internal"]
        for side in (student, reference):
            assert side["newton_per_step"] >= 1.0 and 0.0 < side["load_share"] < 1.0
    printed = capsys.readouterr().out
    assert "wall/step" in printed and "where the cost goes" in printed


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A `psi-xlstm run` layout (data/, seed0/teacher, seed0/discovery) with a one-epoch teacher."""
    from psixlstm.config import TeacherPreset
    from psixlstm.data.generate import DataPreset, make_dataset
    from psixlstm.discovery import discover
    from psixlstm.fitting import train_teacher
    from psixlstm.training import TrainConfig

    run = tmp_path_factory.mktemp("run")
    ds = make_dataset("memristor", DataPreset(5, 4e-3, 0.5e-6, 50e-6), seed=0, progress=False, workers=1)
    ds.save(run / "data")
    preset = TeacherPreset(16, 2, 16, TrainConfig(epochs=1, chunk_len=128))
    teacher = train_teacher(ds, preset, run / "seed0" / "teacher", progress=False, plots=False)
    discover(teacher.model, ds, k=3).save(run / "seed0" / "discovery")
    return run


def test_student_seeds_tabulates_each_seed_against_the_teacher(tiny_run, tmp_path, capsys):
    """One row per seed with ratio = its NRMSE / the teacher's; different seeds give different students; a second
    call finds the students under --out and rereads them instead of training again."""
    args = ["--run", str(tiny_run), "--seeds", "0", "1", "--preset", "quick", "--minutes", "1"]
    args += ["--out", str(tmp_path / "students"), "--json", str(tmp_path / "seeds.json")]
    report = _load("student_seeds").main(args)
    rows = report["students"]
    assert [r["seed"] for r in rows] == [0, 1]
    for r in rows:
        assert r["nrmse"] > 0 and r["ratio"] == pytest.approx(r["nrmse"] / report["teacher_nrmse"])
        assert len(r["cluster_tau_s"]) == 3 and r["epochs"] >= 1
    assert rows[0]["nrmse"] != rows[1]["nrmse"]
    assert report["summary"]["n"] == 2 and report["summary"]["met"] == sum(r["ratio"] <= 1.1 for r in rows)
    assert json.loads((tmp_path / "seeds.json").read_text()) == json.loads(json.dumps(report))
    written = {d.name: (d / "student.pt").stat().st_mtime_ns for d in (tmp_path / "students").iterdir()}
    assert set(written) == {"clustered_seed0", "clustered_seed1"}
    assert _load("student_seeds").main(args)["students"] == rows
    assert {d.name: (d / "student.pt").stat().st_mtime_ns for d in (tmp_path / "students").iterdir()} == written
    assert "at or under 1.1x: " in capsys.readouterr().out


def test_student_seeds_rejects_a_directory_that_is_not_a_run(tmp_path, capsys):
    with pytest.raises(SystemExit):
        _load("student_seeds").main(["--run", str(tmp_path)])
    assert "psi-xlstm run" in capsys.readouterr().err
