import numpy as np
import pytest

from psixlstm.data import (
    PEROVSKITE_ATTRIBUTION,
    Dataset,
    DataValidationError,
    default_perovskite_dir,
    load_impedance_spectra,
    load_iv_sweeps,
    reconstruct_sweep_time,
)
from psixlstm.data.perovskite import PEROVSKITE_ENV_VAR


@pytest.fixture(scope="module")
def data_dir():
    try:
        return default_perovskite_dir()
    except FileNotFoundError as e:
        pytest.skip(str(e))


@pytest.fixture(scope="module")
def sweeps(data_dir):
    return load_iv_sweeps(data_dir)


def test_default_iv_sweeps(sweeps):
    ds = sweeps
    assert ds.device == "perovskite" and len(ds.sequences) == 12  # Fig2a: 5 scans, Fig2b: 7 upper vertices
    assert [len(ds.splits[k]) for k in ("train", "val", "test")] == [8, 2, 2]
    assert "10.5281/zenodo.12656947" in ds.attribution and "CC BY 4.0" in ds.attribution
    assert ds.attribution == PEROVSKITE_ATTRIBUTION
    assert ds.meta["assumed_sweep_rate_v_per_s"] == 0.1
    v = np.concatenate([s.inputs_v[:, 0] for s in ds.sequences])
    i = np.concatenate([s.outputs_a[:, 0] for s in ds.sequences])
    assert -0.76 < v.min() < -0.74 and 1.74 < v.max() < 1.76
    assert 0.02 < i.max() < 0.03 and abs(i.min()) < 1e-4
    vertices = [s.inputs_v.max() for s in ds.sequences[5:]]
    np.testing.assert_allclose(vertices, [0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75], atol=3e-3)


def test_sweep_time_follows_voltage_at_assumed_rate(sweeps):
    for s in sweeps.sequences:
        assert np.all(s.dt_s > 0)
        # each sample of these sweeps is one 2.44 mV step (or a gap of several): dt = |dV| / rate
        np.testing.assert_allclose(s.dt_s, np.abs(np.diff(s.inputs_v[:, 0])) / 0.1, rtol=1e-12)
    # a full 0 -> -0.75 -> 1.25 -> 0 V cycle sweeps 4 V: 40 s at 0.1 V/s
    assert sweeps.sequences[0].t_s[-1] == pytest.approx(40.0, rel=1e-3)


def test_missing_current_cells_are_dropped_and_recorded(sweeps):
    scan1 = sweeps.sequences[0]
    assert scan1.meta["missing_lines"] == [1104, 1105, 1106, 1266, 1267]
    assert len(scan1) == 1640 - 5
    assert sweeps.meta["missing_rows_dropped"] == 31
    assert scan1.dt_s.max() == pytest.approx(4 * 0.00244140625 / 0.1)  # the 3-row gap lasts 4 steps


def test_sweep_rate_scales_time(data_dir):
    fast = load_iv_sweeps(data_dir, files=("figure3/Fig3a.txt",), sweep_rate_v_per_s=1.0)
    slow = load_iv_sweeps(data_dir, files=("figure3/Fig3a.txt",), sweep_rate_v_per_s=0.01)
    np.testing.assert_allclose(slow.sequences[0].t_s, 100 * fast.sequences[0].t_s)
    assert fast.meta["assumed_sweep_rate_v_per_s"] == 1.0
    with pytest.raises(DataValidationError, match="sweep_rate_v_per_s must be finite and > 0"):
        load_iv_sweeps(data_dir, files=("figure3/Fig3a.txt",), sweep_rate_v_per_s=0.0)


def test_figure3_blocks_and_duplicates(data_dir):
    fig3 = load_iv_sweeps(data_dir, files=("figure3/Fig3a.txt", "figure3/Fig3b.txt", "figure3/Fig3c.txt"))
    assert len(fig3.sequences) == 3 and all(len(fig3.splits[k]) == 1 for k in ("train", "val", "test"))
    np.testing.assert_allclose([s.inputs_v.max() for s in fig3.sequences], [0.25, 0.75, 1.25], atol=3e-3)
    both = load_iv_sweeps(data_dir, files=("figure2/Fig2b.txt", "figure3/Fig3b.txt"))
    assert len(both.sequences) == 7
    assert both.meta["duplicates_dropped"] == ["figure3/Fig3b.txt: Upper Vertex=0.75 V"]


