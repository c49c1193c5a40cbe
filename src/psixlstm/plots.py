"""Figures a person would rather look at than read (matplotlib, Agg backend, PNG)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from .data import Dataset  # noqa: E402


def _time_axis(t_s):
    span = float(t_s[-1] - t_s[0]) if len(t_s) > 1 else 1.0
    for scale, unit in ((1.0, "s"), (1e-3, "ms"), (1e-6, "us"), (1e-9, "ns")):
        if span >= 2 * scale:
            return t_s / scale, unit
    return t_s / 1e-9, "ns"


def plot_dataset_samples(dataset: Dataset, path: str | Path, n_sequences: int = 3) -> Path:
    """Voltages and currents of the first sequences, plus the step size dt (log) to show the multi-rate grid."""
    seqs = dataset.sequences[:n_sequences]
    fig, axes = plt.subplots(3, len(seqs), figsize=(5 * len(seqs), 7), squeeze=False, sharex="col")
    for j, seq in enumerate(seqs):
        t, unit = _time_axis(seq.t_s)
        for k, name in enumerate(dataset.input_names):
            axes[0, j].plot(t, seq.inputs_v[:, k], lw=0.7, label=name)
        for k, name in enumerate(dataset.output_names):
            axes[1, j].plot(t, seq.outputs_a[:, k], lw=0.5, alpha=0.6, label=f"{name} (observed)")
            if seq.outputs_clean_a is not None:
                axes[1, j].plot(t, seq.outputs_clean_a[:, k], lw=0.7, label=f"{name} (clean)")
        axes[2, j].semilogy(t[1:], seq.dt_s, lw=0.7)
        axes[0, j].set_title(f"{dataset.device}: sequence {j} ({len(seq)} points)")
        axes[0, j].set_ylabel("V")
        axes[1, j].set_ylabel("A")
        axes[2, j].set_ylabel("dt (s)")
        axes[2, j].set_xlabel(f"time ({unit})")
        axes[0, j].legend(fontsize=7, loc="upper right")
        axes[1, j].legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_predictions(seq, preds: dict, dataset: Dataset, path: str | Path) -> Path:
    """One test sequence: voltages, currents (truth and each model), and each model's error."""
    t, unit = _time_axis(seq.t_s)
    truth = seq.outputs_clean_a if seq.outputs_clean_a is not None else seq.outputs_a
    n_out = truth.shape[1]
    fig, axes = plt.subplots(1 + 2 * n_out, 1, figsize=(11, 2.4 * (1 + 2 * n_out)), sharex=True, squeeze=False)
    axes = axes[:, 0]
    for k, name in enumerate(dataset.input_names):
        axes[0].plot(t, seq.inputs_v[:, k], lw=0.7, label=name)
    axes[0].set_ylabel("V")
    axes[0].legend(fontsize=7, loc="upper right")
    for j, out_name in enumerate(dataset.output_names):
        ax, ax_err = axes[1 + 2 * j], axes[2 + 2 * j]
        ax.plot(t, truth[:, j], color="k", lw=1.2, label=f"{out_name} truth")
        for name, pred in preds.items():
            ax.plot(t, pred[:, j], lw=0.8, label=name)
            ax_err.plot(t, pred[:, j] - truth[:, j], lw=0.7, label=name)
        ax.set_ylabel(f"{out_name} (A)")
        ax_err.set_ylabel("error (A)")
        ax.legend(fontsize=7, loc="upper right")
    axes[-1].set_xlabel(f"time ({unit})")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_spectrum(seq, preds: dict, bands_hz: dict, path: str | Path) -> Path:
    """Magnitude spectra (uniformly resampled, first output) of truth and models, with the error bands shaded."""
    import numpy as np

    truth = (seq.outputs_clean_a if seq.outputs_clean_a is not None else seq.outputs_a)[:, 0]
    dt = max(float(np.min(np.diff(seq.t_s))), (seq.t_s[-1] - seq.t_s[0]) / 2**18)
    t_u = np.arange(seq.t_s[0], seq.t_s[-1], dt)
    freqs = np.fft.rfftfreq(t_u.size, dt)
    fig, ax = plt.subplots(figsize=(9, 4))
    for name, y in [("truth", truth)] + [(n, p[:, 0]) for n, p in preds.items()]:
        spec = np.abs(np.fft.rfft(np.interp(t_u, seq.t_s, y) - np.mean(y))) * dt
        ax.loglog(
            freqs[1:], spec[1:], lw=1.2 if name == "truth" else 0.8, color="k" if name == "truth" else None, label=name
        )
    for name, (lo, hi) in bands_hz.items():
        ax.axvspan(lo, hi, alpha=0.12, label=f"{name} band")
    ax.set_xlabel("frequency (Hz)")
    ax.set_ylabel("|I(f)| (A s)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
