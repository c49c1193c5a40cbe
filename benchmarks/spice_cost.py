"""SPICE cost of exported students against the native model of the same device in the same testbench, measured side
by side in one run: for every repeat the student's transient and the reference's transient run back to back
(A B A B ...), on the same stimulus, and each pair gives one ratio; the ratios' median and IQR over the repeats are
what to compare (machines are noisy; absolute microseconds are not).

    .venv/bin/python benchmarks/spice_cost.py --model DIR [--model DIR ...] [--repeats 5] [--simulator both]
        [--memristor-duration 0.02] [--terminal-duration 1e-5] [--json FILE]

DIR is an export directory (`psi-xlstm export`, or a run's veriloga_clustered / veriloga_lowrank). References:
memristor students against the physics memristor Verilog-A (src/psixlstm/devices/memristor.va, openvaf-r -O1) in
ngspice and VACASK; MOSFET / BJT students against BSIM4 (level 54, 4.8) / Gummel-Poon, ngspice's native devices, and
in VACASK the same devices as VACASK ships them (`mod/spice/bsim4v8.osdi`, `mod/spice/bjt.osdi`: ngspice's device
code built as OSDI), with the parameters of `psixlstm.devices.spice_reference` (their DC currents are compared with
ngspice's at one bias and printed, so the two simulators run the same device).

The testbench is verify's (`Testbench`, `cost_ratio`): one voltage source per driven terminal, reltol 1e-4, max step
from the stimulus bandwidth (MOSFET/BJT: at most duration / 200); stimuli as in verify (`memristor_program`, one
`terminal_program` per driven terminal), seed + repeat. Per pair: wall time per accepted step (the simulator process,
start-up included: what `cost_ratio` reports), simulator time per accepted step (ngspice: "Total analysis time";
VACASK: "NR solver time", which excludes parsing and start-up), Newton iterations (total and per accepted step).
The breakdown shows where the cost goes: states (internal nodes), the extra implicit equations OpenVAF adds,
the matrix size (unknowns, ground excluded) and non-zeros, unrolled weights (the student's parameters and the numeric
literals of its analog block), Newton iterations per step, simulator time per Newton iteration and the share of it
spent evaluating and loading the model; the per-step ratio is the product of the Newton-per-step ratio and the
time-per-iteration ratio. Without --model it exports a small clustered memristor student (untrained weights: the
cost does not depend on their values).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from psixlstm import spice
from psixlstm.export.veriloga import TERMINALS
from psixlstm.verification import Testbench, bandwidth_max_step

TARGET_RATIO = 2.0  # issue #5: at most 2x the native reference per accepted step
RELTOL = 1e-4  # verify's realistic-use setting
TERMINAL_STEPS_PER_RUN = 200  # MOSFET/BJT max step: at most duration / 200, as in verify
VACASK_NATIVE = {"mosfet": ("bsim4v8.osdi", "sp_bsim4v8"), "bjt": ("bjt.osdi", "sp_bjt")}
_SI = {"t": 1e12, "g": 1e9, "meg": 1e6, "k": 1e3, "m": 1e-3, "u": 1e-6, "n": 1e-9, "p": 1e-12, "f": 1e-15}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", type=Path, action="append", default=[], help="export directory (repeatable)")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved student/reference pairs per model")
    parser.add_argument("--simulator", choices=["ngspice", "vacask", "both"], default="both")
    parser.add_argument("--memristor-duration", type=float, default=20e-3, help="s, at least 5 ms")
    parser.add_argument("--terminal-duration", type=float, default=10e-6, help="s (MOSFET/BJT)")
    parser.add_argument("--seed", type=int, default=12345, help="stimulus seed of the first repeat")
    parser.add_argument("--json", type=Path, help="write every run and summary here")


# ------------------------------------------------------------------ models and references


def _device_of(meta: dict) -> str:
    for device, (driven, reference, ports) in TERMINALS.items():
        if tuple(meta["ports"]) == ports and tuple(meta["driven"]) == driven and meta["reference"] == reference:
            return device
    raise ValueError(f"unknown terminal layout {meta['ports']} (driven {meta['driven']})")


def _literals(va_text: str) -> int:
    """Numeric literals in the analog block: the unrolled weights (plus a few constants such as 0.0 and 1.0)."""
    body = va_text.split("analog begin", 1)[-1]
    return len(re.findall(r"(?<![\w.])\d+\.\d*(?:[eE][+-]?\d+)?", body))


def load_model(model_dir: Path) -> dict:
    """An export directory as a benchmark entry: device, testbench, weights."""
    meta = json.loads((model_dir / "model.json").read_text())
    device = _device_of(meta)
    bench = Testbench.of_export(model_dir, meta)
    params, kind = None, None
    student_dir = Path(meta.get("student_dir", ""))
    if (student_dir / "student.json").exists():
        from psixlstm.distillation import load_student

        student = load_student(student_dir)[0]
        params, kind = int(student.n_params), student.cfg.kind
    va = model_dir / meta["va"]
    return {
        "dir": str(model_dir),
        "name": f"{device} {kind or meta['module']}",
        "device": device,
        "bench": bench,
        "states": len(meta["state_nodes"]),
        "params": params,
        "literals": _literals(va.read_text()) if va.exists() else None,
    }


def _spice_number(text: str) -> float:
    m = re.fullmatch(r"([-+]?[0-9.]+(?:e[-+]?\d+)?)(meg|[tgkmunpf])?[a-z]*", text.lower())
    if not m:
        raise ValueError(f"not a SPICE number: {text!r}")
    return float(m.group(1)) * _SI.get(m.group(2) or "", 1.0)


def _native_params(native) -> dict:
    """The instance and .model parameters of a native ngspice device, as OSDI model parameters (lower case;
    `type` from nmos/pmos/npn/pnp; level and version dropped: the OSDI file is that model)."""
    params: dict[str, float] = {}
    for line in native.device.lines:
        if line.startswith("*"):
            continue
        text = line.replace("(", " ").replace(")", " ")
        if line.lower().startswith(".model"):
            kind = text.split()[2].lower()
            params["type"] = {"nmos": 1.0, "npn": 1.0, "pmos": -1.0, "pnp": -1.0}[kind]
        for key, value in re.findall(r"(\w+)\s*=\s*([^\s]+)", text):
            if key.lower() not in ("level", "version"):
                params[key.lower()] = _spice_number(value)
    return params


def vacask_native(device: str, native):
    """VACASK's build of the native device as an OsdiDevice, or None where this VACASK does not ship it."""
    file, module = VACASK_NATIVE[device]
    try:
        path = Path(spice.vacask_command()).resolve().parents[1] / "lib" / "vacask" / "mod" / "spice" / file
    except spice.ToolNotFoundError:
        return None
    if not path.exists():
        return None
    return spice.OsdiDevice(native.device.name, native.device.nodes, module, path, _native_params(native))


