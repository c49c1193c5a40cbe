"""Stage: stress tests, out-of-range impulses at the model input.

A held-out random program of the device (the kind of stimulus the models were trained on) gets one trapezoidal
impulse added at a fixed time, for a grid of amplitudes (1x, 1.5x, 2x the training voltage range, both signs),
widths and (MOSFET/BJT) driven terminals. For every such disturbance the ground truth (the float64 memristor, or the
native BSIM4 / Gummel-Poon device in ngspice), the teacher, the students (converged, `converged_replay`) and the
exported student in ngspice and VACASK (reltol 1e-4, as `verify` runs it) are compared:

- the error against the disturbed truth: its peak during the impulse, and the recovery time after it, the time
  until the error is back (and stays) inside a band set by the same model's error on the undisturbed program
  (`error_metrics` defines it);
- the perturbation (disturbed minus undisturbed response) of each PyTorch model against the truth's
  (`perturbation_metrics`);
- SPICE against PyTorch: the student replayed on SPICE's accepted grid with SPICE's integration rule (as `verify`
  does), and against the converged student.

Entry point for the pipeline: `run_stress(teacher, students, dataset, export_dir, simulators, out_dir) -> dict`
(writes out_dir/stress.json and out_dir/stress.png). The pieces: `stress_plan` (the disturbances), `Responder` (a
model as a function of stimuli and times), `stress_report` (everything compared, JSON-able), `plot_stress`.

Units: time s, voltage V, current A; `*_rel` values are divided by the current range, the largest |I| of the
training data per output (`Scales.output_scale_a`).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from . import stimuli as st
from .verification import (
    REALISTIC_RELTOL,
    Testbench,
    _at,
    _failure,
    _fan_out,
    _run,
    _training_program,
    bandwidth_max_step,
    converged_replay,
    replay,
)

STRESS_AMPLITUDES = (1.0, 1.5, 2.0)  # impulse amplitude / the training range max |V| of the terminal
STRESS_SIGNS = (1.0, -1.0)
BAND_FACTOR = 2.0  # band = max(BAND_FACTOR x the undisturbed error envelope, BAND_FLOOR_REL x the current range)
BAND_FLOOR_REL = 0.01
TAIL_FRACTION = 0.25  # "recovered": no excursion in the last quarter of the time after the impulse
_TIME_TOL = 1e-9  # times within this fraction of the impulse's duration of its corners count as on them
STRESS_SEED = 12345  # the held-out program (the datasets use seeds 0, 1, ...; verify uses 12345 too)
SPICE_REPLAY_TOL = 1e-3  # SPICE at reltol 1e-4 vs the student replayed on its grid (DESIGN: 2.2e-4 measured)


@dataclasses.dataclass(frozen=True)
class DeviceStress:
    """Per-device defaults: impulse widths and edge (s), run length and nominal impulse time (s)."""

    widths_s: tuple[float, ...]
    edge_s: float
    t_stop_s: float
    t_impulse_s: float


# Memristor (taus 0.34 / 1.2 / 8.7 ms; training pulses 5 us - 1 ms with 0.1-2 us edges, bursts to 150 kHz, steps
# of 0.1-50 us): 10 ns is far shorter than anything in training (input-path bandwidth, steps far below the data's
# dt), 1 us is a training edge / a 150 kHz half period, 100 us is a SET/RESET pulse that moves every state at 2x
# the voltage. 1 ns edges as the robustness stress; 20 ms runs leave 18 ms (2 slow taus) to recover.
# MOSFET / BJT (training: 20 us programs, 1-5 ns edges, holds of 50 ns-1 us, tones to 10 MHz; BJT transit time
# 47 ns): 2 ns is shorter than any training hold, 20 ns a short PWM phase, 200 ns a typical hold; 1 ns edges;
# 4 us runs with the impulse at 1 us.
DEVICE_STRESS = {
    "memristor": DeviceStress((10e-9, 1e-6, 100e-6), 1e-9, 20e-3, 2e-3),
    "mosfet": DeviceStress((2e-9, 20e-9, 200e-9), 1e-9, 4e-6, 1e-6),
    "bjt": DeviceStress((2e-9, 20e-9, 200e-9), 1e-9, 4e-6, 1e-6),
}


@dataclasses.dataclass(frozen=True)
class Disturbance:
    """One trapezoidal impulse on driven terminal `terminal`: from 0, rising at t_start_s over edge_s to
    amplitude_v (V, signed), holding width_s, falling over edge_s; added to that terminal's program.
    amplitude_rel = amplitude_v / the terminal's training range max |V|."""

    terminal: int
    amplitude_v: float
    amplitude_rel: float
    width_s: float
    edge_s: float
    t_start_s: float

    def __post_init__(self) -> None:
        for name in ("amplitude_v", "amplitude_rel", "width_s", "edge_s", "t_start_s"):
            if not np.isfinite(getattr(self, name)):
                raise ValueError(f"disturbance {name} must be finite, got {getattr(self, name)}")
        if self.width_s <= 0:
            raise ValueError(f"impulse width_s must be > 0 s, got {self.width_s}")
        if self.edge_s <= 0:
            raise ValueError(f"impulse edge_s must be > 0 s, got {self.edge_s}")
        if self.amplitude_v == 0:
            raise ValueError("impulse amplitude_v must be nonzero")
        if self.t_start_s < 0:
            raise ValueError(f"impulse t_start_s must be >= 0 s, got {self.t_start_s}")
        if self.terminal < 0:
            raise ValueError(f"terminal must be >= 0, got {self.terminal}")

    @property
    def t_end_s(self) -> float:
        """End of the falling edge (s)."""
        return self.t_start_s + 2.0 * self.edge_s + self.width_s

    def impulse(self) -> st.Impulses:
        return st.Impulses(((self.t_start_s, self.amplitude_v, self.width_s, self.edge_s),))

    def apply(self, base: Sequence[st.Stimulus]) -> list[st.Stimulus]:
        """The disturbed stimuli: the impulse added to terminal `terminal`'s program, the others unchanged."""
        if self.terminal >= len(base):
            raise ValueError(f"terminal {self.terminal} does not exist: the device has {len(base)} driven terminals")
        return [st.Sum((s, self.impulse())) if k == self.terminal else s for k, s in enumerate(base)]

    def label(self) -> str:
        return f"T{self.terminal} {self.amplitude_rel:+g}x {_si(self.width_s)}s"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self) | {"t_end_s": self.t_end_s}


