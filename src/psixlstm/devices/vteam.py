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
from scipy.integrate import solve_ivp


@dataclass(frozen=True)
class VteamParams:
    r_on: float = 1.0e3  # Ohm
    r_off: float = 10.0e3  # Ohm
    v_off: float = 0.3  # V, positive threshold
    v_on: float = -0.3  # V, negative threshold
    k_off: float = 250.0  # 1/s
    k_on: float = 250.0  # 1/s
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
    """Integrate the VTEAM device for voltage `stimulus` and sample it at `t_s` (restarting at breakpoints)."""
    p = params or VteamParams()
    t_s = np.asarray(t_s, dtype=np.float64)
    if t_s.ndim != 1 or t_s.size < 2 or np.any(np.diff(t_s) <= 0):
        raise ValueError("t_s must be a 1-D strictly increasing array with at least 2 points")
    t_stop = float(t_s[-1])
    cuts = np.unique(np.concatenate([[t_s[0], t_stop], np.asarray(stimulus.breakpoints(t_stop), float)]))
    cuts = cuts[(cuts >= t_s[0]) & (cuts <= t_stop)]
    f_max = float(stimulus.max_frequency_hz())
    max_step = 1.0 / (16.0 * f_max) if f_max > 0 else np.inf

    def rhs(t: float, w: np.ndarray) -> np.ndarray:
        return np.array([state_rate(float(stimulus.sample(np.array([t]))[0]), float(w[0]), p)])

    w_out = np.zeros(t_s.size)
    w = np.array([p.w0])
    for a, b in zip(cuts[:-1], cuts[1:], strict=True):
        inside = (t_s >= a) & (t_s <= b)
        sol = solve_ivp(
            rhs, (a, b), w, method="RK45", rtol=1e-8, atol=1e-10, max_step=max_step, dense_output=True
        )
        if not sol.success:
            raise RuntimeError(f"VTEAM integration failed on [{a}, {b}] s: {sol.message}")
        if inside.any():
            w_out[inside] = sol.sol(t_s[inside])[0]
        w = sol.y[:, -1]
    v = stimulus.sample(t_s)
    return VteamResponse(t_s=t_s, v=v, current_a=current_a(v, w_out, p), state=w_out)
