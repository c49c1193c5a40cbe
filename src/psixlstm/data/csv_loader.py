"""Waveform CSV in and out: one header line, then one row per sample, values in s, V and A.

Blank lines and lines starting with ``#`` are skipped. The delimiter is detected from the header line
(",", tab or ";"; otherwise runs of whitespace) unless given. An optional sequence column splits the rows
into sequences (grouped by its value, in order of first appearance). Errors name the 1-based file line and
the column.
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from .dataset import Dataset, DataValidationError, Sequence, atomic_write_bytes, split_sequences

MIN_CSV_ROWS = 3  # per sequence
_SNIFF_DELIMITERS = (",", "\t", ";")


def _rows(lines: list[str], delimiter: str | None) -> Iterator[tuple[int, list[str]]]:
    """Yield (1-based line number, stripped fields) for non-blank, non-comment lines."""
    kept = [(n, ln) for n, ln in enumerate(lines, start=1) if ln.strip() and not ln.lstrip().startswith("#")]
    texts = (ln for _, ln in kept)
    split = (ln.split() for ln in texts) if delimiter is None else csv.reader(texts, delimiter=delimiter)
    for (lineno, _), fields in zip(kept, split, strict=False):
        yield lineno, [f.strip() for f in fields]


def _detect_delimiter(header: str) -> str | None:
    for d in _SNIFF_DELIMITERS:
        if d in header:
            return d
    return None  # whitespace


def _parse_float(cell: str, lineno: int, col: str) -> float:
    try:
        x = float(cell)
    except ValueError:
        shown = repr(cell) if cell else "an empty cell"
        raise DataValidationError(f"line {lineno}, column {col!r}: cannot parse {shown} as a number") from None
    if not math.isfinite(x):
        raise DataValidationError(f"line {lineno}, column {col!r}: value {cell!r} is not finite")
    return x


def load_csv(
    path: str | os.PathLike,
    time_col: str = "time",
    voltage_cols: str | tuple[str, ...] | list[str] = ("v",),
    current_cols: str | tuple[str, ...] | list[str] = ("i",),
    sequence_col: str | None = None,
    device: str = "csv",
    delimiter: str | None = None,
    seed: int = 0,
) -> Dataset:
    """Load a waveform CSV (time in s, voltages in V, currents in A) into a Dataset with splits and scales.

    ``voltage_cols`` become the inputs and ``current_cols`` the outputs (a str is one column), named after
    the header. Columns not asked for are ignored (they may hold text). ``seed`` fixes the train/val/test
    split of the sequences.
    """
    path = Path(path)
    voltage_cols = [voltage_cols] if isinstance(voltage_cols, str) else list(voltage_cols)
    current_cols = [current_cols] if isinstance(current_cols, str) else list(current_cols)
    lines = path.read_text(encoding="utf-8-sig").splitlines()
    header_line = next((ln for ln in lines if ln.strip() and not ln.lstrip().startswith("#")), None)
    if header_line is None:
        raise DataValidationError(f"{path}: no header line (the file is empty or only comments)")
    if delimiter is None:
        delimiter = _detect_delimiter(header_line)
    elif delimiter.isspace():
        delimiter = None
    rows = _rows(lines, delimiter)
    header_lineno, header = next(rows)
    wanted = [time_col, *voltage_cols, *current_cols] + ([sequence_col] if sequence_col is not None else [])
    col_index = {}
    for name in wanted:
        hits = [k for k, h in enumerate(header) if h == name]
        if not hits:
            raise DataValidationError(f"{path}: line {header_lineno}: no column {name!r}; available columns: {header}")
        if len(hits) > 1:
            raise DataValidationError(f"{path}: line {header_lineno}: column {name!r} appears {len(hits)} times")
        col_index[name] = hits[0]
    numeric = [time_col, *voltage_cols, *current_cols]
    groups: dict[str, tuple[list[int], list[list[float]]]] = {}
    for lineno, fields in rows:
        if len(fields) != len(header):
            raise DataValidationError(
                f"{path}: line {lineno}: {len(fields)} fields, but the header (line {header_lineno}) "
                f"has {len(header)}"
            )
        label = fields[col_index[sequence_col]] if sequence_col is not None else ""
        linenos, values = groups.setdefault(label, ([], []))
        linenos.append(lineno)
        try:
            values.append([_parse_float(fields[col_index[c]], lineno, c) for c in numeric])
        except DataValidationError as e:
            raise DataValidationError(f"{path}: {e}") from None
    if not groups:
        raise DataValidationError(f"{path}: no data rows after the header (line {header_lineno})")
    n_in = len(voltage_cols)
    sequences = []
    for label, (linenos, values) in groups.items():
        what = f"sequence {sequence_col}={label!r}" if sequence_col is not None else "the file"
        if len(values) < MIN_CSV_ROWS:
            raise DataValidationError(
                f"{path}: {what} has {len(values)} data rows (lines {linenos[0]}-{linenos[-1]}); "
                f"at least {MIN_CSV_ROWS} are needed"
            )
        arr = np.asarray(values, dtype=np.float64)
        t = arr[:, 0]
        bad = np.flatnonzero(np.diff(t) <= 0)
        if bad.size:
            k = int(bad[0]) + 1
            raise DataValidationError(
                f"{path}: line {linenos[k]}, column {time_col!r}: time {float(t[k])!r} s is not greater "
                f"than {float(t[k - 1])!r} s on line {linenos[k - 1]} (time must strictly increase within a "
                "sequence)"
            )
        meta = {"source": str(path), "first_line": linenos[0]}
        if sequence_col is not None:
            meta["sequence"] = label
        sequences.append(Sequence(t, arr[:, 1 : 1 + n_in], arr[:, 1 + n_in :], meta=meta))
    ds = Dataset(
        device=device,
        input_names=list(voltage_cols),
        output_names=list(current_cols),
        sequences=sequences,
        splits=split_sequences(len(sequences), seed=seed),
        meta={"source": str(path), "format": "csv", "time_col": time_col, "sequence_col": sequence_col},
    )
    ds.compute_scales()
    return ds


def save_csv(
    data: Dataset | Sequence,
    path: str | os.PathLike,
    time_col: str = "time",
    voltage_cols: tuple[str, ...] | list[str] | None = None,
    current_cols: tuple[str, ...] | list[str] | None = None,
    sequence_col: str = "sequence",
    delimiter: str = ",",
) -> Path:
    """Write a Dataset or Sequence in the format :func:`load_csv` reads; values round-trip exactly.

    Column names default to the dataset's channel names (for a bare Sequence: "v"/"i", or "v0", "v1", ...).
    A Dataset gets a leading ``sequence_col`` holding each sequence's index. Clean outputs are not written.
    """
    seqs = data.sequences if isinstance(data, Dataset) else [data]
    n_in, n_out = seqs[0].n_inputs, seqs[0].n_outputs
    if isinstance(data, Dataset):
        voltage_cols = data.input_names if voltage_cols is None else voltage_cols
        current_cols = data.output_names if current_cols is None else current_cols
    else:
        voltage_cols = voltage_cols or (["v"] if n_in == 1 else [f"v{k}" for k in range(n_in)])
        current_cols = current_cols or (["i"] if n_out == 1 else [f"i{k}" for k in range(n_out)])
    if len(voltage_cols) != n_in or len(current_cols) != n_out:
        raise DataValidationError(
            f"{len(voltage_cols)} voltage and {len(current_cols)} current column names given for data with "
            f"{n_in} inputs and {n_out} outputs"
        )
    with_seq = isinstance(data, Dataset)
    buf = io.StringIO()
    writer = csv.writer(buf, delimiter=delimiter, lineterminator="\n")
    writer.writerow(([sequence_col] if with_seq else []) + [time_col, *voltage_cols, *current_cols])
    for k, s in enumerate(seqs):
        block = np.column_stack([s.t_s, s.inputs_v, s.outputs_a])
        prefix = [str(k)] if with_seq else []
        writer.writerows(prefix + [repr(x) for x in row] for row in block.tolist())
    path = Path(path)
    atomic_write_bytes(path, lambda f: f.write(buf.getvalue().encode("utf-8")))
    return path
