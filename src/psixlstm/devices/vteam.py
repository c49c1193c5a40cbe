"""The paper benchmark memristor: a VTEAM-like threshold device (Kvatinsky et al. 2015), float64 NumPy/SciPy.

State w in [0, 1] (0 = ON, low resistance; 1 = OFF):
    dw/dt = k_off (V/v_off - 1)^alpha_off (1 - w)   for V > v_off > 0   (towards OFF)
          = -k_on (V/v_on - 1)^alpha_on w           for V < v_on < 0    (towards ON)
          = 0                                       otherwise
    I = V / (r_on + (r_off - r_on) w)
The windows (1 - w) and w keep w inside [0, 1] without sticking at the bounds.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from .ode import integrate_driven


@dataclass(frozen=True)
class VteamParams:
    r_on: float = 1.0e3  # Ohm
    r_off: float = 10.0e3  # Ohm
    v_off: float = 0.3  # V, positive threshold
    v_on: float = -0.3  # V, negative threshold
    k_off: float = 5000.0  # 1/s
    k_on: float = 5000.0  # 1/s
    alpha_off: float = 3.0
    alpha_on: float = 3.0
    w0: float = 0.5  # initial state

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def state_rate(v: float, w: float, p: VteamParams) -> float:
    """dw/dt (1/s)."""
    if v > p.v_off:
        return p.k_off * (v / p.v_off - 1.0) ** p.alpha_off * (1.0 - w)
    if v < p.v_on:
        return -p.k_on * (v / p.v_on - 1.0) ** p.alpha_on * w
    return 0.0


def current_a(v: np.ndarray, w: np.ndarray, p: VteamParams) -> np.ndarray:
    return v / (p.r_on + (p.r_off - p.r_on) * w)


@dataclass
class VteamResponse:
    t_s: np.ndarray
    v: np.ndarray
    current_a: np.ndarray
    state: np.ndarray


def simulate(stimulus, t_s: np.ndarray, params: VteamParams | None = None) -> VteamResponse:
    """Integrate the VTEAM device from w = w0 for voltage `stimulus`, sampled at `t_s`."""
    p = params or VteamParams()
    t_s = np.asarray(t_s, dtype=np.float64)
    w = integrate_driven(
        lambda v, x: np.array([state_rate(v, float(x[0]), p)]),
        stimulus,
        t_s,
        np.array([p.w0]),
        method="RK45",
        rtol=1e-8,
        atol=1e-10,
    )[:, 0]
    v = stimulus.sample(t_s)
    return VteamResponse(t_s=t_s, v=v, current_a=current_a(v, w, p), state=w)
