"""SPICE layer: OpenVAF compilation, ngspice and VACASK runs, raw files, one waveform type for both."""

from .circuit import AC, Circuit, DCSweep, NativeDevice, OsdiDevice, Resistor, Transient, VoltageSource
from .openvaf import OpenVAFError, ToolNotFoundError, compile_va, openvaf_command, openvaf_version
from .raw import RawFileError, RawPlot, read_raw
from .run import (
    SimStats,
    SimulationError,
    Waveforms,
    ngspice_command,
    run_circuit,
    run_ngspice,
    run_vacask,
    vacask_command,
)

__all__ = [
    "AC",
    "Circuit",
    "DCSweep",
    "NativeDevice",
    "OpenVAFError",
    "OsdiDevice",
    "RawFileError",
    "RawPlot",
    "Resistor",
    "SimStats",
    "SimulationError",
    "ToolNotFoundError",
    "Transient",
    "VoltageSource",
    "Waveforms",
    "compile_va",
    "ngspice_command",
    "openvaf_command",
    "openvaf_version",
    "read_raw",
    "run_circuit",
    "run_ngspice",
    "run_vacask",
    "vacask_command",
]
