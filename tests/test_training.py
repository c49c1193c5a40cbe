"""Training loop: batching, truncated BPTT, resume after a kill gives the same weights, the teacher has memory."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from psixlstm.config import TeacherPreset
from psixlstm.data import Dataset
from psixlstm.data.generate import DataPreset, make_dataset
from psixlstm.fitting import teacher_config
from psixlstm.models.teacher import Teacher
from psixlstm.training import TrainConfig, make_batch, predict, train_model, validation_loss

TINY = DataPreset(6, 4e-3, 0.5e-6, 50e-6, noise_rel=0.01)
TINY_TEACHER = TeacherPreset(8, 2, 8, TrainConfig(epochs=3, chunk_len=64, batch_size=3, lr=5e-3))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[Dataset, Path]:
    ds = make_dataset("memristor", TINY, seed=1, progress=False, workers=1)
    path = tmp_path_factory.mktemp("data")
    ds.save(path)
    return ds, path


def test_batch_pads_at_the_end_with_mask(tiny):
    ds, _ = tiny
    seqs = ds.sequences[:3]
    b = make_batch(seqs, ds.scales)
    lengths = [len(s) for s in seqs]
    assert b.u.shape == (3, max(lengths), 1)
    assert b.mask.sum(1).tolist() == lengths
    k = int(np.argmin(lengths))
    np.testing.assert_allclose(b.dt[k, 1 : lengths[k]].numpy(), np.diff(seqs[k].t_s), rtol=1e-6)
    np.testing.assert_allclose(
        b.u[k, : lengths[k], 0].numpy(), seqs[k].inputs_v[:, 0] / ds.scales.input_scale_v[0], rtol=1e-6
    )


def test_chunked_prediction_equals_one_pass(tiny):
    ds, _ = tiny
    torch.manual_seed(0)
    model = Teacher(teacher_config(ds, TINY_TEACHER))
    full = predict(model, ds.sequences[:2], ds.scales, chunk_len=100_000)
    chunked = predict(model, ds.sequences[:2], ds.scales, chunk_len=37)
    for a, b in zip(full, chunked, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-9 * np.abs(a).max())


def test_teacher_output_depends_on_history(tiny):
    """Shuffling the time order of the input changes the output at the same (permuted) steps."""
    ds, _ = tiny
    torch.manual_seed(0)
    model = Teacher(teacher_config(ds, TINY_TEACHER)).eval()
    b = make_batch(ds.sequences[:1], ds.scales)
    perm = torch.randperm(b.u.shape[1])
    with torch.no_grad():
        y = model(b.u, b.dt).y[0, perm]
        y_shuffled = model(b.u[:, perm], b.dt[:, perm]).y[0]
    assert (y - y_shuffled).abs().max() > 1e-3 * y.abs().max()


def test_training_reduces_validation_loss(tiny):
    ds, _ = tiny
    torch.manual_seed(0)
    model = Teacher(teacher_config(ds, TINY_TEACHER))
    cfg = TrainConfig(epochs=4, chunk_len=64, batch_size=4, lr=1e-2, patience=100)
    result = train_model(model, ds.subset("train"), ds.subset("val"), ds.scales, cfg, progress=False)
    losses = [h["val_mse"] for h in result.history]
    assert min(losses[1:]) < losses[0]
    assert {"train_mse", "train_sampling"} <= set(result.history[0])  # every loss term is logged
    assert result.steps == 4 * int(np.ceil(max(len(s) for s in ds.subset("train")) / 64))


_RESUME_SCRIPT = """
import sys, torch
from psixlstm.data import Dataset
from psixlstm.config import TeacherPreset
from psixlstm.fitting import teacher_config
from psixlstm.models.teacher import Teacher
from psixlstm.training import TrainConfig, train_model
ds = Dataset.load(sys.argv[1])
cfg = TrainConfig(epochs=int(sys.argv[3]), chunk_len=64, batch_size=2, lr=5e-3, patience=100)
ema_decay = float(sys.argv[4]) if sys.argv[4] != "none" else None
torch.manual_seed(0)
model = Teacher(teacher_config(ds, TeacherPreset(8, 2, 8)))
train_model(
    model, ds.subset("train"), ds.subset("val"), ds.scales, cfg, checkpoint=sys.argv[2], progress=False,
    ema_decay=ema_decay,
)
torch.save(model.state_dict(), sys.argv[2] + ".final")
"""


@pytest.mark.parametrize("ema_decay", ["none", "0.9"])
def test_killed_training_resumes_to_the_same_weights(tiny, tmp_path, ema_decay):
    _, data = tiny
    script = tmp_path / "train.py"
    script.write_text(_RESUME_SCRIPT)
    epochs = "4"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    straight = tmp_path / "straight.ckpt"
    subprocess.run([sys.executable, str(script), str(data), str(straight), epochs, ema_decay], check=True, env=env)
    killed = tmp_path / "killed.ckpt"
    proc = subprocess.Popen([sys.executable, str(script), str(data), str(killed), epochs, ema_decay], env=env)
    deadline = time.time() + 120
    while time.time() < deadline:  # wait for the first epoch's checkpoint, then kill -9
        if killed.exists():
            epoch = torch.load(killed, weights_only=False)["train_state"]["epoch"]
            if 1 <= epoch < int(epochs):
                break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not Path(str(killed) + ".final").exists(), "the run finished before it could be killed"
    subprocess.run([sys.executable, str(script), str(data), str(killed), epochs, ema_decay], check=True, env=env)
    a = torch.load(str(straight) + ".final", weights_only=True)
    b = torch.load(str(killed) + ".final", weights_only=True)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)


class _PullTowards(torch.nn.Module):
    """An extra loss with a trained parameter of its own (as RRAD's projection): the mean output pulls it along."""

    def __init__(self):
        super().__init__()
        self.target = torch.nn.Parameter(torch.zeros(()))

    def forward(self, out, chunk) -> dict[str, torch.Tensor]:
        return {"pull": (out.y.mean() - self.target) ** 2 + (self.target - 1.0) ** 2}


def _train_tiny(ds, path, epochs=3, pause_at_epoch=None, max_minutes=None):
    torch.manual_seed(0)
    model, pull = Teacher(teacher_config(ds, TINY_TEACHER)), _PullTowards()
    cfg = TrainConfig(
        epochs=epochs,
        chunk_len=64,
        batch_size=3,
        lr=5e-3,
        patience=100,
        loss_weights={"pull": 1.0},
        max_minutes=max_minutes,
    )
    result = train_model(
        model,
        ds.subset("train"),
        ds.subset("val"),
        ds.scales,
        cfg,
        checkpoint=path,
        progress=False,
        extra_loss=pull,
        params=[*model.parameters(), *pull.parameters()],
        pause_at_epoch=pause_at_epoch,
    )
    return model, pull, result


def test_paused_training_continues_to_the_same_weights(tiny, tmp_path):
    """pause_at_epoch pauses a run; resuming its checkpoint ends where an uninterrupted run does, the extra loss's own
    parameters included (they are checkpointed with the model)."""
    ds, _ = tiny
    straight, straight_pull, _ = _train_tiny(ds, tmp_path / "straight.pt")
    _, _, paused = _train_tiny(ds, tmp_path / "paused.pt", pause_at_epoch=1)
    assert paused.stopped == "paused" and len(paused.history) == 1
    model, pull, result = _train_tiny(ds, tmp_path / "paused.pt")
    assert result.stopped == "epochs" and len(result.history) == 3
    assert float(pull.target) == float(straight_pull.target) != 0.0
    for k, v in straight.state_dict().items():
        torch.testing.assert_close(model.state_dict()[k], v, rtol=0, atol=0)


def test_run_stopped_by_its_time_budget_continues_with_a_larger_one(tiny, tmp_path):
    ds, _ = tiny
    _, _, short = _train_tiny(ds, tmp_path / "run.pt", max_minutes=1e-9)
    assert short.stopped == "time_budget" and len(short.history) == 1
    _, _, again = _train_tiny(ds, tmp_path / "run.pt", max_minutes=1e-9)  # the same budget: nothing more to do
    assert again.stopped == "time_budget" and len(again.history) == 1
    _, _, longer = _train_tiny(ds, tmp_path / "run.pt", max_minutes=60.0)
    assert longer.stopped == "epochs" and len(longer.history) == 3


def test_moving_average_weights_are_the_ones_validated_and_kept(tiny):
    """With ema_decay, validation and the kept result are the averaged weights, not the last ones."""
    ds, _ = tiny
    cfg = TrainConfig(epochs=2, chunk_len=64, batch_size=3, lr=5e-3, patience=100)
    histories = {}
    for decay in (None, 0.9):
        torch.manual_seed(0)
        model = Teacher(teacher_config(ds, TINY_TEACHER))
        result = train_model(
            model, ds.subset("train"), ds.subset("val"), ds.scales, cfg, progress=False, ema_decay=decay
        )
        kept_val = validation_loss(model, make_batch(ds.subset("val"), ds.scales))
        assert kept_val == pytest.approx(result.best_val_loss, rel=1e-6)
        histories[decay] = [r["val_mse"] for r in result.history]
    assert histories[None] != histories[0.9]


def test_history_is_json_serialisable(tiny, tmp_path):
    ds, _ = tiny
    torch.manual_seed(0)
    model = Teacher(teacher_config(ds, TINY_TEACHER))
    result = train_model(
        model, ds.subset("train"), ds.subset("val"), ds.scales, TrainConfig(epochs=1, chunk_len=64), progress=False
    )
    json.dumps(result.history)
