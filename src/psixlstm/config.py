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
    "default": TeacherPreset(
        32, 4, 32, TrainConfig(epochs=120, chunk_len=1024, batch_size=4, lr=3e-3, patience=25, max_minutes=9.0)
    ),
    "paper": TeacherPreset(
        64, 4, 64, TrainConfig(epochs=300, chunk_len=256, batch_size=8, lr=2e-3, patience=40, max_minutes=55.0)
    ),
}


def teacher_preset(name: str, **train_overrides) -> TeacherPreset:
    if name not in TEACHER_PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(MODEL_PRESETS)}")
    p = TEACHER_PRESETS[name]
    return replace(p, train=replace(p.train, **train_overrides)) if train_overrides else p
