"""`psi-xlstm`: device waveforms -> xLSTM teacher -> compact students -> Verilog-A verified in SPICE.

Each sub-command is one pipeline stage; the same functions are importable from Python (see README)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

from . import __version__


def _cmd_doctor(args: argparse.Namespace) -> int:
    from .doctor import run_doctor

    checks = run_doctor()
    width = max(len(c.name) for c in checks)
    for c in checks:
        print(f"{'ok  ' if c.ok else 'FAIL'} {c.name:<{width}}  {c.detail}")
    bad = [c for c in checks if not c.ok]
    print("doctor: all checks passed" if not bad else f"doctor: {len(bad)} check(s) failed")
    return 0 if not bad else 1


def _cmd_data(args: argparse.Namespace) -> int:
    from .data.generate import make_dataset
    from .plots import plot_dataset_samples

    start = time.perf_counter()
    ds = make_dataset(args.device, args.preset, seed=args.seed, progress=not args.quiet)
    out = Path(args.out)
    ds.save(out)
    png = plot_dataset_samples(ds, out / "samples.png")
    print(ds.summary())
    print(f"wrote {out / 'dataset.npz'}, {out / 'dataset.json'}, {png} in {time.perf_counter() - start:.1f} s")
    return 0


def _cmd_groundtruth_check(args: argparse.Namespace) -> int:
    from .devices.memristor import twin_check

    report = twin_check(args.simulator, opt_level=args.opt_level, seed=args.seed)
    print(json.dumps(report, indent=2))
    return 0 if report["max_rel_err"] <= args.tolerance else 1


def _load_dataset(path: str):
    from .data import Dataset

    return Dataset.load(path)


def _add_budget_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--chunk-len",
        type=int,
        default=None,
        help="truncated-BPTT window in steps (preset: 1024, and 4096 for the vteam-paper device, a pure "
        "integrator of its history)",
    )
    p.add_argument("--minutes", type=float, default=None, help="wall-clock budget per model (preset: default 9)")


def _preset(args: argparse.Namespace, device: str):
    """The named preset for the device with the --chunk-len / --minutes overrides."""
    from .config import teacher_preset

    overrides = {k: v for k, v in (("chunk_len", args.chunk_len), ("max_minutes", args.minutes)) if v is not None}
    return teacher_preset(args.preset, device, **overrides)


def _cmd_train_teacher(args: argparse.Namespace) -> int:
    from .fitting import train_teacher

    ds = _load_dataset(args.data)
    run = train_teacher(
        ds,
        _preset(args, ds.device),
        args.out,
        gating=args.gating,
        physics_weight=args.physics_weight,
        seed=args.seed,
        progress=not args.quiet,
        data_dir=str(Path(args.data).resolve()),
    )
    m = run.metrics["test"]["vs_clean"]
    print(
        f"teacher ({run.model.n_params} params): test MSE {m['mse']:.3e} A^2, NRMSE {m['nrmse']:.4f}, "
        f"R^2 {m['r2']:.5f}; trained {run.metrics['training']['seconds']:.0f} s"
    )
    print(f"wrote {run.out_dir}/teacher.pt, teacher.json, metrics.json, history.json, waveforms.png, spectrum.png")
    return 0


def _teacher_data(args: argparse.Namespace):
    """The dataset a teacher was trained on (recorded in teacher.json), unless --data overrides it."""
    meta = (
        json.loads((Path(args.teacher) / "teacher.json").read_text())
        if (Path(args.teacher) / "teacher.json").exists()
        else {}
    )
    path = args.data or meta.get("data_dir")
    if not path:
        raise ValueError(f"{args.teacher}/teacher.json records no dataset; pass --data DIR")
    return _load_dataset(path)


def _cmd_discover(args: argparse.Namespace) -> int:
    from .discovery import MIN_TAU_RATIO, discover
    from .fitting import load_teacher
    from .plots import plot_singular_values, plot_time_constants

    teacher, _, _ = load_teacher(args.teacher)
    ds = _teacher_data(args)
    d = discover(teacher, ds, k=args.k, svd_threshold=args.svd_threshold)
    out = Path(args.out)
    d.save(out)
    plot_time_constants(d, out / "time_constants.png")
    plot_singular_values(d, out / "singular_values.png")
    print(f"gate clusters (K={d.k}): " + ", ".join(f"{t * 1e3:.4g} ms" for t in d.gate_cluster_tau_s))
    print("probe fit (teacher): " + ", ".join(f"{t * 1e3:.4g} ms" for t in d.probe["teacher"]["tau_s"]))
    if any(d.probe["teacher"]["at_ratio_bound"]):
        free = ", ".join(f"{t * 1e3:.4g} ms" for t in d.probe["teacher_free"]["tau_s"])
        print(f"  adjacent taus sit on the {MIN_TAU_RATIO}x ratio bound; without it: {free} (scored against the truth)")
    for source, rows in d.tau_match.items():
        print(
            f"vs true taus ({source}): "
            + ", ".join(
                f"{r['true_s'] * 1e3:.3g} ms -> {r['found_s'] * 1e3:.3g} ms ({100 * r['rel_err']:.0f} %)" for r in rows
            )
        )
    ranks = {k: v["rank"] for k, v in d.svd["projections"].items()}
    print(f"SVD ranks at {args.svd_threshold:.0%} energy: {ranks}; students use tau_s = {d.tau_s} ({d.tau_source})")
    print(f"wrote {out}/discovery.json, time_constants.png, singular_values.png")
    return 0


def _cmd_distill(args: argparse.Namespace) -> int:
    from .discovery import Discovery
    from .distillation import ablation, distill, distill_preset
    from .fitting import load_teacher

    teacher, _, teacher_metrics = load_teacher(args.teacher)
    ds = _teacher_data(args)
    disc = Discovery.load(args.discovery)
    preset = distill_preset(args.preset, **({} if args.minutes is None else {"max_minutes": args.minutes}))
    if args.candidates is not None:
        if args.candidates < 1:
            raise SystemExit(f"--candidates must be >= 1, got {args.candidates}")
        preset = replace(preset, candidates={**preset.candidates, args.student: args.candidates})
    if args.ablation:
        table = ablation(teacher, ds, disc, args.student, preset, args.out, seed=args.seed, progress=not args.quiet)
        for name, row in table.items():
            print(
                f"{name:<20} NRMSE vs truth {row['test_vs_truth']['nrmse']:.4f}  vs teacher "
                f"{row['test_vs_teacher']['nrmse']:.4f}"
            )
        return 0
    run = distill(teacher, ds, disc, args.student, preset, args.out, seed=args.seed, progress=not args.quiet)
    m = run.metrics
    t_nrmse = teacher_metrics["test"]["vs_clean"]["nrmse"]
    print(
        f"{args.student} student: {m['params']} params ({100 * m['compression']:.1f} % fewer than the teacher), "
        f"{m['states']} states; test NRMSE {m['test']['vs_clean']['nrmse']:.4f} "
        f"({m['test']['vs_clean']['nrmse'] / t_nrmse:.2f}x the teacher's {t_nrmse:.4f}), "
        f"NRMSE vs teacher {m['test_vs_teacher']['nrmse']:.4f}"
    )
    if "candidates" in m["training"]:
        n = len(m["training"]["candidates"])
        print(f"seed {m['training']['chosen_seed']}: the best of {n} initialisations by validation loss")
    print(f"wrote {run.out_dir}/student.pt, student.json, metrics.json")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from .export import export_student

    meta = export_student(args.student, args.out, module=args.module, opt_level=args.opt_level)
    print(f"wrote {meta['va']} ({meta['lines']} lines, {meta['states']} states), {meta['osdi']}, testbenches")
    return 0


def _simulators(args: argparse.Namespace) -> tuple[str, ...]:
    return ("ngspice", "vacask") if args.simulator == "both" else (args.simulator,)


def _sci(value) -> str:
    """A number, or one per terminal, in short scientific notation."""
    return f"[{', '.join(f'{v:.2e}' for v in value)}]" if isinstance(value, list) else f"{value:.2e}"


def _cmd_verify(args: argparse.Namespace) -> int:
    from .verification import robustness_failures, verify_export

    sims = _simulators(args)
    report = verify_export(
        args.model,
        sims,
        robustness_n=args.robustness,
        robustness_seed=args.robustness_seed,
        progress=not args.quiet,
        workers=args.workers,
        executor=args.executor,
    )
    for sim in sims:
        entry = report[sim]
        print(f"{sim}: " + ", ".join(f"{k} {_sci(v)}" for k, v in entry.items() if k.startswith("replay_max")))
        print(
            f"{sim}: realistic use (reltol 1e-4) NRMSE over time {_sci(entry['adaptive_nrmse'])} "
            f"(per point {_sci(entry['adaptive_nrmse_per_point'])}) vs the converged student"
        )
        if "native_adaptive_nrmse" in entry:
            print(
                f"{sim}: the native device at the same settings: NRMSE over time "
                f"{_sci(entry['native_adaptive_nrmse'])} (per point {_sci(entry['native_adaptive_nrmse_per_point'])})"
            )
        if "robustness" in report:
            rob = report["robustness"][sim]
            print(
                f"robustness ({sim}): {rob['total']['ok']}/{rob['total']['runs']} runs ok, DC sweep "
                f"{rob['dc_sweep']['status']}: "
                + ", ".join(f"{k} {v}" for k, v in rob["total"].items() if k not in ("runs", "ok"))
            )
    print(f"wrote {Path(args.model) / 'verify.json'}")
    return 1 if robustness_failures(report) else 0


RUN_FLAGS = (  # `run` flags that set a RunConfig field of the same name (None: not given, the file's or default)
    "device",
    "preset",
    "seeds",
    "seed",
    "minutes",
    "csv",
    "time_col",
    "voltage_col",
    "current_col",
    "sequence_col",
    "time_unit",
    "voltage_unit",
    "current_unit",
    "chunks",
    "sweep_rate",
)


def run_config_from_args(args: argparse.Namespace):
    """The RunConfig of `run`'s flags: the --config file (if any) with every flag given on the command line on top."""
    from .pipeline import RunConfig, load_run_config

    given = {k: getattr(args, k) for k in RUN_FLAGS if getattr(args, k) is not None}
    if args.baselines:
        given["baselines"] = True
    if args.simulator is not None:
        given["simulators"] = _simulators(args)
    if given.get("csv") and "device" not in given:
        given["device"] = "csv"  # --csv on the command line wins over a device in the file
    if args.config:
        return load_run_config(args.config, **given)
    return RunConfig(**given)


