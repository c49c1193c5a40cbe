"""Frequency reach: error per band from the spectra of truth and prediction on non-uniform sequences."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from psixlstm.data import Dataset, Scales, Sequence
from psixlstm.models.students import StudentConfig, build_student
from psixlstm.physics import DevicePhysics
from psixlstm.reach import REACH_BANDS_HZ, format_reach, frequency_reach, reach_of_predictions
from psixlstm.training import predict

T_RECORD = 20e-6  # bins every 50 kHz: 1 MHz and 3 MHz fall on bins


def _grid(seed: int, t_stop: float = T_RECORD, n: int = 6000) -> np.ndarray:
    """A non-uniform grid: jittered steps of 1.5 to 5 ns."""
    steps = np.random.default_rng(seed).uniform(0.5, 1.5, n)
    t = np.concatenate([[0.0], np.cumsum(steps)])
    return t * t_stop / t[-1]


def _tone(t: np.ndarray, amp: float, f_hz: float) -> np.ndarray:
    return amp * np.sin(2 * np.pi * f_hz * t)


@pytest.mark.parametrize(
    ("f_err_hz", "band", "others"), [(1.25e6, "1-10 MHz", "0.1-1 MHz"), (0.8e6, "0.1-1 MHz", "1-10 MHz")]
)
def test_sinusoidal_error_near_1_mhz_lands_in_its_band(f_err_hz, band, others):
    """An error tone just above / below 1 MHz shows up in its own decade only, as error amplitude / truth amplitude
    there. (A tone exactly on a band edge is ambiguous by one bin: the uniform grid's record is not exactly 20 us.)"""
    t = _grid(0)
    truth = 2e-3 + _tone(t, 1e-3, 200e3) + _tone(t, 4e-4, 3e6)
    pred = truth + _tone(t, 4e-6, f_err_hz)
    report = reach_of_predictions([t], [pred], [truth], channel_names=["i"])
    bands = report["channels"]["i"]
    truth_amp = {"1-10 MHz": 4e-4, "0.1-1 MHz": 1e-3}[band]
    assert bands[band]["status"] == "ok"
    assert bands[band]["rel_error"] == pytest.approx(4e-6 / truth_amp, rel=2e-2)
    for name in ("DC", others):
        assert bands[name]["status"] == "ok"
        assert bands[name]["rel_error"] < 1e-2 * bands[band]["rel_error"]
    assert report["record"]["resolution_hz"] == pytest.approx(50e3)


def test_bands_without_energy_are_reported_as_such():
    """No DC, nothing below 100 kHz, a 20 us record: statuses instead of NaN or inf, and the JSON stays strict."""
    t = _grid(1)
    truth = _tone(t, 1e-3, 200e3) + _tone(t, 4e-4, 3e6)
    report = reach_of_predictions([t], [1.1 * truth], [truth], channel_names=["i"])
    bands = report["channels"]["i"]
    assert bands["<1 kHz"]["status"] == bands["1-10 kHz"]["status"] == "unresolved"  # no bin below 50 kHz
    assert bands["<1 kHz"]["bins"] == 0
    assert bands["DC"]["status"] == bands["10-100 kHz"]["status"] == "no_signal"
    assert bands["0.1-1 MHz"]["rel_error"] == pytest.approx(0.1, rel=1e-3)
    assert bands["1-10 MHz"]["rel_error"] == pytest.approx(0.1, rel=1e-3)
    for entry in bands.values():
        assert entry["rel_error"] is None or np.isfinite(entry["rel_error"])
        assert np.isfinite(entry["energy_share"])
    json.dumps(report, allow_nan=False)
    assert "unresolved" in format_reach(report) and "no_signal" in format_reach(report)


def test_model_equal_to_truth_has_zero_error_in_every_band():
    """A dataset whose currents are the model's own: every band with signal has zero error, through `predict`."""
    torch.manual_seed(0)
    model = build_student(
        StudentConfig(kind="clustered", n_in=1, n_out=1, tau_s=[1e-7, 1e-6, 5e-6], physics=DevicePhysics("memristor"))
    )
    scales = Scales(np.array([1.0]), np.array([1e-3]), 3e-9, 1e-8)
    seqs = []
    for seed in range(2):
        t = _grid(seed, n=3000)
        v = (0.5 + _tone(t, 0.3, 150e3) + _tone(t, 0.2, 2e6))[:, None]
        seqs.append(Sequence(t, v, np.zeros_like(v)))
    with torch.no_grad():
        currents = predict(model, seqs, scales)
    seqs = [Sequence(s.t_s, s.inputs_v, i, outputs_clean_a=i) for s, i in zip(seqs, currents, strict=True)]
    ds = Dataset("memristor", ["v"], ["i"], seqs, {"train": [], "val": [], "test": [0, 1]}, scales=scales)
    report = frequency_reach(model, ds, scales)
    bands = report["channels"]["i"]
    assert list(bands) == ["DC", *REACH_BANDS_HZ]
    ok = [name for name, entry in bands.items() if entry["status"] == "ok"]
    assert {"DC", "0.1-1 MHz", "1-10 MHz"} <= set(ok)
    for name in ok:
        assert bands[name]["rel_error"] <= 1e-6, (name, bands[name])
    assert report["device"] == "memristor" and report["split"] == "test"
