import numpy as np
import pytest

from psixlstm.data import Dataset, DataValidationError, Sequence, load_csv, save_csv, split_sequences


def write(tmp_path, text, name="w.csv"):
    p = tmp_path / name
    p.write_text(text)
    return p


GOOD = "time,v,i\n0,0.0,0.0\n1e-6,0.5,1e-4\n2e-6,1.0,2e-4\n3e-6,0.5,1.5e-4\n"


def test_load_simple_csv(tmp_path):
    ds = load_csv(write(tmp_path, GOOD))
    assert ds.device == "csv" and ds.input_names == ["v"] and ds.output_names == ["i"]
    (s,) = ds.sequences
    np.testing.assert_array_equal(s.t_s, [0, 1e-6, 2e-6, 3e-6])
    np.testing.assert_array_equal(s.inputs_v[:, 0], [0.0, 0.5, 1.0, 0.5])
    np.testing.assert_array_equal(s.outputs_a[:, 0], [0.0, 1e-4, 2e-4, 1.5e-4])
    assert ds.splits["train"] == [0] and ds.scales.output_scale_a[0] == 2e-4


def test_round_trip_multi_sequence_exact(tmp_path):
    rng = np.random.default_rng(0)
    seqs = []
    for k in range(4):
        n = 10 + k
        seqs.append(Sequence(np.cumsum(rng.uniform(1e-9, 1e-7, n)), rng.normal(size=(n, 2)), rng.normal(size=(n, 2))))
    ds = Dataset("mosfet", ["v_gs", "v_ds"], ["i_d", "i_g"], seqs, split_sequences(4))
    path = save_csv(ds, tmp_path / "d.csv")
    back = load_csv(path, voltage_cols=ds.input_names, current_cols=ds.output_names, sequence_col="sequence")
    assert back.input_names == ["v_gs", "v_ds"] and len(back.sequences) == 4
    for a, b in zip(ds.sequences, back.sequences, strict=True):
        assert np.array_equal(a.t_s, b.t_s) and np.array_equal(a.inputs_v, b.inputs_v)
        assert np.array_equal(a.outputs_a, b.outputs_a)
    assert [s.meta["sequence"] for s in back.sequences] == ["0", "1", "2", "3"]


def test_save_bare_sequence_and_custom_names(tmp_path):
    s = Sequence(np.arange(3.0), np.ones((3, 1)), np.full((3, 1), 2e-3))
    path = save_csv(s, tmp_path / "s.tsv", time_col="t", delimiter="\t")
    assert path.read_text().splitlines()[0] == "t\tv\ti"
    back = load_csv(path, time_col="t", voltage_cols="v", current_cols="i")
    assert np.array_equal(back.sequences[0].outputs_a, s.outputs_a)


@pytest.mark.parametrize("sep", [",", "\t", ";", "   "])
def test_delimiter_detection(tmp_path, sep):
    text = GOOD.replace(",", sep)
    ds = load_csv(write(tmp_path, text))
    np.testing.assert_array_equal(ds.sequences[0].inputs_v[:, 0], [0.0, 0.5, 1.0, 0.5])


def test_sequence_column_groups_rows_and_ignores_text_columns(tmp_path):
    text = "run,note,time,v,i\n" + "".join(
        f"{r},ok,{k * 1e-3},{k * 0.1 + j},{k * 1e-6}\n" for j, r in enumerate("abc") for k in range(4)
    )
    ds = load_csv(write(tmp_path, text), sequence_col="run")
    assert len(ds.sequences) == 3 and [s.meta["sequence"] for s in ds.sequences] == ["a", "b", "c"]
    assert all(len(s) == 4 for s in ds.sequences)
    assert sorted(ds.splits["train"] + ds.splits["val"] + ds.splits["test"]) == [0, 1, 2]
    with pytest.raises(DataValidationError, match=r"line 3, column 'v': cannot parse '0.1V' as a number"):
        load_csv(write(tmp_path, text.replace(",0.1,", ",0.1V,")), sequence_col="run")


def test_comments_and_blank_lines_keep_true_line_numbers(tmp_path):
    text = "# exported by a scope\n\ntime,v,i\n0,0,0\n\n# gap\n1,1,x\n"
    with pytest.raises(DataValidationError, match=r"line 7, column 'i': cannot parse 'x'"):
        load_csv(write(tmp_path, text))


@pytest.mark.parametrize(
    "text, kwargs, match",
    [
        (GOOD, {"current_cols": ("i_d",)}, r"no column 'i_d'; available columns: \['time', 'v', 'i'\]"),
        (GOOD, {"time_col": "t"}, r"w.csv: line 1: no column 't'"),
        (GOOD.replace("0.5,1e-4", "0.5,1e-4x"), {}, r"w.csv: line 3, column 'i': cannot parse '1e-4x' as a"),
        (
            GOOD.replace("0.5,1e-4", ",1e-4"),
            {},
            r"line 3, column 'v': cannot parse an empty cell as a number",
        ),
        (GOOD.replace("1.0,2e-4", "nan,2e-4"), {}, r"line 4, column 'v': value 'nan' is not finite"),
        (GOOD.replace("1.0,2e-4", "1.0,-inf"), {}, r"line 4, column 'i': value '-inf' is not finite"),
        (
            GOOD.replace("3e-6,", "1.5e-6,"),
            {},
            r"line 5, column 'time': time 1.5e-06 s is not greater than 2e-06 s on line 4",
        ),
        (
            GOOD.replace("2e-6,", "1e-6,"),
            {},
            r"line 4, column 'time': time 1e-06 s is not greater than 1e-06 s on line 3",
        ),
        ("time,v,i\n0,0,0\n1,1,1\n", {}, r"the file has 2 data rows \(lines 2-3\); at least 3 are needed"),
        (GOOD + "4e-6,1.0\n", {}, r"line 6: 2 fields, but the header \(line 1\) has 3"),
        (GOOD.replace("\n0,", "\n0,9,", 1), {}, r"line 2: 4 fields"),
        ("time,v,i\n", {}, "no data rows after the header"),
        ("# only a comment\n", {}, "no header line"),
        ("time,v,v,i\n0,0,0,0\n", {}, "column 'v' appears 2 times"),
    ],
)
def test_error_messages_name_line_and_column(tmp_path, text, kwargs, match):
    with pytest.raises(DataValidationError, match=match):
        load_csv(write(tmp_path, text), **kwargs)


def test_too_few_rows_in_one_sequence(tmp_path):
    text = "s,time,v,i\na,0,0,0\na,1,1,1\na,2,2,2\nb,0,0,0\nb,1,1,1\n"
    with pytest.raises(DataValidationError, match=r"sequence s='b' has 2 data rows \(lines 5-6\)"):
        load_csv(write(tmp_path, text), sequence_col="s")


def test_save_csv_rejects_wrong_name_count(tmp_path):
    s = Sequence(np.arange(3.0), np.ones((3, 2)), np.ones((3, 1)))
    with pytest.raises(DataValidationError, match="1 voltage and 1 current column names given"):
        save_csv(s, tmp_path / "x.csv", voltage_cols=["v"])
