"""Figures a person would rather look at than read (matplotlib, Agg backend, PNG)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from .data import Dataset  # noqa: E402


def _save(fig, path: str | Path) -> Path:
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def time_unit(span_s: float) -> tuple[float, str]:
    """(scale in s, unit name) of the largest unit of which `span_s` holds at least two: s, ms, us or ns."""
    for scale, unit in ((1.0, "s"), (1e-3, "ms"), (1e-6, "us"), (1e-9, "ns")):
        if span_s >= 2 * scale:
            return scale, unit
    return 1e-9, "ns"


def _time_axis(t_s):
    scale, unit = time_unit(float(t_s[-1] - t_s[0]) if len(t_s) > 1 else 1.0)
    return t_s / scale, unit


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
    return _save(fig, path)


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
    return _save(fig, path)


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
        if not np.any(spec[1:] > 0):  # a constant prediction has no spectrum to draw on a log axis
            continue
        ax.loglog(
            freqs[1:], spec[1:], lw=1.2 if name == "truth" else 0.8, color="k" if name == "truth" else None, label=name
        )
    for name, (lo, hi) in bands_hz.items():
        ax.axvspan(lo, hi, alpha=0.12, label=f"{name} band")
    ax.set_xlabel("frequency (Hz)")
    ax.set_ylabel("|I(f)| (A s)")
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_time_constants(discovery, path: str | Path) -> Path:
    """Each unit's time constant (median, 10-90 % bar) on a log axis, the k-means centres, the probe fits and, where
    known, the true time constants."""
    import numpy as np

    med = np.array(discovery.unit_tau_median_s)
    lo, hi = np.array(discovery.unit_tau_p10_s), np.array(discovery.unit_tau_p90_s)
    order = np.argsort(med)
    fig, ax = plt.subplots(figsize=(9, 4.5))
    y = np.arange(med.size)
    ax.errorbar(
        med[order],
        y,
        xerr=[med[order] - lo[order], hi[order] - med[order]],
        fmt="o",
        ms=3,
        lw=0.8,
        color="tab:blue",
        label="gate tau per unit (median, 10-90 %)",
    )
    for k, c in enumerate(discovery.gate_cluster_tau_s):
        ax.axvline(c, color="tab:blue", ls="-", lw=1, alpha=0.5, label="k-means centres" if k == 0 else None)
    for k, c in enumerate(discovery.probe["teacher"]["tau_s"]):
        ax.axvline(c, color="tab:orange", ls="-.", lw=1.5, label="probe fit (teacher)" if k == 0 else None)
    for k, c in enumerate(discovery.tau_true_s or []):
        ax.axvline(c, color="k", ls="--", lw=1.5, label="true tau" if k == 0 else None)
    ax.set_xscale("log")
    ax.set_xlabel("time constant (s)")
    ax.set_yticks([])
    ax.set_ylabel("units (sorted)")
    ax.legend(fontsize=8, loc="lower right")
    return _save(fig, path)


def plot_singular_values(discovery, path: str | Path) -> Path:
    """Normalised singular values of the mLSTM projections and time-averaged memory, with the energy threshold rank."""
    fig, (ax, ax_e) = plt.subplots(1, 2, figsize=(10, 4))
    curves = dict(discovery.svd["projections"])
    for h, head in enumerate(discovery.svd["memory"]["heads"]):
        curves[f"memory head {h}"] = head["time_averaged"]
    for name, rep in curves.items():
        s = rep["singular_values"]
        ax.semilogy(
            range(1, len(s) + 1), [v / s[0] for v in s], marker=".", lw=0.8, label=f"{name} (rank {rep['rank']})"
        )
        ax_e.plot(range(1, len(s) + 1), rep["energy"], marker=".", lw=0.8)
    threshold = next(iter(curves.values()))["threshold"]
    ax_e.axhline(threshold, color="k", ls="--", lw=1, label=f"threshold {threshold}")
    ax.set_xlabel("index")
    ax.set_ylabel("s_i / s_1")
    ax_e.set_xlabel("rank")
    ax_e.set_ylabel("energy (variance explained)")
    ax.legend(fontsize=7)
    ax_e.legend(fontsize=8)
    return _save(fig, path)


def plot_iv_loops(seq, preds: dict, path: str | Path) -> Path:
    """Current against voltage (first input and output) for truth and models: the pinched hysteresis loops."""
    truth = (seq.outputs_clean_a if seq.outputs_clean_a is not None else seq.outputs_a)[:, 0]
    fig, ax = plt.subplots(figsize=(6, 5))
    ax.plot(seq.inputs_v[:, 0], truth, color="k", lw=1.2, label="truth")
    for name, pred in preds.items():
        ax.plot(seq.inputs_v[:, 0], pred[:, 0], lw=0.8, label=name)
    ax.set_xlabel("V (V)")
    ax.set_ylabel("I (A)")
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_spice_error(waves: dict, output_names: list[str], path: str | Path) -> Path:
    """SPICE against PyTorch over time: |I_spice - I_pytorch| / max |I_pytorch| per simulator and output, the
    PyTorch student replayed on each simulator's accepted grid. waves: simulator -> (t_s (N,), rel_err (N, C))."""
    import numpy as np

    fig, ax = plt.subplots(figsize=(10, 3.8))
    span = max((float(t[-1]) for t, _ in waves.values() if len(t)), default=1.0)
    scale, unit = time_unit(span)
    for sim, (t, err) in waves.items():
        err = np.abs(np.asarray(err, float).reshape(len(t), -1))
        for k in range(err.shape[1]):
            name = output_names[k] if k < len(output_names) else f"output {k}"
            ax.semilogy(t / scale, np.maximum(err[:, k], 1e-10), lw=0.6, label=f"{sim}, {name}")
    ax.set_xlabel(f"time ({unit})")
    ax.set_ylabel("|I_SPICE - I_PyTorch| / max |I|")
    ax.set_title("SPICE vs the PyTorch student replayed on SPICE's accepted grid (reltol 1e-4)")
    ax.legend(fontsize=8, loc="upper right")
    return _save(fig, path)