@dataclasses.dataclass(frozen=True)
class StressPlan:
    """The base programs (one per driven terminal), the run length (s), the training range max |V| per terminal
    (V) and the disturbances, all at the same start time."""

    device: str
    base: tuple[st.Stimulus, ...]
    t_stop_s: float
    v_scale_v: tuple[float, ...]
    disturbances: tuple[Disturbance, ...]
    seed: int

    @property
    def t_impulse_s(self) -> float:
        return self.disturbances[0].t_start_s

    def to_dict(self) -> dict:
        return {
            "device": self.device,
            "seed": self.seed,
            "t_stop_s": self.t_stop_s,
            "t_impulse_s": self.t_impulse_s,
            "v_scale_v": list(self.v_scale_v),
            "base": [s.to_dict() for s in self.base],
            "disturbances": [d.to_dict() for d in self.disturbances],
        }


def _si(x: float) -> str:
    for scale, prefix in ((1.0, ""), (1e-3, "m"), (1e-6, "u"), (1e-9, "n"), (1e-12, "p")):
        if abs(x) >= scale:
            return f"{x / scale:g} {prefix}"
    return f"{x:g} "


def _quiet_start(stim: st.Stimulus, t_from: float, span: float, t_stop: float, guard: float) -> float | None:
    """The first time t >= t_from (t_from itself, or `guard` after a breakpoint) such that `stim` is 0 V on
    [t - guard, t + span + guard], or None. A PWL is zero on an interval iff it is zero at its ends and corners
    inside; a tone that is on anywhere in it disqualifies it."""
    bps = np.asarray(stim.breakpoints(t_stop), float)
    tones = stim.active_tones(t_stop)
    for t in [t_from, *(bps[bps >= t_from] + guard)]:
        a, b = t - guard, t + span + guard
        if b >= t_stop:
            return None
        if any(tone.t_start_s < b and tone.t_end_s > a for tone in tones):
            continue
        pts = np.concatenate([[a, b], bps[(bps > a) & (bps < b)]])
        if np.all(stim.sample(pts) == 0.0):
            return float(t)
    return None


def stress_plan(
    device: str,
    v_scale_v,
    amplitudes: Sequence[float] = STRESS_AMPLITUDES,
    widths_s: Sequence[float] | None = None,
    signs: Sequence[float] = STRESS_SIGNS,
    terminals: Sequence[int] | None = None,
    seed: int = STRESS_SEED,
    t_stop_s: float | None = None,
    t_impulse_s: float | None = None,
    edge_s: float | None = None,
) -> StressPlan:
    """The disturbances of a `device` ("memristor", "mosfet", "bjt") stress test: every combination of amplitude
    (x the terminal's training range max |V|, `v_scale_v`, one per driven terminal), sign, width (s) and driven
    terminal (default all), on the held-out program of `seed`, defaults from `DEVICE_STRESS`.

    Memristor: the impulse starts at the first time from t_impulse_s where the program rests at 0 V for the widest
    impulse plus 20 us on either side, so it reaches exactly amplitude x v_scale; MOSFET/BJT programs never rest,
    so the impulse starts at t_impulse_s and rides on the program's level."""
    if device not in DEVICE_STRESS:
        raise ValueError(f"no stress test for device {device!r}; choose one of {', '.join(DEVICE_STRESS)}")
    d = DEVICE_STRESS[device]
    widths = tuple(d.widths_s if widths_s is None else widths_s)
    t_stop = d.t_stop_s if t_stop_s is None else float(t_stop_s)
    t_imp = d.t_impulse_s if t_impulse_s is None else float(t_impulse_s)
    edge = d.edge_s if edge_s is None else float(edge_s)
    v_scale = tuple(float(v) for v in np.atleast_1d(np.asarray(v_scale_v, float)))
    if not widths or not len(amplitudes) or not len(signs):
        raise ValueError("need at least one width, one amplitude and one sign")
    for w in widths:
        if not (np.isfinite(w) and w > 0):
            raise ValueError(f"impulse widths must be > 0 s, got {w}")
    for a in amplitudes:
        if not (np.isfinite(a) and a > 0):
            raise ValueError(f"amplitudes are multiples of the training range and must be > 0, got {a}")
    if any(s not in (1.0, -1.0) for s in signs):
        raise ValueError(f"signs must be +1 or -1, got {list(signs)}")
    if not (np.isfinite(edge) and edge > 0):
        raise ValueError(f"edge_s must be > 0 s, got {edge}")
    if not (t_stop > 0 and 0 <= t_imp):
        raise ValueError(f"need t_stop_s > 0 and t_impulse_s >= 0, got {t_stop} and {t_imp}")
    if any(v <= 0 for v in v_scale):
        raise ValueError(f"v_scale_v must be > 0 V, got {list(v_scale)}")
    terms = tuple(range(len(v_scale)) if terminals is None else terminals)
    if device == "memristor" and len(v_scale) != 1:
        raise ValueError(f"a memristor has one driven terminal, got {len(v_scale)} voltage scales")
    for k in terms:
        if not 0 <= k < len(v_scale):
            raise ValueError(f"terminal {k} does not exist: the device has {len(v_scale)} driven terminals")
    rng = np.random.default_rng(seed)
    base = tuple(_training_program(device, k, rng, t_stop) for k in range(len(v_scale)))
    span = max(widths) + 2 * edge
    if device == "memristor":
        quiet = _quiet_start(base[0], t_imp, span, t_stop, guard=20e-6)
        t_imp = t_imp if quiet is None else quiet
    if t_imp + span > 0.5 * t_stop:
        raise ValueError(
            f"the impulse must end before half the run ({0.5 * t_stop:g} s) to leave time to recover; it starts at "
            f"{t_imp:g} s and lasts {span:g} s"
        )
    dists = tuple(
        Disturbance(k, sign * a * v_scale[k], sign * a, w, edge, t_imp)
        for k in terms
        for w in widths
        for a in amplitudes
        for sign in signs
    )
    return StressPlan(device, base, t_stop, v_scale, dists, seed)


