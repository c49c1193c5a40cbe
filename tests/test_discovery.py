"""Structure discovery: k-means and silhouette, exponential fits, tau matching, and the stage on a tiny teacher."""

from __future__ import annotations

import numpy as np
import pytest

from psixlstm.config import TeacherPreset
from psixlstm.data.generate import DataPreset, make_dataset
from psixlstm.discovery import (
    Discovery,
    discover,
    fit_exponentials,
    fit_free_exponentials,
    kmeans_1d,
    match_taus,
    silhouette,
)
from psixlstm.fitting import train_teacher
from psixlstm.training import TrainConfig


def test_kmeans_and_silhouette_find_three_clusters():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(c, 0.05, 20) for c in (-3.5, -2.9, -2.0)])
    centres, labels = kmeans_1d(x, 3)
    np.testing.assert_allclose(centres, [-3.5, -2.9, -2.0], atol=0.05)
    scores = {k: silhouette(x, kmeans_1d(x, k)[1]) for k in (2, 3, 4, 5)}
    assert max(scores, key=scores.get) == 3
    with pytest.raises(ValueError, match="distinct"):
        kmeans_1d(np.ones(5), 2)


def test_fit_exponentials_recovers_known_time_constants():
    t = np.concatenate([np.linspace(0, 1e-3, 200), np.geomspace(1e-3, 40e-3, 300)[1:]])
    taus = (0.34e-3, 1.2e-3, 8.7e-3)
    y = 0.2 + 1.0 * np.exp(-t / taus[0]) + 0.6 * np.exp(-t / taus[1]) + 0.3 * np.exp(-t / taus[2])
    fit = fit_exponentials(t, y, 3)
    np.testing.assert_allclose(fit["tau_s"], taus, rtol=0.02)
    assert fit["rel_rms_residual"] < 1e-6


def test_fit_exponentials_keeps_taus_apart_on_a_response_that_is_not_exponential():
    t = np.linspace(0, 20e-3, 400)
    y = (1 + t / 2e-3) * np.exp(-t / 2e-3)  # a double pole: free fits put two equal taus with huge +- amplitudes
    fit = fit_exponentials(t, y, 3)
    taus = np.array(fit["tau_s"])
    assert np.all(taus[1:] / taus[:-1] >= 1.5 * (1 - 1e-9))
    assert max(abs(a) for a in fit["amplitudes"]) < 10  # unconstrained: +-43
    assert any(fit["at_ratio_bound"])
    free = fit_free_exponentials(t, y, 3)
    assert len(free["tau_s"]) < 3 and not any(free["at_ratio_bound"])


def test_fit_free_exponentials_keeps_a_fit_that_the_bound_does_not_touch():
    t = np.linspace(0, 40e-3, 800)
    y = np.exp(-t / 0.5e-3) + 0.5 * np.exp(-t / 5e-3)
    fit = fit_free_exponentials(t, y, 2)
    np.testing.assert_allclose(fit["tau_s"], [0.5e-3, 5e-3], rtol=1e-3)
    assert fit["at_ratio_bound"] == [False]


def test_match_taus_is_one_to_one_when_possible():
    m = match_taus([1e-3, 9e-3, 3e-4], [0.34e-3, 1.2e-3, 8.7e-3])
    assert [r["found_s"] for r in m] == [3e-4, 1e-3, 9e-3]
    assert m[0]["rel_err"] == pytest.approx(abs(3e-4 - 0.34e-3) / 0.34e-3)


@pytest.fixture(scope="module")
def tiny_teacher(tmp_path_factory):
    ds = make_dataset("memristor", DataPreset(5, 6e-3, 0.5e-6, 50e-6), seed=0, progress=False, workers=1)
    run = train_teacher(
        ds,
        TeacherPreset(8, 2, 8, TrainConfig(epochs=1, chunk_len=128)),
        tmp_path_factory.mktemp("t"),
        progress=False,
        plots=False,
    )
    return run.model, ds


def test_discover_on_a_tiny_teacher(tiny_teacher, tmp_path):
    teacher, ds = tiny_teacher
    d = discover(teacher, ds, k=3)
    assert d.k == 3 and len(d.gate_cluster_tau_s) == 3
    assert len(d.unit_tau_median_s) == 8 + 2  # sLSTM units + mLSTM heads
    assert all(1e-9 < t < 10 for t in d.unit_tau_median_s)  # seconds
    assert d.tau_source in ("probe", "gates") and all(t > 0 for t in d.tau_s)
    assert {"gates", "probe_teacher", "probe_truth"} <= set(d.tau_match)
    assert not any(d.probe["teacher_free"]["at_ratio_bound"])
    for name in ("q", "k", "v", "o"):
        rep = d.svd["projections"][name]
        assert 1 <= rep["rank"] <= 8 and rep["energy"][-1] == pytest.approx(1.0)
    assert len(d.svd["memory"]["heads"]) == 2
    d.save(tmp_path)
    back = Discovery.load(tmp_path)
    assert back.tau_s == d.tau_s


def test_students_start_no_slower_than_the_probe_lasts(tiny_teacher, monkeypatch):
    """A probe fit with a tau far beyond the probe (a drift it cannot resolve) is kept in the record, but the students
    start that cluster at the probe's duration."""
    teacher, ds = tiny_teacher

    def with_drift(t_s, y, k, min_ratio=1.5):
        fit = fit_exponentials(t_s, y, k, min_ratio)
        return {**fit, "tau_s": [*fit["tau_s"][:-1], 2460.0], "rel_rms_residual": 0.0}

    monkeypatch.setattr("psixlstm.discovery.fit_exponentials", with_drift)
    d = discover(teacher, ds, k=3)
    assert d.tau_source == "probe" and d.probe["teacher"]["tau_s"][-1] == 2460.0
    duration = d.probe["duration_s"]
    assert d.tau_s[-1] == duration < 1.0
    assert d.tau_s == [min(t, duration) for t in d.probe["teacher"]["tau_s"]]


def test_log_conductance_probe_recovers_the_true_taus_of_the_device():
    """The probe itself can resolve the physics: on the ground-truth memristor all three taus come back within 5 %."""
    from psixlstm.data import Scales
    from psixlstm.devices import memristor
    from psixlstm.discovery import _probe_response, relaxation_probe

    scales = Scales(np.array([1.4]), np.array([3e-3]), 2e-7, 5e-5)
    stims, grid, idx = relaxation_probe("memristor", scales, 40e-3)
    truth = memristor.simulate(stims[0], grid)
    fit = fit_exponentials(grid[idx], _probe_response("memristor", truth.current_a[idx], stims[0].sample(grid)[idx]), 3)
    for row in match_taus(fit["tau_s"], [0.34e-3, 1.2e-3, 8.7e-3]):
        assert row["rel_err"] < 0.05, row
