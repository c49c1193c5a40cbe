"""Baselines trained on the same data with the same budget as the teacher.

- LinearStateSpace: continuous-time linear model tau_j dx_j/dt = -x_j + B u, y = C x + D u + e (dt-aware).
- WindowMLP: a memoryless MLP on the last `window` inputs and log-steps ("PINN" when physics terms are on).
- FourierMLP / Siren: the same window, through random Fourier features or sine activations.
- LSTMBaseline: torch's LSTM (sigmoid gates), fed u and log(dt) per step.
The static linear fit I = a V + b is closed-form and lives in `metrics.linear_fit_baseline`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .base import ModelOutput, SequenceModel


class LinearStateSpace(SequenceModel):
    """Diagonal continuous-time linear state space, exact zero-order-hold discretisation per step."""

    def __init__(self, n_in: int, n_out: int, n_states: int = 16, tau_min_s: float = 1e-7, tau_max_s: float = 2e-2):
        super().__init__()
        self.log_tau = nn.Parameter(torch.linspace(math.log(tau_min_s), math.log(tau_max_s), n_states))
        self.B = nn.Linear(n_in, n_states, bias=False)
        self.C = nn.Linear(n_states, n_out, bias=False)
        self.D = nn.Linear(n_in, n_out)

    def forward(self, u: Tensor, dt: Tensor, state=None) -> ModelOutput:
        x = state if state is not None else u.new_zeros(u.shape[0], self.log_tau.numel())
        decay = torch.exp(-dt[..., None] / torch.exp(self.log_tau))  # (B, T, S)
        drive = self.B(u)
        xs = []
        for t in range(u.shape[1]):
            x = decay[:, t] * x + (1 - decay[:, t]) * drive[:, t]
            xs.append(x)
        xs = torch.stack(xs, 1)
        return ModelOutput(y=self.C(xs) + self.D(u), state=x, hidden=xs)


def _window(u: Tensor, dt: Tensor, buf: Tensor | None, window: int) -> tuple[Tensor, Tensor]:
    """Features (B, T, window * (n_in + 1)): the last `window` inputs and log-steps; buffer for the next chunk."""
    feat = torch.cat([u, torch.log(dt[..., None] / 1e-6) / 10.0], -1)  # (B, T, n_in + 1)
    if buf is None:
        buf = feat[:, :1].expand(-1, window - 1, -1)
    full = torch.cat([buf, feat], 1)
    stacked = full.unfold(1, window, 1)  # (B, T, n_in + 1, window)
    return stacked.flatten(2), full[:, -(window - 1) :]


class WindowMLP(SequenceModel):
    """MLP on a sliding window of inputs: no state beyond the window. With `physics="memristor"` it is the PINN
    baseline: the pinch (I = 0 at V = 0) and passivity (V I >= 0) are penalised as residuals, not built in."""

    def __init__(self, n_in: int, n_out: int, window: int = 16, hidden: int = 64, depth: int = 3, physics=None):
        super().__init__()
        self.window, self.physics = window, physics
        layers: list[nn.Module] = []
        d = window * (n_in + 1)
        for k in range(depth):
            layers += [nn.Linear(d if k == 0 else hidden, hidden), nn.SiLU()]
        self.net = nn.Sequential(*layers, nn.Linear(hidden, n_out))

    def encode(self, feat: Tensor) -> Tensor:
        return feat

    def physics_residuals(self, out: ModelOutput, u: Tensor, dt: Tensor) -> dict[str, Tensor]:
        if self.physics != "memristor":
            return {}
        near_zero = torch.exp(-((u[..., :1] / 0.02) ** 2))  # weight of samples at V ~ 0
        return {
            "pinch": (near_zero * out.y**2).mean(),
            "passivity": torch.relu(-u[..., :1] * out.y).pow(2).mean(),
        }

    def forward(self, u: Tensor, dt: Tensor, state=None) -> ModelOutput:
        feat, buf = _window(u, dt, state, self.window)
        h = self.encode(feat)
        return ModelOutput(y=self.net(h), state=buf, hidden=h)


class FourierMLP(WindowMLP):
    """Random Fourier features of the window (Tancik et al. 2020) before the MLP."""

    def __init__(self, n_in: int, n_out: int, window: int = 16, hidden: int = 64, n_features: int = 64, sigma=5.0):
        super().__init__(n_in, n_out, window, hidden)
        d = window * (n_in + 1)
        self.register_buffer("proj", torch.randn(d, n_features) * sigma)
        self.net[0] = nn.Linear(2 * n_features, hidden)

    def encode(self, feat: Tensor) -> Tensor:
        z = 2 * math.pi * feat @ self.proj
        return torch.cat([torch.sin(z), torch.cos(z)], -1)


class Siren(SequenceModel):
    """Sine-activated MLP on the window (Sitzmann et al. 2020), with its initialisation."""

    def __init__(self, n_in: int, n_out: int, window: int = 16, hidden: int = 64, depth: int = 3, w0: float = 30.0):
        super().__init__()
        self.window, self.w0 = window, w0
        d = window * (n_in + 1)
        self.layers = nn.ModuleList([nn.Linear(d if k == 0 else hidden, hidden) for k in range(depth)])
        self.out = nn.Linear(hidden, n_out)
        with torch.no_grad():
            self.layers[0].weight.uniform_(-1 / d, 1 / d)
            for layer in self.layers[1:]:
                bound = math.sqrt(6 / hidden) / w0
                layer.weight.uniform_(-bound, bound)

    def forward(self, u: Tensor, dt: Tensor, state=None) -> ModelOutput:
        h, buf = _window(u, dt, state, self.window)
        for layer in self.layers:
            h = torch.sin(self.w0 * layer(h))
        return ModelOutput(y=self.out(h), state=buf, hidden=h)


class LSTMBaseline(SequenceModel):
    """torch.nn.LSTM (sigmoid gates) on [u, log dt]; dt is only an input feature here, not part of the gates."""

    def __init__(self, n_in: int, n_out: int, hidden: int = 32):
        super().__init__()
        self.lstm = nn.LSTM(n_in + 1, hidden, batch_first=True)
        self.head = nn.Linear(hidden, n_out)

    def forward(self, u: Tensor, dt: Tensor, state=None) -> ModelOutput:
        x = torch.cat([u, torch.log(dt[..., None] / 1e-6) / 10.0], -1)
        if state is not None:  # carried batch-first, like every other model's state
            state = tuple(s.transpose(0, 1).contiguous() for s in state)
        h, (h_n, c_n) = self.lstm(x, state)
        return ModelOutput(y=self.head(h), state=(h_n.transpose(0, 1), c_n.transpose(0, 1)), hidden=h)
