"""MOSFET (BSIM4) and BJT (Gummel-Poon) ground truth: the simulators' own device models, run in ngspice.

Each device is driven by one voltage source per input terminal (the others grounded); the outputs are the
currents flowing INTO the driven terminals (A), so the grounded terminal carries minus their sum (KCL).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..spice import Circuit, NativeDevice, Transient, VoltageSource, Waveforms, run_ngspice

BSIM4_NMOS = NativeDevice(
    name="m1",
    nodes=("d", "g", "0", "0"),
    lines=(
        "M1 d g 0 0 nch W=10u L=0.18u",
        "* BSIM4.8 NMOS with ngspice's default parameter set and charge model (capmod=2)",
        ".model nch nmos level=54 version=4.8",
    ),
)

GUMMEL_POON_NPN = NativeDevice(
    name="q1",
    nodes=("c", "b", "0"),
    lines=(
        "Q1 c b 0 q2n2222",
        "* 2N2222-like Gummel-Poon NPN with junction capacitances and transit times (charge storage)",
        ".model q2n2222 npn(IS=14.34f XTI=3 EG=1.11 VAF=74.03 BF=255.9 NE=1.307 ISE=14.34f IKF=.2847 XTB=1.5 "
        "BR=6.092 NC=2 ISC=0 IKR=0 RC=1 CJC=7.306p MJC=.3416 VJC=.75 FC=.5 CJE=22.01p MJE=.377 VJE=.75 "
        "TR=46.91n TF=411.1p ITF=.6 VTF=1.7 XTF=3 RB=10)",
    ),
)


@dataclass(frozen=True)
class SpiceReferenceDevice:
    """A native ngspice device with its driven terminals; `sources[k]` drives input k at node `nodes[k]`."""

    name: str
    input_names: tuple[str, ...]
    nodes: tuple[str, ...]  # driven terminal node per input
    device: NativeDevice
    input_range_v: tuple[tuple[float, float], ...]  # training range per input

    @property
    def output_names(self) -> tuple[str, ...]:
        """Currents into the driven terminals, in the order of `nodes` (e.g. i_g, i_d)."""
        return tuple(f"i_{node}" for node in self.nodes)

    def circuit(self, stimuli: Sequence) -> Circuit:
        if len(stimuli) != len(self.nodes):
            raise ValueError(f"{self.name} needs {len(self.nodes)} stimuli ({self.input_names}), got {len(stimuli)}")
        sources = [
            VoltageSource(f"v{node}", node, "0", waveform=s) for node, s in zip(self.nodes, stimuli, strict=True)
        ]
        return Circuit(f"psixlstm {self.name} reference", [*sources, self.device])

    def terminal_currents(self, waves: Waveforms) -> np.ndarray:
        """(N, n_out) currents into the driven terminals, A."""
        return np.stack([-waves.current(f"v{node}") for node in self.nodes], axis=1)

    def simulate(
        self, stimuli: Sequence, t_s: np.ndarray, *, max_step_s: float, reltol: float = 1e-5
    ) -> tuple[np.ndarray, np.ndarray]:
        """Run ngspice and return (inputs (N, n_in) V, outputs (N, n_out) A) sampled at `t_s`.

        SPICE's own accepted grid (refined at every source breakpoint, step <= max_step_s) is interpolated
        linearly onto `t_s`; the inputs are the sources' exact values at `t_s`.
        """
        t_s = np.asarray(t_s, dtype=np.float64)
        analysis = Transient(stop_s=float(t_s[-1]), step_s=max_step_s, max_step_s=max_step_s, reltol=reltol)
        waves = run_ngspice(self.circuit(stimuli), analysis)
        t_sim, keep = np.unique(waves.axis, return_index=True)
        currents = self.terminal_currents(waves)[keep]
        outputs = np.stack([np.interp(t_s, t_sim, currents[:, k]) for k in range(currents.shape[1])], axis=1)
        inputs = np.stack([s.sample(t_s) for s in stimuli], axis=1)
        return inputs, outputs


MOSFET = SpiceReferenceDevice(
    name="mosfet",
    input_names=("v_gs", "v_ds"),
    nodes=("g", "d"),
    device=BSIM4_NMOS,
    input_range_v=((0.0, 1.2), (0.0, 1.2)),
)

BJT = SpiceReferenceDevice(
    name="bjt",
    input_names=("v_be", "v_ce"),
    nodes=("b", "c"),
    device=GUMMEL_POON_NPN,
    input_range_v=((0.0, 0.72), (0.3, 5.0)),
)