def _cmd_characterize(args: argparse.Namespace) -> int:
    from .characterize import characterize_export

    sims = _simulators(args)
    report = characterize_export(args.model, sims, args.out, plots=not args.no_plots)
    summary = report["summary"]
    for sim in sims:
        s = summary[sim]
        print(
            f"{sim}: DC vs PyTorch {s['dc_spice_vs_pytorch']:.1e}, .ac vs PyTorch {s['ac_vs_pytorch_worst']:.1e}, "
            f"KCL {s['kcl_max_rel']:.1e}, charge residual {s['charge_residual_rel']:.1e}"
        )
        print(
            f"{sim} vs native: gm {s['gm_max_err_rel_to_max']:.3f} (median {s['gm_median_rel_err_above_1pct']:.3f}), "
            f"gds {s['gds_max_err_rel_to_max']:.3f} (median {s['gds_median_rel_err_above_1pct']:.3f}), |Y| max "
            f"{s['ac_vs_native_max_mag_err_db']:.1f} dB, phase max {s['ac_vs_native_max_phase_err_deg']:.1f} deg"
        )
    if "gst_odd_asymmetry" in summary:
        gst = summary["gst_odd_asymmetry"]
        print("Gummel symmetry, odd asymmetry: " + ", ".join(f"{k} {v:.1e}" for k, v in gst.items()))
    print(f"wrote {Path(args.out) / 'characterize.json'}")
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from .pipeline import run_pipeline

    cfg = run_config_from_args(args)
    metrics = run_pipeline(cfg, args.out, progress=not args.quiet)
    for name, m in metrics["models"].items():
        print(f"{name:<20} params {m['params']:>6}  NRMSE {m['nrmse']:.4f}  R^2 {m['r2']:.4f}")
    for sim, s in metrics["spice"].items():
        replay, nrmse = _sci(s["replay_max_rel_err"]), _sci(s["adaptive_nrmse"])
        print(f"{sim}: replay {replay}, realistic NRMSE {nrmse}, robustness failures {s['failures']}")
    print(f"total {metrics['timing']['total_s']:.0f} s; wrote {Path(args.out) / 'metrics.json'}, report.html")
    return 0