# ---------------------------------------------------------------------------------------------------------------
# Models as functions of stimuli


@dataclasses.dataclass(frozen=True)
class Responder:
    """A model as `currents(stims, t_stop_s, t_s) -> (N, n_out)` currents (A) at times t_s (s) into the driven
    terminals. converged: valid at any points (truth, converged students), so it is evaluated once on the union
    of every grid of a case; otherwise (the teacher, a discrete-time model) on the data-like grid only."""

    name: str
    currents: Callable[[list, float, np.ndarray], np.ndarray]
    converged: bool


def truth_responder(device: str, max_step_s: float | None = None) -> Responder:
    """The ground truth: the float64 memristor (`devices.memristor.simulate`, rtol 1e-10), or the native ngspice
    device (BSIM4 / Gummel-Poon, reltol 1e-6, max step `max_step_s`, linear between its accepted points)."""
    if device == "memristor":
        from .devices import memristor

        return Responder("truth", lambda stims, t_stop, t: memristor.simulate(stims[0], t).current_a[:, None], True)
    from .devices.spice_reference import BJT, MOSFET

    native = {"mosfet": MOSFET, "bjt": BJT}[device]

    def currents(stims, t_stop, t):
        step = max_step_s or _max_step(stims, t_stop) / 4
        return native.simulate(stims, t, max_step_s=step, reltol=1e-6)[1]

    return Responder("truth", currents, True)


def teacher_responder(teacher, scales, name: str = "teacher") -> Responder:
    """The teacher on the data-like grid, as discovery probes it (`discovery.probe_teacher`, float32)."""
    from .discovery import probe_teacher

    return Responder(name, lambda stims, t_stop, t: probe_teacher(teacher, scales, list(stims), t), False)


def student_responder(student, scales, name: str) -> Responder:
    """A student's converged solution (`converged_replay`), available exactly at the asked times."""
    v_scale, i_scale = np.asarray(scales.input_scale_v, float), np.asarray(scales.output_scale_a, float)

    def currents(stims, t_stop, t):
        t_ref, y_ref = converged_replay(student, v_scale, i_scale, list(stims), t_stop, [t])
        return _at(t_ref, y_ref.reshape(t_ref.size, -1), t)

    return Responder(name, currents, True)


@dataclasses.dataclass(frozen=True)
class SpiceModel:
    """An exported student in its testbench; `pytorch_name` names its converged `Responder` in the report."""

    name: str
    student: object
    scales: object
    bench: Testbench
    pytorch_name: str


def spice_model(export_dir: str | Path, name: str | None = None, pytorch_name: str | None = None) -> SpiceModel:
    """The exported student of an `export_student` directory (model.json, the .osdi, the student it came from)."""
    import json

    from .distillation import load_student

    d = Path(export_dir)
    if not (d / "model.json").exists():
        raise FileNotFoundError(f"{d} holds no exported model (model.json missing); run psi-xlstm export")
    meta = json.loads((d / "model.json").read_text())
    student, scales, _ = load_student(meta["student_dir"])
    bench = Testbench.of_export(d, meta)
    label = name or meta["module"]
    return SpiceModel(label, student, scales, bench, pytorch_name or f"{label} (pytorch)")


# ---------------------------------------------------------------------------------------------------------------
# Metrics


