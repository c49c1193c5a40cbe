"""The teacher: input projection -> sLSTM block -> mLSTM block -> physics readout (one config dataclass)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import Tensor, nn

from ..physics import DevicePhysics, PhysicsReadout, symmetry_residual, zero_bias_residual
from .base import ModelOutput, SequenceModel
from .xlstm import CellConfig, MLSTMCell, SLSTMCell, forget_tau_s


@dataclass
class TeacherConfig:
    n_in: int = 1
    n_out: int = 1
    d_model: int = 32  # residual stream width (= sLSTM and mLSTM hidden size)
    n_heads: int = 4
    head_hidden: int = 32  # readout MLP width
    tau_min_s: float = 1e-7  # forget time constants are initialised log-spaced over this range
    tau_max_s: float = 2e-2
    dt_ref_s: float = 1e-6
    gating: str = "exp"  # "exp" (xLSTM) or "sigmoid" (the spectral-bias ablation)
    physics: DevicePhysics = field(default_factory=lambda: DevicePhysics("generic"))
    input_scale_v: tuple[float, ...] = (1.0,)
    t_scale_s: float = 1e-6  # charge path: dQ/dt is taken per t_scale_s

    def cell(self, d_in: int) -> CellConfig:
        return CellConfig(
            d_in=d_in,
            d_hidden=self.d_model,
            n_heads=self.n_heads,
            tau_min_s=self.tau_min_s,
            tau_max_s=self.tau_max_s,
            dt_ref_s=self.dt_ref_s,
            gating=self.gating,
        )

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TeacherConfig:
        d = dict(d)
        d.pop("mlstm_chunk", None)  # files before the compiled mLSTM scan carried its chunk length
        d["physics"] = DevicePhysics(**d["physics"])
        d["input_scale_v"] = tuple(d["input_scale_v"])
        return cls(**d)


class Teacher(SequenceModel):
    """Physics-informed xLSTM. State: (sLSTM (h, c, n, m), mLSTM (C, n, m), last charge or None)."""

    def __init__(self, cfg: TeacherConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d = cfg.d_model
        self.in_proj = nn.Sequential(nn.Linear(cfg.n_in, d), nn.SiLU(), nn.Linear(d, d))  # nonlinear in V (thresholds)
        self.slstm = SLSTMCell(cfg.cell(d))
        self.norm_s = nn.LayerNorm(d)
        self.mlstm = MLSTMCell(cfg.cell(d))
        self.norm_m = nn.LayerNorm(d)
        self.readout = PhysicsReadout(
            cfg.physics, d, cfg.n_in, cfg.n_out, cfg.head_hidden, cfg.input_scale_v, cfg.t_scale_s
        )

    def forward(self, u: Tensor, dt: Tensor, state=None) -> ModelOutput:
        s_state, m_state, q_prev = state if state is not None else (None, None, None)
        x = self.in_proj(u)
        s_out, s_state, s_f = self.slstm(x, dt, s_state)
        x = x + s_out
        m_out, m_state, m_f = self.mlstm(self.norm_s(x), dt, m_state)
        feat = self.norm_m(x + m_out)
        y, q_last = self.readout(feat, u, dt, q_prev)
        extras = {"slstm_f_pre": s_f, "mlstm_f_pre": m_f, "feat": feat}
        return ModelOutput(y=y, state=(s_state, m_state, q_last), hidden=torch.cat([s_out, m_out], -1), extras=extras)

    def physics_residuals(self, out: ModelOutput, u: Tensor, dt: Tensor) -> dict[str, Tensor]:
        kind = self.cfg.physics.kind
        if kind == "mosfet":
            return {"symmetry": symmetry_residual(self.readout, out.extras["feat"], u)}
        if kind == "bjt":
            return {"zero_bias": zero_bias_residual(self.readout, out.extras["feat"])}
        return {}

    def time_constants_s(self, out: ModelOutput) -> dict[str, Tensor]:
        """Per-step time constants (s) of every sLSTM unit (B, T, d) and mLSTM head (B, T, H) along a run."""
        cell = self.cfg.cell(self.cfg.d_model)
        return {
            "slstm": forget_tau_s(cell, out.extras["slstm_f_pre"]),
            "mlstm": forget_tau_s(cell, out.extras["mlstm_f_pre"]),
        }
