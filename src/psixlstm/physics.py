"""Device physics: structural readouts (what is built in) and residual terms (what is checked and penalised).

Built in, by device kind:
- memristor (2 terminals): I = V * G(state, V) with G >= 0, so the current vanishes at V = 0 (pinched hysteresis)
  and V * I >= 0 (passive).
- mosfet / bjt (driven terminals + a grounded one): I_k = S_k(state, V) + dQ_k/dt with the grounded terminal
  carrying -sum(I_k) and -sum(Q_k): KCL and charge conservation hold by construction. MOSFET drain static current
  S_d = V_DS * G_d with G_d >= 0: zero at V_DS = 0; MOSFET gate static current S_g = 0: the gate is insulated, its
  current is only dQ_g/dt (a learned gate conductance gave the exported model's Y_gg a 1 Hz floor 130 dB above
  BSIM4's).
Residual terms (weighted, logged, reported as violation metrics):
- all devices: sampling invariance, the device is an ODE, so the same input on a 2x finer grid must give the
  same current at the shared points;
- mosfet: source/drain exchange symmetry of the static drain current, I_d(V_GS, V_DS) = -I_d(V_GS - V_DS, -V_DS);
- bjt: static currents vanish at zero bias (all junctions at 0 V).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

DEVICE_KINDS = ("memristor", "mosfet", "bjt", "generic")


@dataclass(frozen=True)
class DevicePhysics:
    """Which physics applies to a dataset's channels (indices into its inputs/outputs)."""

    kind: str
    v_ds_index: int | None = None  # mosfet: input channel of V_DS
    v_gs_index: int | None = None
    i_d_index: int | None = None  # mosfet: output channel of the drain current
    i_g_index: int | None = None  # mosfet: output channel of the gate current (static part 0; None: not imposed)
    v_be_index: int | None = None  # bjt: input channel of V_BE (the students' junction head; None: no head)

    @classmethod
    def for_dataset(cls, device: str, input_names: list[str], output_names: list[str]) -> DevicePhysics:
        if device in ("memristor", "vteam-paper", "perovskite") or (len(input_names) == 1 and len(output_names) == 1):
            return cls("memristor")
        if device == "mosfet":
            return cls(
                "mosfet",
                v_ds_index=input_names.index("v_ds"),
                v_gs_index=input_names.index("v_gs"),
                i_d_index=output_names.index("i_d"),
                i_g_index=output_names.index("i_g") if "i_g" in output_names else None,
            )
        if device == "bjt":
            return cls("bjt", v_be_index=input_names.index("v_be") if "v_be" in input_names else None)
        return cls("generic")


def softplus(z: Tensor) -> Tensor:
    """ln(1 + e^z) written as max(z, 0) + ln(1 + e^-|z|): exact for every z, no threshold switch, and the same
    expression the Verilog-A export writes."""
    return torch.clamp(z, min=0) + torch.log1p(torch.exp(-z.abs()))


def static_structure(physics: DevicePhysics, s: Tensor, u: Tensor) -> Tensor:
    """Impose what is known of the static currents on raw head outputs s (normalised units): memristor
    I = u softplus(s), pinched and passive; MOSFET drain I_d = u_ds softplus(s_d), zero at V_DS = 0, and MOSFET gate
    0 (where `i_g_index` is set: the gate current is the charge current alone)."""
    if physics.kind == "memristor":
        return u * softplus(s)
    if physics.kind == "mosfet":  # out of place: softplus keeps its input for the backward pass
        k, j = physics.i_d_index, physics.v_ds_index
        cols = list(s.unbind(-1))
        cols[k] = u[..., j] * softplus(s[..., k])
        if physics.i_g_index is not None:
            cols[physics.i_g_index] = torch.zeros_like(s[..., physics.i_g_index])
        return torch.stack(cols, -1)
    return s


def charge_current(q: Tensor, q_prev: Tensor | None, dt: Tensor, t_scale_s: float) -> tuple[Tensor, Tensor]:
    """dQ/dt of a charge trajectory q (B, T, n) as a backward difference over each step dt (B, T) in seconds, per
    t_scale_s; the step before the first is q_prev (or q itself at the start). Returns (current, last charge)."""
    q_before = torch.cat([(q[:, :1] if q_prev is None else q_prev[:, None]), q[:, :-1]], 1)
    return (q - q_before) / (dt[..., None] / t_scale_s), q[:, -1]


