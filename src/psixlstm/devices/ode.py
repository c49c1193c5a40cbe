"""Accurate float64 integration of a device ODE dx/dt = rate(V(t), x) driven by a stimulus waveform."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy.integrate import solve_ivp


def integrate_driven(
    rate: Callable[[float, np.ndarray], np.ndarray],
    stimulus,
    t_s: np.ndarray,
    x0: np.ndarray,
    *,
    method: str = "DOP853",
    rtol: float = 1e-10,
    atol: float = 1e-12,
    steps_per_period: float = 12.0,
) -> np.ndarray:
    """States (N, n_x) at times `t_s` for voltage `stimulus` (a psixlstm.stimuli waveform), x(t_s[0]) = x0.

    The integration restarts at every stimulus breakpoint, so no edge is stepped over, and bounds the step to
    1 / (steps_per_period * f) only inside intervals where a tone of frequency f is on (rests stay cheap).
    """
    t_s = np.asarray(t_s, dtype=np.float64)
    if t_s.ndim != 1 or t_s.size < 2 or np.any(np.diff(t_s) <= 0):
        raise ValueError("t_s must be a 1-D strictly increasing array with at least 2 points")
    t0, t_stop = float(t_s[0]), float(t_s[-1])
    cuts = np.unique(np.concatenate([[t0, t_stop], np.asarray(stimulus.breakpoints(t_stop), float)]))
    cuts = cuts[(cuts >= t0) & (cuts <= t_stop)]
    tones = stimulus.active_tones(t_stop)

    def rhs(t: float, x: np.ndarray) -> np.ndarray:
        return rate(stimulus.value_at(t), x)

    x = np.asarray(x0, dtype=np.float64).copy()
    states = np.zeros((t_s.size, x.size))
    states[0] = x
    for a, b in zip(cuts[:-1], cuts[1:], strict=True):
        f_local = max((tone.frequency_hz for tone in tones if tone.t_start_s < b and tone.t_end_s > a), default=0.0)
        max_step = 1.0 / (steps_per_period * f_local) if f_local > 0 else np.inf
        sol = solve_ivp(rhs, (a, b), x, method=method, rtol=rtol, atol=atol, max_step=max_step, dense_output=True)
        if not sol.success:
            raise RuntimeError(f"integration failed on [{a:.6g}, {b:.6g}] s: {sol.message}")
        inside = (t_s > a) & (t_s <= b)
        if inside.any():
            states[inside] = sol.sol(t_s[inside]).T
        x = sol.y[:, -1]
    return states
