"""Per-time-step latency of teacher, students and baselines, measured side by side in one run, at batch 1 and 64.

    .venv/bin/python benchmarks/latency.py [--teacher DIR] [--student DIR ...]

Without directories it builds default-size models (same architecture, untrained weights: latency does not depend
on the values). Prints microseconds per step and the ratio to the teacher; the ratios are what to compare.
"""

from __future__ import annotations

import argparse

import torch

from psixlstm.config import teacher_preset
from psixlstm.fitting import load_teacher
from psixlstm.metrics import latency_us_per_step
from psixlstm.models.baselines import LinearStateSpace, LSTMBaseline, Siren, WindowMLP
from psixlstm.models.students import StudentConfig, build_student
from psixlstm.models.teacher import Teacher, TeacherConfig
from psixlstm.physics import DevicePhysics


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--teacher", help="train-teacher output directory")
    parser.add_argument("--student", action="append", default=[], help="distill output directory (repeatable)")


def build_models(args: argparse.Namespace) -> dict:
    """The teacher (trained, or default-size untrained), both students and the baselines, keyed by name."""
    torch.manual_seed(0)
    if args.teacher:
        teacher = load_teacher(args.teacher)[0]
    else:
        p = teacher_preset("default")
        teacher = Teacher(
            TeacherConfig(
                d_model=p.d_model, n_heads=p.n_heads, head_hidden=p.head_hidden, physics=DevicePhysics("memristor")
            )
        )
    n_in = teacher.cfg.n_in
    models = {"teacher": teacher}
    if args.student:
        from psixlstm.distillation import load_student

        for path in args.student:
            s = load_student(path)[0]
            models[f"student_{s.cfg.kind}"] = s
    else:
        for kind in ("clustered", "lowrank"):
            models[f"student_{kind}"] = build_student(
                StudentConfig(
                    kind=kind, n_in=n_in, n_out=teacher.cfg.n_out, tau_s=[3e-4, 1e-3, 9e-3], physics=teacher.cfg.physics
                )
            )
    d = teacher.cfg.d_model
    models.update(
        {
            "lstm": LSTMBaseline(n_in, teacher.cfg.n_out, d),
            "mlp": WindowMLP(n_in, teacher.cfg.n_out, hidden=2 * d),
            "siren": Siren(n_in, teacher.cfg.n_out, hidden=2 * d),
            "linear_state_space": LinearStateSpace(n_in, teacher.cfg.n_out, d),
        }
    )
    return models


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arguments(parser)
    parser.add_argument("--steps", type=int, default=256)
    args = parser.parse_args()
    models = build_models(args)
    n_in = models["teacher"].cfg.n_in
    print(f"{'model':<20} {'params':>7} {'us/step b=1':>12} {'x teacher':>10} {'us/step b=64':>13} {'x teacher':>10}")
    results = {
        name: (latency_us_per_step(m, n_in, 1, args.steps), latency_us_per_step(m, n_in, 64, args.steps))
        for name, m in models.items()
    }
    t1, t64 = results["teacher"]
    for name, (b1, b64) in results.items():
        print(f"{name:<20} {models[name].n_params:>7d} {b1:>12.1f} {b1 / t1:>10.3f} {b64:>13.1f} {b64 / t64:>10.3f}")


if __name__ == "__main__":
    main()
