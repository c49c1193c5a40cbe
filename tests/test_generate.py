"""Ground-truth datasets for all four devices: shapes, units, multi-rate grids, splits, noise, save/load."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from psixlstm.data import Dataset
from psixlstm.data.generate import DataPreset, make_dataset, memristor_program

TINY = {
    "memristor": DataPreset(3, 8e-3, 0.2e-6, 50e-6, noise_rel=0.01),
    "vteam-paper": DataPreset(3, 0.2e-3, 50e-9, 50e-9, noise_rel=0.03, uniform=True),
    "mosfet": DataPreset(3, 2e-6, 0.5e-9, 50e-9),
    "bjt": DataPreset(3, 2e-6, 0.5e-9, 50e-9),
}


@pytest.mark.parametrize("device", list(TINY))
def test_every_device_produces_a_dataset(device, tmp_path):
    if device in ("mosfet", "bjt") and shutil.which("ngspice") is None:
        pytest.skip("ngspice not installed")
    ds = make_dataset(device, TINY[device], seed=3, progress=False)
    assert len(ds.sequences) == 3
    assert sorted(i for ids in ds.splits.values() for i in ids) == [0, 1, 2]
    n_in = 1 if device in ("memristor", "vteam-paper") else 2
    for seq in ds.sequences:
        assert seq.inputs_v.shape == (len(seq), n_in) and seq.outputs_a.shape[0] == len(seq)
        assert seq.t_s[0] == 0 and seq.t_s[-1] == pytest.approx(TINY[device].duration_s)
        assert np.all(np.isfinite(seq.outputs_a)) and np.ptp(seq.outputs_clean_a) > 0
        assert seq.meta["stimuli"]  # the stimulus that made it travels with it
    assert ds.scales is not None and np.all(ds.scales.output_scale_a > 0)
    ds.save(tmp_path)
    back = Dataset.load(tmp_path)
    np.testing.assert_array_equal(back.sequences[1].outputs_a, ds.sequences[1].outputs_a)
    if device == "memristor":
        assert ds.true_tau_s == [0.34e-3, 1.2e-3, 8.7e-3]


def test_memristor_grid_is_multirate_and_noise_is_relative():
    ds = make_dataset("memristor", TINY["memristor"], seed=0, progress=False)
    seq = ds.sequences[0]
    assert seq.dt_s.min() <= 0.25e-6 and seq.dt_s.max() >= 40e-6  # dense at edges, sparse in rests
    assert len(seq) < 8e-3 / 0.2e-6 / 20  # far fewer points than a uniform fine grid
    noise = seq.outputs_a - seq.outputs_clean_a
    rms = np.sqrt(np.mean(seq.outputs_clean_a**2))
    assert 0.005 * rms < np.std(noise) < 0.02 * rms


def test_vteam_paper_protocol_uniform_50ns():
    ds = make_dataset("vteam-paper", TINY["vteam-paper"], seed=0, progress=False)
    np.testing.assert_allclose(ds.sequences[0].dt_s, 50e-9, rtol=1e-6)


def test_memristor_program_places_reads_in_rests():
    stim = memristor_program(np.random.default_rng(0), 20e-3)
    t = np.linspace(0, 20e-3, 200001)
    v = stim.sample(t)
    reads = (np.abs(v) > 0.1) & (np.abs(v) < 0.35)
    assert reads.mean() > 0.01  # small read pulses are present
    assert np.max(np.abs(v)) < 1.5


def test_datasets_are_deterministic():
    a = make_dataset("memristor", TINY["memristor"], seed=5, progress=False)
    b = make_dataset("memristor", TINY["memristor"], seed=5, progress=False)
    np.testing.assert_array_equal(a.sequences[2].outputs_a, b.sequences[2].outputs_a)


def test_unknown_device_and_preset_are_rejected():
    with pytest.raises(ValueError, match="unknown device"):
        make_dataset("diode")
    with pytest.raises(ValueError, match="unknown preset"):
        make_dataset("memristor", "huge")


@pytest.mark.slow
@pytest.mark.parametrize("device", ["memristor", "vteam-paper", "mosfet", "bjt"])
def test_quick_presets_of_the_cli(device):
    if device in ("mosfet", "bjt") and shutil.which("ngspice") is None:
        pytest.skip("ngspice not installed")
    ds = make_dataset(device, "quick", seed=0, progress=False)
    assert len(ds.sequences) >= 4
    assert all(ds.splits[k] for k in ("train", "val", "test"))


def test_terminal_programs_hold_sweep_and_keep_fast_edges():
    """The MOSFET/BJT training programs: most of the time in DC segments at least 5 us long (holds on every terminal,
    or one terminal swept over its whole range), fast content with ns edges between them, inside the ranges."""
    from psixlstm.data.generate import terminal_programs
    from psixlstm.devices.spice_reference import BJT

    duration = 200e-6
    stims = terminal_programs(np.random.default_rng(1), duration, BJT.input_range_v)
    bps = np.unique(np.concatenate([s.breakpoints(duration) for s in stims]))
    gaps = np.diff(bps)
    assert gaps[gaps >= 5e-6].sum() > 0.5 * duration and gaps.min() < 5e-9
    sweeps = 0
    for a, b in zip(bps[:-1][gaps >= 5e-6], bps[1:][gaps >= 5e-6], strict=True):
        for s, (lo, hi) in zip(stims, BJT.input_range_v, strict=True):
            va, vb = s.sample(np.array([a, b]))
            sweeps += abs(abs(vb - va) - (hi - lo)) < 0.1 * (hi - lo)
    assert sweeps >= 1
    t = np.linspace(0, duration, 200_001)
    for s, (lo, hi) in zip(stims, BJT.input_range_v, strict=True):
        v = s.sample(t)
        assert lo - 0.06 * (hi - lo) <= v.min() and v.max() <= hi + 0.06 * (hi - lo)  # the tone adds 5 % of the span
