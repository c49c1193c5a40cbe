"""Simulator-neutral test benches: elements, analyses, and their ngspice / VACASK netlists.

One `Circuit` (sources, resistors, OSDI devices, native ngspice devices) plus one analysis (`Transient`, `DCSweep`,
`AC`) renders to either simulator's netlist; `psixlstm.spice.run` runs it. Units: s, V, A, Ohm, Hz.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


class SourceWaveform(Protocol):
    """What a transient source needs from a stimulus (see `psixlstm.stimuli`)."""

    def ngspice_lines(self, name: str, p: str, n: str, t_stop_s: float) -> list[str]: ...
    def vacask_lines(self, name: str, p: str, n: str, t_stop_s: float) -> list[str]: ...


def _check_name(kind: str, name: str) -> None:
    if not _NAME.match(name):
        raise ValueError(f"{kind} name {name!r} must be lower-case letters, digits and '_', starting with a letter")


@dataclass(frozen=True)
class VoltageSource:
    """Independent voltage source from p to n; `waveform` for transients, `dc_v` / `ac_mag_v` otherwise.

    Its current (`Waveforms.current(name)`) follows the SPICE convention: positive into the p terminal, through
    the source, out of n; the current a device between p and ground draws is therefore `-current(name)`.
    """

    name: str
    p: str
    n: str
    waveform: SourceWaveform | None = None
    dc_v: float = 0.0
    ac_mag_v: float = 0.0

    def __post_init__(self) -> None:
        _check_name("source", self.name)
        if not self.name.startswith("v"):
            raise ValueError(f"voltage source name {self.name!r} must start with 'v' (SPICE convention)")


@dataclass(frozen=True)
class Resistor:
    name: str
    p: str
    n: str
    ohms: float

    def __post_init__(self) -> None:
        _check_name("resistor", self.name)
        if not self.ohms > 0:
            raise ValueError(f"resistor {self.name}: ohms must be > 0, got {self.ohms}")


@dataclass(frozen=True)
class OsdiDevice:
    """An instance of a compiled Verilog-A module; `params` are model parameters (OpenVAF default)."""

    name: str
    nodes: tuple[str, ...]
    module: str
    osdi_path: Path
    params: Mapping[str, float] = field(default_factory=dict)
    internal_nodes: tuple[str, ...] = ()  # saved as Waveforms.state(name, node)

    def __post_init__(self) -> None:
        _check_name("device", self.name)

    @property
    def ngspice_name(self) -> str:
        return self.name if self.name.startswith("n") else "n" + self.name  # OSDI instances start with N


@dataclass(frozen=True)
class NativeDevice:
    """A built-in ngspice device (BSIM4, Gummel-Poon): its instance and .model lines, ngspice only."""

    name: str
    nodes: tuple[str, ...]
    lines: tuple[str, ...]


Element = VoltageSource | Resistor | OsdiDevice | NativeDevice


# VACASK tran_fbr: the first step after a breakpoint as a fraction of the distance to the next one. VACASK accepts
# that step without an error check (it has no predictor yet), at any reltol. Its default 0.25 crossed a 0.85 us edge
# with a 1.2 % local error; 0.05 still left the fast states of a MOSFET student (tau 0.25 ns) a 173 ps unchecked step
# after the ramp ends, 99 % of its realistic-use drain error (NRMSE 2.0e-3; ngspice 7.7e-4). 0.01: drain 1.3e-4,
# gate 1.1e-3, at 3x the accepted points (1476 -> 4426)
VACASK_BREAKPOINT_STEP = 0.01


@dataclass(frozen=True)
class Transient:
    """Transient analysis from 0 to `stop_s`; `max_step_s` bounds the step (None: the simulator's default)."""

    stop_s: float
    step_s: float
    max_step_s: float | None = None
    reltol: float = 1e-4
    abstol_a: float = 1e-12
    vntol_v: float = 1e-6
    method: str = "trap"  # "trap", "gear" (ngspice) / "trap", "euler", "gear2" (VACASK)
    vacask_breakpoint_step: float = VACASK_BREAKPOINT_STEP  # VACASK tran_fbr

    def __post_init__(self) -> None:
        if not (self.stop_s > 0 and self.step_s > 0):
            raise ValueError(f"Transient needs stop_s > 0 and step_s > 0, got {self.stop_s}, {self.step_s}")


@dataclass(frozen=True)
class DCSweep:
    """DC sweep of one voltage source's dc value from start to stop (inclusive) in `points` points."""

    source: str
    start_v: float
    stop_v: float
    points: int
    reltol: float = 1e-4

    def __post_init__(self) -> None:
        if self.points < 2:
            raise ValueError(f"DCSweep needs points >= 2, got {self.points}")


@dataclass(frozen=True)
class AC:
    """Small-signal AC analysis, logarithmic in frequency; sources with ac_mag_v != 0 excite it."""

    start_hz: float
    stop_hz: float
    points_per_decade: int = 10
    reltol: float = 1e-4

    def __post_init__(self) -> None:
        if not (0 < self.start_hz < self.stop_hz):
            raise ValueError(f"AC needs 0 < start_hz < stop_hz, got {self.start_hz}, {self.stop_hz}")


Analysis = Transient | DCSweep | AC


@dataclass
class Circuit:
    title: str
    elements: list[Element]

    def __post_init__(self) -> None:
        names = [e.name for e in self.elements]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate element names: {dupes}")

    @property
    def sources(self) -> list[VoltageSource]:
        return [e for e in self.elements if isinstance(e, VoltageSource)]

    @property
    def nodes(self) -> list[str]:
        seen: dict[str, None] = {}
        for e in self.elements:
            for node in (e.p, e.n) if isinstance(e, VoltageSource | Resistor) else e.nodes:
                if node != "0":
                    seen[node] = None
        return list(seen)

    def osdi_files(self) -> list[Path]:
        return sorted({Path(e.osdi_path).resolve() for e in self.elements if isinstance(e, OsdiDevice)})


def _num(x: float) -> str:
    return repr(float(x))


def _check_sweep_source(circuit: Circuit, analysis: Analysis) -> None:
    if isinstance(analysis, DCSweep) and analysis.source not in {s.name for s in circuit.sources}:
        raise ValueError(f"DCSweep source {analysis.source!r} is not a voltage source of the circuit")


def ngspice_netlist(circuit: Circuit, analysis: Analysis, raw_path: Path) -> str:
    """The ngspice batch deck: elements, options and a .control block writing `raw_path`."""
    _check_sweep_source(circuit, analysis)
    stop = analysis.stop_s if isinstance(analysis, Transient) else 0.0
    lines = [f"* {circuit.title}"]
    saves: list[str] = [f"v({node})" for node in circuit.nodes]
    models: list[str] = []
    for e in circuit.elements:
        if isinstance(e, VoltageSource):
            if e.waveform is not None and isinstance(analysis, Transient):
                lines += e.waveform.ngspice_lines(e.name, e.p, e.n, stop)
            else:
                lines.append(f"{e.name} {e.p} {e.n} DC {_num(e.dc_v)} AC {_num(e.ac_mag_v)}")
            saves.append(f"i({e.name})")
        elif isinstance(e, Resistor):
            lines.append(f"r{e.name} {e.p} {e.n} {_num(e.ohms)}")
        elif isinstance(e, OsdiDevice):
            model = f"m_{e.name}"
            lines.append(f"{e.ngspice_name} {' '.join(e.nodes)} {model}")
            params = " ".join(f"{k}={_num(v)}" for k, v in e.params.items())
            models.append(f".model {model} {e.module} {params}".rstrip())
            saves += [f"v({e.ngspice_name}#{node})" for node in e.internal_nodes]
        else:
            lines += list(e.lines)
    lines += models
    if isinstance(analysis, Transient):
        method = "gear" if analysis.method.startswith("gear") else "trap"
        lines.append(
            f".options klu reltol={_num(analysis.reltol)} abstol={_num(analysis.abstol_a)} "
            f"vntol={_num(analysis.vntol_v)} method={method}"
        )
        max_step = f" {_num(analysis.max_step_s)}" if analysis.max_step_s else ""
        command = f"tran {_num(analysis.step_s)} {_num(analysis.stop_s)} 0{max_step}"
    elif isinstance(analysis, DCSweep):
        lines.append(f".options klu reltol={_num(analysis.reltol)}")
        step = (analysis.stop_v - analysis.start_v) / (analysis.points - 1)
        command = f"dc {analysis.source} {_num(analysis.start_v)} {_num(analysis.stop_v)} {_num(step)}"
    else:
        lines.append(f".options klu reltol={_num(analysis.reltol)}")
        command = f"ac dec {analysis.points_per_decade} {_num(analysis.start_hz)} {_num(analysis.stop_hz)}"
    lines += [".control", "set num_threads=1"]
    lines += [f"pre_osdi {path}" for path in circuit.osdi_files()]
    lines += [
        command,
        f"write {raw_path} {' '.join(saves)}",
        "rusage traniter tranpoints accept rejected time" if isinstance(analysis, Transient) else "rusage time",
        "quit",
        ".endc",
        ".end",
    ]
    return "\n".join(lines) + "\n"


def vacask_netlist(circuit: Circuit, analysis: Analysis) -> str:
    """The VACASK netlist; the analysis is named `an1`, so VACASK writes `an1.raw` in its working directory."""
    _check_sweep_source(circuit, analysis)
    for e in circuit.elements:
        if isinstance(e, NativeDevice):
            raise ValueError(f"element {e.name!r} is a native ngspice device; VACASK cannot run it")
    stop = analysis.stop_s if isinstance(analysis, Transient) else 0.0
    lines = [circuit.title, "ground 0"]
    lines += [f'load "{path}"' for path in circuit.osdi_files()]
    if any(isinstance(e, Resistor) for e in circuit.elements):
        lines.append('load "resistor.osdi"')
        lines.append("model resistor resistor")
    lines.append("model vsource vsource")
    for e in circuit.elements:
        if isinstance(e, OsdiDevice):
            params = " ".join(f"{k}={_num(v)}" for k, v in e.params.items())
            lines.append(f"model m_{e.name} {e.module} {params}".rstrip())
    for e in circuit.elements:
        if isinstance(e, VoltageSource):
            if e.waveform is not None and isinstance(analysis, Transient):
                lines += e.waveform.vacask_lines(e.name, e.p, e.n, stop)
            else:
                lines.append(f"{e.name} ({e.p} {e.n}) vsource dc={_num(e.dc_v)} mag={_num(e.ac_mag_v)}")
        elif isinstance(e, Resistor):
            lines.append(f"{e.name} ({e.p} {e.n}) resistor r={_num(e.ohms)}")
        elif isinstance(e, OsdiDevice):
            lines.append(f"{e.name} ({' '.join(e.nodes)}) m_{e.name}")
    lines.append("control")
    if isinstance(analysis, Transient):
        method = {"trap": "trap", "euler": "euler", "gear": "gear2", "gear2": "gear2"}[analysis.method]
        lines.append(
            f"  options reltol={_num(analysis.reltol)} abstol={_num(analysis.abstol_a)} "
            f'vntol={_num(analysis.vntol_v)} tran_method="{method}" tran_fbr={_num(analysis.vacask_breakpoint_step)}'
        )
        max_step = f" maxstep={_num(analysis.max_step_s)}" if analysis.max_step_s else ""
        lines.append(f"  analysis an1 tran step={_num(analysis.step_s)} stop={_num(analysis.stop_s)}{max_step}")
    elif isinstance(analysis, DCSweep):
        lines.append(f"  options reltol={_num(analysis.reltol)}")
        lines.append(
            f'  sweep sw1 instance="{analysis.source}" parameter="dc" from={_num(analysis.start_v)} '
            f"to={_num(analysis.stop_v)} step={_num((analysis.stop_v - analysis.start_v) / (analysis.points - 1))}"
        )
        lines.append("    analysis an1 op")
    else:
        lines.append(f"  options reltol={_num(analysis.reltol)}")
        lines.append(
            f'  analysis an1 ac from={_num(analysis.start_hz)} to={_num(analysis.stop_hz)} mode="dec" '
            f"points={analysis.points_per_decade}"
        )
    lines += ["  print stats", "endc"]
    return "\n".join(lines) + "\n"
