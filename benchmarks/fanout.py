"""Speedup of the robustness fan-out: the same SPICE robustness stimuli run serially and on N workers, side by side
in one run, as a ratio (the reports must match but for wall times).

    .venv/bin/python benchmarks/fanout.py [--model DIR] [--n 24] [--workers 2] [--executor {process,ray}]

Without --model it exports a small clustered memristor student (perturbed untrained weights: SPICE cost does not
depend on training). The parallel time includes starting the pool, as a user pays it (forked workers start at
once; Ray actors import torch first, seconds). On a machine with other load the ratio measures what is left over.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from psixlstm import spice
from psixlstm.data import Scales
from psixlstm.export import emit_veriloga
from psixlstm.models.students import StudentConfig, build_student
from psixlstm.physics import DevicePhysics
from psixlstm.verification import robustness

V_SCALE, I_SCALE = 1.4, 3e-3  # V, A


def small_student(work: Path):
    """(student, v_scale, i_scale, osdi, module, state nodes) of a small clustered memristor student."""
    torch.manual_seed(0)
    s = build_student(
        StudentConfig(kind="clustered", n_in=1, n_out=1, tau_s=[3e-4, 1e-3, 9e-3], physics=DevicePhysics("memristor"))
    )
    with torch.no_grad():
        for p in s.parameters():
            p.add_(0.3 * torch.randn_like(p))
    va = emit_veriloga(s, Scales(np.array([V_SCALE]), np.array([I_SCALE]), 2e-7, 5e-5), module="psix_fanout")
    (work / "m.va").write_text(va.text)
    return s, V_SCALE, I_SCALE, spice.compile_va(work / "m.va", opt_level=1, cache_dir=work), va.module, va.state_nodes


def exported_student(model_dir: Path):
    """The same tuple for a directory of `psi-xlstm export` (or a run's veriloga_clustered)."""
    from psixlstm.distillation import load_student

    meta = json.loads((model_dir / "model.json").read_text())
    student, scales, _ = load_student(meta["student_dir"])
    osdi = model_dir / meta["osdi"]
    v, i = float(scales.input_scale_v[0]), float(scales.output_scale_a[0])
    return student, v, i, osdi, meta["module"], meta["state_nodes"]


def _without_wall(report: dict, sims: tuple[str, ...]) -> dict:
    for sim in sims:
        for counts in report[sim]["by_kind"].values():
            counts.pop("wall_s")
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, help="an exported memristor model directory (default: a small one)")
    parser.add_argument("--n", type=int, default=24, help="robustness stimuli per simulator")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--executor", choices=["process", "ray"], default="process")
    parser.add_argument("--simulator", choices=["ngspice", "vacask", "both"], default="ngspice")
    args = parser.parse_args()
    torch.set_num_threads(1)
    sims = ("ngspice", "vacask") if args.simulator == "both" else (args.simulator,)
    with tempfile.TemporaryDirectory() as tmp:
        student, *rest = exported_student(args.model) if args.model else small_student(Path(tmp))
        if args.executor == "ray":
            import ray

            ray.init(num_cpus=args.workers, include_dashboard=False)
        seconds, reports = {}, {}
        for workers in (1, args.workers):
            start = time.perf_counter()
            reports[workers] = robustness(student, *rest, sims, n=args.n, workers=workers, executor=args.executor)
            seconds[workers] = time.perf_counter() - start
    same = _without_wall(reports[1], sims) == _without_wall(reports[args.workers], sims)
    runs = args.n * len(sims)
    print(f"{runs} robustness runs ({', '.join(sims)}) plus {len(sims)} DC sweep(s); reports identical: {same}")
    print(f"{'serial':<36}{seconds[1]:7.2f} s")
    print(f"{f'{args.workers} workers ({args.executor}, incl. start)':<36}{seconds[args.workers]:7.2f} s")
    print(f"speedup {seconds[1] / seconds[args.workers]:.2f}x")


if __name__ == "__main__":
    main()
