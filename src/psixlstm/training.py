"""Sequence training: padded batches of whole sequences, truncated BPTT with states carried between chunks, AdamW
with warm-up + cosine schedule, gradient clipping, early stopping on validation sequences, physics terms, and
atomic checkpoints after every epoch so a killed run resumes to the same result."""

from __future__ import annotations

import io
import math
import os
import random
import time
from collections.abc import Callable
from collections.abc import Sequence as Seq
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from .data import Scales, Sequence
from .models.base import ModelOutput, SequenceModel, detach_state, select_state
from .physics import refine_grid


@dataclass
class TrainConfig:
    epochs: int = 40
    chunk_len: int = 256  # truncated-BPTT window (steps); states carry across windows
    batch_size: int = 8  # sequences per batch
    lr: float = 3e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 20
    grad_clip: float = 1.0
    patience: int = 10  # epochs without validation improvement before stopping
    seed: int = 0
    physics_weight: float = 1.0  # multiplies every residual term; 0 = the physics ablation
    residual_weights: dict[str, float] = field(
        default_factory=lambda: {"sampling": 0.1, "symmetry": 1.0, "zero_bias": 1.0, "pinch": 1.0, "passivity": 1.0}
    )
    loss_weights: dict[str, float] = field(default_factory=dict)  # extra (distillation) terms, not physics-scaled
    sampling_window: int = 32  # steps re-run on a 2x finer grid for the sampling-invariance residual
    max_minutes: float | None = None  # wall-clock budget; None = run all epochs
    max_steps_per_sequence: int | None = 4000  # uniform grids longer than this are trained on every k-th sample
    threads: int = 1

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Batch:
    u: torch.Tensor  # (B, T, n_in) V / input_scale_v
    y: torch.Tensor  # (B, T, n_out) I / output_scale_a, as observed
    dt: torch.Tensor  # (B, T) s; dt[:, 0] repeats the first step (the state starts at zero there)
    mask: torch.Tensor  # (B, T) 1 on real samples, 0 on padding
    be: torch.Tensor  # (B, T) 1 where the step into t starts at a stimulus breakpoint (SPICE: backward Euler)
    extras: dict[str, torch.Tensor] = field(default_factory=dict)  # (B, T, ...) per-sample targets (distillation)

    def select(self, index: torch.Tensor) -> Batch:
        return Batch(
            self.u[index],
            self.y[index],
            self.dt[index],
            self.mask[index],
            self.be[index],
            {k: v[index] for k, v in self.extras.items()},
        )

    def window(self, sl: slice) -> Batch:
        return Batch(
            self.u[:, sl],
            self.y[:, sl],
            self.dt[:, sl],
            self.mask[:, sl],
            self.be[:, sl],
            {k: v[:, sl] for k, v in self.extras.items()},
        )


def breakpoint_steps(seq: Sequence) -> np.ndarray:
    """(N,) 1.0 at samples t_k whose step (t_{k-1}, t_k] starts at a breakpoint of the sequence's stimuli (and at
    the first sample): the steps a SPICE simulator takes with backward Euler."""
    from .models.students import backward_euler_steps
    from .stimuli import stimulus_from_dict

    t_stop = float(seq.t_s[-1])
    bps = [stimulus_from_dict(d).breakpoints(t_stop) for d in seq.meta.get("stimuli", [])]
    flags = backward_euler_steps(seq.t_s, np.concatenate(bps) if bps else np.empty(0)).astype(float)
    flags[0] = 1.0  # the pseudo-step into t = 0 (state starts at zero)
    return flags