def _window_max(t_ref: np.ndarray, y_ref: np.ndarray, t: np.ndarray, half_width_s: float) -> np.ndarray:
    """max of y_ref (N_ref, C) over t_ref in [t - w, t + w] at each time t (the nearest point where none is in the
    window), by a sparse table: (N, C)."""
    y_ref = np.asarray(y_ref, float).reshape(len(t_ref), -1)
    lo = np.searchsorted(t_ref, t - half_width_s, side="left")
    hi = np.searchsorted(t_ref, t + half_width_s, side="right")
    empty = hi <= lo
    nearest = np.clip(np.searchsorted(t_ref, t), 1, len(t_ref) - 1)
    nearest -= (t - t_ref[nearest - 1]) < (t_ref[nearest] - t)
    lo, hi = np.where(empty, nearest, lo), np.where(empty, nearest + 1, hi)
    table = [y_ref]
    while 2 ** len(table) <= len(t_ref):
        prev, step = table[-1], 2 ** (len(table) - 1)
        table.append(np.maximum(prev[:-step], prev[step:]))
    k = np.floor(np.log2(hi - lo)).astype(int)
    out = np.empty((len(t), y_ref.shape[1]))
    for level in np.unique(k):
        sel = k == level
        tab = table[level]
        out[sel] = np.maximum(tab[lo[sel]], tab[hi[sel] - 2**level])
    return out


def error_metrics(
    t_s: np.ndarray,
    err_a: np.ndarray,
    t_ref_s: np.ndarray,
    err_ref_a: np.ndarray,
    dist: Disturbance,
    i_range_a,
    t_stop_s: float,
    window_s: float,
    floor_rel: float = BAND_FLOOR_REL,
) -> dict:
    """A model's disturbed error err_a (N, C) = model - truth (A) at times t_s (s), judged against the same model's
    error err_ref_a on the undisturbed program (at its own times t_ref_s). Per output channel (lists) and worst over
    channels:

    - peak_error_a / peak_error_rel: max |err| during the impulse, t_start <= t <= t_end (A; / i_range_a);
    - after_peak_error_rel: max |err| / i_range_a after the impulse, t > t_end;
    - band(t) = max(2 env(t), floor_rel i_range) (floor_rel 0.01 by default), env(t) = max |err_ref| over the
      undisturbed points within +-window_s of t (the nearest one if none);
    - recovery_time_s: (last t > t_end with |err(t)| > band(t)) - t_end, 0 if there is none; None if the model
      has not recovered: recovered means no point out of band in the last quarter of (t_end, t_stop];
    - undisturbed_max_error_rel: max |err_ref| / i_range_a.
    Worst over channels: the largest errors and recovery times; not recovered if any channel is not."""
    t, e = np.asarray(t_s, float), np.abs(np.asarray(err_a, float).reshape(len(t_s), -1))
    e_ref = np.abs(np.asarray(err_ref_a, float).reshape(len(t_ref_s), -1))
    rng = np.broadcast_to(np.asarray(i_range_a, float), (e.shape[1],))
    tol = _TIME_TOL * (dist.t_end_s - dist.t_start_s)  # corner times computed two ways differ by float noise
    during = (t >= dist.t_start_s - tol) & (t <= dist.t_end_s + tol)
    if not during.any():  # a grid that steps over the impulse: the point nearest to its middle
        during[np.argmin(np.abs(t - 0.5 * (dist.t_start_s + dist.t_end_s)))] = True
    after = t > dist.t_end_s + tol
    band = np.maximum(BAND_FACTOR * _window_max(np.asarray(t_ref_s, float), e_ref, t, window_s), floor_rel * rng)
    out = after[:, None] & (e > band)
    tail_start = dist.t_end_s + (1.0 - TAIL_FRACTION) * (t_stop_s - dist.t_end_s)
    rec, recovered = [], []
    for c in range(e.shape[1]):
        hits = t[out[:, c]]
        last = float(hits[-1]) if hits.size else None
        ok = last is None or last < tail_start
        recovered.append(ok)
        rec.append(None if not ok else (0.0 if last is None else last - dist.t_end_s))
    peak = e[during].max(axis=0)
    after_peak = e[after].max(axis=0) if after.any() else np.zeros(e.shape[1])
    return {
        "peak_error_a": peak.tolist(),
        "peak_error_rel": (peak / rng).tolist(),
        "after_peak_error_rel": (after_peak / rng).tolist(),
        "recovery_time_s": rec,
        "recovered": recovered,
        "undisturbed_max_error_rel": (e_ref.max(axis=0) / rng).tolist(),
        "worst": {
            "peak_error_rel": float(np.max(peak / rng)),
            "after_peak_error_rel": float(np.max(after_peak / rng)),
            "recovery_time_s": None if not all(recovered) else float(max(rec)),
            "recovered": bool(all(recovered)),
        },
    }


def _decay_time(t: np.ndarray, delta: np.ndarray, dist: Disturbance, threshold: np.ndarray) -> float:
    """(last t > t_end with |delta| > threshold) - t_end, over every channel; 0 if none (s)."""
    tol = _TIME_TOL * (dist.t_end_s - dist.t_start_s)
    out = (t[:, None] > dist.t_end_s + tol) & (np.abs(delta) > threshold)
    hits = t[out.any(axis=1)]
    return float(hits[-1] - dist.t_end_s) if hits.size else 0.0


