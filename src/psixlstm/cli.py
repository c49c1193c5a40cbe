"""`psi-xlstm`: device waveforms -> xLSTM teacher -> compact students -> Verilog-A verified in SPICE.

Each sub-command is one pipeline stage; the same functions are importable from Python (see README)."""

from __future__ import annotations

import argparse
import json
import sys
import time
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


def _cmd_train_teacher(args: argparse.Namespace) -> int:
    from .fitting import train_teacher

    ds = _load_dataset(args.data)
    run = train_teacher(
        ds,
        args.preset,
        args.out,
        gating=args.gating,
        physics_weight=args.physics_weight,
        seed=args.seed,
        progress=not args.quiet,
    )
    m = run.metrics["test"]["vs_clean"]
    print(
        f"teacher ({run.model.n_params} params): test MSE {m['mse']:.3e} A^2, NRMSE {m['nrmse']:.4f}, "
        f"R^2 {m['r2']:.5f}; trained {run.metrics['training']['seconds']:.0f} s"
    )
    print(f"wrote {run.out_dir}/teacher.pt, teacher.json, metrics.json, history.json, waveforms.png, spectrum.png")
    return 0


def _cmd_baselines(args: argparse.Namespace) -> int:
    from .fitting import run_baselines, summary_table

    table = run_baselines(
        _load_dataset(args.data),
        args.preset,
        args.out,
        seed=args.seed,
        include_teachers=not args.no_teachers,
        progress=not args.quiet,
    )
    print(summary_table(table))
    print(f"wrote {Path(args.out) / 'baselines.json'}")
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
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_train_teacher)

    p = sub.add_parser(
        "baselines",
        help="train every baseline with the teacher's data and budget; print and save the comparison table",
        description="Linear fit, linear state space, MLP PINN, Fourier-feature MLP, SIREN, LSTM, and the teacher with "
        "exponential gating, sigmoid gating and without physics terms. Resumable: finished models are kept.",
    )
    p.add_argument("--data", required=True, help="dataset directory (from psi-xlstm data)")
    p.add_argument("--preset", choices=["quick", "default", "paper"], default="default")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-teachers", action="store_true", help="skip the three teacher variants")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_baselines)
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