def make_batch(
    sequences: Seq[Sequence],
    scales: Scales,
    clean: bool = False,
    extras: Seq[dict[str, np.ndarray]] | None = None,
) -> Batch:
    """Pad sequences (at the end) into one batch in normalised units; `extras` are per-sequence (N, ...) arrays."""
    t_max = max(len(s) for s in sequences)
    b, n_in, n_out = len(sequences), sequences[0].n_inputs, sequences[0].n_outputs
    u, y = np.zeros((b, t_max, n_in)), np.zeros((b, t_max, n_out))
    dt, mask = np.ones((b, t_max)), np.zeros((b, t_max))
    for k, s in enumerate(sequences):
        n = len(s)
        steps = np.diff(s.t_s)
        u[k, :n] = s.inputs_v / scales.input_scale_v
        target = s.outputs_clean_a if clean and s.outputs_clean_a is not None else s.outputs_a
        y[k, :n] = target / scales.output_scale_a
        dt[k, 1:n] = steps
        dt[k, 0] = steps[0]
        dt[k, n:] = steps[-1]
        mask[k, :n] = 1.0
    be = np.zeros((b, t_max))
    for k, s in enumerate(sequences):
        be[k, : len(s)] = breakpoint_steps(s)
    f = torch.float32
    padded: dict[str, torch.Tensor] = {}
    for name in extras[0] if extras else []:
        arrays = [e[name] for e in extras]
        buf = np.zeros((b, t_max, *arrays[0].shape[1:]))
        for k, a in enumerate(arrays):
            buf[k, : len(a)] = a
        padded[name] = torch.tensor(buf, dtype=f)
    return Batch(
        torch.tensor(u, dtype=f),
        torch.tensor(y, dtype=f),
        torch.tensor(dt, dtype=f),
        torch.tensor(mask, dtype=f),
        torch.tensor(be, dtype=f),
        padded,
    )


def masked_mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    w = mask[..., None].expand_as(pred)
    return ((pred - target) ** 2 * w).sum() / w.sum().clamp_min(1.0)


def _step_flags(model: SequenceModel, batch: Batch) -> dict:
    """Continuous-time students integrate like SPICE and need the backward-Euler step flags."""
    return {"backward_euler": batch.be} if getattr(model, "integrates_like_spice", False) else {}


def sampling_residual(model: SequenceModel, out: ModelOutput, u, dt, state, window: int) -> torch.Tensor:
    """The same input on a 2x finer grid must give the same output at the shared points (the device is an ODE)."""
    w = min(window, u.shape[1])
    u_fine, dt_fine = refine_grid(u[:, :w], dt[:, :w])
    y_fine = model(u_fine, dt_fine, state).y[:, 1::2]
    return ((y_fine - out.y[:, :w]) ** 2).mean()


@torch.no_grad()
def predict(model: SequenceModel, sequences: Seq[Sequence], scales: Scales, chunk_len: int = 4096) -> list[np.ndarray]:
    """Model currents (A) for whole sequences, run in chunks with carried state."""
    model.eval()
    batch = make_batch(sequences, scales)
    state, ys = None, []
    for s in range(0, batch.u.shape[1], chunk_len):
        chunk = batch.window(slice(s, s + chunk_len))
        out = model(chunk.u, chunk.dt, state, **_step_flags(model, chunk))
        state = out.state
        ys.append(out.y)
    y = torch.cat(ys, 1).double().numpy() * scales.output_scale_a
    return [y[k, : len(seq)] for k, seq in enumerate(sequences)]


@torch.no_grad()
def validation_loss(model: SequenceModel, batch: Batch, chunk_len: int = 4096) -> float:
    model.eval()
    state, total, count = None, 0.0, 0.0
    for s in range(0, batch.u.shape[1], chunk_len):
        chunk = batch.window(slice(s, s + chunk_len))
        out = model(chunk.u, chunk.dt, state, **_step_flags(model, chunk))
        state = out.state
        w = chunk.mask[..., None].expand_as(out.y)
        total += float(((out.y - chunk.y) ** 2 * w).sum())
        count += float(w.sum())
    return total / max(count, 1.0)


@dataclass
class TrainResult:
    history: list[dict]
    best_epoch: int
    best_val_loss: float
    train_seconds: float
    steps: int
    stopped: str  # "epochs", "early_stopping", "time_budget", or "paused" (`pause_at_epoch` / `pause_after_s`)


