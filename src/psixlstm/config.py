"""Presets (quick, default, paper) for the model stages, as dataclasses.

quick: seconds to a minute, for tests; default: the everyday run (teacher under 10 minutes on 2 cores);
paper: the paper-size teacher (hidden 64, 4 heads, about 46K parameters)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from .training import TrainConfig

MODEL_PRESETS = ("quick", "default", "paper")

# frequency bands (Hz) for the spectral errors, by device
BANDS_HZ: dict[str, dict[str, tuple[float, float]]] = {
    "memristor": {"low": (1e3, 5.5e3), "high": (50e3, 150e3)},
    "vteam-paper": {"low": (1e3, 5.5e3), "high": (50e3, 150e3)},
    "mosfet": {"low": (50e3, 1e6), "high": (1e6, 10e6)},
    "bjt": {"low": (50e3, 1e6), "high": (1e6, 10e6)},
}


def bands_for(device: str, duration_s: float, f_max_hz: float) -> dict[str, tuple[float, float]]:
    """The device's bands, or for other data (CSV, measured) a low and a high band from its time scales."""
    if device in BANDS_HZ:
        return BANDS_HZ[device]
    f_min = 1.0 / duration_s
    mid = (f_min * f_max_hz) ** 0.5
    return {"low": (f_min, mid), "high": (mid, f_max_hz)}


@dataclass(frozen=True)
class TeacherPreset:
    d_model: int
    n_heads: int
    head_hidden: int
    train: TrainConfig = field(default_factory=TrainConfig)


TEACHER_PRESETS: dict[str, TeacherPreset] = {
    "quick": TeacherPreset(16, 2, 16, TrainConfig(epochs=4, chunk_len=256, batch_size=8, lr=5e-3, max_minutes=2)),
    # the epoch caps are high on purpose: the wall-clock budget bounds training, and the learning-rate schedule is
    # planned over the epochs that fit in it (a small device such as vteam-paper runs ~700 epochs in 9 minutes)
    "default": TeacherPreset(
        32, 4, 32, TrainConfig(epochs=1000, chunk_len=1024, batch_size=4, lr=3e-3, patience=150, max_minutes=9.0)
    ),
    "paper": TeacherPreset(
        64, 4, 64, TrainConfig(epochs=3000, chunk_len=1024, batch_size=8, lr=2e-3, patience=300, max_minutes=55.0)
    ),
}

# BPTT window (steps) per device where the preset's does not fit: the vteam-paper device integrates its whole 2 ms
# history and learns best from 4096-step windows (test R^2 0.982 vs 0.974 at 1024 and 0.905 at 256 steps)
DEVICE_CHUNK_LEN = {"vteam-paper": 4096}


def teacher_preset(name: str, device: str | None = None, **train_overrides) -> TeacherPreset:
    """The named preset for `device` (its BPTT window where DEVICE_CHUNK_LEN has one), with TrainConfig overrides."""
    if name not in TEACHER_PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(MODEL_PRESETS)}")
    p = TEACHER_PRESETS[name]
    if name != "quick" and device in DEVICE_CHUNK_LEN:
        train_overrides = {"chunk_len": DEVICE_CHUNK_LEN[device], **train_overrides}
    return replace(p, train=replace(p.train, **train_overrides)) if train_overrides else p