def perturbation_metrics(
    t_s: np.ndarray,
    model_d: np.ndarray,
    model_u: np.ndarray,
    truth_d: np.ndarray,
    truth_u: np.ndarray,
    dist: Disturbance,
    i_range_a,
    floor_rel: float = BAND_FLOOR_REL,
) -> dict:
    """The disturbance's effect, model against truth, all at times t_s (s), (N, C) currents (A): delta = disturbed
    - undisturbed response. From the impulse's start on: peak |delta_truth| and |delta_model| / i_range; peak
    |delta_model - delta_truth| / i_range and / peak |delta_truth| (per channel); decay times (s): the last time
    after the impulse where |delta| exceeds floor_rel (1 %) of i_range, minus t_end (0 if never), truth and model."""
    t = np.asarray(t_s, float)
    rng = np.asarray(i_range_a, float).reshape(1, -1)
    dm = (np.asarray(model_d) - np.asarray(model_u)).reshape(len(t), -1)
    dt = (np.asarray(truth_d) - np.asarray(truth_u)).reshape(len(t), -1)
    on = t >= dist.t_start_s
    peak_t = np.abs(dt[on]).max(axis=0)
    diff = np.abs(dm[on] - dt[on]).max(axis=0)
    return {
        "truth_peak_rel": (peak_t / rng[0]).tolist(),
        "model_peak_rel": (np.abs(dm[on]).max(axis=0) / rng[0]).tolist(),
        "error_peak_rel": (diff / rng[0]).tolist(),
        "error_vs_truth_peak": (diff / np.maximum(peak_t, 1e-300)).tolist(),
        "truth_decay_s": _decay_time(t, dt, dist, floor_rel * rng),
        "model_decay_s": _decay_time(t, dm, dist, floor_rel * rng),
    }


# ---------------------------------------------------------------------------------------------------------------
# The stress test


def _max_step(stims: Sequence[st.Stimulus], t_stop: float) -> float:
    """SPICE max step (s): the stimulus bandwidth rule of `verify`, at most 1/200 of the run."""
    return min(min(bandwidth_max_step(s, t_stop) for s in stims), t_stop / 200.0)


def _eval_grid(stims: Sequence[st.Stimulus], t_stop: float, scales) -> np.ndarray:
    """The data-like grid (the dataset's finest and coarsest steps), the union over the driven terminals."""
    return np.unique(np.concatenate([st.multirate_grid(s, t_stop, scales.dt_min_s, scales.dt_max_s) for s in stims]))


def _spice_run(bench: Testbench, stims: list, t_stop: float, reltol: float, sim: str) -> dict:
    """A transient of the exported student: accepted times (s), currents (N, n_out) A, voltages (N, n_in) V, or the
    failure class and message."""
    from . import spice

    start = time.perf_counter()
    try:
        w = _run(bench, stims, t_stop, _max_step(stims, t_stop), reltol, sim)
    except spice.SimulationError as exc:
        status, message = _failure(exc)
        return {"status": status, "message": message}
    t, i, v = bench.accepted(w)
    if not (np.all(np.isfinite(i)) and np.all(np.isfinite(v))):
        return {"status": "nonfinite", "message": "NaN or inf output"}
    return {"status": "ok", "t": t, "i": i, "v": v, "wall_s": time.perf_counter() - start}


def _evaluate(
    plan: StressPlan, stims: list, grid: np.ndarray, extra: list, responders: list[Responder]
) -> dict[str, tuple]:
    """Each responder's (times, currents): converged ones on grid + extra points, the others on grid."""
    union = np.unique(np.concatenate([grid, *extra])) if extra else grid
    out = {}
    for r in responders:
        t = union if r.converged else grid
        out[r.name] = (t, np.asarray(r.currents(stims, plan.t_stop_s, t), float).reshape(t.size, -1))
    return out


