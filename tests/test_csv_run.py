"""`run` on user waveforms: a CSV made from the ground-truth memristor goes through the whole pipeline to a verified
Verilog-A model (real openvaf-r, ngspice and VACASK); CSV errors, chunking and --config TOML files name what is
wrong."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest

from psixlstm import stimuli as st
from psixlstm.cli import main
from psixlstm.data import DataValidationError
from psixlstm.data.generate import memristor_program
from psixlstm.devices import memristor
from psixlstm.pipeline import RunConfig, data_inputs, load_run_config, load_run_csv, run_pipeline


def write_memristor_csv(path, n: int = 8, duration_s: float = 10e-3, seed: int = 0) -> None:
    """n sequences of the three-tau memristor on `memristor_program` stimuli, one CSV with a sequence column."""
    rows = ["sequence,time,v,i"]
    for k in range(n):
        stim = memristor_program(np.random.default_rng([seed, k]), duration_s)
        t = st.multirate_grid(stim, duration_s, 0.5e-6, 50e-6)
        r = memristor.simulate(stim, t, rtol=1e-9, atol=1e-11)
        rows += [f"{k},{float(a)!r},{float(b)!r},{float(c)!r}" for a, b, c in zip(t, r.v, r.current_a, strict=True)]
    path.write_text("\n".join(rows) + "\n")


@pytest.mark.skipif(shutil.which("ngspice") is None, reason="ngspice not installed")
def test_csv_run_end_to_end_gives_a_verified_model(tmp_path):
    csv = tmp_path / "memristor.csv"
    write_memristor_csv(csv)
    cfg = RunConfig(csv=(str(csv),), sequence_col="sequence", preset="quick")
    assert cfg.device == "csv"
    out = tmp_path / "run"
    metrics = run_pipeline(cfg, out, progress=False)
    for kind in ("clustered", "lowrank"):
        assert (out / f"veriloga_{kind}" / f"psix_{kind}.va").exists()
        assert (out / f"veriloga_{kind}" / f"psix_{kind}.osdi").stat().st_size > 0  # compiled
    for name in ("teacher", "student_clustered", "student_lowrank", "linear_fit"):
        assert {"params", "states", "mse", "nrmse", "r2", "hf_error"} <= set(metrics["models"][name])
        assert np.isfinite(metrics["models"][name]["nrmse"])
    assert metrics["data"]["ground_truth"] is False and metrics["data"]["sequences"] == 8
    assert metrics["data"]["splits"] == {"train": 6, "val": 1, "test": 1}
    assert metrics["discovery"]["tau_true_s"] is None and metrics["discovery"]["tau_rel_err"] is None
    assert metrics["spice_stimulus"]["kind"].startswith("held-out data waveform")
    for sim in ("ngspice", "vacask"):
        s = metrics["spice"][sim]
        assert s["replay_max_rel_err"] <= 1e-5  # SPICE = the PyTorch student on SPICE's own grid
        assert s["adaptive_nrmse"] < 1e-3
        assert s["failures"] == 0 and s["robustness_runs"] > 0
        assert s["cost_ratio_vs_reference"] is None  # no native device to compare the cost with
    verify = json.loads((out / "veriloga_clustered" / "verify.json").read_text())
    assert verify["ground_truth"] is None and "pytorch_vs_truth" not in verify
    assert "r2" in verify["pytorch_vs_data"]
    html = (out / "report.html").read_text()
    text = re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", html)
    assert "No ground truth" in text and "nan" not in text.lower() and "none (no ground truth)" in text
    again = run_pipeline(cfg, out, progress=False)
    assert not any(again["stages_run"].values())


def test_an_edited_csv_changes_the_data_fingerprint(tmp_path):
    csv = tmp_path / "a.csv"
    csv.write_text("time,v,i\n0,0,0\n1e-6,0.1,1e-6\n2e-6,0.2,2e-6\n")
    cfg = RunConfig(csv=(str(csv),))
    before = data_inputs(cfg)
    assert before == data_inputs(cfg)
    csv.write_text("time,v,i\n0,0,0\n1e-6,0.1,1e-6\n2e-6,0.2,3e-6\n")
    assert data_inputs(cfg) != before
    assert data_inputs(RunConfig(csv=(str(csv),), current_unit="uA")) != data_inputs(cfg)


def _write(path, rows: list[str]) -> str:
    path.write_text("\n".join(rows) + "\n")
    return str(path)


def test_csv_errors_are_clear(tmp_path):
    good = [f"{k * 1e-6},{0.1 * k},{1e-6 * k}" for k in range(40)]
    missing = _write(tmp_path / "missing.csv", ["time,v,current", *good])
    with pytest.raises(DataValidationError, match=r"missing\.csv.*no column 'i'.*\['time', 'v', 'current'\]"):
        load_run_csv(RunConfig(csv=(missing,)))
    back = _write(tmp_path / "back.csv", ["time,v,i", *good[:5], "2e-6,0.5,1e-6", *good[6:]])
    with pytest.raises(DataValidationError, match=r"back\.csv: line 7, column 'time'.*not greater.*strictly increase"):
        load_run_csv(RunConfig(csv=(back,)))
    nan = _write(tmp_path / "nan.csv", ["time,v,i", *good[:3], "3e-6,nan,1e-6", *good[4:]])
    with pytest.raises(DataValidationError, match=r"nan\.csv: line 5, column 'v'.*not finite"):
        load_run_csv(RunConfig(csv=(nan,)))
    short = _write(tmp_path / "short.csv", ["time,v,i", *good[:20]])
    with pytest.raises(DataValidationError, match="fewer than 16 samples"):
        load_run_csv(RunConfig(csv=(short,)))
    with pytest.raises(FileNotFoundError, match="not found"):
        data_inputs(RunConfig(csv=(str(tmp_path / "absent.csv"),)))


def test_cli_reports_csv_errors_with_exit_code_2(tmp_path, capsys):
    bad = _write(tmp_path / "bad.csv", ["t,volts,amps", "0,0,0", "1e-6,0.1,nan", "2e-6,0.2,2e-6"])
    code = main(["run", "--csv", bad, "--time-col", "t", "--voltage-col", "volts", "--current-col", "amps"])
    assert code == 2
    assert "line 3, column 'amps'" in capsys.readouterr().err


def test_csv_units_columns_and_chunking(tmp_path):
    rows = [f"{k},{100.0 * np.sin(k / 10)},{5.0 * np.sin(k / 10)}" for k in range(400)]  # ms, mV, uA
    path = _write(tmp_path / "long.csv", ["t_ms;v_mv;i_ua", *[r.replace(",", ";") for r in rows]])
    cfg = RunConfig(
        csv=(path,),
        time_col="t_ms",
        voltage_col="v_mv",
        current_col="i_ua",
        time_unit="ms",
        voltage_unit="mV",
        current_unit="uA",
    )
    ds = load_run_csv(cfg)  # one record: cut into 8 chunks automatically
    assert len(ds.sequences) == 8 and sum(len(s) for s in ds.sequences) == 400
    assert all(s.t_s[0] == 0.0 for s in ds.sequences)
    assert ds.sequences[0].t_s[1] == pytest.approx(1e-3)
    assert np.max(np.abs(np.concatenate([s.inputs_v for s in ds.sequences]))) == pytest.approx(0.1, rel=1e-3)
    assert np.max(np.abs(np.concatenate([s.outputs_a for s in ds.sequences]))) == pytest.approx(5e-6, rel=1e-3)
    assert ds.device == "csv" and ds.meta["chunks_per_sequence"] == 8
    assert len(load_run_csv(RunConfig(**{**cfg.__dict__, "chunks": 4})).sequences) == 4


def test_config_file_with_overrides_and_errors(tmp_path):
    (tmp_path / "w.csv").write_text("time,v,i\n")
    toml = tmp_path / "run.toml"
    toml.write_text('csv = ["w.csv"]\npreset = "quick"\nseed = 3\nminutes = 0.5\nsimulators = ["ngspice"]\n')
    cfg = load_run_config(toml, seed=5)
    assert cfg.csv == (str(tmp_path / "w.csv"),) and cfg.device == "csv"  # relative to the file
    assert (cfg.preset, cfg.seed, cfg.minutes, cfg.simulators) == ("quick", 5, 0.5, ("ngspice",))
    for text, words in (
        ('colour = "red"\n', "run.toml: unknown key 'colour'"),
        ('seed = "3"\n', "run.toml: seed: expected an integer, got str"),
        ('preset = "huge"\n', "run.toml: unknown preset 'huge'"),
        ('device = "perovskite"\ncsv = ["w.csv"]\n', "run.toml: csv files and device 'perovskite' exclude"),
        ("seed = \n", "run.toml: not valid TOML"),
    ):
        toml.write_text(text)
        with pytest.raises(ValueError, match=words):
            load_run_config(toml)
    with pytest.raises(FileNotFoundError, match="config file"):
        load_run_config(tmp_path / "none.toml")


def test_cli_flags_override_the_config_file(tmp_path, monkeypatch):
    from psixlstm.cli import build_parser, run_config_from_args

    toml = tmp_path / "run.toml"
    toml.write_text('device = "bjt"\npreset = "quick"\nseeds = 2\n')
    args = build_parser().parse_args(["run", "--config", str(toml), "--preset", "default", "--minutes", "1.5"])
    cfg = run_config_from_args(args)
    assert (cfg.device, cfg.preset, cfg.seeds, cfg.minutes) == ("bjt", "default", 2, 1.5)
    args = build_parser().parse_args(["run", "--config", str(toml), "--csv", "x.csv", "--simulator", "ngspice"])
    cfg = run_config_from_args(args)
    assert cfg.device == "csv" and cfg.csv == ("x.csv",) and cfg.simulators == ("ngspice",)
    args = build_parser().parse_args(["run", "--seed", "7"])
    assert run_config_from_args(args) == RunConfig(seed=7)
