"""Sweeps: grid files and their errors, and on a real local Ray instance (2 CPUs) failed and finished cells and,
slow, a tiny grid of quick runs that is killed, resumed and compared cell by cell with serial runs."""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
import sys
import time
from dataclasses import asdict

import pytest

from psixlstm.artifacts import write_json
from psixlstm.cli import main
from psixlstm.pipeline import RunConfig, run_pipeline
from psixlstm.sweep import Grid, GridError, run_sweep

ray = pytest.importorskip("ray")
requires_ngspice = pytest.mark.skipif(shutil.which("ngspice") is None, reason="ngspice not installed")
# the smallest runs: quick preset, ngspice only, and a training budget shorter than any epoch, so that every model
# trains exactly one epoch whatever the machine's load (a budget that binds after a varying number of epochs would
# make the results depend on the wall clock)
TINY_GRID = 'seed = [0, 1]\npreset = ["quick"]\nsimulators = [["ngspice"]]\nminutes = [0.001]\n'


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False)
    yield
    ray.shutdown()


def test_grid_expands_to_one_cell_per_combination(tmp_path):
    grid = Grid({"seed": [0, 1], "device": ["memristor", "mosfet"], "simulators": [["ngspice"]]})
    cells = grid.cells()
    assert [c.name for c in cells] == [
        "memristor_default_simulators-ngspice_seed0",
        "memristor_default_simulators-ngspice_seed1",
        "mosfet_default_simulators-ngspice_seed0",
        "mosfet_default_simulators-ngspice_seed1",
    ]
    assert cells[3].cfg == RunConfig(device="mosfet", simulators=("ngspice",), seed=1)
    assert cells[0].group == cells[1].group != cells[2].group
    (cell,) = Grid({"baselines": [True], "minutes": [2]}).cells()
    assert cell.name == "memristor_default_baselines-true_minutes-2.0_seed0" and cell.cfg.minutes == 2.0
    assert len(Grid.load("examples/sweep_quick.toml").cells()) == 3


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "the grid is empty"),
        ("lr = [0.1]", "unknown key 'lr'; a grid sets device, preset, baselines, simulators, seed, minutes"),
        ("seeds = [2]", "seeds: not a grid key; list the seeds instead"),
        ('device = "memristor"', 'device: expected a list of values, each a string, e.g. device = \\["memristor"\\]'),
        ("seed = []", "seed: the list is empty"),
        ('seed = [0, "1"]', "seed: expected an integer, got str '1'"),
        ("seed = [true]", "seed: expected an integer, got bool True"),
        ("baselines = [1]", "baselines: expected true or false, got int 1"),
        ('simulators = ["ngspice"]', "simulators: expected a list of strings, got str 'ngspice'"),
        ('simulators = [["spectre"]]', "simulators: \\['spectre'\\] must name one or more of ngspice, vacask"),
        ('device = ["diode"]', "device: unknown device 'diode'"),
        ("seed = [-1]", "seed: seed must be >= 0"),
        ("seed = [1, 1]", "seed: 1 is listed twice"),
        ('minutes = ["2"]', "minutes: expected a number, got str '2'"),
        ("minutes = [0]", "minutes: minutes must be > 0"),
        ("seed = [0", "not valid TOML"),
    ],
)
def test_grid_errors_say_what_is_wrong(tmp_path, text, message):
    path = tmp_path / "grid.toml"
    path.write_text(text)
    with pytest.raises(GridError, match=f"^{path}: .*{message}" if "TOML" in message else f"^{path}: {message}"):
        Grid.load(path)