def _native_dc_check(native, osdi_device) -> float:
    """Max relative difference of the driven-terminal currents, ngspice native vs VACASK's OSDI build, at the top
    of each input's training range (one operating point)."""
    bias = [hi for _, hi in native.input_range_v]
    sources = [spice.VoltageSource(f"v{n}", n, "0", dc_v=b) for n, b in zip(native.nodes, bias, strict=True)]
    sweep = spice.DCSweep(f"v{native.nodes[0]}", bias[0], bias[0] * 0.999, 2)
    a = native.terminal_currents(spice.run_ngspice(spice.Circuit("ng", [*sources, native.device]), sweep))[0]
    b = native.terminal_currents(spice.run_vacask(spice.Circuit("vc", [*sources, osdi_device]), sweep))[0]
    return float(np.max(np.abs(a - b)) / np.max(np.abs(a)))


def memristor_reference() -> Testbench:
    from psixlstm.devices import memristor

    return Testbench(
        spice.compile_va(memristor.va_path(), opt_level=1),
        memristor.VA_MODULE,
        tuple(memristor.STATE_NODES),
        params=memristor.MemristorParams().to_dict(),
    )


def stimulus(device: str, seed: int, args: argparse.Namespace) -> tuple[list, float, float]:
    """(stimuli, one per driven terminal; duration s; max step s), as verify draws them."""
    from psixlstm.data.generate import memristor_program, terminal_program
    from psixlstm.devices.spice_reference import BJT, MOSFET

    rng = np.random.default_rng(seed)
    if device == "memristor":
        stim = memristor_program(rng, args.memristor_duration)
        return [stim], args.memristor_duration, bandwidth_max_step(stim, args.memristor_duration)
    duration = args.terminal_duration
    stims = [terminal_program(rng, duration, lo, hi) for lo, hi in {"mosfet": MOSFET, "bjt": BJT}[device].input_range_v]
    max_step = min(min(bandwidth_max_step(s, duration) for s in stims), duration / TERMINAL_STEPS_PER_RUN)
    return stims, duration, max_step


