import json

import numpy as np
import pytest

from psixlstm.data import Dataset, DataValidationError, Scales, Sequence, split_sequences
from psixlstm.data.dataset import CURRENT_SCALE_FLOOR_A, JSON_NAME, NPZ_NAME


def make_sequence(rng, n=50, n_in=2, n_out=2, clean=True, amp=1.0, meta=None):
    t = np.cumsum(rng.uniform(1e-9, 5e-8, n))  # non-uniform grid
    v = amp * rng.normal(size=(n, n_in))
    i = amp * 1e-3 * rng.normal(size=(n, n_out))
    i_clean = i + 1e-6 * rng.normal(size=i.shape) if clean else None
    return Sequence(t, v, i, i_clean, meta if meta is not None else {"seed": int(n)})


def make_dataset(rng, n_seq=6, **kw):
    seqs = [make_sequence(rng, n=20 + 7 * k, clean=k % 2 == 0) for k in range(n_seq)]
    ds = Dataset(
        device="mosfet",
        input_names=["v_gs", "v_ds"],
        output_names=["i_d", "i_g"],
        sequences=seqs,
        splits=split_sequences(n_seq, seed=1),
        **kw,
    )
    ds.compute_scales()
    return ds


def test_round_trip_is_exact(tmp_path):
    rng = np.random.default_rng(0)
    ds = make_dataset(
        rng,
        true_tau_s=[3.4e-4, 1.2e-3, 8.7e-3],
        attribution="CC BY 4.0, someone",
        meta={"stimulus": {"kind": "chirp", "f_hz": [1e3, 5.5e3]}, "noise": 0.03},
    )
    ds.sequences[3].meta = {"nested": {"a": [1, 2.5, "x"]}, "none": None}
    ds.save(tmp_path / "ds")
    back = Dataset.load(tmp_path / "ds")
    assert (back.device, back.input_names, back.output_names) == (ds.device, ds.input_names, ds.output_names)
    assert back.splits == ds.splits
    assert back.true_tau_s == ds.true_tau_s and back.attribution == ds.attribution and back.meta == ds.meta
    assert len(back.sequences) == len(ds.sequences)
    for a, b in zip(ds.sequences, back.sequences, strict=True):
        for name in ("t_s", "inputs_v", "outputs_a"):
            x, y = getattr(a, name), getattr(b, name)
            assert y.dtype == np.float64 and np.array_equal(x, y)
        assert (a.outputs_clean_a is None) == (b.outputs_clean_a is None)
        if a.outputs_clean_a is not None:
            assert np.array_equal(a.outputs_clean_a, b.outputs_clean_a)
        assert a.meta == b.meta
    assert np.array_equal(back.scales.input_scale_v, ds.scales.input_scale_v)
    assert np.array_equal(back.scales.output_scale_a, ds.scales.output_scale_a)
    assert (back.scales.dt_min_s, back.scales.dt_max_s) == (ds.scales.dt_min_s, ds.scales.dt_max_s)


def test_save_writes_two_files_with_units_and_no_temp_leftovers(tmp_path):
    ds = make_dataset(np.random.default_rng(1))
    ds.save(tmp_path)
    ds.save(tmp_path)  # overwrite in place
    assert sorted(p.name for p in tmp_path.iterdir()) == [JSON_NAME, NPZ_NAME]
    doc = json.loads((tmp_path / JSON_NAME).read_text())
    assert doc["units"] == {"time": "s", "voltage": "V", "current": "A"}
    assert doc["format_version"] == 1 and doc["n_sequences"] == 6


def test_load_detects_npz_not_matching_json(tmp_path):
    rng = np.random.default_rng(2)
    make_dataset(rng).save(tmp_path / "a")
    make_dataset(rng).save(tmp_path / "b")
    (tmp_path / "a" / NPZ_NAME).write_bytes((tmp_path / "b" / NPZ_NAME).read_bytes())
    with pytest.raises(DataValidationError, match="SHA-256"):
        Dataset.load(tmp_path / "a")


def test_save_rejects_non_json_meta(tmp_path):
    ds = make_dataset(np.random.default_rng(3))
    ds.sequences[0].meta = {"arr": np.zeros(2)}
    with pytest.raises(DataValidationError, match="not JSON-serialisable"):
        ds.save(tmp_path)
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"t_s": [0.0, 1.0, 1.0, 2.0]}, r"strictly increasing: t_s\[2\]"),
        ({"t_s": [0.0, 2.0, 1.0, 3.0]}, r"strictly increasing: t_s\[2\]"),
        (
            {"inputs_v": [[0.0], [np.nan], [0.0], [0.0]]},
            r"inputs_v has a non-finite value nan at index \(1, 0\)",
        ),
        (
            {"outputs_a": [[0.0], [0.0], [0.0], [np.inf]]},
            r"outputs_a has a non-finite value inf at index \(3, 0\)",
        ),
        ({"inputs_v": [0.0, 1.0, 2.0, 3.0]}, r"inputs_v must be 2-D.*reshape"),
        ({"outputs_a": [[0.0], [1.0], [2.0]]}, "outputs_a has 3 rows but t_s has 4 samples"),
        ({"outputs_clean_a": [[0.0, 1.0]] * 4}, r"outputs_clean_a has shape \(4, 2\)"),
        ({"t_s": [0.0], "inputs_v": [[0.0]], "outputs_a": [[0.0]]}, "at least 2 samples"),
        ({"inputs_v": [["a"], ["b"], ["c"], ["d"]]}, "real numeric array"),
    ],
)
def test_sequence_validation_messages(kwargs, match):
    args = {"t_s": [0.0, 1.0, 2.0, 3.0], "inputs_v": [[0.0]] * 4, "outputs_a": [[0.0]] * 4}
    args.update(kwargs)
    with pytest.raises(DataValidationError, match=match):
        Sequence(**args)