def stress_report(
    plan: StressPlan,
    scales,
    responders: Sequence[Responder],
    truth: Responder,
    spice: SpiceModel | None = None,
    simulators: Sequence[str] = ("ngspice", "vacask"),
    reltol: float = REALISTIC_RELTOL,
    progress: bool = False,
    band_floor_rel: float = BAND_FLOOR_REL,
    workers: int = 1,
) -> tuple[dict, dict]:
    """Run every disturbance of `plan` through the truth, the PyTorch `responders` and (if given) the exported
    student in each simulator (reltol `reltol`, max step from the stimulus bandwidth), and compare.

    Returns (report, waves). report (JSON-able): the plan, definitions, per case (disturbance, peak |V|) per model
    `error_metrics` vs the disturbed truth and `perturbation_metrics`, per simulator the SPICE `error_metrics` vs
    truth, `replay_max_rel_err` (max |I_spice - I_replay| / max |I_replay| per output, the student replayed on
    SPICE's accepted grid with its rule, as `verify` does) and `vs_converged_max_rel_err` (against the converged
    student), and a summary per model (worst peak error, worst recovery time, cases recovered). waves: the
    data-like-grid waveforms of every case for `plot_stress`. workers: processes the cases run on (forked)."""
    from tqdm import tqdm

    names = [r.name for r in responders]
    if len(set(names)) != len(names):
        raise ValueError(f"model names must be unique, got {names}")
    if spice is not None and spice.pytorch_name not in names:
        raise ValueError(f"the exported student's PyTorch model {spice.pytorch_name!r} is not among {names}")
    sims = tuple(simulators) if spice is not None else ()
    i_range = np.asarray(scales.output_scale_a, float)
    window = 2.0 * float(scales.dt_max_s)  # the envelope's half width: two of the data's coarsest steps
    floor = float(band_floor_rel)
    if not 0 <= floor < 1:
        raise ValueError(f"band_floor_rel must be in [0, 1), got {band_floor_rel}")
    start = time.perf_counter()
    cases_stims = [d.apply(plan.base) for d in plan.disturbances]
    grids = [_eval_grid(s, plan.t_stop_s, scales) for s in cases_stims]
    grid_all = np.unique(np.concatenate([*grids, _eval_grid(plan.base, plan.t_stop_s, scales)]))
    base = list(plan.base)

    # undisturbed: SPICE once per simulator; converged models once on every grid; the others per case below
    spice_u = {sim: _spice_run(spice.bench, base, plan.t_stop_s, reltol, sim) for sim in sims} if spice else {}
    extra_u = [r["t"] for r in spice_u.values() if r["status"] == "ok"]
    conv = [r for r in responders if r.converged]
    undisturbed = _evaluate(plan, base, grid_all, extra_u, [truth, *conv])
    t_tu, y_tu = undisturbed["truth"]

    report: dict = {
        "device": plan.device,
        "units": {"time": "s", "voltage": "V", "current": "A"},
        "plan": plan.to_dict(),
        "i_range_a": i_range.tolist(),
        "reltol": reltol,
        "band_floor_rel": band_floor_rel,
        "simulators": list(sims),
        "spice_model": None if spice is None else {"name": spice.name, "pytorch": spice.pytorch_name},
        "definitions": {
            "rel": "divided by the current range: the largest |I| of the training data per output",
            "peak_error": "max |model - truth| while the impulse is on (t_start <= t <= t_end)",
            "band": f"max({BAND_FACTOR:g} x the model's undisturbed error envelope (max |error| within +-{window:g} "
            f"s), {band_floor_rel:g} x the current range)",
            "recovery_time_s": "last time after t_end where |error| leaves the band, minus t_end (0: never); None: "
            f"not recovered (out of band in the last {TAIL_FRACTION:g} of the time after the impulse)",
            "perturbation": "disturbed - undisturbed response; error = model's minus truth's",
            "replay_max_rel_err": "max |I_spice - I_replay| / max |I_replay|, the student replayed on SPICE's grid",
        },
        "undisturbed": {},
        "cases": [],
    }
    waves: dict = {"cases": []}
    for sim, r in spice_u.items():
        report["undisturbed"][f"spice_{sim}"] = {"status": r["status"]} | (
            {"accepted_points": int(r["t"].size)} if r["status"] == "ok" else {"message": r["message"]}
        )
    context = _CaseContext(plan, responders, truth, spice, sims, reltol, i_range, window, floor, undisturbed, spice_u)
    jobs = list(zip(plan.disturbances, cases_stims, grids, strict=True))
    for case, wave in tqdm(
        _cases(context, jobs, workers), total=len(jobs), desc="stress", disable=not progress, unit="case"
    ):
        report["cases"].append(case)
        waves["cases"].append(wave)
    report["summary"] = _summary(report)
    report["wall_s"] = time.perf_counter() - start
    return report, waves


@dataclasses.dataclass
class _CaseContext:
    """What every stress case reads: the plan, the models, and the undisturbed runs."""

    plan: StressPlan
    responders: Sequence[Responder]
    truth: Responder
    spice: SpiceModel | None
    sims: tuple[str, ...]
    reltol: float
    i_range: np.ndarray
    window: float
    floor: float
    undisturbed: dict  # name -> (t, currents) of the truth and the converged responders
    spice_u: dict  # simulator -> the undisturbed SPICE run


_CONTEXT: _CaseContext | None = None  # the cases' context, which forked workers inherit (closures do not pickle)


def _case_in_worker(job) -> tuple[dict, dict]:
    return _case(_CONTEXT, *job)


def _cases(context: _CaseContext, jobs: list, workers: int):
    """(case, wave) of every job (disturbance, stimuli, grid), in order: here, or on `workers` forked processes
    (`verification._fan_out`)."""
    global _CONTEXT
    _CONTEXT = context
    try:
        yield from _fan_out(_case_in_worker, jobs, min(workers, len(jobs)), "process")
    finally:
        _CONTEXT = None