def _atomic_torch_save(obj, path: Path) -> None:
    buf = io.BytesIO()
    torch.save(obj, buf)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        fh.write(buf.getvalue())
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def train_model(
    model: SequenceModel,
    train: Seq[Sequence],
    val: Seq[Sequence],
    scales: Scales,
    cfg: TrainConfig,
    checkpoint: str | Path | None = None,
    progress: bool = True,
    desc: str = "train",
    extras: Seq[dict[str, np.ndarray]] | None = None,
    extra_loss: Callable[[ModelOutput, Batch], dict[str, torch.Tensor]] | None = None,
    params: Seq[torch.nn.Parameter] | None = None,
    ema_decay: float | None = None,
    pause_at_epoch: int | None = None,
    pause_after_s: float | None = None,
) -> TrainResult:
    """Train `model` in place (ending with the best validation weights) and return its history.

    Distillation passes `extras` (per-sequence targets of the train sequences) and `extra_loss(out, chunk)`, whose terms
    are weighted by `cfg.loss_weights`; `params` (default: the model's) lets it train auxiliary maps as well.

    With `checkpoint`, the full training state is written atomically after every epoch and an existing checkpoint
    is resumed from; a resumed run ends with the same weights as an uninterrupted one. `pause_at_epoch` pauses the run
    after that many epochs, `pause_after_s` after the epoch that passes that many seconds of training (the checkpoint
    then continues it, on the schedule planned for the whole run); a run stopped by its time budget continues when
    resumed with a larger one.
    """
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    train_batches_per_epoch = math.ceil(len(train) / cfg.batch_size)
    t_max = max(len(s) for s in train)
    steps_per_epoch = train_batches_per_epoch * math.ceil(t_max / cfg.chunk_len)
    opt = torch.optim.AdamW(
        list(params) if params is not None else model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay
    )

    def lr_factor(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        total_steps = max(1, state["planned_epochs"] * state.get("steps_per_epoch", steps_per_epoch))
        progress_frac = (step - cfg.warmup_steps) / max(1, total_steps - cfg.warmup_steps)
        return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress_frac)))

    val_batch = make_batch(val, scales)
    ckpt_path = Path(checkpoint) if checkpoint is not None else None
    state = {
        "epoch": 0,
        "planned_epochs": cfg.epochs,  # with a time budget: re-planned after every epoch
        "history": [],
        "best_val": math.inf,
        "best_epoch": -1,
        "best_weights": None,
        "bad_epochs": 0,
        "seconds": 0.0,
        "steps": 0,
        "stopped": "epochs",
    }
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor)
    ema = None
    if ema_decay is not None:
        ema = torch.optim.swa_utils.AveragedModel(
            model, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(ema_decay)
        )
    evaluated = model if ema is None else ema.module  # the weights validated and kept
    if ckpt_path is not None and ckpt_path.exists():
        saved = torch.load(ckpt_path, weights_only=False)
        model.load_state_dict(saved["model"])
        opt.load_state_dict(saved["optimizer"])
        if ema is not None:
            ema.load_state_dict(saved["ema"])
        sched.load_state_dict(saved["scheduler"])
        if isinstance(extra_loss, torch.nn.Module) and saved.get("extra_loss") is not None:
            extra_loss.load_state_dict(saved["extra_loss"])
        torch.set_rng_state(saved["torch_rng"])
        state = saved["train_state"]
        state.setdefault("planned_epochs", cfg.epochs)
        if state["stopped"] == "time_budget" and not _over_budget(state, cfg):  # resumed with a larger budget
            state["stopped"] = "epochs"
        if state["stopped"] == "epochs":  # the budget or the epochs may differ from the checkpointed run's
            state["planned_epochs"] = _planned_epochs(state, cfg)
    weights = {k: cfg.physics_weight * v for k, v in cfg.residual_weights.items()}
    start_wall = time.perf_counter() - state["seconds"]
    bar = tqdm(total=state["planned_epochs"], initial=state["epoch"], desc=desc, disable=not progress, unit="epoch")
    pause_epoch = math.inf if pause_at_epoch is None else pause_at_epoch
    pause_s = math.inf if pause_after_s is None else pause_after_s
    while (
        state["epoch"] < min(state["planned_epochs"], pause_epoch)
        and state["seconds"] < pause_s
        and state["stopped"] == "epochs"
    ):
        epoch = state["epoch"]
        model.train()
        order = np.random.default_rng([cfg.seed, epoch]).permutation(len(train))
        sums: dict[str, float] = {}
        n_chunks = skipped = 0
        for b0 in range(0, len(order), cfg.batch_size):
            idx = order[b0 : b0 + cfg.batch_size]
            batch = make_batch(
                [train[i] for i in idx], scales, extras=[extras[i] for i in idx] if extras is not None else None
            )
            carried, ahead = None, batch  # ahead: the batch from the current chunk on
            for _ in range(0, batch.u.shape[1], cfg.chunk_len):
                live = torch.nonzero(ahead.mask[:, 0] > 0).flatten()  # sequences still running in this chunk
                if live.numel() < ahead.mask.shape[0]:
                    ahead, carried = ahead.select(live), select_state(carried, live)
                chunk, ahead = ahead.window(slice(0, cfg.chunk_len)), ahead.window(slice(cfg.chunk_len, None))
                out = model(chunk.u, chunk.dt, carried, **_step_flags(model, chunk))
                terms = {"mse": masked_mse(out.y, chunk.y, chunk.mask)}
                if weights.get("sampling", 0) > 0:
                    terms["sampling"] = sampling_residual(model, out, chunk.u, chunk.dt, carried, cfg.sampling_window)
                for name, value in model.physics_residuals(out, chunk.u, chunk.dt).items():
                    if weights.get(name, 0) > 0:
                        terms[name] = value
                if extra_loss is not None:
                    terms.update(extra_loss(out, chunk))
                all_weights = {**weights, **cfg.loss_weights}
                # terms at weight 0 are logged, not differentiated (0 x an overflowing term would be NaN)
                loss = terms["mse"] * all_weights.get("data", 1.0) + sum(
                    all_weights[k] * v for k, v in terms.items() if k != "mse" and all_weights.get(k, 0.0) != 0.0
                )
                opt.zero_grad(set_to_none=True)
                loss.backward()
                norm = torch.nn.utils.clip_grad_norm_([p for g in opt.param_groups for p in g["params"]], cfg.grad_clip)
                if torch.isfinite(norm):
                    opt.step()
                    if ema is not None:
                        ema.update_parameters(model)
                else:  # one overflowing chunk must not turn every weight into NaN: skip it and count it
                    skipped += 1
                sched.step()
                state["steps"] += 1
                carried = detach_state(out.state)
                for k, v in terms.items():
                    sums[k] = sums.get(k, 0.0) + float(v.detach())
                n_chunks += 1
        val = validation_loss(evaluated, val_batch)
        record = {"epoch": epoch, "val_mse": val, "lr": sched.get_last_lr()[0], "skipped_steps": skipped}
        record.update({f"train_{k}": v / max(n_chunks, 1) for k, v in sums.items()})
        state["history"].append(record)
        if val < state["best_val"]:
            state.update(
                best_val=val,
                best_epoch=epoch,
                bad_epochs=0,
                best_weights={k: v.detach().clone() for k, v in evaluated.state_dict().items()},
            )
        else:
            state["bad_epochs"] += 1
        state["epoch"] = epoch + 1
        state["seconds"] = time.perf_counter() - start_wall
        if epoch == 0:
            state["steps_per_epoch"] = state["steps"]  # measured: padding ends some sequences early
        if cfg.max_minutes is not None:
            state["planned_epochs"] = _planned_epochs(state, cfg)
            bar.total = state["planned_epochs"]
        if state["bad_epochs"] >= cfg.patience:
            state["stopped"] = "early_stopping"
        elif _over_budget(state, cfg):
            state["stopped"] = "time_budget"
        bar.set_postfix({k: f"{v:.3g}" for k, v in record.items() if k not in ("epoch", "lr")})
        bar.update(1)
        if ckpt_path is not None:
            _atomic_torch_save(
                {
                    "model": model.state_dict(),
                    "optimizer": opt.state_dict(),
                    "scheduler": sched.state_dict(),
                    "ema": None if ema is None else ema.state_dict(),
                    "extra_loss": extra_loss.state_dict() if isinstance(extra_loss, torch.nn.Module) else None,
                    "torch_rng": torch.get_rng_state(),
                    "train_state": state,
                    "config": cfg.to_dict(),
                },
                ckpt_path,
            )
    bar.close()
    if state["best_weights"] is not None:
        model.load_state_dict(state["best_weights"])
    paused = state["stopped"] == "epochs" and state["epoch"] < state["planned_epochs"]
    return TrainResult(
        history=state["history"],
        best_epoch=state["best_epoch"],
        best_val_loss=state["best_val"],
        train_seconds=state["seconds"],
        steps=state["steps"],
        stopped="paused" if paused else state["stopped"],
    )


def _planned_epochs(state: dict, cfg: TrainConfig) -> int:
    """The epochs to anneal the learning rate over: those that fit the time budget (not epochs that will never run),
    planned from the mean epoch time so far, so a slow first epoch (a busy machine) is not decisive."""
    if cfg.max_minutes is None or state["epoch"] == 0:
        return cfg.epochs
    fit = int(0.95 * 60 * cfg.max_minutes / max(state["seconds"] / state["epoch"], 1e-9))
    return max(state["epoch"], min(cfg.epochs, fit))


def _over_budget(state: dict, cfg: TrainConfig) -> bool:
    return cfg.max_minutes is not None and state["seconds"] > 60 * cfg.max_minutes