# ------------------------------------------------------------------ runs


def _stat(pattern: str, log: str) -> float:
    m = re.search(pattern + r"\s*[=:]\s*([0-9.eE+-]+)", log)
    return float(m.group(1)) if m else float("nan")


def _int_stat(pattern: str, log: str) -> int:
    value = _stat(pattern, log)
    return int(value) if np.isfinite(value) else -1


def timed_run(circuit, analysis, simulator: str) -> dict:
    w = spice.run_circuit(circuit, analysis, simulator)
    s = w.stats
    sim_s = s.analysis_time_s if simulator == "ngspice" else _stat(r"NR solver time", w.log)
    run = {
        "wall_s": s.wall_time_s,
        "sim_s": sim_s,
        "accepted": s.accepted_points,
        "rejected": s.rejected_points,
        "newton": s.newton_iterations,
    }
    if simulator == "vacask":  # the matrix and the evaluation share come with every VACASK run
        run["unknowns"] = _int_stat(r"Number of unknowns", w.log)
        run["nonzeros"] = _int_stat(r"Initial number of nonzeros", w.log)
        run["load_share"] = _stat(r"Eval and load time", w.log) / sim_s
    return run


def ngspice_profile(circuit, analysis) -> dict:
    """One ngspice run of the same deck with `rusage all`: matrix size (equations, ground excluded), non-zeros and
    the share of the transient spent loading (evaluating) the devices."""
    with tempfile.TemporaryDirectory(prefix="psix-cost-") as tmp:
        deck = spice.circuit.ngspice_netlist(circuit, analysis, Path(tmp) / "out.raw")
        deck = re.sub(r"^rusage .*$", "rusage all", deck, flags=re.M)
        (Path(tmp) / "run.cir").write_text(deck)
        proc = subprocess.run(
            [spice.ngspice_command(), "-b", "run.cir"], cwd=tmp, capture_output=True, text=True, timeout=600
        )
    log = proc.stdout + proc.stderr
    return {
        "unknowns": _int_stat(r"Circuit Equations", log) - 1,  # ngspice counts the ground row
        "nonzeros": _int_stat(r"Circuit original non-zeroes", log),
        "load_share": _stat(r"Transient load time", log) / _stat(r"Transient analysis time", log),
    }


def _testbench_unknowns(circuit, t_stop_s: float) -> int:
    """Unknowns of the sources alone: every voltage-source element (a stimulus may be several in series) adds its
    branch current and the node at its p terminal."""
    elements = 0
    for src in circuit.sources:
        lines = src.waveform.ngspice_lines(src.name, src.p, src.n, t_stop_s) if src.waveform is not None else ["v"]
        elements += sum(not line.startswith("+") for line in lines)
    return 2 * elements