def test_multi_device_file_gives_one_sequence_per_column_pair(data_dir):
    ds = load_iv_sweeps(data_dir, files=("figure2/Fig2c.txt",))
    assert len(ds.sequences) == 20
    assert [s.meta["label"] for s in ds.sequences[:2]] == ["Device 1", "Device 2"]
    assert ds.sequences[0].meta["voltage_step_v"] == pytest.approx(0.02, rel=1e-3)


def test_non_iv_file_is_rejected(data_dir):
    with pytest.raises(DataValidationError, match="not an I-V file"):
        load_iv_sweeps(data_dir, files=("figure2/Fig2d.txt",))


def test_saved_sweeps_keep_attribution(sweeps, tmp_path):
    back = Dataset.load(sweeps.save(tmp_path))
    assert back.attribution == PEROVSKITE_ATTRIBUTION and back.meta == sweeps.meta


def test_repeated_voltage_points_still_advance_time(tmp_path):
    rows = [(0.0, 0.0), (0.01, 1e-6), (0.01, 1.1e-6), (0.02, 2e-6), (0.02, 2e-6), (0.01, 1e-6)]
    text = "Voltage\tCurrent\tScan No.\r\nV\tA\tScan\r\n" + "".join(f"{v}\t{i}\t1\r\n" for v, i in rows)
    (tmp_path / "sweep.txt").write_text(text)
    ds = load_iv_sweeps(tmp_path, files=("sweep.txt",), sweep_rate_v_per_s=0.1)
    np.testing.assert_allclose(ds.sequences[0].t_s, [0.0, 0.1, 0.2, 0.3, 0.4, 0.5])
    np.testing.assert_allclose(
        reconstruct_sweep_time(np.array([0.0, 0.0, 0.1, 0.2, 0.4]), 1.0), [0, 0.1, 0.2, 0.3, 0.5]
    )
    with pytest.raises(DataValidationError, match="never changes"):
        reconstruct_sweep_time(np.zeros(4), 0.1)


def test_bad_cell_names_file_and_line(tmp_path):
    text = "Voltage\tCurrent\tScan No.\nV\tA\tScan\n0\t0\t1\n0.1\tabc\t1\n0.2\t0\t1\n"
    (tmp_path / "bad.txt").write_text(text)
    with pytest.raises(DataValidationError, match=r"bad.txt: line 4, column 'Current': cannot parse 'abc'"):
        load_iv_sweeps(tmp_path, files=("bad.txt",))


def test_impedance_spectra(data_dir):
    spectra = load_impedance_spectra(data_dir)
    assert [s.bias_v for s in spectra] == [0.0, 0.2, 0.3, 0.4, 0.6, 1.0]
    for s in spectra:
        assert len(s.frequency_hz) == 50 == len(s.z_real_ohm) == len(s.z_imag_ohm)
        assert np.all(np.diff(s.frequency_hz) > 0)
        assert s.frequency_hz[0] == pytest.approx(0.02) and s.frequency_hz[-1] == pytest.approx(1e6)
    # low-frequency resistance falls with bias: ~52 kOhm at 0 V down to ~48 Ohm at 1 V
    r_dc = [s.z_real_ohm[0] for s in spectra]
    assert all(a > b for a, b in zip(r_dc, r_dc[1:], strict=False)) and r_dc[0] == pytest.approx(52003.622389286)
    assert spectra[0].impedance_ohm[0] == pytest.approx(52003.622389286 - 2330.15135401396j)
    assert spectra[2].z_imag_ohm[0] > 0  # inductive at 0.3 V (the paper's point)


def test_default_dir_env_var(tmp_path, monkeypatch):
    monkeypatch.setenv(PEROVSKITE_ENV_VAR, str(tmp_path))
    assert default_perovskite_dir() == tmp_path
    monkeypatch.setenv(PEROVSKITE_ENV_VAR, str(tmp_path / "absent"))
    with pytest.raises(FileNotFoundError, match=PEROVSKITE_ENV_VAR):
        default_perovskite_dir()