def mlp(d_in: int, d_hidden: int, d_out: int, depth: int = 2) -> nn.Sequential:
    layers: list[nn.Module] = []
    for k in range(depth):
        layers += [nn.Linear(d_in if k == 0 else d_hidden, d_hidden), nn.SiLU()]
    layers.append(nn.Linear(d_hidden, d_out))
    return nn.Sequential(*layers)


class PhysicsReadout(nn.Module):
    """Maps recurrent features and the (normalised) terminal voltages to terminal currents with the physics built in.

    Voltages enter as u = V / v_scale and currents leave as y = I / i_scale; `v_scale` is needed for the MOSFET
    symmetry (it mixes channels). The charge path uses t_scale_s to keep dQ/dt of order one.
    """

    def __init__(
        self, physics: DevicePhysics, d_feat: int, n_in: int, n_out: int, d_hidden: int, v_scale, t_scale_s: float
    ):
        super().__init__()
        self.physics, self.n_in, self.n_out = physics, n_in, n_out
        self.register_buffer("v_scale", torch.as_tensor(v_scale, dtype=torch.float32).reshape(n_in))
        self.t_scale_s = float(t_scale_s)
        self.static = mlp(d_feat + n_in, d_hidden, n_out)
        self.charge = mlp(d_feat + n_in, d_hidden, n_out) if physics.kind in ("mosfet", "bjt") else None

    def static_current(self, feat: Tensor, u: Tensor) -> Tensor:
        """Static (conduction) currents, normalised."""
        return static_structure(self.physics, self.static(torch.cat([feat, u], -1)), u)

    def forward(self, feat: Tensor, u: Tensor, dt: Tensor, q_prev: Tensor | None):
        """(B, T, d_feat), (B, T, n_in), (B, T) s, charge of the step before (B, n_out) -> currents, last charge."""
        y = self.static_current(feat, u)
        if self.charge is None:
            return y, None
        q = self.charge(torch.cat([feat, u], -1))  # (B, T, n_out), normalised charge
        i_charge, q_last = charge_current(q, q_prev, dt, self.t_scale_s)
        return y + i_charge, q_last


def symmetry_residual(readout: PhysicsReadout, feat: Tensor, u: Tensor) -> Tensor:
    """MOSFET: mean squared I_d(V_GS, V_DS) + I_d(V_GS - V_DS, -V_DS) of the static head, normalised."""
    p = readout.physics
    v = u * readout.v_scale
    v_swap = v.clone()
    v_swap[..., p.v_gs_index] = v[..., p.v_gs_index] - v[..., p.v_ds_index]
    v_swap[..., p.v_ds_index] = -v[..., p.v_ds_index]
    i_d = readout.static_current(feat, u)[..., p.i_d_index]
    i_d_swap = readout.static_current(feat, v_swap / readout.v_scale)[..., p.i_d_index]
    return ((i_d + i_d_swap) ** 2).mean()


def zero_bias_residual(readout: PhysicsReadout, feat: Tensor) -> Tensor:
    """BJT: mean squared static currents at zero terminal voltages."""
    zeros = torch.zeros(*feat.shape[:-1], readout.n_in, device=feat.device)
    return (readout.static_current(feat, zeros) ** 2).mean()


def refine_grid(u: Tensor, dt: Tensor) -> tuple[Tensor, Tensor]:
    """Insert a midpoint in every step: inputs linearly interpolated, steps halved. Original points at odd indices."""
    u_prev = torch.cat([u[:, :1], u[:, :-1]], 1)
    u_fine = torch.stack([(u + u_prev) / 2, u], 2).reshape(u.shape[0], -1, u.shape[-1])
    dt_fine = torch.stack([dt / 2, dt / 2], 2).reshape(dt.shape[0], -1)
    return u_fine, dt_fine


def physics_metrics(kind: str, v: Tensor, i: Tensor, v_scale: Tensor, i_scale: Tensor) -> dict[str, float]:
    """Violation metrics on test data from terminal voltages (V) and predicted currents (A), any model."""
    out: dict[str, float] = {}
    if kind == "memristor":
        power = (v * i)[..., 0]
        out["passivity_violation_rate"] = float((power < -1e-6 * float(v_scale[0] * i_scale[0])).float().mean())
        out["passivity_violation_mean_w"] = float(F.relu(-power).mean())
        near_zero = v[..., 0].abs() < 1e-3 * float(v_scale[0])
        out["pinch_max_abs_current_a"] = float(i[..., 0][near_zero].abs().max()) if near_zero.any() else 0.0
        out["pinch_rel_to_scale"] = out["pinch_max_abs_current_a"] / float(i_scale[0])
    return out
