"""Stage: fit the teacher (and, with the same data and budget, the baselines) to a dataset.

`train_teacher(dataset, preset, out_dir)` -> `TeacherRun` (weights, configs, training history, metrics, plots);
`run_baselines(dataset, preset, out_dir)` -> a table of every baseline and both gatings. Both resume after a kill.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from .artifacts import read_model, save_model, write_json
from .config import TeacherPreset, bands_for, teacher_preset
from .data import Dataset, Scales
from .metrics import evaluate, linear_fit_baseline
from .models.base import SequenceModel
from .models.baselines import FourierMLP, LinearStateSpace, LSTMBaseline, Siren, WindowMLP
from .models.teacher import Teacher, TeacherConfig
from .physics import DevicePhysics, physics_metrics, refine_grid
from .training import TrainConfig, TrainResult, make_batch, predict, train_model


def teacher_config(dataset: Dataset, preset: TeacherPreset, gating: str = "exp") -> TeacherConfig:
    """Teacher hyper-parameters from a preset and the dataset's time scales (time constants span dt_min .. 3 x the
    longest sequence)."""
    sc = dataset.scales or dataset.compute_scales()
    longest = max(float(s.t_s[-1] - s.t_s[0]) for s in dataset.sequences)
    return TeacherConfig(
        n_in=len(dataset.input_names),
        n_out=len(dataset.output_names),
        d_model=preset.d_model,
        n_heads=preset.n_heads,
        head_hidden=preset.head_hidden,
        tau_min_s=float(sc.dt_min_s),
        tau_max_s=3.0 * longest,
        dt_ref_s=float(math.sqrt(sc.dt_min_s * sc.dt_max_s)),
        gating=gating,
        physics=DevicePhysics.for_dataset(dataset.device, dataset.input_names, dataset.output_names),
        input_scale_v=tuple(float(x) for x in sc.input_scale_v),
        t_scale_s=float(sc.dt_min_s),
    )


def dataset_bands(dataset: Dataset) -> dict[str, tuple[float, float]]:
    sc = dataset.scales or dataset.compute_scales()
    longest = max(float(s.t_s[-1] - s.t_s[0]) for s in dataset.sequences)
    return bands_for(dataset.device, longest, 0.25 / float(sc.dt_min_s))


def model_report(model: SequenceModel, dataset: Dataset, result: TrainResult | None, preds: list[np.ndarray]) -> dict:
    """Metrics on the test split (clean truth and observed), bands, physics violations, params, timing."""
    test = dataset.subset("test")
    sc = dataset.scales
    physics = DevicePhysics.for_dataset(dataset.device, dataset.input_names, dataset.output_names)
    v = torch.tensor(np.concatenate([s.inputs_v for s in test]))
    i = torch.tensor(np.concatenate(preds))
    report = {
        "params": model.n_params,
        "test": evaluate(preds, test, dataset_bands(dataset)),
        "physics": physics_metrics(physics.kind, v, i, torch.tensor(sc.input_scale_v), torch.tensor(sc.output_scale_a)),
    }
    report["physics"].update(residual_metrics(model, dataset))
    if result is not None:
        report["training"] = {
            "seconds": result.train_seconds,
            "steps": result.steps,
            "best_epoch": result.best_epoch,
            "epochs_run": len(result.history),
            "stopped": result.stopped,
            "best_val_mse_normalised": result.best_val_loss,
        }
    return report


@torch.no_grad()
def residual_metrics(model: SequenceModel, dataset: Dataset) -> dict[str, float]:
    """The physics residuals of the model on the test split (normalised units), including sampling invariance:
    the same test input on a 2x finer grid, compared at the shared points, relative to the output's RMS."""
    model.eval()
    batch = make_batch(dataset.subset("test"), dataset.scales)
    out = model(batch.u, batch.dt)
    metrics = {f"{name}_residual": float(v) for name, v in model.physics_residuals(out, batch.u, batch.dt).items()}
    u_fine, dt_fine = refine_grid(batch.u, batch.dt)
    y_fine = model(u_fine, dt_fine).y[:, 1::2]
    w = batch.mask[..., None]
    rms = float(torch.sqrt((out.y**2 * w).sum() / w.sum()))
    diff = float(torch.sqrt(((y_fine - out.y) ** 2 * w).sum() / w.sum()))
    metrics["sampling_invariance_rel_rms"] = diff / rms if rms > 0 else float("nan")  # a constant-zero model: nan
    return metrics


