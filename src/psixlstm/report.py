"""Stage: a self-contained report.html of a pipeline run (tables, embedded figures, links to the Verilog-A)."""

from __future__ import annotations

import base64
import html
from pathlib import Path

from .data import Dataset

# what the issue tracker records of the seed paper's public code on the vteam-paper protocol (issue #3)
SEED_PAPER_VTEAM = {"r2": "about 0.55 (a linear fit beat it)"}


def _img(path: Path) -> str:
    if not path.exists():
        return f"<p><em>{html.escape(path.name)} missing</em></p>"
    data = base64.b64encode(path.read_bytes()).decode()
    name = html.escape(path.stem)
    return f'<figure><img src="data:image/png;base64,{data}" alt="{name}"><figcaption>{name}</figcaption></figure>'


def _row(cells: list[str], tag: str = "td") -> str:
    return "<tr>" + "".join(f"<{tag}>{c}</{tag}>" for c in cells) + "</tr>"


def _num(x, fmt: str = ".4g") -> str:
    if x is None:
        return "-"
    if isinstance(x, list):
        return "[" + ", ".join(_num(v, fmt) for v in x) + "]"
    return format(x, fmt) if isinstance(x, int | float) else html.escape(str(x))


def _figures(out: Path, seed_dir: Path, dataset: Dataset) -> list[Path]:
    """Waveforms, I-V loops and spectra of the first test sequence for truth, teacher and both students (of the
    run's first seed, under `seed_dir`)."""
    from .distillation import load_student
    from .fitting import dataset_bands, load_teacher
    from .plots import plot_iv_loops, plot_predictions, plot_spectrum
    from .training import predict

    seq = dataset.subset("test")[:1]
    teacher, scales, _ = load_teacher(seed_dir / "teacher")
    preds = {"teacher": predict(teacher, seq, scales)[0]}
    for kind in ("clustered", "lowrank"):
        student, _, _ = load_student(seed_dir / kind)
        preds[f"{kind} student"] = predict(student, seq, scales)[0]
    fig_dir = out / "figures"
    fig_dir.mkdir(exist_ok=True)
    paths = [plot_predictions(seq[0], preds, dataset, fig_dir / "waveforms.png")]
    paths.append(plot_iv_loops(seq[0], preds, fig_dir / "iv_loops.png"))
    paths.append(plot_spectrum(seq[0], preds, dataset_bands(dataset), fig_dir / "spectrum.png"))
    return paths


STYLE = (
    "body{font-family:sans-serif;max-width:1100px;margin:auto}table{border-collapse:collapse}"
    "td,th{border:1px solid #bbb;padding:3px 8px;text-align:right}td:first-child{text-align:left}img{max-width:100%}"
)
MODEL_COLUMNS = ["Model", "Params", "States", "MSE (A&sup2;)", "NRMSE", "R&sup2;", "HF error"]
MODEL_COLUMNS += ["Latency (&micro;s/step)", "Speedup", "Compression"]


def _model_rows(models: dict, device: str) -> list[str]:
    teacher = models["teacher"]
    rows = [_row(MODEL_COLUMNS, "th")]
    for name, m in models.items():
        lat, t_lat = m.get("latency_us_per_step"), teacher.get("latency_us_per_step")
        speedup = t_lat / lat if lat and t_lat else None
        seeds = m.get("over_seeds")
        r2 = f"{seeds['r2']['mean']:.4f} &plusmn; {seeds['r2']['std']:.4f}" if seeds else _num(m["r2"], ".4f")
        cells = [html.escape(name), _num(m["params"]), _num(m.get("states")), _num(m["mse"], ".3e")]
        cells += [_num(m["nrmse"]), r2, _num(m["hf_error"]), _num(lat, ".3g"), _num(speedup, ".2f")]
        cells.append(_num(1 - m["params"] / teacher["params"], ".1%"))
        rows.append(_row(cells))
    if device == "vteam-paper":
        rows.append(_row(["seed paper (public code)", "", "", "", "", SEED_PAPER_VTEAM["r2"], "", "", "", ""]))
    return rows


