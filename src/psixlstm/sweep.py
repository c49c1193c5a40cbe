"""Sweeps: every combination of a grid of run configurations, each cell one `run_pipeline` run as a Ray task.

A grid file (TOML) gives a list of values for any `RunConfig` field; `seed` lists the training seeds, one cell
each, so the table can show mean +- std over them:

    seed = [0, 1, 2]
    device = ["memristor", "vteam-paper"]
    preset = ["quick"]
    simulators = [["ngspice"], ["ngspice", "vacask"]]   # each value is itself a list

Cells run under OUT/<cell name>/ (device, preset, seed and every field that differs from RunConfig's default, e.g.
`memristor_quick_simulators-ngspice_seed0`), each on one CPU of a local Ray instance or of a Ray cluster. A cell
whose metrics.json exists with its configuration is finished and not rerun; a killed cell resumes at its first
unfinished stage; a failed cell is reported with its error and the others go on. OUT/sweep.json, summary.md and
report.html hold the table.
"""

from __future__ import annotations

import html
import itertools
import json
import re
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from .artifacts import write_json
from .data.dataset import atomic_write_bytes
from .pipeline import REPLAY_KEY, RUN_CONFIG_TYPES, RunConfig, _fingerprint, _mean_std, run_pipeline
from .report import STYLE, _num, _row