def _case(ctx: _CaseContext, dist, stims, grid) -> tuple[dict, dict]:
    """One disturbance through the truth, every responder and the export in every simulator: its report entry and
    its waveforms."""
    plan, spice, i_range, window, floor = ctx.plan, ctx.spice, ctx.i_range, ctx.window, ctx.floor
    t_tu, y_tu = ctx.undisturbed["truth"]
    base = list(plan.base)
    t0 = time.perf_counter()
    runs = {sim: _spice_run(spice.bench, stims, plan.t_stop_s, ctx.reltol, sim) for sim in ctx.sims} if spice else {}
    extra = [r["t"] for r in runs.values() if r["status"] == "ok"]
    disturbed = _evaluate(plan, stims, grid, extra, [ctx.truth, *ctx.responders])
    t_td, y_td = disturbed["truth"]
    truth_d_g, truth_u_g = _at(t_td, y_td, grid), _at(t_tu, y_tu, grid)
    v_grid = np.stack([s.sample(grid) for s in stims], 1)
    case: dict = {
        "disturbance": dist.to_dict(),
        "label": dist.label(),
        "peak_abs_v": float(np.max(np.abs(v_grid[:, dist.terminal]))),
        "peak_abs_v_rel": float(np.max(np.abs(v_grid[:, dist.terminal])) / plan.v_scale_v[dist.terminal]),
        "truth_peak_current_rel": (np.abs(truth_d_g).max(axis=0) / i_range).tolist(),
        "models": {},
        "spice": {},
    }
    wave = {"t": grid, "v": v_grid, "truth": truth_d_g, "models": {}, "spice": {}, "dist": dist}
    for r in ctx.responders:
        t_m, y_m = disturbed[r.name]
        y_d = _at(t_m, y_m, grid)
        if r.converged:
            y_u = _at(*ctx.undisturbed[r.name], grid)
        else:
            y_u = np.asarray(r.currents(base, plan.t_stop_s, grid), float).reshape(grid.size, -1)
        err_u = y_u - truth_u_g
        metrics = error_metrics(grid, y_d - truth_d_g, grid, err_u, dist, i_range, plan.t_stop_s, window, floor)
        metrics["perturbation"] = perturbation_metrics(grid, y_d, y_u, truth_d_g, truth_u_g, dist, i_range, floor)
        case["models"][r.name] = metrics
        wave["models"][r.name] = y_d
    for sim, run in runs.items():
        ref = ctx.spice_u[sim]
        if run["status"] != "ok" or ref["status"] != "ok":
            bad = run if run["status"] != "ok" else ref
            case["spice"][sim] = {"status": bad["status"], "message": bad["message"]}
            continue
        t_sp, i_sp, v_sp = run["t"], run["i"], run["v"]
        tr_d = _at(t_td, y_td, t_sp)
        tr_u = _at(t_tu, y_tu, ref["t"])
        entry = {"status": "ok", "accepted_points": int(t_sp.size), "wall_s": run["wall_s"]}
        err_u = ref["i"] - tr_u
        entry |= error_metrics(t_sp, i_sp - tr_d, ref["t"], err_u, dist, i_range, plan.t_stop_s, window, floor)
        bps = np.concatenate([s.breakpoints(plan.t_stop_s) for s in stims])
        y_rep, _ = replay(spice.student, spice.scales.input_scale_v, spice.scales.output_scale_a, t_sp, v_sp, bps)
        y_conv = _at(*disturbed[spice.pytorch_name], t_sp)
        entry["replay_max_rel_err"] = _max_rel(i_sp, y_rep)
        entry["vs_converged_max_rel_err"] = _max_rel(i_sp, y_conv)
        case["spice"][sim] = entry
        wave["spice"][sim] = (t_sp, i_sp, i_sp - tr_d)
    case["wall_s"] = time.perf_counter() - t0
    return case, wave


def _max_rel(a: np.ndarray, ref: np.ndarray) -> list[float]:
    """max |a - ref| / max |ref| per output channel."""
    a, ref = a.reshape(len(a), -1), ref.reshape(len(ref), -1)
    return (np.max(np.abs(a - ref), axis=0) / np.maximum(np.max(np.abs(ref), axis=0), 1e-300)).tolist()


def _summary(report: dict) -> dict:
    """Per model (and per simulator): the worst peak error, the worst recovery time among recovered cases, the
    cases recovered out of all, and for SPICE the worst replay and converged-student errors."""
    rows: dict[str, list[dict]] = {}
    for case in report["cases"]:
        for name, m in case["models"].items():
            rows.setdefault(name, []).append(m)
        for sim, m in case["spice"].items():
            rows.setdefault(f"spice_{sim}", []).append(m)
    out = {}
    for name, ms in rows.items():
        ok = [m for m in ms if m.get("status", "ok") == "ok"]
        worst = [m["worst"] for m in ok]
        rec = [w["recovery_time_s"] for w in worst if w["recovered"]]
        entry = {
            "cases": len(ms),
            "failed_runs": len(ms) - len(ok),
            "worst_peak_error_rel": max((w["peak_error_rel"] for w in worst), default=None),
            "worst_after_peak_error_rel": max((w["after_peak_error_rel"] for w in worst), default=None),
            "recovered": sum(w["recovered"] for w in worst),
            "worst_recovery_time_s": max(rec, default=None),
            "median_recovery_time_s": float(np.median(rec)) if rec else None,
        }
        if ok and "perturbation" in ok[0]:
            entry["worst_perturbation_error_rel"] = max(max(m["perturbation"]["error_peak_rel"]) for m in ok)
        if ok and "replay_max_rel_err" in ok[0]:
            entry["worst_replay_max_rel_err"] = max(max(m["replay_max_rel_err"]) for m in ok)
            entry["worst_vs_converged_max_rel_err"] = max(max(m["vs_converged_max_rel_err"]) for m in ok)
        out[name] = entry
    return out


def worst_case(report: dict) -> int:
    """Index of the case with the largest peak error of the exported student in SPICE (the first simulator that
    ran), else of any PyTorch model other than the truth."""

    def peak(case: dict) -> float:
        spice_runs = [m for m in case["spice"].values() if m.get("status") == "ok"]
        if spice_runs:
            return spice_runs[0]["worst"]["peak_error_rel"]
        return max((m["worst"]["peak_error_rel"] for n, m in case["models"].items() if n != "truth"), default=0.0)

    return int(np.argmax([peak(c) for c in report["cases"]]))


def _worst_channel(case: dict) -> int:
    """The output channel of a case's largest peak error (SPICE's where it ran, else the PyTorch models')."""
    rows = [m for m in case["spice"].values() if m.get("status") == "ok"] or list(case["models"].values())
    peaks = np.max([m["peak_error_rel"] for m in rows], axis=0)
    return int(np.argmax(peaks))


