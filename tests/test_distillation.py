"""RRAD distillation: every term is computed and logged, students are compressed, artifacts reload, ablation runs."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from psixlstm.config import TeacherPreset
from psixlstm.data.generate import DataPreset, make_dataset
from psixlstm.discovery import discover
from psixlstm.distillation import DistillPreset, RRADLoss, ablation, distill, load_student
from psixlstm.fitting import train_teacher
from psixlstm.models.base import ModelOutput
from psixlstm.training import Batch, TrainConfig, predict

TINY = DistillPreset(2, 4, 2, TrainConfig(epochs=1, chunk_len=64, batch_size=4, lr=1e-2))


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    ds = make_dataset("memristor", DataPreset(5, 4e-3, 0.5e-6, 50e-6), seed=0, progress=False, workers=1)
    out = tmp_path_factory.mktemp("t")
    run = train_teacher(
        ds, TeacherPreset(16, 2, 16, TrainConfig(epochs=1, chunk_len=128)), out, progress=False, plots=False
    )
    return ds, run.model, discover(run.model, ds, k=3)


def test_rrad_terms_are_finite_and_vanish_for_a_perfect_student():
    torch.manual_seed(0)
    loss = RRADLoss(n_student=4, n_teacher=6, window=8, hidden_diff_ms=1.0, output_diff_ms=1.0)
    b, t = 2, 32
    x = torch.randn(b, t, 4)
    with torch.no_grad():
        h_teacher = loss.proj(x)
    y = torch.randn(b, t, 1)
    chunk = Batch(
        torch.zeros(b, t, 1),
        y,
        torch.ones(b, t),
        torch.ones(b, t),
        torch.zeros(b, t),
        {"y_teacher": y, "h_teacher": h_teacher},
    )
    perfect = loss(ModelOutput(y=y, state=None, hidden=x), chunk)
    assert set(perfect) == {"output", "hidden", "derivative", "hidden_derivative", "relation"}
    for name in ("output", "hidden", "derivative", "hidden_derivative"):
        assert float(perfect[name].detach()) < 1e-10, name
    wrong = loss(ModelOutput(y=y + torch.randn(b, t, 1), state=None, hidden=torch.randn(b, t, 4)), chunk)
    for name, value in wrong.items():
        assert torch.isfinite(value) and float(value.detach()) > 1e-3, name


def test_derivative_term_keeps_its_scale_on_a_quiet_chunk():
    """Inside a DC hold the teacher does not move: the term must weigh the student's small wiggles by at least a
    fraction of the whole split's typical difference, not by that chunk's (0: the term came out near 1e6 here)."""
    torch.manual_seed(0)
    loss = RRADLoss(n_student=4, n_teacher=6, window=8, hidden_diff_ms=0.01, output_diff_ms=0.01)
    b, t = 2, 32
    y_t, h_t = torch.full((b, t, 1), 0.3), torch.full((b, t, 6), -0.2)  # a hold: constant teacher
    chunk = Batch(torch.zeros(b, t, 1), y_t, torch.ones(b, t), torch.ones(b, t), torch.zeros(b, t))
    chunk.extras = {"y_teacher": y_t, "h_teacher": h_t}
    wiggle = ModelOutput(y=y_t + 1e-3 * torch.randn(b, t, 1), state=None, hidden=1e-3 * torch.randn(b, t, 4))
    terms = loss(wiggle, chunk)
    assert float(terms["derivative"].detach()) < 1.0 and float(terms["hidden_derivative"].detach()) < 1.0


@pytest.mark.parametrize("kind", ["clustered", "lowrank"])
def test_distill_writes_a_compressed_student(setup, tmp_path, kind):
    ds, teacher, disc = setup
    run = distill(teacher, ds, disc, kind, TINY, tmp_path, progress=False)
    m = run.metrics
    assert m["compression"] >= 0.84 and m["params"] == run.model.n_params and m["states"] == run.model.n_states
    history = m["training"]["history"][0]
    for term in ("mse", "output", "hidden", "derivative", "hidden_derivative", "relation"):
        assert np.isfinite(history[f"train_{term}"]), term
    assert np.isfinite(m["test_vs_teacher"]["nrmse"]) and np.isfinite(m["test"]["vs_clean"]["r2"])
    student, scales, _ = load_student(tmp_path)
    a = predict(run.model, ds.subset("test"), ds.scales)[0]
    np.testing.assert_allclose(predict(student, ds.subset("test"), scales)[0], a, rtol=1e-6, atol=1e-12)
    if kind == "clustered":
        assert len(m["cluster_tau_s"]) == 3 and len(m["tau_match"]) == 3


def test_candidates_continue_the_one_with_the_lowest_validation_loss(setup, tmp_path):
    """Multi-start: each candidate trains `selection_epochs`, the best by validation loss at the last of them
    continues, and ends with the weights a single run from its seed would have."""
    ds, teacher, disc = setup
    train = replace(TINY.train, epochs=2, patience=100)
    run = distill(
        teacher,
        ds,
        disc,
        "lowrank",
        replace(TINY, train=train, candidates={"lowrank": 2}, selection_epochs=1),
        tmp_path / "multi",
        progress=False,
        seed=3,
    )
    t = run.metrics["training"]
    assert [c["seed"] for c in t["candidates"]] == [3, 1003]
    vals = [c["val_mse"] for c in t["candidates"]]  # at the end of the selection
    assert vals[0] != vals[1] and t["chosen_seed"] == t["candidates"][int(np.argmin(vals))]["seed"]
    assert t["epochs_run"] == 2  # the chosen candidate went on past the selection
    single = distill(
        teacher,
        ds,
        disc,
        "lowrank",
        replace(TINY, train=train),
        tmp_path / "single",
        progress=False,
        seed=t["chosen_seed"],
    )
    for k, v in single.model.state_dict().items():
        torch.testing.assert_close(run.model.state_dict()[k], v, rtol=0, atol=0)


def test_ablation_table_has_every_variant(setup, tmp_path):
    ds, teacher, disc = setup
    table = ablation(teacher, ds, disc, "clustered", TINY, tmp_path, progress=False)
    assert set(table) == {
        "full",
        "without_output",
        "with_hidden",  # off in the presets: the ablation switches it on
        "without_derivative",
        "with_hidden_derivative",
        "without_relation",
        "output_only",
    }
    assert table["output_only"]["weights"]["data"] == 0.0
    assert table["with_hidden"]["weights"]["hidden"] == 0.3 and table["full"]["weights"]["hidden"] == 0.0


def test_rrad_weights_apply_the_device_overrides():
    from psixlstm.distillation import DISTILL_PRESETS, rrad_weights

    p = DISTILL_PRESETS["default"]
    assert rrad_weights(p, "memristor") == p.weights
    assert rrad_weights(p, "bjt")["derivative"] == 0.0 and p.weights["derivative"] > 0