def training_view(dataset: Dataset, max_steps: int | None) -> tuple[Dataset, int]:
    """The dataset models are trained on: a uniform grid longer than `max_steps` keeps every k-th sample (dt-aware
    models then run on the original grid unchanged; metrics are always taken on the original test grid). Multi-rate
    grids are never thinned (that would drop edges). Returns (view, stride)."""
    longest = max(len(s) for s in dataset.sequences)
    uniform = all(np.ptp(s.dt_s) <= 1e-6 * float(np.mean(s.dt_s)) for s in dataset.sequences)
    if max_steps is None or not uniform or longest <= max_steps:
        return dataset, 1
    stride = int(np.ceil(longest / max_steps))
    seqs = [
        replace(
            s,
            t_s=s.t_s[::stride],
            inputs_v=s.inputs_v[::stride],
            outputs_a=s.outputs_a[::stride],
            outputs_clean_a=None if s.outputs_clean_a is None else s.outputs_clean_a[::stride],
        )
        for s in dataset.sequences
    ]
    view = replace(dataset, sequences=seqs, scales=None)
    view.scales = replace(
        dataset.scales, dt_min_s=dataset.scales.dt_min_s * stride, dt_max_s=dataset.scales.dt_max_s * stride
    )
    return view, stride


def coarse_grid_report(model: SequenceModel, dataset: Dataset, view: Dataset, stride: int) -> dict:
    """Where training used a thinned grid, the test metrics on that grid too (models that are not dt-aware only
    know it)."""
    if stride == 1:
        return {}
    test = view.subset("test")
    return {
        "test_train_grid": evaluate(predict(model, test, dataset.scales), test, dataset_bands(dataset)),
        "train_stride": stride,
    }


@dataclass
class TeacherRun:
    model: Teacher
    config: TeacherConfig
    train_config: TrainConfig
    scales: Scales
    metrics: dict
    out_dir: Path


def train_teacher(
    dataset: Dataset,
    preset: str | TeacherPreset = "default",
    out_dir: str | Path = "teacher",
    *,
    gating: str = "exp",
    physics_weight: float | None = None,
    seed: int = 0,
    progress: bool = True,
    plots: bool = True,
    data_dir: str | None = None,
) -> TeacherRun:
    """Train the physics-informed xLSTM teacher; writes teacher.pt, teacher.json, metrics.json, history.json,
    waveforms.png and spectrum.png under out_dir (checkpoint.pt while training, for resuming)."""
    preset_obj = teacher_preset(preset, dataset.device) if isinstance(preset, str) else preset
    train_cfg = replace(preset_obj.train, seed=seed)
    if physics_weight is not None:
        train_cfg = replace(train_cfg, physics_weight=physics_weight)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    view, stride = training_view(dataset, train_cfg.max_steps_per_sequence)
    cfg = teacher_config(view, preset_obj, gating)
    torch.manual_seed(seed)
    model = Teacher(cfg)
    result = train_model(
        model,
        view.subset("train"),
        view.subset("val"),
        dataset.scales,
        train_cfg,
        checkpoint=out / "checkpoint.pt",
        progress=progress,
        desc=f"teacher ({gating})",
    )
    preds = predict(model, dataset.subset("test"), dataset.scales)
    metrics = model_report(model, dataset, result, preds)
    metrics.update(
        {
            "model": "teacher",
            "gating": gating,
            "device": dataset.device,
            "physics_weight": train_cfg.physics_weight,
            "train_stride": stride,
        }
    )
    metrics.update(coarse_grid_report(model, dataset, view, stride))
    save_teacher(model, train_cfg, dataset.scales, metrics, out, data_dir)
    write_json(out / "history.json", result.history)
    if plots:
        from .plots import plot_predictions, plot_spectrum

        test = dataset.subset("test")
        plot_predictions(test[0], {"teacher": preds[0]}, dataset, out / "waveforms.png")
        plot_spectrum(test[0], {"teacher": preds[0]}, dataset_bands(dataset), out / "spectrum.png")
    return TeacherRun(model, cfg, train_cfg, dataset.scales, metrics, out)


def save_teacher(
    model: Teacher, train_cfg: TrainConfig, scales: Scales, metrics: dict, out: Path, data_dir: str | None = None
) -> None:
    """Weights (teacher.pt), configs, scales, units and the dataset directory (teacher.json), metrics."""
    meta = {
        "config": model.cfg.to_dict(),
        "train": train_cfg.to_dict(),
        "scales": scales.to_dict(),
        "data_dir": data_dir,
    }
    save_model(out, "teacher", model, meta, metrics)


