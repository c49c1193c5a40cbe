"""Typed waveform dataset with explicit SI units: sequences, splits, normalisation scales, save/load.

All arrays are float64 in seconds (time), volts (terminal voltages) and amperes (terminal currents).
On disk a dataset is a directory with ``dataset.npz`` (concatenated arrays + offsets) and ``dataset.json``
(names, units, splits, scales, metadata); both are written atomically and the JSON records the SHA-256 of
the NPZ so a half-written pair is detected on load.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

FORMAT_VERSION = 1
UNITS = {"time": "s", "voltage": "V", "current": "A"}
NPZ_NAME = "dataset.npz"
JSON_NAME = "dataset.json"
VOLTAGE_SCALE_FLOOR_V = 1e-6  # smallest input scale, so an all-zero channel does not divide by 0
CURRENT_SCALE_FLOOR_A = 1e-12  # smallest output scale, so an all-zero channel does not scale to 0
MIN_SEQUENCE_LENGTH = 2  # at least one time step


class DataValidationError(ValueError):
    """Raised when waveform data or a dataset file is malformed; the message names the offending item."""


def _first_bad(mask: np.ndarray) -> tuple[int, ...]:
    return tuple(int(k) for k in np.argwhere(mask)[0])


def _as_float_array(name: str, x: Any, ndim: int) -> np.ndarray:
    arr = np.asarray(x)
    if arr.dtype.kind not in "biuf":
        raise DataValidationError(f"{name} must be a real numeric array, got dtype {arr.dtype}")
    arr = arr.astype(np.float64, copy=False)
    if arr.ndim != ndim:
        hint = " (use x.reshape(-1, 1) for a single channel)" if ndim == 2 and arr.ndim == 1 else ""
        raise DataValidationError(f"{name} must be {ndim}-D, got shape {arr.shape}{hint}")
    if not np.all(np.isfinite(arr)):
        idx = _first_bad(~np.isfinite(arr))
        raise DataValidationError(f"{name} has a non-finite value {arr[idx]} at index {idx}")
    return arr


@dataclass
class Sequence:
    """One waveform: time (s), terminal voltages (V) and terminal currents (A) on a shared time grid.

    ``t_s`` is (N,) and strictly increasing (non-uniform steps allowed); ``inputs_v`` is (N, n_in);
    ``outputs_a`` is (N, n_out) as observed (noisy if noise was added); ``outputs_clean_a`` is the noiseless
    ground truth where known; ``meta`` is JSON-able (stimulus description, seed, ...).
    """

    t_s: np.ndarray
    inputs_v: np.ndarray
    outputs_a: np.ndarray
    outputs_clean_a: np.ndarray | None = None
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.t_s = _as_float_array("t_s", self.t_s, 1)
        self.inputs_v = _as_float_array("inputs_v", self.inputs_v, 2)
        self.outputs_a = _as_float_array("outputs_a", self.outputs_a, 2)
        n = self.t_s.shape[0]
        if n < MIN_SEQUENCE_LENGTH:
            raise DataValidationError(f"a sequence needs at least {MIN_SEQUENCE_LENGTH} samples, got {n}")
        for name in ("inputs_v", "outputs_a"):
            if getattr(self, name).shape[0] != n:
                raise DataValidationError(f"{name} has {getattr(self, name).shape[0]} rows but t_s has {n} samples")
        if self.outputs_clean_a is not None:
            self.outputs_clean_a = _as_float_array("outputs_clean_a", self.outputs_clean_a, 2)
            if self.outputs_clean_a.shape != self.outputs_a.shape:
                raise DataValidationError(
                    f"outputs_clean_a has shape {self.outputs_clean_a.shape}, "
                    f"outputs_a has shape {self.outputs_a.shape}"
                )
        dt = np.diff(self.t_s)
        if np.any(dt <= 0):
            k = int(np.argmax(dt <= 0)) + 1
            raise DataValidationError(
                f"t_s must be strictly increasing: t_s[{k}] = {float(self.t_s[k])!r} s <= t_s[{k - 1}] = "
                f"{float(self.t_s[k - 1])!r} s"
            )
        if not isinstance(self.meta, dict):
            raise DataValidationError(f"meta must be a dict, got {type(self.meta).__name__}")

    def __len__(self) -> int:
        return int(self.t_s.shape[0])

    @property
    def dt_s(self) -> np.ndarray:
        """(N-1,) time steps in seconds."""
        return np.diff(self.t_s)

    @property
    def n_inputs(self) -> int:
        return int(self.inputs_v.shape[1])

    @property
    def n_outputs(self) -> int:
        return int(self.outputs_a.shape[1])


@dataclass
class Scales:
    """Normalisation scales: model input = v / input_scale_v; current = model output * output_scale_a.

    ``dt_min_s`` and ``dt_max_s`` are the smallest and largest time steps (s) seen in the data.
    """

    input_scale_v: np.ndarray
    output_scale_a: np.ndarray
    dt_min_s: float
    dt_max_s: float

    def __post_init__(self) -> None:
        self.input_scale_v = _as_float_array("input_scale_v", self.input_scale_v, 1)
        self.output_scale_a = _as_float_array("output_scale_a", self.output_scale_a, 1)
        for name in ("input_scale_v", "output_scale_a"):
            if np.any(getattr(self, name) <= 0):
                raise DataValidationError(f"{name} must be > 0, got {getattr(self, name).tolist()}")
        self.dt_min_s, self.dt_max_s = float(self.dt_min_s), float(self.dt_max_s)
        if not (math.isfinite(self.dt_max_s) and 0 < self.dt_min_s <= self.dt_max_s):
            raise DataValidationError(
                f"need 0 < dt_min_s <= dt_max_s (finite), got {self.dt_min_s!r} s and {self.dt_max_s!r} s"
            )

    def to_dict(self) -> dict:
        return {
            "input_scale_v": self.input_scale_v.tolist(),
            "output_scale_a": self.output_scale_a.tolist(),
            "dt_min_s": self.dt_min_s,
            "dt_max_s": self.dt_max_s,
        }

    @classmethod
    def from_dict(cls, d: dict) -> Scales:
        missing = {"input_scale_v", "output_scale_a", "dt_min_s", "dt_max_s"} - set(d)
        if missing:
            raise DataValidationError(f"scales dict lacks {sorted(missing)}")
        return cls(
            input_scale_v=np.asarray(d["input_scale_v"], dtype=np.float64),
            output_scale_a=np.asarray(d["output_scale_a"], dtype=np.float64),
            dt_min_s=d["dt_min_s"],
            dt_max_s=d["dt_max_s"],
        )


def split_sequences(
    n: int, fractions: tuple[float, float, float] = (0.7, 0.15, 0.15), seed: int = 0
) -> dict[str, list[int]]:
    """Deterministic random split of sequence indices 0..n-1 into "train"/"val"/"test" (sorted lists).

    Splits are by whole sequence. When n >= 3 every split with a positive fraction gets at least one
    sequence; n = 1 goes to train, n = 2 to train and val (test if the val fraction is 0).
    """
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
        raise DataValidationError(f"n must be a positive int, got {n!r}")
    fr = [float(f) for f in fractions]
    if len(fr) != 3 or any(not math.isfinite(f) or f < 0 for f in fr) or fr[0] <= 0 or abs(sum(fr) - 1) > 1e-9:
        raise DataValidationError(
            f"fractions must be 3 finite values >= 0 (train > 0) summing to 1, got {tuple(fractions)}"
        )
    n = int(n)
    if n >= 3:
        n_val = max(1, round(n * fr[1])) if fr[1] > 0 else 0
        n_test = max(1, round(n * fr[2])) if fr[2] > 0 else 0
        while n - n_val - n_test < 1:  # give back to train from the larger held-out split
            if n_val >= n_test:
                n_val -= 1
            else:
                n_test -= 1
    else:
        n_val = 1 if n == 2 and fr[1] > 0 else 0
        n_test = 1 if n == 2 and fr[1] == 0 and fr[2] > 0 else 0
    perm = np.random.default_rng(seed).permutation(n)
    n_train = n - n_val - n_test
    return {
        "train": sorted(int(i) for i in perm[:n_train]),
        "val": sorted(int(i) for i in perm[n_train : n_train + n_val]),
        "test": sorted(int(i) for i in perm[n_train + n_val :]),
    }


def _to_json(obj: Any, what: str) -> str:
    try:
        return json.dumps(obj, indent=2, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise DataValidationError(f"{what} is not JSON-serialisable (plain str/int/float/list/dict): {e}") from e


def atomic_write_bytes(path: str | os.PathLike, write: Callable[[IO[bytes]], None]) -> None:
    """Write a file atomically: ``write(f)`` fills a temp file in the same directory, then os.replace."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    umask = os.umask(0)
    os.umask(umask)
    try:
        os.fchmod(fd, 0o666 & ~umask)  # mkstemp creates 0600; give the file the usual permissions
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@dataclass
class Dataset:
    """A set of sequences from one device, with channel names, splits by sequence and scales.

    ``device`` e.g. "memristor", "vteam-paper", "mosfet", "bjt", "csv", "perovskite"; ``input_names`` are
    voltage channels (e.g. ["v_gs", "v_ds"]), ``output_names`` current channels (e.g. ["i_d", "i_g"]);
    ``splits`` maps "train"/"val"/"test" to sequence indices; ``true_tau_s`` holds the ground-truth time
    constants (s) where known; ``attribution`` is licence text that must travel with derived data.
    """

    device: str
    input_names: list[str]
    output_names: list[str]
    sequences: list[Sequence]
    splits: dict[str, list[int]]
    true_tau_s: list[float] | None = None
    attribution: str | None = None
    meta: dict = field(default_factory=dict)
    scales: Scales | None = None

    def __post_init__(self) -> None:
        self.input_names, self.output_names = list(self.input_names), list(self.output_names)
        self.validate()

    def validate(self) -> None:
        """Check names, channel counts, splits, taus and scales against the sequences."""
        if not isinstance(self.device, str) or not self.device:
            raise DataValidationError(f"device must be a non-empty str, got {self.device!r}")
        for kind, names in (("input_names", self.input_names), ("output_names", self.output_names)):
            if not names or not all(isinstance(s, str) and s for s in names) or len(set(names)) != len(names):
                raise DataValidationError(f"{kind} must be non-empty unique strings, got {names!r}")
        if not self.sequences:
            raise DataValidationError("a dataset needs at least one sequence")
        for i, seq in enumerate(self.sequences):
            if not isinstance(seq, Sequence):
                raise DataValidationError(f"sequences[{i}] is a {type(seq).__name__}, not a Sequence")
            if seq.n_inputs != len(self.input_names) or seq.n_outputs != len(self.output_names):
                raise DataValidationError(
                    f"sequences[{i}] has {seq.n_inputs} inputs and {seq.n_outputs} outputs, but names are "
                    f"{self.input_names} and {self.output_names}"
                )
        n, seen = len(self.sequences), {}
        for name, idx in self.splits.items():
            for i in idx:
                if isinstance(i, bool) or not isinstance(i, int | np.integer) or not 0 <= i < n:
                    raise DataValidationError(f"split {name!r} has index {i!r}, not in 0..{n - 1}")
                if i in seen:
                    raise DataValidationError(f"sequence {i} is in split {seen[i]!r} and in split {name!r}")
                seen[i] = name
        self.splits = {name: [int(i) for i in idx] for name, idx in self.splits.items()}
        if self.true_tau_s is not None:
            self.true_tau_s = [float(t) for t in self.true_tau_s]
            if not all(math.isfinite(t) and t > 0 for t in self.true_tau_s):
                raise DataValidationError(f"true_tau_s must be finite and > 0, got {self.true_tau_s}")
        if self.scales is not None and (
            self.scales.input_scale_v.shape != (len(self.input_names),)
            or self.scales.output_scale_a.shape != (len(self.output_names),)
        ):
            raise DataValidationError(
                f"scales have {self.scales.input_scale_v.shape[0]} inputs and "
                f"{self.scales.output_scale_a.shape[0]} outputs; the dataset has "
                f"{len(self.input_names)} and {len(self.output_names)}"
            )

    def subset(self, split_name: str) -> list[Sequence]:
        """The sequences of one split, in index order."""
        if split_name not in self.splits:
            raise DataValidationError(f"no split {split_name!r}; available: {sorted(self.splits)}")
        return [self.sequences[i] for i in self.splits[split_name]]

    def compute_scales(self) -> Scales:
        """Set and return scales from the train split: max |x| per channel (with a floor) and the dt range."""
        train = self.subset("train")
        if not train:
            raise DataValidationError("cannot compute scales: the train split is empty")
        v = np.concatenate([s.inputs_v for s in train])
        i = np.concatenate([s.outputs_a for s in train])
        dt = np.concatenate([s.dt_s for s in train])
        self.scales = Scales(
            input_scale_v=np.maximum(np.abs(v).max(axis=0), VOLTAGE_SCALE_FLOOR_V),
            output_scale_a=np.maximum(np.abs(i).max(axis=0), CURRENT_SCALE_FLOOR_A),
            dt_min_s=float(dt.min()),
            dt_max_s=float(dt.max()),
        )
        return self.scales

    def summary(self) -> str:
        """Human-readable summary: splits, samples, duration, dt range and channel ranges with units."""
        seqs = self.sequences
        n_samples = sum(len(s) for s in seqs)
        duration = sum(float(s.t_s[-1] - s.t_s[0]) for s in seqs)
        dt = np.concatenate([s.dt_s for s in seqs])
        split_txt = ", ".join(f"{k} {len(v)}" for k, v in self.splits.items())
        lines = [
            f"Dataset '{self.device}': {len(seqs)} sequences ({split_txt}), {n_samples} samples, "
            f"total duration {duration:.4g} s",
            f"  dt: {dt.min():.4g} .. {dt.max():.4g} s",
        ]
        v = np.concatenate([s.inputs_v for s in seqs])
        i = np.concatenate([s.outputs_a for s in seqs])
        for name, col, unit in [(n, v[:, k], "V") for k, n in enumerate(self.input_names)] + [
            (n, i[:, k], "A") for k, n in enumerate(self.output_names)
        ]:
            lines.append(f"  {name}: {col.min():.4g} .. {col.max():.4g} {unit}")
        if self.true_tau_s is not None:
            lines.append("  true tau: " + ", ".join(f"{t:.4g}" for t in self.true_tau_s) + " s")
        if self.scales is not None:
            sc = self.scales
            lines.append(
                f"  scales (train): inputs {np.array2string(sc.input_scale_v, precision=4)} V, "
                f"outputs {np.array2string(sc.output_scale_a, precision=4)} A"
            )
        if self.attribution:
            lines.append(f"  attribution: {self.attribution}")
        return "\n".join(lines)

    def save(self, directory: str | os.PathLike) -> Path:
        """Write ``dataset.npz`` and ``dataset.json`` into ``directory`` (created if needed); returns it."""
        self.validate()
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        seqs = self.sequences
        has_clean = np.array([s.outputs_clean_a is not None for s in seqs])
        n_out = len(self.output_names)
        clean = [s.outputs_clean_a for s in seqs if s.outputs_clean_a is not None]
        arrays = {
            "offsets": np.cumsum([0] + [len(s) for s in seqs]).astype(np.int64),
            "t_s": np.concatenate([s.t_s for s in seqs]),
            "inputs_v": np.concatenate([s.inputs_v for s in seqs]),
            "outputs_a": np.concatenate([s.outputs_a for s in seqs]),
            "has_clean": has_clean,
            "outputs_clean_a": np.concatenate(clean) if clean else np.zeros((0, n_out)),
        }
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        npz_bytes = buf.getvalue()
        doc = {
            "format_version": FORMAT_VERSION,
            "units": UNITS,
            "device": self.device,
            "input_names": self.input_names,
            "output_names": self.output_names,
            "n_sequences": len(seqs),
            "splits": self.splits,
            "scales": self.scales.to_dict() if self.scales is not None else None,
            "true_tau_s": self.true_tau_s,
            "attribution": self.attribution,
            "meta": self.meta,
            "sequence_meta": [s.meta for s in seqs],
            "npz_sha256": hashlib.sha256(npz_bytes).hexdigest(),
        }
        text = _to_json(doc, "dataset metadata (meta or a sequence's meta)")
        atomic_write_bytes(directory / NPZ_NAME, lambda f: f.write(npz_bytes))
        atomic_write_bytes(directory / JSON_NAME, lambda f: f.write(text.encode("utf-8")))
        return directory

    @classmethod
    def load(cls, directory: str | os.PathLike) -> Dataset:
        """Read a dataset written by :meth:`save`; arrays come back bit-identical."""
        directory = Path(directory)
        json_path, npz_path = directory / JSON_NAME, directory / NPZ_NAME
        for p in (json_path, npz_path):
            if not p.is_file():
                raise FileNotFoundError(f"{p} not found (a saved dataset has {JSON_NAME} and {NPZ_NAME})")
        doc = json.loads(json_path.read_text(encoding="utf-8"))
        if doc.get("format_version") != FORMAT_VERSION:
            raise DataValidationError(
                f"{json_path}: format_version {doc.get('format_version')!r}, expected {FORMAT_VERSION}"
            )
        if doc.get("units") != UNITS:
            raise DataValidationError(f"{json_path}: units {doc.get('units')!r}, expected {UNITS}")
        npz_bytes = npz_path.read_bytes()
        if hashlib.sha256(npz_bytes).hexdigest() != doc["npz_sha256"]:
            raise DataValidationError(f"{npz_path} does not match the SHA-256 recorded in {json_path}")
        with np.load(io.BytesIO(npz_bytes), allow_pickle=False) as z:
            a = {k: z[k] for k in z.files}
        off, has_clean = a["offsets"], a["has_clean"]
        if len(off) != doc["n_sequences"] + 1 or len(doc["sequence_meta"]) != doc["n_sequences"]:
            raise DataValidationError(f"{directory}: sequence count differs between {JSON_NAME} and {NPZ_NAME}")
        clean_off = np.cumsum([0] + [int(off[k + 1] - off[k]) for k in np.flatnonzero(has_clean)])
        sequences, c = [], 0
        for k, meta in enumerate(doc["sequence_meta"]):
            sl = slice(int(off[k]), int(off[k + 1]))
            clean = None
            if has_clean[k]:
                clean = a["outputs_clean_a"][clean_off[c] : clean_off[c + 1]]
                c += 1
            sequences.append(Sequence(a["t_s"][sl], a["inputs_v"][sl], a["outputs_a"][sl], clean, meta))
        return cls(
            device=doc["device"],
            input_names=doc["input_names"],
            output_names=doc["output_names"],
            sequences=sequences,
            splits=doc["splits"],
            true_tau_s=doc["true_tau_s"],
            attribution=doc["attribution"],
            meta=doc["meta"],
            scales=Scales.from_dict(doc["scales"]) if doc["scales"] is not None else None,
        )