def _cmd_sweep(args: argparse.Namespace) -> int:
    from .sweep import markdown_table, run_sweep

    summary = run_sweep(args.grid, args.out, address=args.address, progress=not args.quiet)
    print(markdown_table(summary), end="")
    print(f"wrote {Path(args.out) / 'sweep.json'}, summary.md, report.html")
    return 1 if any(c["status"] == "failed" for c in summary["cells"].values()) else 0


def _cmd_baselines(args: argparse.Namespace) -> int:
    from .fitting import run_baselines, summary_table

    ds = _load_dataset(args.data)
    table = run_baselines(
        ds,
        _preset(args, ds.device),
        args.out,
        seed=args.seed,
        include_teachers=not args.no_teachers,
        progress=not args.quiet,
    )
    print(summary_table(table))
    print(f"wrote {Path(args.out) / 'baselines.json'}")
    return 0


def _cmd_stress(args: argparse.Namespace) -> int:
    from .distillation import load_student
    from .fitting import load_teacher
    from .stress import run_stress, stress_plan

    for flag, d in [("--teacher", args.teacher), *(("--student", s) for s in args.student), ("--model", args.model)]:
        if d is not None and not Path(d).is_dir():
            raise FileNotFoundError(f"{flag} {d}: no such directory")
    teacher, _, _ = load_teacher(args.teacher)
    ds = _teacher_data(args)
    students = {}
    for d in args.student:
        student, _, _ = load_student(d)
        name = student.cfg.kind if student.cfg.kind not in students else f"{student.cfg.kind}_{Path(d).name}"
        students[name] = student
    scales = ds.scales or ds.compute_scales()
    plan = stress_plan(
        ds.device,
        scales.input_scale_v,
        amplitudes=args.amplitudes,
        widths_s=args.widths,
        seed=args.seed,
    )
    sims = () if args.simulator == "none" else _simulators(args)
    report = run_stress(
        teacher,
        students,
        ds,
        args.model,
        sims,
        args.out,
        plan,
        not args.quiet,
        band_floor_rel=args.band_floor,
        workers=args.workers,
    )
    for name, row in report["summary"].items():
        rec = row["worst_recovery_time_s"]
        line = (
            f"{name:<16} worst peak error {row['worst_peak_error_rel']:.3g} x range, recovered "
            f"{row['recovered']}/{row['cases'] - row['failed_runs']}, worst recovery "
            + ("-" if rec is None else f"{rec:.3g} s")
        )
        if "worst_replay_max_rel_err" in row:
            line += f", SPICE vs PyTorch replay {row['worst_replay_max_rel_err']:.2e}"
        if row["failed_runs"]:
            line += f", {row['failed_runs']} failed runs"
        print(line)
    print(f"wrote {Path(args.out) / 'stress.json'}, stress.png ({len(report['cases'])} disturbances)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="psi-xlstm",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"psixlstm {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("doctor", help="check Python, torch, ngspice (OSDI), openvaf-r and VACASK end to end")
    p.set_defaults(func=_cmd_doctor)

    p = sub.add_parser(
        "data",
        help="simulate a ground-truth dataset (writes dataset.npz/json and samples.png)",
        description="Simulate device waveforms on multi-rate time grids and save them with units "
        "(time s, voltages V, currents A), splits by sequence and normalisation scales.",
    )
    p.add_argument(
        "--device",
        choices=["memristor", "vteam-paper", "mosfet", "bjt"],
        default="memristor",
        help="three-tau memristor (default), the paper's VTEAM protocol, BSIM4 NMOS, Gummel-Poon NPN",
    )
    p.add_argument(
        "--preset",
        choices=["quick", "default", "paper"],
        default="default",
        help="data size: quick (tests, seconds), default, paper",
    )
    p.add_argument("--seed", type=int, default=0, help="random seed of the stimulus programs and noise")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_data)

    p = sub.add_parser(
        "groundtruth-check",
        help="compare the memristor's Verilog-A twin in SPICE with its NumPy model (JSON; exit 1 above tolerance)",
    )
    p.add_argument("--device", choices=["memristor"], default="memristor")
    p.add_argument("--simulator", choices=["ngspice", "vacask"], default="ngspice")
    p.add_argument("--opt-level", type=int, default=0, choices=[0, 1, 2, 3], help="openvaf-r optimisation level")
    p.add_argument("--seed", type=int, default=0, help="seed of the random memristor stimulus")
    p.add_argument("--tolerance", type=float, default=1e-3, help="max relative error of the current (of its range)")
    p.set_defaults(func=_cmd_groundtruth_check)

    p = sub.add_parser(
        "train-teacher",
        help="train the physics-informed xLSTM teacher on a dataset (resumable; writes metrics and plots)",
        description="Train the sLSTM+mLSTM teacher with truncated BPTT on whole sequences. A killed run resumes from "
        "OUT/checkpoint.pt. Metrics are on the test split against the clean ground truth and the observed data.",
    )
    p.add_argument("--data", required=True, help="dataset directory (from psi-xlstm data)")
    p.add_argument(
        "--preset",
        choices=["quick", "default", "paper"],
        default="default",
        help="quick: tests; default: < 10 min on 2 cores; paper: hidden 64, 4 heads (~46K params)",
    )
    p.add_argument("--gating", choices=["exp", "sigmoid"], default="exp", help="exponential (xLSTM) or sigmoid gates")
    p.add_argument("--physics-weight", type=float, default=None, help="scale of the physics residuals (0 = ablation)")
    _add_budget_args(p)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_train_teacher)

    p = sub.add_parser(
        "run",
        help="the whole pipeline: data, teacher, discovery, students, Verilog-A, SPICE verification, report",
        description="Waveforms in, verified Verilog-A and a report out. Every stage lands under OUT; a rerun skips "
        "stages whose inputs did not change (an edited CSV reruns from the data on) and a killed run resumes. Writes "
        "OUT/metrics.json and OUT/report.html.",
        epilog="CSV files (--csv): a header line, then one row per sample; columns time, voltage and current (names\n"
        "set by --time-col/--voltage-col/--current-col, units by --time-unit/--voltage-unit/--current-unit;\n"
        "',', tab, ';' or whitespace separated, '#' comments). Every file is one sequence, or one per value of\n"
        "--sequence-col; time must strictly increase within a sequence and every value must be a finite number.\n"
        "With fewer than 8 sequences in all, every sequence is cut into equal consecutive chunks (--chunks N to\n"
        "choose; each chunk starts the model from rest, so prefer records that are cut at rests). Sequences are\n"
        "split 70/15/15 % into train/val/test by whole sequence. There is no ground truth for a CSV: errors are\n"
        "against the recorded currents and SPICE is verified against the PyTorch student on a held-out test\n"
        "waveform (replay, realistic use, robustness, DC sweep).\n\n"
        "--device perovskite: the measured I-V sweeps of Gonzales et al. (Zenodo 10.5281/zenodo.12656947,\n"
        "CC BY 4.0; $PSIXLSTM_PEROVSKITE_DIR), time reconstructed at an ASSUMED --sweep-rate (default 0.1 V/s).\n\n"
        "--config FILE.toml: any RunConfig field as a key (examples/run_csv.toml); flags given on the command\n"
        "line override the file.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    source = p.add_mutually_exclusive_group()
    source.add_argument(
        "--device",
        choices=["memristor", "vteam-paper", "mosfet", "bjt", "perovskite"],
        default=None,
        help="simulated device (default memristor) or the measured perovskite memristor's I-V sweeps",
    )
    source.add_argument(
        "--csv", nargs="+", default=None, metavar="FILE", help="your waveforms: CSV files (time, voltage, current)"
    )
    p.add_argument("--config", default=None, metavar="FILE.toml", help="RunConfig fields from a TOML file")
    p.add_argument(
        "--preset",
        choices=["quick", "default", "paper"],
        default=None,
        help="quick: about a minute (tests); default: <= 10 minutes on 2 cores; paper: 46K-parameter teacher",
    )
    p.add_argument("--seeds", type=int, default=None, help="teacher and students per seed; the table shows mean +- std")
    p.add_argument("--seed", type=int, default=None, help="the first training seed (default 0)")
    p.add_argument(
        "--minutes", type=float, default=None, help="wall-clock training budget per model (default: the preset's)"
    )
    p.add_argument("--baselines", action="store_true", help="also train every baseline at the teacher's budget")
    p.add_argument("--simulator", choices=["ngspice", "vacask", "both"], default=None, help="default: both")
    csv = p.add_argument_group("CSV columns and units (with --csv)")
    csv.add_argument("--time-col", default=None, help="name of the time column (default 'time')")
    csv.add_argument("--voltage-col", default=None, help="name of the voltage column (default 'v')")
    csv.add_argument("--current-col", default=None, help="name of the current column (default 'i')")
    csv.add_argument("--sequence-col", default=None, help="a column whose value splits a file into sequences")
    csv.add_argument("--time-unit", choices=["s", "ms", "us", "ns"], default=None, help="default s")
    csv.add_argument("--voltage-unit", choices=["V", "mV"], default=None, help="default V")
    csv.add_argument("--current-unit", choices=["A", "mA", "uA", "nA", "pA"], default=None, help="default A")
    csv.add_argument(
        "--chunks", type=int, default=None, help="cut every sequence into N equal chunks (default: automatic)"
    )
    p.add_argument(
        "--sweep-rate",
        type=float,
        default=None,
        metavar="V_PER_S",
        help="perovskite: the assumed I-V sweep rate (V/s; the data has no time column; default 0.1)",
    )
    p.add_argument("--out", default="runs/memristor", help="output directory")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser(
        "sweep",
        help="run a grid of pipeline runs (seeds x devices x presets x ...) as Ray tasks; one table, mean +- std",
        description="Every combination of the grid's values is one cell: one `psi-xlstm run` (a single seed)\n"
        "under OUT/<cell>/, run as a Ray task on one CPU (torch, BLAS and ngspice single-threaded).\n"
        "Finished cells are not rerun and killed ones resume; a failed cell is reported with its error\n"
        "while the others go on (exit 1). Writes OUT/sweep.json, summary.md and report.html, one row per\n"
        "group of cells that differ only in seed (mean +- std over the seeds).",
        epilog="grid file (TOML): a list of values per key. Keys: seed (training seeds, a cell each), the options\n"
        "of `run` (device, preset, baselines, simulators: each value a list) and minutes (the training budget\n"
        "per model; default: the preset's). For example\n\n"
        '  seed = [0, 1, 2]\n  device = ["memristor"]\n  preset = ["quick", "default"]\n'
        '  simulators = [["ngspice"]]\n\n'
        "Without --address a local Ray instance uses this machine's cores; for a cluster see README (Sweeps).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--grid", required=True, metavar="FILE.toml", help="the grid (see below; examples/sweep_quick.toml)")
    p.add_argument(
        "--address",
        default=None,
        metavar="ADDR",
        help="an existing Ray cluster, e.g. HEAD_IP:6379 from `ray start --head` (default: a local Ray instance)",
    )
    p.add_argument("--out", required=True, help="output directory (on a cluster: a path every node shares)")
    p.add_argument("--quiet", action="store_true", help="no line per finished cell")
    p.set_defaults(func=_cmd_sweep)

    p = sub.add_parser(
        "baselines",
        help="train every baseline with the teacher's data and budget; print and save the comparison table",
        description="Linear fit, linear state space, MLP PINN, Fourier-feature MLP, SIREN, LSTM, and the teacher with "
        "exponential gating, sigmoid gating and without physics terms. Resumable: finished models are kept.",
    )
    p.add_argument("--data", required=True, help="dataset directory (from psi-xlstm data)")
    p.add_argument("--preset", choices=["quick", "default", "paper"], default="default")
    _add_budget_args(p)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-teachers", action="store_true", help="skip the three teacher variants")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_baselines)

    p = sub.add_parser(
        "discover",
        help="read time constants (gates + relaxation probes) and low-rank structure out of a trained teacher",
        description="Per-unit time constants tau = -dt / ln f in seconds along the data, k-means on log tau (K by "
        "silhouette unless --k), relaxation-probe fits, match to the true taus where known, SVD of the mLSTM "
        "projections and matrix memory. Writes discovery.json, time_constants.png, singular_values.png.",
    )
    p.add_argument("--teacher", required=True, help="directory of psi-xlstm train-teacher")
    p.add_argument("--data", default=None, help="dataset directory (default: the one recorded with the teacher)")
    p.add_argument("--k", type=int, default=None, help="force the number of time-constant clusters")
    p.add_argument("--svd-threshold", type=float, default=0.92, help="energy fraction that sets the SVD rank")
    p.add_argument("--out", required=True, help="output directory")
    p.set_defaults(func=_cmd_discover)

    p = sub.add_parser(
        "distill",
        help="RRAD-distil the teacher into a compact continuous-time student (clustered-tau or low-rank)",
        description="Trains the student through the SPICE discretisation (trapezoidal, backward Euler after "
        "breakpoints) on outputs, hidden trajectories, their time differences and time-step relations of the "
        "teacher. --ablation trains every variant with one term removed, and output-only distillation.",
    )
    p.add_argument("--teacher", required=True, help="directory of psi-xlstm train-teacher")
    p.add_argument("--discovery", required=True, help="directory of psi-xlstm discover")
    p.add_argument("--student", choices=["clustered", "lowrank"], default="clustered")
    p.add_argument("--data", default=None, help="dataset directory (default: the one recorded with the teacher)")
    p.add_argument("--preset", choices=["quick", "default", "paper"], default="default")
    p.add_argument("--ablation", action="store_true", help="run the RRAD ablation table instead of one student")
    p.add_argument(
        "--minutes",
        type=float,
        default=None,
        help="wall-clock budget per student (preset: default 8); the clustered student gains from more",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--candidates",
        type=int,
        default=None,
        help="initialisations to try: each trains the preset's selection epochs (10), and the one with the lowest "
        "validation loss at the last of them continues in the rest of the budget (presets: 1)",
    )
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_distill)

    p = sub.add_parser("export", help="write the student as Verilog-A, compile it to OSDI, add SPICE testbenches")
    p.add_argument("--student", required=True, help="directory of psi-xlstm distill")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--module", default="psix_student", help="Verilog-A module name")
    p.add_argument(
        "--opt-level",
        type=int,
        default=3,
        choices=[0, 1, 2, 3],
        help="openvaf-r optimisation: 0 compiles fastest, 3 runs fastest",
    )
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser(
        "verify", help="SPICE vs PyTorch: replay exactness, realistic-use NRMSE, truth, cost, robustness (JSON)"
    )
    p.add_argument("--model", required=True, help="directory of psi-xlstm export")
    p.add_argument("--simulator", choices=["ngspice", "vacask", "both"], default="both")
    p.add_argument(
        "--robustness",
        type=int,
        default=200,
        metavar="N",
        help="random and stress stimuli per simulator (up to 2x the training voltage, 1 ns edges, impulses, bursts, "
        "PRBS, DC bias) plus a DC sweep; failures are counted per kind and exit 1 (0 = skip)",
    )
    p.add_argument("--robustness-seed", type=int, default=0, help="seed of the robustness stimuli")
    p.add_argument(
        "--workers", type=int, default=1, help="robustness runs in parallel (results are identical to a serial run)"
    )
    p.add_argument(
        "--executor",
        choices=["process", "ray"],
        default="process",
        help="where the parallel robustness runs go: a local process pool, or Ray (a local instance, or the "
        "cluster that RAY_ADDRESS names)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_verify)

    p = sub.add_parser(
        "characterize",
        help="MOSFET/BJT export vs BSIM4/Gummel-Poon in SPICE: DC curves, gm/gds, Gummel symmetry or Gummel plot, "
        "KCL, charge, .ac Y parameters (JSON, plots)",
    )
    p.add_argument("--model", required=True, help="directory of psi-xlstm export (a MOSFET or BJT student)")
    p.add_argument("--simulator", choices=["ngspice", "vacask", "both"], default="ngspice")
    p.add_argument("--out", required=True, help="output directory (characterize.json, plots)")
    p.add_argument("--no-plots", action="store_true", help="only characterize.json")
    p.set_defaults(func=_cmd_characterize)

    p = sub.add_parser(
        "stress",
        help="out-of-range impulses (1x-2x the training voltage, both signs, several widths) on a held-out "
        "program: peak error and recovery time of truth, teacher, students and the exported student in SPICE",
        description="Adds one trapezoidal impulse at a fixed time to a held-out random program of the device, for "
        "every amplitude x sign x width (x driven terminal), and compares the teacher, the students (converged) and "
        "the exported student in ngspice/VACASK (reltol 1e-4) with the ground truth: peak error during the impulse, "
        "recovery time (until the error is back within max(2x the model's undisturbed error envelope, 1 % of the "
        "current range) for good), the perturbation against the truth's, and SPICE against the PyTorch student. "
        "Writes stress.json and stress.png (the worst case).",
    )
    p.add_argument("--teacher", required=True, help="directory of psi-xlstm train-teacher")
    p.add_argument(
        "--student", required=True, action="append", help="directory of psi-xlstm distill (repeat for several)"
    )
    p.add_argument("--model", default=None, help="directory of psi-xlstm export (the student run in SPICE)")
    p.add_argument("--data", default=None, help="dataset directory (default: the one recorded in teacher.json)")
    p.add_argument(
        "--simulator",
        choices=["ngspice", "vacask", "both", "none"],
        default="both",
        help="simulators for --model (none: PyTorch only)",
    )
    p.add_argument(
        "--amplitudes",
        type=float,
        nargs="+",
        default=[1.0, 1.5, 2.0],
        metavar="X",
        help="impulse amplitudes in multiples of the training range max |V| (each with both signs)",
    )
    p.add_argument(
        "--widths",
        type=float,
        nargs="+",
        default=None,
        metavar="S",
        help="impulse widths (s); default memristor 10n 1u 100u, MOSFET/BJT 2n 20n 200n",
    )
    p.add_argument("--seed", type=int, default=12345, help="seed of the held-out program")
    p.add_argument(
        "--band-floor",
        type=float,
        default=0.01,
        metavar="F",
        help="floor of the recovery band as a fraction of the current range (default 0.01; the band is the larger "
        "of it and 2x the model's undisturbed error envelope)",
    )
    p.add_argument("--workers", type=int, default=1, help="cases in parallel processes (results are identical)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_stress)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (ValueError, FileNotFoundError) as exc:
        print(f"psi-xlstm {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
