"""Stage: verify an exported student against SPICE.

Replay exactness: take the simulator's accepted time points, replay the PyTorch student in float64 on exactly that
grid with the same integration rule (trapezoidal; backward Euler on the first step and on the step after each
stimulus breakpoint), Newton to 1e-13 per step, and compare currents and states.
"""

from __future__ import annotations

import numpy as np
import torch

from .models.students import ContinuousStudent


@torch.no_grad()
def replay(
    student: ContinuousStudent, v_scale: float, i_scale: float, t_s: np.ndarray, v_v: np.ndarray, breakpoints_s
) -> tuple[np.ndarray, np.ndarray]:
    """Student currents (A) and states on a given grid (t_s, voltages v_v), float64, the SPICE step rules."""
    model = student.double().eval()
    t = np.asarray(t_s, float)
    u = torch.tensor(np.asarray(v_v, float) / v_scale)[:, None]
    bps = np.asarray(breakpoints_s, float)
    after_bp = np.zeros(t.size, bool)
    after_bp[1] = True
    if bps.size:
        k = np.searchsorted(t, bps)
        hit = (k < t.size - 1) & (np.abs(t[np.minimum(k, t.size - 1)] - bps) <= 1e-15 + 1e-9 * np.abs(bps))
        after_bp[k[hit] + 1] = True
    x = torch.zeros(1, model.n_states, dtype=torch.float64)
    states = [x[0].clone()]
    for j in range(1, t.size):
        h = torch.tensor([t[j] - t[j - 1]], dtype=torch.float64)
        be = torch.tensor([1.0 if after_bp[j] else 0.0], dtype=torch.float64)
        x = model.step(x, u[j - 1 : j], u[j : j + 1], h, be, newton_tol=1e-13)
        states.append(x[0].clone())
    xs = torch.stack(states)[None]
    feats = model.readout_features(xs)
    y = model.readout.static(feats, u[None])[0, :, 0].numpy() * i_scale
    model.float()
    return y, xs[0].numpy()
