"""Frequency reach: a model's error per frequency band, from DC to 10 MHz, on sequences of the device it models.

Method (per output channel, over the sequences of one split):
- the model's currents come from `training.predict` (teacher, student, baseline: anything it accepts);
- truth and prediction are resampled linearly onto one uniform grid per sequence at the sequence's finest step
  (`metrics.band_errors`' rule: capped at 2^18 points), so the fast edges are sampled, not aliased into the bands;
- per band, `metrics.band_errors` gives ||FFT(pred) - FFT(truth)|| / ||FFT(truth)|| over the band's bins (magnitude
  and phase together; each signal's mean removed), and the band energy ||FFT(truth)||^2 is taken on the same grid;
  the bands are then pooled over sequences by energy: rel_error = sqrt(sum ||E_k||^2 / sum ||Y_k||^2), so a sequence
  with little energy in a band does not dominate it;
- DC is its own band: the FFT's zero bin, i.e. the error of the record's mean relative to the mean;
- bands are half-open [f_lo, f_hi) (a tone exactly on an edge may fall on either side: the uniform grid's record is
  an integer number of steps, so bin k sits at k / (n dt), not exactly at k / T); the top band ends at the Nyquist
  frequency of the uniform grid.

Bands: DC, then everything between DC and 1 kHz as one band ("<1 kHz"), then decades 1 kHz - 10 MHz, and the rest
above 10 MHz for context. One band below 1 kHz because the MOSFET and BJT references (BSIM4 with its charge model,
Gummel-Poon with junction capacitances and 47 ns / 0.4 ns transit times) have no dynamics slower than microseconds:
below 1 kHz they are quasi-static, every decade there would repeat the same static error, and resolving even 1 kHz
takes a record of at least 1 ms (10 ms for ten bins).

A band is reported with a status instead of a number where a number would mislead: "unresolved" when no sequence
has an FFT bin in it (the record is shorter than 1 / f_hi, or the band lies above the Nyquist frequency of the
finest step), "no_signal" when the truth carries less than `ENERGY_FLOOR` of its energy there (an error relative to
nothing); their rel_error is None, never NaN or inf. `energy_share` says how much of the truth's energy (one-sided
spectrum, DC included) each band holds, so a reader can see what the data exercises.

What the MOSFET/BJT datasets resolve: 20 us records have bins every 50 kHz; nothing between DC and 50 kHz is
resolved. Reaching 1 kHz needs records of about 1-10 ms, i.e. a multi-rate dataset: long sequences on coarse steps
(e.g. 10 ms at 0.1-1 us, slow ramps and low tones) next to the short fine ones (20 us at 0.25-50 ns) for the edges
and MHz tones.
"""

from __future__ import annotations

from collections.abc import Sequence as Seq

import numpy as np

from .metrics import band_errors

N_MAX = 2**18  # metrics.band_errors' cap on uniform points per sequence
ENERGY_FLOOR = 1e-8  # a band with a smaller share of the truth's energy (amplitude ~1e-4 of it) has no signal
REACH_F_MAX_HZ = 10e6
REACH_BANDS_HZ: dict[str, tuple[float, float]] = {
    "<1 kHz": (0.0, 1e3),  # DC excluded: the zero bin is the band "DC"
    "1-10 kHz": (1e3, 1e4),
    "10-100 kHz": (1e4, 1e5),
    "0.1-1 MHz": (1e5, 1e6),
    "1-10 MHz": (1e6, 1e7),
    ">10 MHz": (1e7, np.inf),
}


def _uniform(t_s: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float]:
    """y resampled linearly on `band_errors`' uniform grid (finest step, at most N_MAX points); (values, dt)."""
    dt = max(float(np.min(np.diff(t_s))), (t_s[-1] - t_s[0]) / N_MAX)
    t_u = np.arange(t_s[0], t_s[-1], dt)
    return np.interp(t_u, t_s, y), dt