def _ratios(a: dict, b: dict) -> dict:
    return {
        "wall_per_step": (a["wall_s"] / a["accepted"]) / (b["wall_s"] / b["accepted"]),
        "sim_per_step": (a["sim_s"] / a["accepted"]) / (b["sim_s"] / b["accepted"]),
        "newton": a["newton"] / b["newton"],
        "newton_per_step": (a["newton"] / a["accepted"]) / (b["newton"] / b["accepted"]),
        "sim_per_newton": (a["sim_s"] / a["newton"]) / (b["sim_s"] / b["newton"]),
        "accepted": a["accepted"] / b["accepted"],
    }


def _spread(values: list[float]) -> dict:
    q25, med, q75 = np.percentile(np.asarray(values, float), [25, 50, 75])
    return {"median": float(med), "q25": float(q25), "q75": float(q75), "iqr": float(q75 - q25)}


def _per_run(runs: list[dict], extra: dict) -> dict:
    """Median per-run numbers of one side (student or reference) for the breakdown."""
    med = {k: float(np.median([r[k] for r in runs])) for k in ("wall_s", "sim_s", "accepted", "newton")}
    out = dict(extra)
    out.update(
        {
            "accepted": med["accepted"],
            "newton_per_step": med["newton"] / med["accepted"],
            "wall_us_per_step": 1e6 * med["wall_s"] / med["accepted"],
            "sim_us_per_step": 1e6 * med["sim_s"] / med["accepted"],
            "sim_us_per_newton": 1e6 * med["sim_s"] / med["newton"],
        }
    )
    return out


def benchmark_pair(entry: dict, simulator: str, reference: dict, args: argparse.Namespace) -> dict:
    """Interleaved repeats of the student (A) and the reference (B) in `simulator`; ratios per pair, their spread,
    and the breakdown."""
    student_bench = entry["bench"]
    profiles: dict[str, dict] = {}
    repeats, side_runs = [], {"student": [], "reference": []}
    for r in range(-1, args.repeats):  # r = -1: warm-up pair (file cache, .osdi load, matrix profile), not counted
        stims, duration, max_step = stimulus(entry["device"], args.seed + max(r, 0), args)
        analysis = spice.Transient(duration, max_step, max_step_s=max_step, reltol=RELTOL)
        circuits = {"student": student_bench.circuit(stims), "reference": reference["circuit"](stims)}
        if r < 0:
            for side, circuit in circuits.items():
                if simulator == "ngspice":
                    profiles[side] = ngspice_profile(circuit, analysis)
                else:
                    profiles[side] = timed_run(circuit, analysis, simulator)
                profiles[side]["internal"] = profiles[side]["unknowns"] - _testbench_unknowns(circuit, duration)
            continue
        a = timed_run(circuits["student"], analysis, simulator)
        b = timed_run(circuits["reference"], analysis, simulator)
        side_runs["student"].append(a)
        side_runs["reference"].append(b)
        repeats.append(
            {"seed": args.seed + r, "max_step_s": max_step, "student": a, "reference": b, "ratios": _ratios(a, b)}
        )
    summary = {key: _spread([p["ratios"][key] for p in repeats]) for key in repeats[0]["ratios"]}
    breakdown = {}
    for side, extra in (
        ("student", {"states": entry["states"], "params": entry["params"], "literals": entry["literals"]}),
        ("reference", {"states": reference["states"], "params": None, "literals": None}),
    ):
        prof = profiles[side]
        load = (
            prof["load_share"]
            if simulator == "ngspice"
            else float(np.median([r["load_share"] for r in side_runs[side]]))
        )
        matrix = {
            "unknowns": prof["unknowns"],
            "internal": prof["internal"],
            "nonzeros": prof["nonzeros"],
            "load_share": load,
        }
        breakdown[side] = _per_run(side_runs[side], {**extra, **matrix})
    return {
        "reference": reference["name"],
        "repeats": repeats,
        "summary": summary,
        "breakdown": breakdown,
        "misses_target": summary["wall_per_step"]["median"] > TARGET_RATIO
        or summary["sim_per_step"]["median"] > TARGET_RATIO,
        **({"native_dc_rel_diff_vs_ngspice": reference["dc_check"]} if "dc_check" in reference else {}),
    }


