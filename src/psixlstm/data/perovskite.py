"""Measured volatile perovskite memristor (Gonzales et al., Zenodo 10.5281/zenodo.12656947, CC BY 4.0).

The files are tab-separated text: a row of quantity names, a row of units, optionally a label row (bias,
device, pulse width), then data. I-V sweep files have no time column: time is reconstructed from an ASSUMED
constant sweep rate, recorded in the dataset's meta. Keep :data:`PEROVSKITE_ATTRIBUTION` with anything
derived from the data.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .dataset import Dataset, DataValidationError, Sequence, split_sequences

PEROVSKITE_DIRNAME = "perovskite_memristor_zenodo_12656947"
PEROVSKITE_ENV_VAR = "PSIXLSTM_PEROVSKITE_DIR"
PEROVSKITE_ATTRIBUTION = (
    "C. Gonzales, A. Bou, A. Guerrero, J. Bisquert, \"Data set of 'Capacitive and Inductive Characteristics "
    "of Volatile Perovskite Resistive Switching Devices with Analog Memory'\", Zenodo, 2024, "
    "DOI 10.5281/zenodo.12656947. License: CC BY 4.0 (attribution required; keep this notice with anything "
    "derived from the data). Associated article: J. Phys. Chem. Lett. 15 (2024) 6496."
)
# Neither the dataset readme nor its file headers state the I-V scan rate; 0.1 V/s is an assumption.
DEFAULT_SWEEP_RATE_V_PER_S = 0.1
# Fig2a: 5 cycles to 1.25 V; Fig2b: upper vertices 0.25-1.75 V (Fig3a-c repeat three of its blocks).
DEFAULT_IV_FILES = ("figure2/Fig2a.txt", "figure2/Fig2b.txt")
MISSING_CELL = "--"  # unrecorded current (31 rows of Fig2a/b); such rows are dropped, time stays exact
IMPEDANCE_FILES = tuple(f"figure4/Fig4{c}.txt" for c in "abcdef")
INPUT_NAMES = ["v_pn"]  # voltage across the two terminals, V
OUTPUT_NAMES = ["i_p"]  # current into the positive terminal, A


def default_perovskite_dir() -> Path:
    """The dataset folder: $PSIXLSTM_PEROVSKITE_DIR, else ``shared/datasets/...`` beside the repo or cwd."""
    env = os.environ.get(PEROVSKITE_ENV_VAR)
    if env:
        if not Path(env).is_dir():
            raise FileNotFoundError(f"{PEROVSKITE_ENV_VAR}={env!r} is not a directory")
        return Path(env)
    repo_root = Path(__file__).resolve().parents[3]
    cwd = Path.cwd().resolve()
    tried = []
    for base in [repo_root, cwd, *cwd.parents]:
        for cand in (
            base.parent / "shared" / "datasets" / PEROVSKITE_DIRNAME,
            base / "shared" / "datasets" / PEROVSKITE_DIRNAME,
        ):
            if cand in tried:
                continue
            if cand.is_dir():
                return cand
            tried.append(cand)
    raise FileNotFoundError(
        f"perovskite data folder {PEROVSKITE_DIRNAME!r} not found (Zenodo DOI 10.5281/zenodo.12656947, "
        f"CC BY 4.0); set {PEROVSKITE_ENV_VAR} to it. Looked in: {', '.join(map(str, tried))}"
    )


def _resolve_dir(directory: str | os.PathLike | None) -> Path:
    d = default_perovskite_dir() if directory is None else Path(directory)
    if not d.is_dir():
        raise FileNotFoundError(f"perovskite data folder {d} does not exist")
    return d


@dataclass
class _Table:
    path: Path
    names: list[str]
    units: list[str]
    labels: list[str] | None
    rows: list[tuple[int, list[str]]]  # (1-based file line, cells padded to len(names))

    def column(self, k: int, rows: list[tuple[int, list[str]]] | None = None) -> np.ndarray:
        """Column k of ``rows`` (default: all) as finite float64; errors name the file line."""
        out = []
        for lineno, cells in self.rows if rows is None else rows:
            try:
                x = float(cells[k])
            except ValueError:
                raise DataValidationError(
                    f"{self.path}: line {lineno}, column {self.names[k]!r}: " f"cannot parse {cells[k]!r} as a number"
                ) from None
            if not np.isfinite(x):
                raise DataValidationError(f"{self.path}: line {lineno}, column {self.names[k]!r}: {x} is not finite")
            out.append(x)
        return np.asarray(out, dtype=np.float64)


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def _read_table(path: Path) -> _Table:
    lines = path.read_text(encoding="utf-8").splitlines()
    if len(lines) < 3:
        raise DataValidationError(f"{path}: {len(lines)} lines; expected names, units and data rows")
    names = [c.strip() for c in lines[0].split("\t")]
    units = [c.strip() for c in lines[1].split("\t")]
    if len(units) != len(names):
        raise DataValidationError(f"{path}: line 2 has {len(units)} unit cells for {len(names)} names")
    third = [c.strip() for c in lines[2].split("\t")]
    labels = None
    if not any(_is_number(c) for c in third):  # a label row: no numeric cell
        labels = third + [""] * (len(names) - len(third))
    rows = []
    for lineno, line in enumerate(lines[3 if labels else 2 :], start=4 if labels else 3):
        if not line.strip():
            continue
        cells = [c.strip() for c in line.split("\t")]
        if len(cells) > len(names):
            raise DataValidationError(f"{path}: line {lineno} has {len(cells)} cells for {len(names)} columns")
        rows.append((lineno, cells + [""] * (len(names) - len(cells))))
    return _Table(path, names, units, labels, rows)


def reconstruct_sweep_time(v_v: np.ndarray, sweep_rate_v_per_s: float) -> np.ndarray:
    """Time (s) of each sample of a voltage sweep at a constant rate, starting at 0.

    Each step lasts max(|dV|, nominal step) / rate, the nominal step being the median non-zero |dV|, so
    repeated voltage points still advance time by one sample period.
    """
    if not (np.isfinite(sweep_rate_v_per_s) and sweep_rate_v_per_s > 0):
        raise DataValidationError(f"sweep_rate_v_per_s must be finite and > 0, got {sweep_rate_v_per_s!r}")
    dv = np.abs(np.diff(np.asarray(v_v, dtype=np.float64)))
    if not np.any(dv > 0):
        raise DataValidationError("the voltage never changes; time cannot be reconstructed from a sweep rate")
    step = float(np.median(dv[dv > 0]))
    return np.concatenate([[0.0], np.cumsum(np.maximum(dv, step) / sweep_rate_v_per_s)])


def _iv_blocks(table: _Table) -> list[tuple[str, list[tuple[int, list[str]]], int, int]]:
    """Split an I-V table into (label, rows, voltage column, current column) blocks."""
    names, units, path = table.names, table.units, table.path
    v_cols = [k for k, n in enumerate(names) if n == "Voltage"]
    if not v_cols or any(k + 1 >= len(names) or names[k + 1] != "Current" for k in v_cols):
        raise DataValidationError(f"{path}: not an I-V file; expected Voltage, Current column pairs, got {names}")
    for k in v_cols:
        if (units[k], units[k + 1]) != ("V", "A"):
            raise DataValidationError(f"{path}: units of columns {k + 1}-{k + 2} are {units[k : k + 2]}, not V, A")
    others = [k for k in range(len(names)) if k not in v_cols and k - 1 not in v_cols]
    if len(others) > 1 or (others and len(v_cols) > 1):
        raise DataValidationError(f"{path}: unsupported column layout {names}")
    if len(v_cols) > 1:  # one sequence per column pair, named by the label row
        blocks = []
        for j, k in enumerate(v_cols):
            label = next((c for c in (table.labels or [])[k : k + 2] if c), f"pair {j + 1}")
            rows = [r for r in table.rows if r[1][k] or r[1][k + 1]]
            blocks.append((label, rows, k, k + 1))
        return blocks
    k = v_cols[0]
    if not others:
        return [(path.name, table.rows, k, k + 1)]
    g = others[0]  # grouping column (Scan No., Upper Vertex): a new sequence at each change of value
    blocks: list[tuple[str, list[tuple[int, list[str]]], int, int]] = []
    for row in table.rows:
        label = f"{names[g]}={row[1][g]}"
        if not blocks or blocks[-1][0] != label:
            blocks.append((label, [], k, k + 1))
        blocks[-1][1].append(row)
    return blocks


def load_iv_sweeps(
    directory: str | os.PathLike | None = None,
    files: tuple[str, ...] | list[str] = DEFAULT_IV_FILES,
    sweep_rate_v_per_s: float = DEFAULT_SWEEP_RATE_V_PER_S,
    seed: int = 0,
) -> Dataset:
    """I-V sweeps as a Dataset: one sequence per scan / upper-vertex block / device column pair.

    ``files`` are relative to ``directory`` (default: :func:`default_perovskite_dir`). Time is reconstructed
    with :func:`reconstruct_sweep_time` at the ASSUMED ``sweep_rate_v_per_s`` (V/s; not stated by the data
    set). Rows whose current reads "--" (not recorded) are dropped and listed in the sequence's
    meta["missing_lines"]; since time follows |dV|, the gap keeps its true duration. Scans repeated
    bit-for-bit across files (Fig3a-c are blocks of Fig2b) are kept once.
    """
    directory = _resolve_dir(directory)
    sequences, seen, dropped = [], set(), []
    for rel in files:
        table = _read_table(directory / rel)
        for label, rows, kv, ki in _iv_blocks(table):
            missing = [ln for ln, cells in rows if MISSING_CELL in (cells[kv], cells[ki])]
            rows = [r for r in rows if MISSING_CELL not in (r[1][kv], r[1][ki])]
            if len(rows) < 3:
                raise DataValidationError(f"{table.path}: block {label!r} has {len(rows)} rows; at least 3 needed")
            v, i = table.column(kv, rows), table.column(ki, rows)
            key = (v.tobytes(), i.tobytes())
            if key in seen:
                dropped.append(f"{rel}: {label}")
                continue
            seen.add(key)
            t = reconstruct_sweep_time(v, sweep_rate_v_per_s)
            dv = np.abs(np.diff(v))
            meta = {
                "file": rel,
                "label": label,
                "first_line": rows[0][0],
                "voltage_step_v": float(np.median(dv[dv > 0])),
                "missing_lines": missing,
            }
            sequences.append(Sequence(t, v[:, None], i[:, None], meta=meta))
    ds = Dataset(
        device="perovskite",
        input_names=INPUT_NAMES,
        output_names=OUTPUT_NAMES,
        sequences=sequences,
        splits=split_sequences(len(sequences), seed=seed),
        attribution=PEROVSKITE_ATTRIBUTION,
        meta={
            "source": "Zenodo 10.5281/zenodo.12656947",
            "files": list(files),
            "assumed_sweep_rate_v_per_s": float(sweep_rate_v_per_s),
            "time_axis": "reconstructed from the assumed constant sweep rate; the files have no time column",
            "duplicates_dropped": dropped,
            "missing_rows_dropped": sum(len(s.meta["missing_lines"]) for s in sequences),
        },
    )
    ds.compute_scales()
    return ds


@dataclass
class ImpedanceSpectrum:
    """Small-signal impedance Z = z_real_ohm + j*z_imag_ohm (ohm) at a DC bias (V), frequency_hz ascending.

    The imaginary part is as in the file: negative is capacitive, positive inductive.
    """

    bias_v: float
    frequency_hz: np.ndarray
    z_real_ohm: np.ndarray
    z_imag_ohm: np.ndarray

    @property
    def impedance_ohm(self) -> np.ndarray:
        """Complex impedance in ohms."""
        return self.z_real_ohm + 1j * self.z_imag_ohm


_BIAS_RE = re.compile(r"^([-+]?\d+(?:\.\d*)?(?:[eE][-+]?\d+)?)\s*V$")


def load_impedance_spectra(directory: str | os.PathLike | None = None) -> list[ImpedanceSpectrum]:
    """The six dark impedance spectra of figure 4 (0, 0.2, 0.3, 0.4, 0.6, 1.0 V bias), sorted by bias."""
    directory = _resolve_dir(directory)
    spectra = []
    for rel in IMPEDANCE_FILES:
        table = _read_table(directory / rel)
        if table.names[:3] != ["Frequency", "Z'", "Z''"] or table.units[:3] != ["Hz", "Ohm", "Ohm"]:
            raise DataValidationError(
                f"{table.path}: expected Frequency/Z'/Z'' in Hz/Ohm/Ohm, got {table.names} in {table.units}"
            )
        label = next((c for c in table.labels or [] if c), "")
        m = _BIAS_RE.match(label)
        if m is None:
            raise DataValidationError(f"{table.path}: line 3 should give the bias like '0.2 V', got {label!r}")
        f, zr, zi = (table.column(k) for k in range(3))
        order = np.argsort(f, kind="stable")
        if f[order[0]] <= 0 or np.any(np.diff(f[order]) <= 0):
            raise DataValidationError(f"{table.path}: frequencies must be positive and distinct")
        spectra.append(ImpedanceSpectrum(float(m.group(1)), f[order], zr[order], zi[order]))
    return sorted(spectra, key=lambda s: s.bias_v)