def _sequence_bands(t_s, pred, truth, bands_hz) -> dict:
    """One sequence, one channel: per band the truth energy, the error energy and the bin count; DC included."""
    truth_u, dt = _uniform(t_s, truth)
    pred_u, _ = _uniform(t_s, pred)
    freqs = np.fft.rfftfreq(truth_u.size, dt)
    power = np.abs(np.fft.rfft(truth_u - np.mean(truth_u))) ** 2
    weight = np.where((freqs > 0) & (freqs < freqs[-1]), 2.0, 1.0)  # one-sided spectrum: both signs of f
    if truth_u.size % 2:
        weight[-1] = 2.0  # odd length: the last bin is not the Nyquist bin
    n = truth_u.size
    dc_truth, dc_err = (n * np.mean(truth_u)) ** 2, (n * np.mean(pred_u - truth_u)) ** 2
    errs = band_errors(
        t_s, pred, truth, {k: (max(lo, 1e-300), np.nextafter(hi, 0.0)) for k, (lo, hi) in bands_hz.items()}
    )
    out = {"DC": {"energy": dc_truth, "weighted": dc_truth, "error": dc_err, "bins": 1}}
    for name, (lo, hi) in bands_hz.items():
        sel = (freqs > 0) & (freqs >= lo) & (freqs < hi)
        energy = float(np.sum(power[sel]))
        rel = errs[name]["rel_error"]
        out[name] = {
            "energy": energy,
            "weighted": float(np.sum(power[sel] * weight[sel])),
            "error": rel**2 * energy if np.isfinite(rel) else 0.0,
            "bins": int(np.count_nonzero(sel)),
            "magnitude_error": errs[name]["magnitude_error"],
            "phase_error_rad": errs[name]["phase_error_rad"],
        }
    return out


def reach_of_predictions(
    t_s: Seq[np.ndarray],
    preds: Seq[np.ndarray],
    truths: Seq[np.ndarray],
    bands_hz: dict[str, tuple[float, float]] | None = None,
    channel_names: Seq[str] | None = None,
    energy_floor: float = ENERGY_FLOOR,
) -> dict:
    """Error per band of predictions against truths: per sequence t_s (N,) s and (N, n_out) or (N,) currents A.
    Returns {"record": {...}, "channels": {name: {band: {...}}}} (see the module docstring)."""
    bands_hz = REACH_BANDS_HZ if bands_hz is None else bands_hz
    preds = [np.asarray(p, float).reshape(len(t), -1) for t, p in zip(t_s, preds, strict=True)]
    truths = [np.asarray(y, float).reshape(len(t), -1) for t, y in zip(t_s, truths, strict=True)]
    n_out = truths[0].shape[1]
    names = list(channel_names) if channel_names is not None else [f"out{k}" for k in range(n_out)]
    durations = [float(t[-1] - t[0]) for t in t_s]
    dt_min = min(max(float(np.min(np.diff(t))), (t[-1] - t[0]) / N_MAX) for t in t_s)
    report: dict = {
        "record": {
            "sequences": len(t_s),
            "duration_s": [min(durations), max(durations)],
            "dt_uniform_s": dt_min,
            "resolution_hz": 1.0 / max(durations),
            "nyquist_hz": 0.5 / dt_min,
        },
        "energy_floor": energy_floor,
        "channels": {},
    }
    for k, name in enumerate(names):
        per_seq = [_sequence_bands(t, p[:, k], y[:, k], bands_hz) for t, p, y in zip(t_s, preds, truths, strict=True)]
        total = sum(b["weighted"] for seq in per_seq for b in seq.values())
        bands: dict = {}
        for band in ["DC", *bands_hz]:
            lo, hi = (0.0, 0.0) if band == "DC" else bands_hz[band]
            energy = sum(seq[band]["energy"] for seq in per_seq)
            share = sum(seq[band]["weighted"] for seq in per_seq) / total if total > 0 else 0.0
            bins = sum(seq[band]["bins"] for seq in per_seq)
            entry = {"f_lo_hz": lo, "f_hi_hz": min(hi, 0.5 / dt_min), "bins": bins, "energy_share": float(share)}
            if bins == 0:
                entry.update(status="unresolved", rel_error=None)
            elif share < energy_floor or energy <= 0:
                entry.update(status="no_signal", rel_error=None)
            else:
                err = sum(seq[band]["error"] for seq in per_seq)
                entry.update(status="ok", rel_error=float(np.sqrt(err / energy)))
                if band != "DC":
                    w = [seq[band]["energy"] for seq in per_seq]
                    for key in ("magnitude_error", "phase_error_rad"):
                        vals = [seq[band][key] for seq in per_seq]
                        ok = [(v, wi) for v, wi in zip(vals, w, strict=True) if np.isfinite(v) and wi > 0]
                        entry[key] = float(sum(v * wi for v, wi in ok) / sum(wi for _, wi in ok)) if ok else None
            bands[band] = entry
        report["channels"][name] = bands
    return report