def references(device: str, simulator: str) -> dict | str:
    """The reference of `device` in `simulator` (a dict with a circuit factory), or why there is none."""
    if device == "memristor":
        from psixlstm.devices import memristor

        bench = memristor_reference()
        return {
            "name": f"{memristor.VA_MODULE} (memristor.va)",
            "circuit": bench.circuit,
            "states": len(bench.state_nodes),
        }
    from psixlstm.devices.spice_reference import BJT, MOSFET

    native = {"mosfet": MOSFET, "bjt": BJT}[device]
    label = {"mosfet": "BSIM4", "bjt": "Gummel-Poon"}[device]
    if simulator == "ngspice":
        return {"name": f"{label} (ngspice native)", "circuit": native.circuit, "states": None}
    osdi = vacask_native(device, native)
    if osdi is None:
        return f"this VACASK ships no {VACASK_NATIVE[device][0]}"

    def circuit(stims):
        sources = [spice.VoltageSource(f"v{n}", n, "0", waveform=s) for n, s in zip(native.nodes, stims, strict=True)]
        return spice.Circuit(f"psixlstm {native.name} reference (VACASK)", [*sources, osdi])

    name = f"{label} (VACASK {VACASK_NATIVE[device][1]})"
    return {"name": name, "circuit": circuit, "states": None, "dc_check": _native_dc_check(native, osdi)}


# ------------------------------------------------------------------ output


def _fmt(s: dict, digits: int = 2) -> str:
    return f"{s['median']:.{digits}f} [{s['q25']:.{digits}f}-{s['q75']:.{digits}f}]"


def print_report(report: dict) -> None:
    n = report["config"]["repeats"]
    print(f"SPICE cost, student / native reference in the same testbench: median [IQR] over {n} interleaved pairs")
    head = f"{'model':<22}{'sim':<9}{'reference':<34}{'wall/step':>20}{'sim time/step':>20}{'Newton':>20}"
    print(head + f"{'Newton/step':>20}{'time/Newton':>20}")
    for m in report["models"]:
        for sim, e in m["simulators"].items():
            if "skipped" in e:
                print(f"{m['name']:<22}{sim:<9}skipped: {e['skipped']}")
                continue
            s = e["summary"]
            row = f"{m['name']:<22}{sim:<9}{e['reference']:<34}{_fmt(s['wall_per_step']):>20}"
            row += f"{_fmt(s['sim_per_step']):>20}{_fmt(s['newton']):>20}{_fmt(s['newton_per_step']):>20}"
            print(row + f"{_fmt(s['sim_per_newton']):>20}" + ("  > 2x" if e["misses_target"] else ""))
            if "native_dc_rel_diff_vs_ngspice" in e:
                print(
                    f"{'':<31}(VACASK's build of the native device vs ngspice's at one bias: DC currents differ by "
                    f"{e['native_dc_rel_diff_vs_ngspice']:.1e} relative)"
                )
    print()
    print("where the cost goes (medians per run): states = state nodes the model declares; internal = unknowns the")
    print("device adds (matrix size without ground, terminal nodes and source branches): states plus the implicit")
    print("equations OpenVAF adds, or a native model's internal nodes; weights = parameters / numeric literals in the")
    print("analog block; load = share of the simulator time spent evaluating and loading the devices")
    head = f"{'model':<22}{'sim':<9}{'side':<11}{'states':>7}{'internal':>9}{'unknowns':>9}{'nnz':>6}{'weights':>12}"
    print(head + f"{'Newton/step':>12}{'us/step wall':>13}{'us/step sim':>12}{'us/Newton':>10}{'load':>6}")
    for m in report["models"]:
        for sim, e in m["simulators"].items():
            if "skipped" in e:
                continue
            for side, b in e["breakdown"].items():
                states = "-" if b["states"] is None else str(b["states"])
                internal = str(b["internal"])
                weights = "-" if b["params"] is None else f"{b['params']}/{b['literals']}"
                row = f"{m['name']:<22}{sim:<9}{side:<11}{states:>7}{internal:>9}{int(b['unknowns']):>9}"
                row += (
                    f"{int(b['nonzeros']):>6}{weights:>12}{b['newton_per_step']:>12.2f}{b['wall_us_per_step']:>13.1f}"
                )
                print(row + f"{b['sim_us_per_step']:>12.1f}{b['sim_us_per_newton']:>10.2f}{b['load_share']:>6.0%}")
            if e["misses_target"]:
                s = {k: v["median"] for k, v in e["summary"].items()}
                print(
                    f"  -> misses {TARGET_RATIO:g}x: sim time/step ratio {s['sim_per_step']:.2f} = Newton/step "
                    f"{s['newton_per_step']:.2f} x time/Newton {s['sim_per_newton']:.2f}"
                )