def write_report(out: Path, metrics: dict, dataset: Dataset) -> Path:
    """OUT/report.html from metrics.json's content and the run's artifacts."""
    disc = metrics["discovery"]
    header = ["Simulator", "Replay max rel. error", "Realistic-use NRMSE", "Cost vs reference"]
    spice_rows = [_row([*header, "Robustness failures / runs"], "th")]
    for sim, s in metrics["spice"].items():
        cells = [sim, _num(s["replay_max_rel_err"], ".2e"), _num(s["adaptive_nrmse"], ".2e")]
        cells += [_num(s["cost_ratio_vs_reference"], ".2f"), f"{_num(s['failures'])} / {_num(s['robustness_runs'])}"]
        spice_rows.append(_row(cells))
    seed_dir = out / f"seed{metrics['config']['seed']}"
    figures = _figures(out, seed_dir, dataset)
    figures += [seed_dir / "discovery" / "time_constants.png", seed_dir / "discovery" / "singular_values.png"]
    links = [f'<a href="veriloga_{k}/psix_{k}.va">psix_{k}.va</a>' for k in ("clustered", "lowrank")]
    timing = ", ".join(f"{k} {v:.0f} s" for k, v in metrics["timing"].items())
    title = f"psixlstm {metrics['version']}: {dataset.device}, preset {metrics['config']['preset']}"
    data = metrics.get("data") or {}
    truth = data.get("ground_truth", True)
    against = "against the clean ground truth" if truth else "against the recorded currents"
    no_truth = (
        ""
        if truth
        else "<p><strong>No ground truth:</strong> these waveforms come from a CSV or a measurement, not from a "
        "simulated device, so model errors are against the recorded (noisy) currents, discovery has no true time "
        "constants to match, and SPICE is checked against the PyTorch student on a held-out waveform of the data "
        "(replay, realistic use, robustness, DC sweep), not against a device.</p>"
    )
    if "assumed_sweep_rate_v_per_s" in data:
        no_truth += (
            f"<p>Time axis: {html.escape(str(data.get('time_axis', '')))}; assumed sweep rate "
            f"{data['assumed_sweep_rate_v_per_s']:g} V/s.</p>"
        )
    stim = metrics.get("spice_stimulus") or {}
    spice_on = (
        f"<p>SPICE stimulus: {html.escape(str(stim['kind']))}, {stim['samples']} samples, "
        f"{stim['duration_s']:.4g} s.</p>"
        if "kind" in stim
        else ""
    )
    true_taus = f"{_num(disc['tau_true_s'], '.3g')} s" if truth else "none (no ground truth)"
    parts = [
        f'<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>',
        f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>",
        no_truth,
        f"<p>Test split, {against}. HF error: relative spectral error in the high band; latency:",
        "PyTorch forward per time step at batch 1, one thread, measured in one run (compare as ratios).</p>",
        "<table>",
        *_model_rows(metrics["models"], dataset.device),
        "</table><h2>Time constants</h2>",
        f"<p>Handed to the students ({html.escape(disc['tau_source'])}): {_num(disc['tau_s'], '.3g')} s; gate",
        f"clusters {_num(disc['gate_cluster_tau_s'], '.3g')} s; true {true_taus}; relative",
        f"errors {_num(disc['tau_rel_err'], '.2f')}. SVD ranks {html.escape(str(disc['svd_rank']))}.</p>",
        "<h2>SPICE (clustered student)</h2>",
        spice_on,
        "<table>",
        *spice_rows,
        f"</table><p>Verilog-A: {' '.join(links)}</p>",
        *(_img(p) for p in figures),
        f"<p>Timing: {html.escape(timing)}</p>",
        f"<p>Data attribution: {html.escape(dataset.attribution)}</p>" if dataset.attribution else "",
        "</body></html>",
    ]
    path = out / "report.html"
    path.write_text("\n".join(parts))
    return path
