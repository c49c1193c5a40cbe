"""Teacher and baseline stages on a tiny memristor dataset: artifacts, metrics, reload, structural physics."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from psixlstm.config import TeacherPreset
from psixlstm.data.generate import DataPreset, make_dataset
from psixlstm.fitting import load_teacher, run_baselines, summary_table, train_teacher
from psixlstm.training import TrainConfig, predict

TINY_TEACHER = TeacherPreset(8, 2, 8, TrainConfig(epochs=2, chunk_len=128, batch_size=4, lr=5e-3))


@pytest.fixture(scope="module")
def tiny():
    return make_dataset(
        "memristor", DataPreset(6, 4e-3, 0.5e-6, 50e-6, noise_rel=0.01), seed=2, progress=False, workers=1
    )


def test_train_teacher_writes_artifacts_and_reloads(tiny, tmp_path):
    run = train_teacher(tiny, TINY_TEACHER, tmp_path, progress=False)
    for name in ("teacher.pt", "teacher.json", "metrics.json", "history.json", "waveforms.png", "spectrum.png"):
        assert (tmp_path / name).exists(), name
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    for key in ("mse", "nrmse", "r2", "max_abs_error"):
        assert np.isfinite(metrics["test"]["vs_clean"][key])
    assert set(metrics["test"]["bands"]) == {"low", "high"}
    assert metrics["test"]["bands"]["high"]["f_lo_hz"] == 50e3
    # pinched and passive by construction: no violation at all on test data
    assert metrics["physics"]["passivity_violation_rate"] == 0.0
    assert metrics["physics"]["pinch_rel_to_scale"] < 1e-4  # |V| < 1e-3 v_scale: |I| << i_scale
    model, scales, _ = load_teacher(tmp_path)
    a = predict(run.model, tiny.subset("test"), tiny.scales)
    b = predict(model, tiny.subset("test"), scales)
    np.testing.assert_allclose(a[0], b[0], rtol=0, atol=0)


def test_teacher_time_constants_are_seconds(tiny, tmp_path):
    run = train_teacher(tiny, TINY_TEACHER, tmp_path, progress=False, plots=False)
    from psixlstm.training import make_batch

    b = make_batch(tiny.subset("test"), tiny.scales)
    with torch.no_grad():
        taus = run.model.time_constants_s(run.model(b.u, b.dt))
    assert taus["slstm"].shape[-1] == 8 and taus["mlstm"].shape[-1] == 2
    assert 1e-8 < float(taus["slstm"].median()) < 1.0  # seconds, not unitless numbers near 1


@pytest.mark.parametrize(("device", "residual"), [("mosfet", "symmetry_residual"), ("bjt", "zero_bias_residual")])
def test_three_terminal_teachers_train_with_their_physics(device, residual, tmp_path):
    """MOSFET and BJT teachers train end to end (KCL and charge readout, physics residuals through the backward
    pass) and report their residual metrics."""
    ds = make_dataset(device, DataPreset(4, 0.5e-6, 0.5e-9, 50e-9), seed=1, progress=False, workers=1)
    run = train_teacher(ds, TINY_TEACHER, tmp_path, progress=False, plots=False)
    assert np.isfinite(run.metrics["test"]["vs_clean"]["nrmse"])
    assert np.isfinite(run.metrics["physics"][residual])
    assert all(np.isfinite(h["train_mse"]) for h in json.loads((tmp_path / "history.json").read_text()))


def test_load_teacher_names_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="train-teacher"):
        load_teacher(tmp_path)


def test_baselines_table_has_every_model_and_resumes(tiny, tmp_path):
    table = run_baselines(tiny, TINY_TEACHER, tmp_path, progress=False)
    expected = {
        "linear_fit",
        "linear_state_space",
        "mlp_pinn",
        "fourier_mlp",
        "siren",
        "lstm",
        "teacher_exp",
        "teacher_sigmoid",
        "teacher_no_physics",
    }
    assert set(table) == expected
    assert table["teacher_no_physics"]["physics_weight"] == 0.0
    assert table["teacher_sigmoid"]["gating"] == "sigmoid"
    assert table["linear_fit"]["params"] == 2
    text = summary_table(table)
    assert all(name in text for name in expected)
    before = (tmp_path / "baselines.json").stat().st_mtime_ns
    run_baselines(tiny, TINY_TEACHER, tmp_path, progress=False)  # everything done: nothing retrained
    assert (tmp_path / "baselines.json").stat().st_mtime_ns == before