def run(args: argparse.Namespace, models: list[Path]) -> dict:
    sims = ("ngspice", "vacask") if args.simulator == "both" else (args.simulator,)
    report: dict = {
        "config": {
            "repeats": args.repeats,
            "simulators": list(sims),
            "memristor_duration_s": args.memristor_duration,
            "terminal_duration_s": args.terminal_duration,
            "seed": args.seed,
            "reltol": RELTOL,
            "target_ratio": TARGET_RATIO,
        },
        "models": [],
    }
    refs: dict[tuple[str, str], dict | str] = {}
    for model_dir in models:
        entry = load_model(model_dir)
        result = {"dir": entry["dir"], "name": entry["name"], "device": entry["device"], "simulators": {}}
        for sim in sims:
            key = (entry["device"], sim)
            if key not in refs:
                refs[key] = references(*key)
            ref = refs[key]
            if isinstance(ref, str):
                result["simulators"][sim] = {"skipped": ref}
                continue
            pair = benchmark_pair(entry, sim, ref, args)
            result["simulators"][sim] = pair
        report["models"].append(result)
    return report


def _small_export(work: Path) -> Path:
    """A small clustered memristor student, saved and exported at -O1 (the fanout benchmark's)."""
    import torch

    from psixlstm.data import Scales
    from psixlstm.distillation import save_student
    from psixlstm.export import export_student
    from psixlstm.models.students import StudentConfig, build_student
    from psixlstm.physics import DevicePhysics

    torch.manual_seed(0)
    s = build_student(
        StudentConfig(kind="clustered", n_in=1, n_out=1, tau_s=[3e-4, 1e-3, 9e-3], physics=DevicePhysics("memristor"))
    )
    with torch.no_grad():
        for p in s.parameters():
            p.add_(0.3 * torch.randn_like(p))
    scales = Scales(np.array([1.4]), np.array([3e-3]), 2e-7, 5e-5)
    (work / "student").mkdir()
    save_student(s, scales, {"test": {"vs_clean": {"nrmse": float("nan")}}}, work / "student", {})
    export_student(work / "student", work / "export", opt_level=1)
    return work / "export"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be >= 1")
    if args.memristor_duration < 5e-3:
        parser.error("--memristor-duration must be >= 5 ms (a random memristor program needs room)")
    with tempfile.TemporaryDirectory() as tmp:
        models = args.model or [_small_export(Path(tmp))]
        report = run(args, models)
    print_report(report)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main(sys.argv[1:])