def frequency_reach(
    model,
    dataset,
    scales=None,
    split: str | None = "test",
    bands_hz: dict[str, tuple[float, float]] | None = None,
    energy_floor: float = ENERGY_FLOOR,
) -> dict:
    """Error per frequency band of `model` (anything `training.predict` accepts) on `dataset`'s `split` (None: every
    sequence), against the clean truth where the dataset has it. `scales`: the model's normalisation (from
    `load_teacher` / `load_student`; default the dataset's). Returns `reach_of_predictions`' report plus the device
    and split."""
    import torch

    from .training import predict

    seqs = dataset.subset(split) if split else list(dataset.sequences)
    with torch.no_grad():
        preds = predict(model, seqs, scales if scales is not None else dataset.scales)
    truths = [s.outputs_clean_a if s.outputs_clean_a is not None else s.outputs_a for s in seqs]
    report = reach_of_predictions(
        [s.t_s for s in seqs], preds, truths, bands_hz, dataset.output_names, energy_floor=energy_floor
    )
    return {"device": dataset.device, "split": split or "all", **report}


def format_reach(report: dict, title: str = "") -> str:
    """The report as a table: per band, each channel's energy share and relative error (or its status)."""
    channels = list(report["channels"])
    rec = report["record"]
    lines = [
        f"{title}frequency reach on {rec['sequences']} sequence(s) of {rec['duration_s'][1] * 1e6:.3g} us: "
        f"bins every {rec['resolution_hz'] / 1e3:.3g} kHz, uniform step {rec['dt_uniform_s'] * 1e9:.3g} ns",
        f"{'band':<12}" + "".join(f"{c + ' energy':>16}{c + ' rel err':>16}" for c in channels),
    ]
    for band in report["channels"][channels[0]]:
        row = f"{band:<12}"
        for c in channels:
            e = report["channels"][c][band]
            value = f"{e['rel_error']:.3g}" if e["status"] == "ok" else e["status"]
            row += f"{e['energy_share']:>16.2e}{value:>16}"
        lines.append(row)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """python -m psixlstm.reach --data DIR (--teacher DIR | --student DIR) [--split test] [--json FILE]"""
    import argparse
    import json
    from pathlib import Path

    from .data import Dataset

    parser = argparse.ArgumentParser(prog="python -m psixlstm.reach", description=__doc__.split("\n")[0])
    parser.add_argument("--data", required=True)
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--teacher")
    group.add_argument("--student")
    parser.add_argument("--split", default="test", help="train, val, test or all")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    if args.teacher:
        from .fitting import load_teacher

        model, scales, _ = load_teacher(args.teacher)
    else:
        from .distillation import load_student

        model, scales, _ = load_student(args.student)
    dataset = Dataset.load(args.data)
    report = frequency_reach(model, dataset, scales, None if args.split == "all" else args.split)
    print(format_reach(report, f"{dataset.device} {'teacher' if args.teacher else 'student'}: "))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
