"""Accuracy numbers a reviewer asks for: MSE (A^2), NRMSE, R^2, max error, and spectral errors per frequency band,
plus the closed-form linear baseline I = a V + b. Everything in physical units over whole sequences."""

from __future__ import annotations

from collections.abc import Sequence as Seq

import numpy as np

from .data import Sequence


def regression_metrics(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """MSE (A^2), RMSE (A), NRMSE (RMSE / std of truth), R^2, max |error| (A), over all samples and channels."""
    err = pred - truth
    mse = float(np.mean(err**2))
    var = float(np.var(truth))
    return {
        "mse": mse,
        "rmse": float(np.sqrt(mse)),
        "nrmse": float(np.sqrt(mse / var)) if var > 0 else float("inf"),
        "r2": 1.0 - mse / var if var > 0 else float("nan"),
        "max_abs_error": float(np.max(np.abs(err))),
    }


def band_errors(
    t_s: np.ndarray, pred: np.ndarray, truth: np.ndarray, bands_hz: dict[str, tuple[float, float]], n_max: int = 2**18
) -> dict[str, dict[str, float]]:
    """Spectral error per band: signals are resampled linearly onto a uniform grid (the finest step of the sequence,
    capped at n_max points), Fourier-transformed, and compared inside each band [f_lo, f_hi] (Hz):
    rel_error = ||Y_pred - Y_true|| / ||Y_true|| (magnitude and phase together), magnitude error
    | ||Y_pred|| - ||Y_true|| | / ||Y_true||, and the energy-weighted mean phase error (rad)."""
    dt = max(float(np.min(np.diff(t_s))), (t_s[-1] - t_s[0]) / n_max)
    t_u = np.arange(t_s[0], t_s[-1], dt)
    freqs = np.fft.rfftfreq(t_u.size, dt)
    out: dict[str, dict[str, float]] = {}
    pred_f = np.fft.rfft(np.interp(t_u, t_s, pred) - np.mean(pred))
    true_f = np.fft.rfft(np.interp(t_u, t_s, truth) - np.mean(truth))
    for name, (lo, hi) in bands_hz.items():
        sel = (freqs >= lo) & (freqs <= hi)
        energy = float(np.linalg.norm(true_f[sel]))
        if not sel.any() or energy == 0:
            out[name] = {
                "f_lo_hz": lo,
                "f_hi_hz": hi,
                "rel_error": float("nan"),
                "magnitude_error": float("nan"),
                "phase_error_rad": float("nan"),
            }
            continue
        w = np.abs(true_f[sel]) ** 2
        phase = np.angle(pred_f[sel] * np.conj(true_f[sel]))
        out[name] = {
            "f_lo_hz": lo,
            "f_hi_hz": hi,
            "rel_error": float(np.linalg.norm(pred_f[sel] - true_f[sel]) / energy),
            "magnitude_error": float(abs(np.linalg.norm(pred_f[sel]) - energy) / energy),
            "phase_error_rad": float(np.sum(w * np.abs(phase)) / np.sum(w)),
        }
    return out


def evaluate(
    preds: Seq[np.ndarray], sequences: Seq[Sequence], bands_hz: dict[str, tuple[float, float]] | None = None
) -> dict:
    """Metrics against the clean ground truth (where known) and against the observed (noisy) targets; band errors
    averaged over sequences (first output channel)."""
    pred = np.concatenate(preds)
    clean = [s.outputs_clean_a if s.outputs_clean_a is not None else s.outputs_a for s in sequences]
    result = {
        "vs_clean": regression_metrics(pred, np.concatenate(clean)),
        "vs_observed": regression_metrics(pred, np.concatenate([s.outputs_a for s in sequences])),
    }
    if bands_hz:
        per_seq = [
            band_errors(s.t_s, p[:, 0], c[:, 0], bands_hz) for s, p, c in zip(sequences, preds, clean, strict=True)
        ]
        result["bands"] = {
            name: {key: _nanmean([b[name][key] for b in per_seq]) for key in per_seq[0][name]} for name in bands_hz
        }
    return result


def _nanmean(values: list[float]) -> float:
    """Mean over the finite values; nan when a band is outside every sequence's resolvable range."""
    finite = [v for v in values if np.isfinite(v)]
    return float(np.mean(finite)) if finite else float("nan")


def linear_fit_baseline(train: Seq[Sequence]) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares I = V @ a + b per output channel on the training sequences: (a (n_in, n_out), b (n_out,))."""
    v = np.concatenate([s.inputs_v for s in train])
    i = np.concatenate([s.outputs_a for s in train])
    design = np.hstack([v, np.ones((v.shape[0], 1))])
    coef, *_ = np.linalg.lstsq(design, i, rcond=None)
    return coef[:-1], coef[-1]


def latency_us_per_step(model, n_in: int, batch: int, steps: int = 256, repeats: int = 3, seed: int = 0) -> float:
    """Best-of-`repeats` wall time per time step (us) of a forward pass over `steps` steps at `batch` sequences,
    one thread, no gradients. Compare models only within one run (machines are noisy): report ratios."""
    import time

    import torch

    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(seed)
    u = torch.rand(batch, steps, n_in, generator=gen) * 2 - 1
    dt = torch.full((batch, steps), 1e-6)
    model.eval()
    best = float("inf")
    with torch.no_grad():
        model(u[:, :8], dt[:, :8])  # warm-up
        for _ in range(repeats):
            start = time.perf_counter()
            model(u, dt)
            best = min(best, time.perf_counter() - start)
    return 1e6 * best / steps