def test_sequence_dt_and_len():
    s = Sequence(np.array([0.0, 1e-9, 3e-9]), np.zeros((3, 1)), np.zeros((3, 1)))
    assert len(s) == 3
    np.testing.assert_allclose(s.dt_s, [1e-9, 2e-9])


def test_dataset_validation_messages():
    rng = np.random.default_rng(4)
    seqs = [make_sequence(rng) for _ in range(3)]
    base = dict(device="mosfet", input_names=["v_gs", "v_ds"], output_names=["i_d", "i_g"], sequences=seqs)
    with pytest.raises(DataValidationError, match=r"sequences\[0\] has 2 inputs and 2 outputs"):
        Dataset(**{**base, "input_names": ["v"]}, splits={"train": [0]})
    with pytest.raises(DataValidationError, match=r"split 'val' has index 3, not in 0..2"):
        Dataset(**base, splits={"train": [0], "val": [3]})
    with pytest.raises(DataValidationError, match="sequence 1 is in split 'train' and in split 'test'"):
        Dataset(**base, splits={"train": [0, 1], "test": [1]})
    with pytest.raises(DataValidationError, match="true_tau_s"):
        Dataset(**base, splits={"train": [0]}, true_tau_s=[1e-3, -1.0])
    with pytest.raises(DataValidationError, match="scales have 1 inputs"):
        Dataset(**base, splits={"train": [0]}, scales=Scales(np.ones(1), np.ones(2), 1e-9, 1e-8))


@pytest.mark.parametrize("n", range(1, 40))
def test_split_sequences_disjoint_cover_nonempty(n):
    s = split_sequences(n, seed=7)
    idx = s["train"] + s["val"] + s["test"]
    assert sorted(idx) == list(range(n))  # disjoint and complete
    if n >= 3:
        assert all(len(s[k]) >= 1 for k in ("train", "val", "test"))
    assert s == split_sequences(n, seed=7)


def test_split_sequences_depends_on_seed_and_fractions():
    assert split_sequences(40, seed=0) != split_sequences(40, seed=1)
    s = split_sequences(100, fractions=(0.5, 0.3, 0.2), seed=0)
    assert [len(s[k]) for k in ("train", "val", "test")] == [50, 30, 20]
    assert split_sequences(10, fractions=(0.8, 0.2, 0.0))["test"] == []
    with pytest.raises(DataValidationError, match="summing to 1"):
        split_sequences(10, fractions=(0.5, 0.2, 0.2))
    with pytest.raises(DataValidationError, match="positive int"):
        split_sequences(0)


def test_scales_come_from_train_split_only():
    rng = np.random.default_rng(5)
    seqs = [make_sequence(rng, amp=1.0) for _ in range(3)] + [make_sequence(rng, amp=100.0) for _ in range(2)]
    for s in seqs[:3]:
        s.outputs_a[:, 1] = 0.0  # an all-zero channel in train
    ds = Dataset("mosfet", ["v_gs", "v_ds"], ["i_d", "i_g"], seqs, {"train": [0, 1, 2], "val": [3], "test": [4]})
    sc = ds.compute_scales()
    train = ds.subset("train")
    np.testing.assert_array_equal(sc.input_scale_v, np.abs(np.concatenate([s.inputs_v for s in train])).max(0))
    assert sc.output_scale_a[0] == np.abs(np.concatenate([s.outputs_a[:, 0] for s in train])).max()
    assert sc.output_scale_a[1] == CURRENT_SCALE_FLOOR_A > 0
    dt = np.concatenate([s.dt_s for s in train])
    assert (sc.dt_min_s, sc.dt_max_s) == (dt.min(), dt.max())
    assert sc.input_scale_v.max() < 10  # the amp=100 val/test sequences were not used
    assert ds.scales is sc
    assert Scales.from_dict(json.loads(json.dumps(sc.to_dict()))).to_dict() == sc.to_dict()


def test_subset_and_summary():
    ds = make_dataset(np.random.default_rng(6), true_tau_s=[1e-3])
    assert ds.subset("test") == [ds.sequences[i] for i in ds.splits["test"]]
    with pytest.raises(DataValidationError, match=r"no split 'dev'; available: \['test', 'train', 'val'\]"):
        ds.subset("dev")
    text = ds.summary()
    n = sum(len(s) for s in ds.sequences)
    assert "Dataset 'mosfet': 6 sequences (train 4, val 1, test 1)" in text
    assert f"{n} samples" in text
    assert "v_gs:" in text and " V" in text and "i_g:" in text and " A" in text and "true tau: 0.001 s" in text