def test_sweep_command_help_and_a_bad_grid(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["sweep", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "--address" in out and "grid file (TOML)" in out and "seed = [0, 1, 2]" in out
    (tmp_path / "grid.toml").write_text("lr = [0.1]\n")
    assert main(["sweep", "--grid", str(tmp_path / "grid.toml"), "--out", str(tmp_path / "out")]) == 2
    assert "psi-xlstm sweep: error:" in capsys.readouterr().err and not (tmp_path / "out").exists()


def test_failed_cell_is_reported_and_a_finished_one_is_not_rerun(local_ray, tmp_path):
    """On Ray: the seed-1 cell fails in its task (a file blocks its directory) and is reported with the error; the
    seed-0 cell has a metrics.json with its configuration, so it is not run again; the table covers what finished."""
    (tmp_path / "grid.toml").write_text(TINY_GRID)
    grid = Grid.load(tmp_path / "grid.toml")
    done, blocked = grid.cells()
    out = tmp_path / "sweep"
    (out / done.name).mkdir(parents=True)
    write_json(
        out / done.name / "metrics.json",
        {"config": asdict(done.cfg), "models": {"teacher": {"r2": 0.5}}, "timing": {"total_s": 60.0}},
    )
    (out / blocked.name).write_text("not a directory")
    summary = run_sweep(grid, out, progress=False)
    cells = summary["cells"]
    assert cells[done.name]["status"] == "skipped"
    assert cells[blocked.name]["status"] == "failed" and cells[blocked.name]["error"].startswith("FileExistsError")
    assert "run_pipeline" in cells[blocked.name]["traceback"]
    (row,) = summary["table"]
    assert row["seeds"] == [0] and row["failed_seeds"] == [1]
    assert row["columns"]["teacher R^2"] == {"mean": 0.5, "std": 0.0}
    assert json.loads((out / "sweep.json").read_text()) == summary
    md = (out / "summary.md").read_text()
    assert "| memristor_quick_simulators-ngspice_minutes-0.001 | 1/2 | 0.5 ± 0 | 60 ± 0 |" in md
    assert f"- {blocked.name}: FileExistsError" in md
    assert "failed: FileExistsError" in (out / "report.html").read_text()


def _deterministic(metrics: dict) -> dict:
    """metrics.json less what the wall clock or the invocation decides: timing (seconds per stage), each model's
    latency_us_per_step (a timed forward pass), the SPICE cost_ratio_vs_reference (timed simulator runs) and
    stages_run (which stages this invocation ran: fewer after a resume). The rest is a function of the
    configuration: training is seeded and single-threaded."""
    m = copy.deepcopy(metrics)
    del m["timing"], m["stages_run"]
    for row in m["models"].values():
        del row["latency_us_per_step"]
    for entry in m["spice"].values():
        del entry["cost_ratio_vs_reference"]
    return m


def _epochs(run_dir, seed: int) -> dict:
    """Epochs and stop reason of each trained model: the quick budgets are wall-clock minutes, so a machine much
    slower than usual (a loaded one) can stop training earlier, and then no metric can match."""
    runs = {
        k: json.loads((run_dir / f"seed{seed}" / k / "metrics.json").read_text())["training"]
        for k in ("teacher", "clustered", "lowrank")
    }
    return {k: (t["epochs_run"], t["stopped"]) for k, t in runs.items()}


@pytest.mark.slow
@requires_ngspice
def test_tiny_grid_on_ray_resumes_after_a_kill_and_matches_serial_runs(local_ray, tmp_path):
    """Three quick cells on 2 CPUs: the sweep (the command line, on this test's Ray instance through --address) is
    killed when the first cell has finished, so the third has not started and the second may be mid-run. The
    second invocation skips what finished and resumes the rest; every cell then equals a serial run."""
    grid = tmp_path / "grid.toml"
    grid.write_text(TINY_GRID.replace("seed = [0, 1]", "seed = [0, 1, 2]"))
    cells = Grid.load(grid).cells()
    out = tmp_path / "sweep"
    address = ray.get_runtime_context().gcs_address
    cmd = [sys.executable, "-m", "psixlstm.cli", "sweep", "--grid", str(grid), "--address", address, "--out", str(out)]
    with open(tmp_path / "sweep.log", "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 600
        while not any((out / c.name / "metrics.json").exists() for c in cells) and proc.poll() is None:
            assert time.monotonic() < deadline, "no cell finished in 10 minutes"
            time.sleep(0.2)
        proc.kill()
        proc.wait()
    finished = {c.name for c in cells if (out / c.name / "metrics.json").exists()}
    started = {c.name for c in cells if (out / c.name / "data" / "stage.json").exists()}
    assert finished and cells[2].name not in finished, (tmp_path / "sweep.log").read_text()

    summary = run_sweep(grid, out, progress=False)  # the second invocation: finished cells are not rerun
    status = {name: c["status"] for name, c in summary["cells"].items()}
    assert status == {c.name: "skipped" if c.name in finished else "ok" for c in cells}
    for cell in cells:
        if cell.name in started - finished:  # killed mid-run: resumed after its finished stages
            assert not summary["cells"][cell.name]["metrics"]["stages_run"]["data"]

    for cell in cells:  # every cell equals a serial run of its configuration
        serial = tmp_path / "serial" / cell.name
        run_pipeline(cell.cfg, serial, progress=False)
        reference = json.loads((serial / "metrics.json").read_text())
        assert _epochs(out / cell.name, cell.cfg.seed) == _epochs(serial, cell.cfg.seed)
        assert _deterministic(summary["cells"][cell.name]["metrics"]) == _deterministic(reference)

    again = run_sweep(grid, out, progress=False)  # nothing left to run: no Ray task, the same table
    assert {c["status"] for c in again["cells"].values()} == {"skipped"}
    assert again["table"] == summary["table"]
    (row,) = again["table"]
    assert row["seeds"] == [0, 1, 2] and row["columns"]["clustered NRMSE"]["std"] > 0