# one thread per task for every library that would start a pool of its own (torch is set by run_pipeline; ngspice
# runs with num_threads=1); set in the Ray worker's environment before it imports anything
THREAD_ENV = {name: "1" for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS")}
DEFAULTS = {f.name: f.default for f in fields(RunConfig) if f.name != "seeds"}  # the grid's keys
TYPES = {f.name: RUN_CONFIG_TYPES[f.type] for f in fields(RunConfig) if f.name in DEFAULTS}
SIMULATORS = tuple(REPLAY_KEY)
# the table's columns: a path into a cell's metrics.json; a list there (one value per terminal or per time
# constant) counts by its largest entry, the worst case
COLUMNS = {
    "teacher NRMSE": ("models", "teacher", "nrmse"),
    "teacher R^2": ("models", "teacher", "r2"),
    "clustered NRMSE": ("models", "student_clustered", "nrmse"),
    "lowrank NRMSE": ("models", "student_lowrank", "nrmse"),
    "tau max rel. err": ("discovery", "tau_rel_err"),
    **{
        f"{sim} {label}": ("spice", sim, key)
        for sim in SIMULATORS
        for label, key in (("replay err", "replay_max_rel_err"), ("NRMSE", "adaptive_nrmse"), ("failures", "failures"))
    },
    "run time (s)": ("timing", "total_s"),
}


class GridError(ValueError):
    """A grid file that cannot be swept, with what is wrong and where."""


def _check_value(key: str, value) -> object:
    """One value of one axis, as RunConfig takes it; GridError if it has the wrong type or RunConfig refuses it."""
    words, fits, convert = TYPES[key]
    if not fits(value):
        raise GridError(f"{key}: expected {words}, got {type(value).__name__} {value!r}")
    if key == "simulators" and (not value or any(s not in SIMULATORS for s in value)):
        raise GridError(f"simulators: {value!r} must name one or more of {', '.join(SIMULATORS)}")
    value = convert(value)
    try:
        RunConfig(**{key: value})
    except ValueError as exc:
        raise GridError(f"{key}: {exc}") from None
    return value


@dataclass(frozen=True)
class Cell:
    """One grid point: one `run_pipeline` run (a single seed) under OUT/<name>."""

    cfg: RunConfig

    @property
    def group(self) -> str:
        """The name less the seed: the cells the table averages over."""
        other = [
            f"{key}-{'+'.join(v) if isinstance(v, tuple) else str(v).lower()}"
            for key, default in DEFAULTS.items()
            if key not in ("device", "preset", "seed") and (v := getattr(self.cfg, key)) != default
        ]
        return "_".join([self.cfg.device, self.cfg.preset, *other])

    @property
    def name(self) -> str:
        return f"{self.group}_seed{self.cfg.seed}"

    @property
    def fingerprint(self) -> str:
        """Of the configuration, as metrics.json records it."""
        return _fingerprint(asdict(self.cfg))


@dataclass(frozen=True)
class Grid:
    """Values per RunConfig field (`seed` included, `seeds` not: every cell is one seed); validated on creation."""

    axes: dict[str, tuple]

    def __post_init__(self) -> None:
        if not self.axes:
            raise GridError(f"the grid is empty: give at least one key ({', '.join(DEFAULTS)}), e.g. seed = [0, 1]")
        checked = {}
        for key, values in self.axes.items():
            if key == "seeds":
                raise GridError("seeds: not a grid key; list the seeds instead, e.g. seed = [0, 1, 2] (a cell each)")
            if key not in DEFAULTS:
                raise GridError(f"unknown key {key!r}; a grid sets {', '.join(DEFAULTS)}")
            if not isinstance(values, list | tuple):
                example = f", e.g. {key} = {json.dumps([DEFAULTS[key]])}" if DEFAULTS[key] is not None else ""
                raise GridError(f"{key}: expected a list of values, each {TYPES[key][0]}{example}")
            if not values:
                raise GridError(f"{key}: the list is empty; give at least one value")
            checked[key] = tuple(_check_value(key, v) for v in values)
            twice = next((v for i, v in enumerate(checked[key]) if v in checked[key][:i]), None)
            if twice is not None:
                raise GridError(f"{key}: {twice!r} is listed twice")
        object.__setattr__(self, "axes", checked)

    @classmethod
    def load(cls, path: str | Path) -> Grid:
        """A grid from a TOML file; GridError names the file and what is wrong."""
        try:
            return cls(tomllib.loads(Path(path).read_text()))
        except tomllib.TOMLDecodeError as exc:
            raise GridError(f"{path}: not valid TOML: {exc}") from None
        except GridError as exc:
            raise GridError(f"{path}: {exc}") from None

    def cells(self) -> list[Cell]:
        """Every combination, in RunConfig's field order (seed last, so a group's cells are adjacent)."""
        keys = [k for k in DEFAULTS if k in self.axes]
        combos = itertools.product(*(self.axes[k] for k in keys))
        return [Cell(RunConfig(**dict(zip(keys, combo, strict=True)))) for combo in combos]


def _finished(cell: Cell, out: Path) -> dict | None:
    """The cell's metrics if it finished with its current configuration, else None."""
    path = out / cell.name / "metrics.json"
    if not path.exists():
        return None
    metrics = json.loads(path.read_text())
    return metrics if _fingerprint(metrics["config"]) == cell.fingerprint else None


def _run_cell(cfg: RunConfig, out_dir: str) -> dict:
    """A cell in a Ray worker (one CPU, THREAD_ENV): `run_pipeline`, which also sets torch to one thread, with its
    dataset simulated in this process rather than on a process per core."""
    return run_pipeline(cfg, out_dir, progress=False, workers=1)


def _run_on_ray(cells: list[Cell], out: Path, address: str | None) -> Iterator[tuple[Cell, dict]]:
    """Submit every cell as a Ray task; yield (cell, result) as each finishes: status ok with its metrics, or
    failed with the error's one-line summary and the remote traceback."""
    try:
        import ray
    except ModuleNotFoundError:
        raise ModuleNotFoundError("sweeps run on Ray: pip install 'psixlstm[sweep]'") from None

    started = not ray.is_initialized()
    if started:
        ray.init(address=address or "local", include_dashboard=False)
    try:
        task = ray.remote(num_cpus=1, runtime_env={"env_vars": THREAD_ENV})(_run_cell)
        pending = {task.remote(cell.cfg, str(out / cell.name)): cell for cell in cells}
        while pending:
            (ref,), _ = ray.wait(list(pending), num_returns=1)
            cell = pending.pop(ref)
            try:
                result = {"status": "ok", "metrics": ray.get(ref)}
            except ray.exceptions.RayError as exc:
                cause = getattr(exc, "cause", None) or exc  # a task's own exception, or Ray's (worker died, ...)
                error = f"{type(cause).__name__}: {cause}".splitlines()[0]
                result = {"status": "failed", "error": error, "traceback": re.sub(r"\x1b\[[0-9;]*m", "", str(exc))}
            yield cell, result
    finally:
        if started:
            ray.shutdown()


def _value(metrics: dict, path: tuple[str, ...]):
    for key in path:
        if not isinstance(metrics, dict) or metrics.get(key) is None:
            return None
        metrics = metrics[key]
    return max(metrics) if isinstance(metrics, list) else metrics


def _table(cells: list[Cell], results: dict[str, dict]) -> list[dict]:
    """One row per group of cells that differ only in seed: seeds finished and failed, mean/std per column."""
    groups: dict[str, list[Cell]] = {}
    for cell in cells:
        groups.setdefault(cell.group, []).append(cell)
    rows = []
    for group, members in groups.items():
        done = [c for c in members if results[c.name]["status"] != "failed"]
        rows.append(
            {
                "group": group,
                "config": {k: v for k, v in asdict(members[0].cfg).items() if k != "seed"},
                "seeds": [c.cfg.seed for c in done],
                "failed_seeds": [c.cfg.seed for c in members if c not in done],
                "columns": {
                    label: _mean_std([_value(results[c.name]["metrics"], path) for c in done])
                    for label, path in COLUMNS.items()
                },
            }
        )
    return rows


def _cells_text(rows: list[dict]) -> tuple[list[str], list[list[str]]]:
    """Header and body of the table as text, dropping columns no cell has (e.g. a simulator no cell ran)."""
    labels = [label for label in COLUMNS if any(r["columns"][label]["mean"] is not None for r in rows)]
    body = []
    for r in rows:
        seeds = f"{len(r['seeds'])}/{len(r['seeds']) + len(r['failed_seeds'])}"
        stats = [r["columns"][label] for label in labels]
        body.append([r["group"], seeds] + [f"{_num(s['mean'])} ± {_num(s['std'], '.2g')}" for s in stats])
    return ["cells", "seeds ok", *labels], body


def markdown_table(summary: dict) -> str:
    """The sweep's table (mean ± std over seeds) in markdown, followed by the failed cells and their errors."""
    header, body = _cells_text(summary["table"])
    lines = ["| " + " | ".join(row) + " |" for row in [header, ["---"] * len(header), *body]]
    failed = {name: c for name, c in summary["cells"].items() if c["status"] == "failed"}
    if failed:
        lines += ["", "Failed cells:", *(f"- {name}: {c['error']}" for name, c in failed.items())]
    return "\n".join(lines) + "\n"


def _write_report(out: Path, summary: dict) -> None:
    header, body = _cells_text(summary["table"])
    cells = [
        _row([f'<a href="{html.escape(name)}/report.html">{html.escape(name)}</a>', html.escape(c["status"])])
        if c["status"] != "failed"
        else _row([html.escape(name), f"failed: {html.escape(c['error'])}"])
        for name, c in summary["cells"].items()
    ]
    parts = [
        f'<!doctype html><html><head><meta charset="utf-8"><title>psixlstm sweep</title><style>{STYLE}</style>',
        "</head><body><h1>psixlstm sweep</h1><p>Mean &plusmn; standard deviation over the seeds of each group of",
        "cells (test split against the clean ground truth; SPICE of the clustered student; lists by their worst",
        "entry).</p><table>",
        _row([html.escape(h) for h in header], "th"),
        *(_row([html.escape(c) for c in row]) for row in body),
        "</table><h2>Cells</h2><table>",
        _row(["cell", "status"], "th"),
        *cells,
        "</table></body></html>",
    ]
    atomic_write_bytes(out / "report.html", lambda fh: fh.write("\n".join(parts).encode()))


def run_sweep(grid: Grid | str | Path, out_dir: str | Path, address: str | None = None, progress: bool = True) -> dict:
    """Run (or resume) every cell of `grid` (a Grid or a TOML file) under OUT/<cell name>/ as Ray tasks, one CPU
    each, and write OUT/sweep.json, summary.md and report.html; returns sweep.json's content.

    address: a Ray cluster to run on ("HOST:6379", "auto"); None starts a local Ray instance with the machine's
    cores. A Ray instance this process is already connected to is used as it is. Finished cells are not rerun."""
    grid = grid if isinstance(grid, Grid) else Grid.load(grid)
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    cells = grid.cells()
    say: Callable[[str], None] = (lambda text: print(text, flush=True)) if progress else (lambda _: None)
    results: dict[str, dict] = {}

    def record(cell: Cell, result: dict) -> None:
        results[cell.name] = {"config": asdict(cell.cfg), **result}
        if result["status"] == "failed":
            detail = result["error"]
        else:
            detail = ", ".join(
                f"{label} {_num(_value(result['metrics'], COLUMNS[label]))}"
                for label in ("teacher R^2", "clustered NRMSE", "run time (s)")
            )
        say(f"[{len(results)}/{len(cells)}] {cell.name}: {result['status']} ({detail})")

    todo = []
    for cell in cells:
        metrics = _finished(cell, out)
        if metrics is None:
            todo.append(cell)
        else:
            record(cell, {"status": "skipped", "metrics": metrics})
    if todo:
        say(f"running {len(todo)} cell(s) on Ray")
        for cell, result in _run_on_ray(todo, out, address):
            record(cell, result)
    results = {cell.name: results[cell.name] for cell in cells}  # grid order
    summary = {"grid": {k: list(v) for k, v in grid.axes.items()}, "table": _table(cells, results), "cells": results}
    write_json(out / "sweep.json", summary)
    summary = json.loads((out / "sweep.json").read_text())  # as JSON has it (lists, not tuples)
    atomic_write_bytes(out / "summary.md", lambda fh: fh.write(markdown_table(summary).encode()))
    _write_report(out, summary)
    return summary
