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