def plot_stress(report: dict, waves: dict, path: str | Path, case: int | None = None) -> Path:
    """One figure of one case (default `worst_case`): the driven voltage and every model's current around the
    impulse (truth, teacher, students, SPICE), and |error| / current range against the time since the impulse
    started, both axes log, with the band floor."""
    from .plots import _save, plt, time_unit

    k = worst_case(report) if case is None else case
    w, c = waves["cases"][k], report["cases"][k]
    dist: Disturbance = w["dist"]
    span = dist.t_end_s - dist.t_start_s
    a, b = dist.t_start_s - 2 * span, dist.t_end_s + 20 * span
    t = w["t"]
    sel = (t >= a) & (t <= b)
    ch = _worst_channel(c)
    rng = report["i_range_a"][ch]
    fig, axes = plt.subplots(3, 1, figsize=(10, 9))
    scale, unit = time_unit(b - a)
    tz = (t[sel] - dist.t_start_s) / scale
    axes[0].plot(tz, w["v"][sel, dist.terminal], color="k", lw=0.9)
    axes[0].set_ylabel(f"V terminal {dist.terminal} (V)")
    axes[0].set_title(f"{report['device']} stress, worst case: {c['label']} (peak {c['peak_abs_v']:.3g} V)")
    axes[1].plot(tz, w["truth"][sel, ch], color="k", lw=1.6, label="truth")
    for name, y in w["models"].items():
        axes[1].plot(tz, y[sel, ch], lw=0.9, label=name)
    for sim, (ts, ys, _) in w["spice"].items():
        s2 = (ts >= a) & (ts <= b)
        axes[1].plot((ts[s2] - dist.t_start_s) / scale, ys[s2, ch], "x", ms=3, mew=0.6, label=f"SPICE {sim}")
    axes[1].set_ylabel(f"current {ch} (A)")
    axes[1].set_xlabel(f"time since the impulse started ({unit})")
    axes[1].legend(fontsize=7, loc="upper right")
    after = t > dist.t_start_s
    for name, y in w["models"].items():
        axes[2].loglog(
            t[after] - dist.t_start_s, np.abs(y[after, ch] - w["truth"][after, ch]) / rng, lw=0.7, label=name
        )
    for sim, (ts, _, es) in w["spice"].items():
        s2 = ts > dist.t_start_s
        axes[2].loglog(ts[s2] - dist.t_start_s, np.abs(es[s2, ch]) / rng, "x", ms=2, mew=0.5, label=f"SPICE {sim}")
    floor = report.get("band_floor_rel", BAND_FLOOR_REL)
    axes[2].axhline(floor, color="gray", ls="--", lw=0.8, label=f"band floor ({100 * floor:g} % of range)")
    axes[2].axvline(span, color="gray", ls=":", lw=0.8, label="impulse end")
    axes[2].set_xlabel("time since the impulse started (s)")
    axes[2].set_ylabel("|model - truth| / current range")
    axes[2].set_ylim(bottom=1e-7)
    axes[2].set_xlim(left=0.1 * dist.edge_s)
    axes[2].legend(fontsize=7, loc="upper right")
    return _save(fig, path)


# ---------------------------------------------------------------------------------------------------------------
# Pipeline entry point


def _same_weights(a, b) -> bool:
    import torch

    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k].double(), sb[k].double()) for k in sa)


def run_stress(
    teacher,
    students: dict,
    dataset,
    export_dir: str | Path | None,
    simulators: Sequence[str],
    out_dir: str | Path,
    plan: StressPlan | None = None,
    progress: bool = False,
    band_floor_rel: float = BAND_FLOOR_REL,
    workers: int = 1,
) -> dict:
    """The stress test of a run: the teacher (None to skip), `students` (name -> ContinuousStudent), the dataset
    (its device and scales), the exported student of `export_dir` (None: PyTorch only) in `simulators`; writes
    out_dir/stress.json and out_dir/stress.png and returns the report. plan: default `stress_plan(device,
    scales.input_scale_v)`; band_floor_rel: the recovery band's floor, a fraction of the current range; workers:
    processes the cases run on."""
    from .artifacts import write_json

    scales = dataset.scales or dataset.compute_scales()
    device = dataset.device
    if device not in DEVICE_STRESS:
        raise ValueError(f"no ground truth for a stress test of device {device!r}; choose one of {list(DEVICE_STRESS)}")
    plan = plan or stress_plan(device, scales.input_scale_v)
    responders = [] if teacher is None else [teacher_responder(teacher, scales)]
    responders += [student_responder(s, scales, name) for name, s in students.items()]
    exported = None
    if export_dir is not None:
        exported = spice_model(export_dir)
        match = next((n for n, s in students.items() if _same_weights(s, exported.student)), None)
        if match is None:
            match = exported.pytorch_name
            responders.append(student_responder(exported.student, exported.scales, match))
        exported = dataclasses.replace(exported, pytorch_name=match)
    report, waves = stress_report(
        plan,
        scales,
        responders,
        truth_responder(device),
        exported,
        simulators,
        progress=progress,
        band_floor_rel=band_floor_rel,
        workers=workers,
    )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "stress.json", report)
    plot_stress(report, waves, out / "stress.png")
    return report
