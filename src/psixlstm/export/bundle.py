"""Stage: a trained student -> a ready model directory: the .va, its .osdi, ngspice and VACASK testbenches and
model.json (module, ports, state nodes, hashes, the student it came from)."""

from __future__ import annotations

import json
from pathlib import Path

from .veriloga import emit_veriloga, example_stimuli, ngspice_testbench, vacask_testbench


def export_student(
    student_dir: str | Path, out_dir: str | Path, module: str = "psix_student", opt_level: int = 3
) -> dict:
    """Emit, compile (openvaf-r at `opt_level`, generic CPU) and write testbenches; returns model.json's content."""
    from .. import spice
    from ..distillation import load_student

    student, scales, metrics = load_student(student_dir)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    provenance = {
        "student_dir": str(Path(student_dir).resolve()),
        "test_nrmse_vs_truth": metrics["test"]["vs_clean"]["nrmse"],
        "units": "time s, voltage V, current A",
    }
    model = emit_veriloga(student, scales, module=module, provenance=provenance)
    va = out / f"{module}.va"
    va.write_text(model.text)
    osdi = spice.compile_va(va, opt_level=opt_level, target_cpu="generic", output=out / f"{module}.osdi")
    stims, t_stop, max_step = example_stimuli(student.cfg.physics.kind)
    for name, bench in (("testbench_ngspice.cir", ngspice_testbench), ("testbench_vacask.sim", vacask_testbench)):
        (out / name).write_text(bench(model, str(osdi.resolve()), stims, t_stop, max_step))
    meta = {
        "module": model.module,
        "state_nodes": model.state_nodes,
        "ports": list(model.ports),
        "driven": list(model.driven),
        "reference": model.reference,
        "sha256": model.sha256,
        "student_dir": str(Path(student_dir).resolve()),
        "osdi": osdi.name,
        "va": va.name,
        "lines": len(model.text.splitlines()),
        "states": student.n_states,
    }
    (out / "model.json").write_text(json.dumps(meta, indent=2))
    return meta
