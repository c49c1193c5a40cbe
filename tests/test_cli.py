"""The console script end to end: doctor, data, groundtruth-check, help and errors."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from psixlstm.cli import main
from psixlstm.data import Dataset

requires_ngspice = pytest.mark.skipif(shutil.which("ngspice") is None, reason="ngspice not installed")


@requires_ngspice
def test_doctor_passes_on_a_complete_toolchain(capsys):
    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    for tool in ("torch", "ngspice", "openvaf-r", "vacask", "ngspice transient", "vacask transient"):
        assert tool in out
    assert "all checks passed" in out


def test_data_writes_dataset_and_plot(tmp_path, capsys):
    out = tmp_path / "d"
    assert main(["data", "--device", "vteam-paper", "--preset", "quick", "--out", str(out), "--quiet"]) == 0
    assert (out / "dataset.npz").exists() and (out / "samples.png").stat().st_size > 10_000
    ds = Dataset.load(out)
    assert ds.device == "vteam-paper" and ds.meta["preset"] == "quick"
    assert "vteam-paper" in capsys.readouterr().out


@requires_ngspice
def test_groundtruth_check_prints_json_and_exit_code(capsys):
    assert main(["groundtruth-check", "--simulator", "ngspice"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["max_rel_err"] <= 1e-3
    # an impossible tolerance must fail: the exit code follows the measurement
    assert main(["groundtruth-check", "--simulator", "ngspice", "--tolerance", "1e-12"]) == 1


def test_help_and_bad_arguments():
    proc = subprocess.run([sys.executable, "-m", "psixlstm.cli", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0 and "doctor" in proc.stdout and "groundtruth-check" in proc.stdout
    proc = subprocess.run(
        [sys.executable, "-m", "psixlstm.cli", "data", "--device", "diode", "--out", "x"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2 and "invalid choice" in proc.stderr


def test_train_teacher_and_baselines_commands(tmp_path, capsys):
    from psixlstm.data.generate import DataPreset, make_dataset

    data = tmp_path / "data"
    make_dataset("memristor", DataPreset(5, 3e-3, 0.5e-6, 50e-6), seed=0, progress=False, workers=1).save(data)
    out = tmp_path / "teacher"
    assert main(["train-teacher", "--data", str(data), "--preset", "quick", "--out", str(out), "--quiet"]) == 0
    assert "R^2" in capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["model"] == "teacher" and metrics["params"] > 0
    assert (out / "spectrum.png").exists()
    assert (
        main(
            [
                "baselines",
                "--data",
                str(data),
                "--preset",
                "quick",
                "--out",
                str(tmp_path / "b"),
                "--quiet",
                "--no-teachers",
            ]
        )
        == 0
    )
    text = capsys.readouterr().out
    for name in ("linear_fit", "mlp_pinn", "siren", "lstm"):
        assert name in text


def test_train_teacher_missing_data_is_a_clear_error(tmp_path, capsys):
    assert main(["train-teacher", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 2
    assert "error" in capsys.readouterr().err


def test_discover_and_distill_commands(tmp_path, capsys):
    from psixlstm.data.generate import DataPreset, make_dataset

    data = tmp_path / "data"
    make_dataset("memristor", DataPreset(5, 3e-3, 0.5e-6, 50e-6), seed=0, progress=False, workers=1).save(data)
    teacher = tmp_path / "teacher"
    assert main(["train-teacher", "--data", str(data), "--preset", "quick", "--out", str(teacher), "--quiet"]) == 0
    disc = tmp_path / "disc"
    assert main(["discover", "--teacher", str(teacher), "--out", str(disc), "--k", "3"]) == 0  # data from teacher.json
    text = capsys.readouterr().out
    assert "gate clusters (K=3)" in text and "vs true taus" in text
    assert (disc / "time_constants.png").exists() and (disc / "singular_values.png").exists()
    student = tmp_path / "student"
    assert (
        main(
            [
                "distill",
                "--teacher",
                str(teacher),
                "--discovery",
                str(disc),
                "--student",
                "lowrank",
                "--preset",
                "quick",
                "--minutes",
                "1.5",
                "--candidates",
                "2",
                "--out",
                str(student),
                "--quiet",
            ]
        )
        == 0
    )
    text = capsys.readouterr().out
    assert "% fewer than the teacher" in text and "best of 2 initialisations" in text
    metrics = json.loads((student / "metrics.json").read_text())
    assert metrics["kind"] == "lowrank" and len(metrics["training"]["candidates"]) == 2


@requires_ngspice
def test_export_and_verify_commands(tmp_path, capsys):
    """export writes .va, .osdi and testbenches for a distilled student; verify measures it in both simulators."""
    import numpy as np
    import torch

    from psixlstm.artifacts import save_model
    from psixlstm.data import Scales
    from psixlstm.models.students import StudentConfig, build_student
    from psixlstm.physics import DevicePhysics

    torch.manual_seed(0)
    cfg = StudentConfig(kind="clustered", n_in=1, n_out=1, tau_s=[3e-4, 1e-3, 9e-3], physics=DevicePhysics("memristor"))
    student = build_student(cfg)
    scales = Scales(np.array([1.4]), np.array([3e-3]), 2e-7, 5e-5)
    sdir = tmp_path / "student"
    sdir.mkdir()
    save_model(
        sdir,
        "student",
        student,
        {"config": cfg.to_dict(), "scales": scales.to_dict()},
        {"test": {"vs_clean": {"nrmse": 0.1}}},
    )
    out = tmp_path / "export"
    assert main(["export", "--student", str(sdir), "--out", str(out), "--opt-level", "0"]) == 0
    for name in ("psix_student.va", "psix_student.osdi", "testbench_ngspice.cir", "testbench_vacask.sim", "model.json"):
        assert (out / name).exists(), name
    assert "test_nrmse_vs_truth: 0.1" in (out / "psix_student.va").read_text()  # provenance in the header
    capsys.readouterr()


@pytest.mark.slow
@requires_ngspice
def test_verify_meets_the_replay_and_realistic_bounds(tmp_path):
    import numpy as np
    import torch

    from psixlstm import spice
    from psixlstm.export import emit_veriloga
    from psixlstm.models.students import StudentConfig, build_student
    from psixlstm.physics import DevicePhysics
    from psixlstm.verification import verify_memristor_student

    torch.manual_seed(0)
    cfg = StudentConfig(kind="clustered", n_in=1, n_out=1, tau_s=[3e-4, 1e-3, 9e-3], physics=DevicePhysics("memristor"))
    student = build_student(cfg)
    from psixlstm.data import Scales

    va = emit_veriloga(student, Scales(np.array([1.4]), np.array([3e-3]), 2e-7, 5e-5))
    (tmp_path / "m.va").write_text(va.text)
    osdi = spice.compile_va(tmp_path / "m.va", opt_level=1, cache_dir=tmp_path)
    report = verify_memristor_student(student, 1.4, 3e-3, osdi, va.module, va.state_nodes)
    assert report["ngspice"]["replay_max_rel_err_trap"] <= 1e-5
    assert report["vacask"]["replay_max_rel_err_euler"] <= 1e-5
    for sim in ("ngspice", "vacask"):
        # the 1e-3 target of issue 5 is not met yet (about 4e-3: the PyTorch reference runs on the coarse dataset
        # grid); this guards against gross SPICE/PyTorch mismatches only
        assert report[sim]["adaptive_nrmse"] < 5e-2
        assert 0 < report[sim]["cost"]["cost_ratio_vs_reference"] < 10