def load_teacher(out_dir: str | Path) -> tuple[Teacher, Scales, dict]:
    """The trained teacher, its dataset scales and its metrics, from a train_teacher output directory."""
    meta, state, metrics = read_model(out_dir, "teacher", "train-teacher")
    model = Teacher(TeacherConfig.from_dict(meta["config"]))
    model.load_state_dict(state)
    model.eval()
    return model, Scales.from_dict(meta["scales"]), metrics


def baseline_models(dataset: Dataset, preset: TeacherPreset) -> dict[str, SequenceModel]:
    """Every learned baseline, sized like the preset's teacher."""
    n_in, n_out, d = len(dataset.input_names), len(dataset.output_names), preset.d_model
    cfg = teacher_config(dataset, preset)
    return {
        "linear_state_space": LinearStateSpace(
            n_in, n_out, n_states=d, tau_min_s=cfg.tau_min_s, tau_max_s=cfg.tau_max_s
        ),
        "mlp_pinn": WindowMLP(n_in, n_out, hidden=2 * d, physics=cfg.physics.kind),
        "fourier_mlp": FourierMLP(n_in, n_out, hidden=2 * d),
        "siren": Siren(n_in, n_out, hidden=2 * d),
        "lstm": LSTMBaseline(n_in, n_out, hidden=d),
    }


def run_baselines(
    dataset: Dataset,
    preset: str | TeacherPreset = "default",
    out_dir: str | Path = "baselines",
    *,
    seed: int = 0,
    include_teachers: bool = True,
    progress: bool = True,
) -> dict:
    """Linear fit, linear state space, MLP PINN, Fourier MLP, SIREN, LSTM, and the teacher with exponential and with
    sigmoid gating and without physics terms: same data, same TrainConfig. Writes baselines.json (resumable: models
    already finished are read back, not retrained)."""
    preset_obj = teacher_preset(preset, dataset.device) if isinstance(preset, str) else preset
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    table_path = out / "baselines.json"
    table = json.loads(table_path.read_text()) if table_path.exists() else {}
    train_cfg = replace(preset_obj.train, seed=seed)
    view, stride = training_view(dataset, train_cfg.max_steps_per_sequence)
    train, test = view.subset("train"), dataset.subset("test")
    if "linear_fit" not in table:
        a, b = linear_fit_baseline(train)
        preds = [s.inputs_v @ a + b for s in test]
        report = {"params": int(a.size + b.size), "test": evaluate(preds, test, dataset_bands(dataset))}
        table["linear_fit"] = report
        write_json(table_path, table)
    for name, model in baseline_models(view, preset_obj).items():
        if name in table:
            continue
        torch.manual_seed(seed)
        start = time.perf_counter()
        result = train_model(
            model,
            train,
            view.subset("val"),
            dataset.scales,
            train_cfg,
            checkpoint=out / f"{name}.ckpt",
            progress=progress,
            desc=name,
        )
        preds = predict(model, test, dataset.scales)
        table[name] = model_report(model, dataset, result, preds)
        table[name].update(coarse_grid_report(model, dataset, view, stride))
        table[name]["wall_s"] = time.perf_counter() - start
        write_json(table_path, table)
    if include_teachers:
        for name, kwargs in (
            ("teacher_exp", {"gating": "exp"}),
            ("teacher_sigmoid", {"gating": "sigmoid"}),
            ("teacher_no_physics", {"gating": "exp", "physics_weight": 0.0}),
        ):
            if name in table:
                continue
            run = train_teacher(dataset, preset_obj, out / name, seed=seed, progress=progress, plots=False, **kwargs)
            table[name] = run.metrics
            write_json(table_path, table)
    return table


def summary_table(table: dict) -> str:
    """Plain-text table: model, params, MSE (A^2), NRMSE, R^2 vs clean truth, high-band error, training time."""
    lines = [f"{'model':<20} {'params':>7} {'mse_A2':>10} {'nrmse':>8} {'r2':>8} {'hf_err':>8} {'train_s':>8}"]
    for name, r in table.items():
        m = r["test"]["vs_clean"]
        hf = r["test"].get("bands", {}).get("high", {}).get("rel_error", float("nan"))
        secs = r.get("training", {}).get("seconds", 0.0)
        lines.append(
            f"{name:<20} {r['params']:>7d} {m['mse']:>10.3e} {m['nrmse']:>8.4f} {m['r2']:>8.4f} {hf:>8.4f} "
            f"{secs:>8.1f}"
        )
    return "\n".join(lines)
