"""Stage artifacts on disk: a model's weights (NAME.pt), its configuration with scales and units (NAME.json) and
its metrics (metrics.json), all written atomically, so a killed run never leaves a half-written artifact."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import torch

from .data.dataset import atomic_write_bytes

UNITS = {"time": "s", "voltage": "V", "current": "A"}


def _jsonable(x):
    if isinstance(x, np.ndarray | np.generic):
        return x.tolist()
    raise TypeError(f"not JSON-serialisable: {type(x).__name__}")


def write_json(path: str | Path, obj) -> None:
    atomic_write_bytes(path, lambda fh: fh.write(json.dumps(obj, indent=2, default=_jsonable).encode()))


def save_model(out: Path, name: str, model: torch.nn.Module, meta: dict, metrics: dict) -> None:
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    atomic_write_bytes(out / f"{name}.pt", lambda fh: fh.write(buf.getvalue()))
    write_json(out / f"{name}.json", {**meta, "units": UNITS})
    write_json(out / "metrics.json", metrics)


def read_model(out_dir: str | Path, name: str, command: str) -> tuple[dict, dict, dict]:
    """(meta, state_dict, metrics) of a saved model; a clear error naming the command that makes it."""
    out = Path(out_dir)
    if not (out / f"{name}.json").exists():
        raise FileNotFoundError(f"{out} holds no {name} ({name}.json missing); run psi-xlstm {command}")
    meta = json.loads((out / f"{name}.json").read_text())
    state = torch.load(out / f"{name}.pt", weights_only=True)
    return meta, state, json.loads((out / "metrics.json").read_text())
