"""Reader for the SPICE3 raw format written by ngspice (`write`) and VACASK (binary and ASCII).

A raw file holds one or more plots, each a header (Title, Plotname, Flags, No. Variables, No. Points,
Variables) followed by `Binary:` (float64, or complex128 when Flags says complex) or `Values:` (ASCII).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


class RawFileError(ValueError):
    """The file is not a readable SPICE3 raw file."""


@dataclass
class RawPlot:
    """One plot of a raw file: `data[name]` is a float64 (or complex128) vector per variable."""

    title: str
    plotname: str
    flags: str
    names: list[str]
    types: list[str]
    data: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def is_complex(self) -> bool:
        return "complex" in self.flags

    def __getitem__(self, name: str) -> np.ndarray:
        try:
            return self.data[name]
        except KeyError:
            raise KeyError(f"no vector {name!r} in plot {self.plotname!r}; it has {self.names}") from None


def _read_line(buf: bytes, pos: int) -> tuple[str, int]:
    end = buf.find(b"\n", pos)
    if end < 0:
        end = len(buf)
    return buf[pos:end].decode("latin-1").rstrip("\r"), end + 1


def read_raw(path: str | Path) -> list[RawPlot]:
    """Read all plots of a SPICE3 raw file (binary or ASCII)."""
    path = Path(path)
    buf = path.read_bytes()
    if not buf:
        raise RawFileError(f"{path}: empty raw file")
    plots: list[RawPlot] = []
    pos = 0
    while pos < len(buf):
        header: dict[str, str] = {}
        names: list[str] = []
        types: list[str] = []
        body = None
        while pos < len(buf):
            line, pos = _read_line(buf, pos)
            if not line.strip():
                continue
            key, _, value = line.partition(":")
            key = key.strip().lower()
            if key == "variables":
                n_vars = int(header.get("no. variables", "0"))
                if value.strip():  # some writers put the first variable on the same line
                    parts = value.split()
                    names.append(parts[1])
                    types.append(parts[2] if len(parts) > 2 else "")
                while len(names) < n_vars:
                    line, pos = _read_line(buf, pos)
                    parts = line.split()
                    if len(parts) < 2:
                        raise RawFileError(f"{path}: bad variable line {line!r}")
                    names.append(parts[1])
                    types.append(parts[2] if len(parts) > 2 else "")
            elif key in ("binary", "values"):
                body = key
                break
            else:
                header[key] = value.strip()
        if body is None:
            if plots:
                break
            raise RawFileError(f"{path}: no 'Binary:' or 'Values:' section")
        try:
            n_vars = int(header["no. variables"])
            n_points = int(header["no. points"].split()[0])
        except (KeyError, ValueError) as exc:
            raise RawFileError(f"{path}: missing or bad header field ({exc})") from None
        flags = header.get("flags", "real").lower()
        is_complex = "complex" in flags
        if body == "binary":
            dtype = np.complex128 if is_complex else np.float64
            count = n_vars * n_points
            nbytes = count * np.dtype(dtype).itemsize
            if pos + nbytes > len(buf):
                # A simulator killed mid-write leaves a truncated file: keep the complete points.
                n_points = (len(buf) - pos) // (n_vars * np.dtype(dtype).itemsize)
                count = n_vars * n_points
                nbytes = count * np.dtype(dtype).itemsize
            values = np.frombuffer(buf, dtype=dtype, count=count, offset=pos).reshape(n_points, n_vars)
            pos += nbytes
        else:
            rows = []
            tokens: list[str] = []
            while len(rows) < n_points and pos < len(buf):
                line, pos = _read_line(buf, pos)
                if not line.strip():
                    continue
                parts = line.split()
                if not tokens:
                    parts = parts[1:]  # leading point index
                tokens.extend(parts)
                if len(tokens) >= n_vars:
                    rows.append(tokens[:n_vars])
                    tokens = []
            if is_complex:
                values = np.array(
                    [[complex(*map(float, tok.split(","))) for tok in row] for row in rows],
                    dtype=np.complex128,
                )
            else:
                values = np.array(rows, dtype=np.float64).reshape(len(rows), n_vars)
        plot = RawPlot(
            title=header.get("title", ""),
            plotname=header.get("plotname", ""),
            flags=flags,
            names=names,
            types=types,
            data={name: np.array(values[:, j]) for j, name in enumerate(names)},
        )
        if plot.is_complex and names and names[0].lower() == "frequency":
            plot.data[names[0]] = plot.data[names[0]].real.copy()
        plots.append(plot)
    return plots
