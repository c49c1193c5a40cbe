"""Stage: the whole run, waveforms in, verified Verilog-A and a report out.

    data -> teacher (+ optional baselines) -> discovery -> clustered and low-rank students (RRAD)
         -> Verilog-A (both students) -> SPICE verification -> SPICE on a test waveform (for the report's plots)
         -> stress (out-of-range impulses; devices with a ground truth) -> characterize (MOSFET/BJT: DC, Gummel,
            KCL/charge, .ac against the native device) -> metrics.json + report.html

Every stage writes its artifacts under OUT/<stage>/ and a `stage.json` with the fingerprint of its inputs (the run
configuration that matters to it and the fingerprints of the stages it reads). A rerun skips a stage whose
fingerprint is unchanged, reruns it (after removing the stale directory) when it changed, and resumes a stage that
was killed (its directory exists without `stage.json`: training checkpoints are picked up). With several seeds the
teacher, discovery and students run once per seed (OUT/seed<k>/...), data once, export and SPICE for the first
seed (`RunConfig.seed`, 0 unless a sweep cell asks for another).
"""

from __future__ import annotations

import functools
import hashlib
import json
import multiprocessing
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from .artifacts import write_json
from .config import teacher_preset

STUDENT_KINDS = ("clustered", "lowrank")
REPLAY_KEY = {"ngspice": "replay_max_rel_err_trap", "vacask": "replay_max_rel_err_euler"}  # the 1e-5 bounds


@dataclass(frozen=True)
class RunBudget:
    """What a run preset spends: data preset, teacher and student presets with wall-clock budgets (minutes)."""

    data_preset: str
    teacher_preset: str
    teacher_minutes: float
    distill_preset: str
    distill_minutes: float
    robustness: int  # random and stress SPICE runs per simulator


RUN_BUDGETS = {
    "quick": RunBudget("quick", "quick", 0.5, "quick", 0.25, 4),  # about a minute: for tests
    # <= 10 minutes on 2 cores; the two students train side by side (the clustered one: up to 100 epochs in its 5 min)
    "default": RunBudget("default", "default", 3.5, "default", 5.0, 20),
    "paper": RunBudget("default", "paper", 40.0, "paper", 6.0, 200),  # <= 60 minutes per seed
}


@dataclass(frozen=True)
class StressBudget:
    """The stress plan of a run preset (`stress.stress_plan`): impulse amplitudes (x the training range max |V|),
    signs, and which of the device's impulse widths (indices into `stress.DEVICE_STRESS[device].widths_s`, shortest
    first: memristor 10 ns, 1 us, 100 us; MOSFET/BJT 2, 20, 200 ns), on every driven terminal."""

    amplitudes: tuple[float, ...]
    signs: tuple[float, ...]
    widths: tuple[int, ...]


# Each case runs through the truth, the teacher, both students and the export in each simulator. Measured on 2 shared
# cores with default-preset models: about 4.5 s per memristor case (the full 18-case plan took 83 s), about 2 s per
# MOSFET/BJT case (two driven terminals, so twice the cases).
STRESS_BUDGETS = {
    # one 2x impulse each way at the longest width (the memristor's 100 us moves every state): ~5 s, 2 cases
    "quick": StressBudget((2.0,), (1.0, -1.0), (2,)),
    # 1x and 2x, both signs, the shortest and the longest width (1 us dropped): 8 memristor cases, about 40 s, which
    # keeps the default run under 10 minutes on 2 cores (it took about 7.5 min without the stress test)
    "default": StressBudget((1.0, 2.0), (1.0, -1.0), (0, 2)),
    # the whole plan (= stress.STRESS_AMPLITUDES, all widths): 18 memristor cases
    "paper": StressBudget((1.0, 1.5, 2.0), (1.0, -1.0), (0, 1, 2)),
}
CHARACTERIZE_DEVICES = ("mosfet", "bjt")
SPICE_WAVEFORM_MAX_SAMPLES = 20_000  # the report's SPICE run: the first test sequence, at most this many samples


# where a run's waveforms come from: a simulated device (data.generate), the measured perovskite memristor's I-V
# sweeps (data.perovskite), or the user's CSV files (data.csv_loader)
MEASURED_DEVICES = ("perovskite",)
RUN_DEVICES = ("memristor", "vteam-paper", "mosfet", "bjt", *MEASURED_DEVICES, "csv")
TIME_UNITS = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "ns": 1e-9}
VOLTAGE_UNITS = {"V": 1.0, "mV": 1e-3}
CURRENT_UNITS = {"A": 1.0, "mA": 1e-3, "uA": 1e-6, "nA": 1e-9, "pA": 1e-12}
CSV_MIN_SEQUENCES = 8  # automatic chunking: cut long records until there are this many sequences


@dataclass(frozen=True)
class RunConfig:
    device: str = "memristor"  # a simulated device, "perovskite" (measured I-V sweeps) or "csv" (set by `csv`)
    preset: str = "default"
    seeds: int = 1
    baselines: bool = False  # also train every baseline at the teacher's budget
    simulators: tuple[str, ...] = ("ngspice", "vacask")
    seed: int = 0  # the first training seed: teacher and students run for seed, ..., seed + seeds - 1
    minutes: float | None = None  # wall-clock training budget per model (teacher, each student); None: the preset's
    # user waveforms: CSV files with a header line and columns time, voltage, current (see `load_run_csv`)
    csv: tuple[str, ...] = ()
    time_col: str = "time"
    voltage_col: str = "v"
    current_col: str = "i"
    sequence_col: str = ""  # a column whose value splits a file into sequences; "": one sequence per file
    time_unit: str = "s"  # of the time column: s, ms, us, ns
    voltage_unit: str = "V"  # V, mV
    current_unit: str = "A"  # A, mA, uA, nA, pA
    chunks: int = 0  # cut every sequence into this many equal parts; 0: automatic (at least 8 sequences in all)
    sweep_rate: float = 0.1  # perovskite: the ASSUMED I-V sweep rate (V/s); the files have no time column

    def __post_init__(self) -> None:
        if self.csv and self.device == "memristor":  # the default device: a CSV run is a "csv" run
            object.__setattr__(self, "device", "csv")
        if isinstance(self.csv, str | Path):
            object.__setattr__(self, "csv", (str(self.csv),))
        object.__setattr__(self, "csv", tuple(str(p) for p in self.csv))
        if self.device not in RUN_DEVICES:
            raise ValueError(f"unknown device {self.device!r}; choose one of {', '.join(RUN_DEVICES)}")
        if self.device == "csv" and not self.csv:
            raise ValueError("device 'csv' needs csv files (RunConfig(csv=[...]), --csv FILE ...)")
        if self.csv and self.device != "csv":
            raise ValueError(f"csv files and device {self.device!r} exclude each other: the CSV is the device")
        for name, units in (
            ("time_unit", TIME_UNITS),
            ("voltage_unit", VOLTAGE_UNITS),
            ("current_unit", CURRENT_UNITS),
        ):
            if getattr(self, name) not in units:
                raise ValueError(f"unknown {name} {getattr(self, name)!r}; choose one of {', '.join(units)}")
        if self.chunks < 0:
            raise ValueError(f"chunks must be >= 0 (0: automatic), got {self.chunks}")
        if not self.sweep_rate > 0:
            raise ValueError(f"sweep_rate must be > 0 V/s, got {self.sweep_rate}")
        if self.preset not in RUN_BUDGETS:
            raise ValueError(f"unknown preset {self.preset!r}; choose one of {', '.join(RUN_BUDGETS)}")
        if self.seeds < 1:
            raise ValueError(f"seeds must be >= 1, got {self.seeds}")
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")
        if self.minutes is not None and self.minutes <= 0:
            raise ValueError(f"minutes must be > 0, got {self.minutes}")

    @property
    def budget(self) -> RunBudget:
        b = RUN_BUDGETS[self.preset]
        return b if self.minutes is None else replace(b, teacher_minutes=self.minutes, distill_minutes=self.minutes)


def _sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def data_inputs(cfg: RunConfig) -> dict:
    """What the data stage depends on: device and data preset; for CSV files and measured data also the SHA-256 of
    every file read (an edited file reruns the run from the data on) and the options that read them."""
    if cfg.device == "csv":
        missing = [p for p in cfg.csv if not Path(p).is_file()]
        if missing:
            raise FileNotFoundError(f"CSV file(s) not found: {', '.join(missing)}")
        keys = ("time_col", "voltage_col", "current_col", "sequence_col", "time_unit", "voltage_unit")
        options = {k: getattr(cfg, k) for k in (*keys, "current_unit", "chunks")}
        files = [{"path": str(Path(p).resolve()), "sha256": _sha256(p)} for p in cfg.csv]
        return {"device": "csv", "files": files, **options}
    if cfg.device == "perovskite":
        from .data.perovskite import DEFAULT_IV_FILES, default_perovskite_dir

        root = default_perovskite_dir()
        files = [{"path": rel, "sha256": _sha256(root / rel)} for rel in DEFAULT_IV_FILES]
        return {"device": "perovskite", "files": files, "sweep_rate_v_per_s": cfg.sweep_rate}
    return {"device": cfg.device, "data_preset": cfg.budget.data_preset}


def _chunked(seq, k: int) -> list:
    """A sequence cut into k consecutive parts of (nearly) equal sample counts, each with its time from 0."""
    from .data import Sequence

    edges = np.linspace(0, len(seq), k + 1).round().astype(int)
    parts = []
    for j in range(k):
        sl = slice(edges[j], edges[j + 1])
        meta = {**seq.meta, "chunk": j, "of_chunks": k}
        parts.append(Sequence(seq.t_s[sl] - seq.t_s[sl][0], seq.inputs_v[sl], seq.outputs_a[sl], meta=meta))
    return parts


def load_run_csv(cfg: RunConfig):
    """The Dataset of a CSV run: every file is one sequence (several with `sequence_col`: one per value), values
    converted from the given units to s, V, A; then, if `chunks` > 1 or (automatic, chunks 0) there are fewer than 8
    sequences, every sequence is cut into that many consecutive equal parts (each starts from the model's rest
    state, so cut long records where the device rests). Sequences are split into train/val/test by whole sequence
    (70/15/15 %, seed 0; at least one each from 3 sequences on)."""
    from .data import Dataset, DataValidationError, load_csv, split_sequences

    seqs = []
    for path in cfg.csv:
        ds = load_csv(
            path,
            time_col=cfg.time_col,
            voltage_cols=(cfg.voltage_col,),
            current_cols=(cfg.current_col,),
            sequence_col=cfg.sequence_col or None,
        )
        for s in ds.sequences:
            s.t_s = (s.t_s - s.t_s[0]) * TIME_UNITS[cfg.time_unit]
            s.inputs_v = s.inputs_v * VOLTAGE_UNITS[cfg.voltage_unit]
            s.outputs_a = s.outputs_a * CURRENT_UNITS[cfg.current_unit]
            seqs.append(s)
    k = cfg.chunks or -(-CSV_MIN_SEQUENCES // len(seqs))
    if k > 1:
        short = min(len(s) for s in seqs)
        if short // k < 16:
            raise DataValidationError(
                f"cutting every sequence into {k} chunks leaves fewer than 16 samples in a chunk (the shortest "
                f"sequence has {short}); give more or longer sequences, or fewer --chunks"
            )
        seqs = [part for s in seqs for part in _chunked(s, k)]
    if len(seqs) < 3:
        raise DataValidationError(
            f"{len(seqs)} sequence(s): train, validation and test need at least 3; give more files, a sequence "
            "column, or --chunks"
        )
    ds = Dataset(
        device="csv",
        input_names=[cfg.voltage_col],
        output_names=[cfg.current_col],
        sequences=seqs,
        splits=split_sequences(len(seqs), seed=0),
        meta={
            "source": "csv",
            "files": [str(Path(p).resolve()) for p in cfg.csv],
            "units_in_files": {"time": cfg.time_unit, "voltage": cfg.voltage_unit, "current": cfg.current_unit},
            "chunks_per_sequence": k,
            "ground_truth": None,
        },
    )
    ds.compute_scales()
    return ds


def load_run_data(cfg: RunConfig, progress: bool = False, workers: int | None = None):
    """The run's Dataset: simulated (`make_dataset`), the measured perovskite I-V sweeps (`load_iv_sweeps` at the
    assumed `sweep_rate`), or the CSV files (`load_run_csv`)."""
    if cfg.device == "csv":
        return load_run_csv(cfg)
    if cfg.device == "perovskite":
        from .data.perovskite import load_iv_sweeps

        return load_iv_sweeps(sweep_rate_v_per_s=cfg.sweep_rate, seed=0)
    from .data.generate import make_dataset

    return make_dataset(cfg.device, cfg.budget.data_preset, seed=0, progress=progress, workers=workers)


RUN_CONFIG_TYPES = {  # RunConfig's field types as TOML gives them: in words, the check, the conversion
    "str": ("a string", lambda v: isinstance(v, str), str),
    "int": ("an integer", lambda v: type(v) is int, int),  # exactly: TOML's true is no integer here
    "bool": ("true or false", lambda v: type(v) is bool, bool),
    "float": ("a number", lambda v: type(v) in (int, float), float),
    "float | None": ("a number", lambda v: type(v) in (int, float), float),
    "tuple[str, ...]": ("a list of strings", lambda v: isinstance(v, list) and all(type(s) is str for s in v), tuple),
}


def load_run_config(path: str | Path, **overrides) -> RunConfig:
    """A RunConfig from a TOML file of RunConfig fields (`examples/run_csv.toml`), with `overrides` (e.g. the command
    line's flags) on top. Relative CSV paths are taken relative to the file. Errors name the file and the key."""
    import tomllib
    from dataclasses import fields

    path = Path(path)
    try:
        doc = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"config file {path} not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{path}: not valid TOML: {exc}") from None
    types = {f.name: f.type for f in fields(RunConfig)}
    values = {}
    for key, value in doc.items():
        if key not in types:
            raise ValueError(f"{path}: unknown key {key!r}; RunConfig has {', '.join(types)}")
        words, fits, convert = RUN_CONFIG_TYPES[types[key]]
        if not fits(value):
            raise ValueError(f"{path}: {key}: expected {words}, got {type(value).__name__} {value!r}")
        values[key] = convert(value)
    if "csv" in values:
        values["csv"] = tuple(str(p if Path(p).is_absolute() else (path.parent / p)) for p in values["csv"])
    values.update(overrides)
    try:
        return RunConfig(**values)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None


def _fingerprint(inputs: dict) -> str:
    return hashlib.sha256(json.dumps(inputs, sort_keys=True, default=str).encode()).hexdigest()[:16]


class Stages:
    """Runs named stages under one output directory with skip / rerun / resume by input fingerprint."""

    def __init__(self, out: Path, progress: bool, workers: int = 1) -> None:
        self.out, self.progress, self.workers = out, progress, workers
        self.fingerprints: dict[str, str] = {}
        self.timing: dict[str, float] = {}
        self.ran: dict[str, bool] = {}

    def run(self, name: str, inputs: dict, fn: Callable[[Path], dict], after: tuple[str, ...] = ()) -> dict:
        """Run `fn(stage_dir) -> summary` unless the stage is up to date; returns the summary."""
        inputs, fp = self._keyed(inputs, after)
        d = self.out / name
        manifest = d / "stage.json"
        if manifest.exists():
            done = json.loads(manifest.read_text())
            if done["fingerprint"] == fp:
                self.fingerprints[name], self.timing[name], self.ran[name] = fp, done["seconds"], False
                self._say(f"[{name}] up to date, skipped")
                return done["summary"]
            shutil.rmtree(d)  # inputs changed: the old artifacts are stale
        d.mkdir(parents=True, exist_ok=True)
        self._say(f"[{name}] running")
        start = time.perf_counter()
        summary = fn(d)
        seconds = time.perf_counter() - start
        write_json(manifest, {"fingerprint": fp, "inputs": inputs, "seconds": seconds, "summary": summary})
        self.fingerprints[name], self.timing[name], self.ran[name] = fp, seconds, True
        return summary

    def run_side_by_side(self, specs: list[tuple[str, dict, Callable[[Path], dict], tuple[str, ...]]]) -> list[dict]:
        """`run` for each (name, inputs, fn, after), the stages that are not up to date at once in forked processes
        (the first in this one; in turn with `workers` 1), so that single-threaded stages (each student's training)
        share the cores instead of queueing. A forked stage's summary is read back from its manifest; one that fails
        raises."""
        pending = [spec for spec in specs if not self._up_to_date(*spec[:2], spec[3])]
        if len(pending) < 2 or self.workers < 2:
            return [self.run(*spec) for spec in specs]
        ctx = multiprocessing.get_context("fork")  # no re-import of torch; the closures need no pickling
        children = [ctx.Process(target=self.run, args=spec) for spec in pending[1:]]
        for child in children:
            child.start()
        try:
            self.run(*pending[0])
        finally:
            for child in children:
                child.join()
        for child, spec in zip(children, pending[1:], strict=True):
            if child.exitcode != 0:
                raise RuntimeError(f"stage {spec[0]} failed in its process (exit code {child.exitcode}); see above")
        summaries = [self.run(*spec) for spec in specs]  # all up to date now: read back from their manifests
        for spec in pending:
            self.ran[spec[0]] = True
        return summaries

    def _keyed(self, inputs: dict, after: tuple[str, ...]) -> tuple[dict, str]:
        """A stage's inputs with the fingerprints of the stages it comes after, and their fingerprint."""
        inputs = {**inputs, "after": {a: self.fingerprints[a] for a in after}}
        return inputs, _fingerprint(inputs)

    def _up_to_date(self, name: str, inputs: dict, after: tuple[str, ...]) -> bool:
        manifest = self.out / name / "stage.json"
        return manifest.exists() and json.loads(manifest.read_text())["fingerprint"] == self._keyed(inputs, after)[1]

    def _say(self, text: str) -> None:
        if self.progress:
            print(text, flush=True)


def _model_row(metrics: dict, latency_us: float | None) -> dict:
    test = metrics["test"]["vs_clean"]
    return {
        "params": metrics["params"],
        "states": metrics.get("states"),
        "mse": test["mse"],
        "nrmse": test["nrmse"],
        "r2": test["r2"],
        "hf_error": metrics["test"]["bands"]["high"]["rel_error"],
        "latency_us_per_step": latency_us,
    }


def run_pipeline(cfg: RunConfig, out_dir: str | Path, progress: bool = True, workers: int | None = None) -> dict:
    """Run (or resume) the whole pipeline for `cfg` under `out_dir`; returns metrics.json's content. workers:
    processes the run may use at once, for the data, the two students side by side and the stress cases (default one
    per core; a sweep cell, one; the results do not depend on it, the budget-bound training stages only through
    the epochs that fit)."""
    import torch

    from . import __version__
    from .data import Dataset
    from .discovery import Discovery
    from .distillation import distill, distill_preset, load_student
    from .export import export_student
    from .fitting import load_teacher, run_baselines, train_teacher
    from .metrics import latency_us_per_step
    from .verification import GROUND_TRUTH_DEVICES, verify_export

    torch.set_num_threads(1)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    b = cfg.budget
    workers = workers or os.cpu_count() or 1
    stages = Stages(out, progress, workers)
    wall = time.perf_counter()

    def data_stage(d: Path) -> dict:
        ds = load_run_data(cfg, progress=progress, workers=workers)
        ds.save(d)
        return {"sequences": len(ds.sequences), "device": ds.device}

    stages.run("data", data_inputs(cfg), data_stage)
    dataset = Dataset.load(out / "data")
    teacher_p = teacher_preset(b.teacher_preset, cfg.device, max_minutes=b.teacher_minutes)
    distill_p = distill_preset(b.distill_preset, max_minutes=b.distill_minutes)
    data_dir = str((out / "data").resolve())
    per_seed: list[dict] = []
    reach: dict | None = None
    for seed in range(cfg.seed, cfg.seed + cfg.seeds):
        tag = f"seed{seed}"

        def teacher_stage(d: Path, seed: int = seed) -> dict:
            run = train_teacher(dataset, teacher_p, d, seed=seed, progress=progress, data_dir=data_dir)
            return {"r2": run.metrics["test"]["vs_clean"]["r2"]}

        stages.run(f"{tag}/teacher", {"preset": asdict(teacher_p), "seed": seed}, teacher_stage, after=("data",))
        teacher, _, teacher_metrics = load_teacher(out / tag / "teacher")
        stages.run(
            f"{tag}/discovery",
            {},
            lambda d, teacher=teacher: _discovery_stage(teacher, dataset, d),
            after=(f"{tag}/teacher",),
        )
        disc = Discovery.load(out / tag / "discovery")
        models = {"teacher": (teacher, teacher_metrics)}

        def student_stage(d: Path, kind: str, teacher=teacher, disc=disc, seed: int = seed) -> dict:
            # the first student shows its progress bar; the others train at the same time in their own processes
            bar = progress and kind == STUDENT_KINDS[0]
            run = distill(teacher, dataset, disc, kind, distill_p, d, seed=seed, progress=bar)
            return {"nrmse": run.metrics["test"]["vs_clean"]["nrmse"]}

        stages.run_side_by_side(
            [
                (
                    f"{tag}/{kind}",
                    {"preset": asdict(distill_p), "seed": seed},
                    functools.partial(student_stage, kind=kind),
                    (f"{tag}/discovery",),
                )
                for kind in STUDENT_KINDS
            ]
        )
        for kind in STUDENT_KINDS:
            student, _, m = load_student(out / tag / kind)
            models[f"student_{kind}"] = (student, m)
        n_in = len(dataset.input_names)
        if seed == cfg.seed and dataset.device in CHARACTERIZE_DEVICES:  # error per band, DC to 10 MHz (issue #6)
            from .reach import frequency_reach

            reach = {name: frequency_reach(model, dataset) for name, (model, _) in models.items()}
        rows = {name: _model_row(m, latency_us_per_step(model, n_in, batch=1)) for name, (model, m) in models.items()}
        rows["teacher"]["states"] = teacher_state_count(teacher)
        if cfg.baselines:
            table = stages.run(
                f"{tag}/baselines",
                {"preset": asdict(teacher_p), "seed": seed},
                lambda d, seed=seed: run_baselines(dataset, teacher_p, d, seed=seed, progress=progress),
                after=("data",),
            )
        else:
            table = {"linear_fit": linear_fit_report(dataset)}
        costs = baseline_costs(dataset, teacher_p, list(table))
        for name, m in table.items():
            lat, states = costs.get(name, (None, None))
            row = _model_row(m, lat)
            row["states"] = row["states"] if row["states"] is not None else states
            rows.setdefault(name, row)
        per_seed.append({"models": rows, "discovery": disc.to_dict()})

    exported: dict[str, dict] = {}
    for kind in STUDENT_KINDS:
        stages.run(
            f"veriloga_{kind}",
            {"module": f"psix_{kind}"},
            lambda d, kind=kind: export_student(out / f"seed{cfg.seed}" / kind, d, module=f"psix_{kind}", opt_level=1),
            after=(f"seed{cfg.seed}/{kind}",),
        )
        exported[kind] = json.loads((out / f"veriloga_{kind}" / "model.json").read_text())
    spice_inputs = {"simulators": list(cfg.simulators), "robustness": b.robustness}
    no_truth = dataset.device not in GROUND_TRUTH_DEVICES  # verified against the student on held-out data
    if no_truth:
        spice_inputs["verify_on"] = "held-out data"
    spice_report = stages.run(
        "spice",
        spice_inputs,
        lambda d: verify_export(
            out / "veriloga_clustered",
            cfg.simulators,
            robustness_n=b.robustness,
            data_dir=out / "data" if no_truth else None,
        ),
        after=("veriloga_clustered",),
    )
    first = out / f"seed{cfg.seed}"
    export_dir = out / "veriloga_clustered"
    waveform = stages.run(
        "spice_waveform",
        {"simulators": list(cfg.simulators), "max_samples": SPICE_WAVEFORM_MAX_SAMPLES},
        lambda d: spice_test_waveform(export_dir, dataset, cfg.simulators, d),
        after=("veriloga_clustered",),
    )
    from .stress import DEVICE_STRESS

    if dataset.device in DEVICE_STRESS:
        sb = STRESS_BUDGETS[cfg.preset]
        stress = stages.run(
            "stress",
            {"plan": asdict(sb), "simulators": list(cfg.simulators)},
            lambda d: stress_stage(first, dataset, export_dir, cfg.simulators, sb, d, progress, workers),
            after=(*(f"seed{cfg.seed}/{k}" for k in ("teacher", *STUDENT_KINDS)), "veriloga_clustered"),
        )
    else:
        known = ", ".join(DEVICE_STRESS)
        stress = {"skipped": f"no stress test for device {dataset.device!r} (stress.DEVICE_STRESS: {known})"}
    characterize = None
    if dataset.device in CHARACTERIZE_DEVICES:
        from .characterize import characterize_export

        characterize = stages.run(
            "characterize",
            {"simulators": list(cfg.simulators)},
            lambda d: characterize_export(export_dir, cfg.simulators, out_dir=d)["summary"],
            after=("veriloga_clustered",),
        )
    metrics = _collect(cfg, per_seed, spice_report, stages, time.perf_counter() - wall, __version__)
    metrics["spice_test_waveform"] = waveform
    metrics["stress"] = stress
    if characterize is not None:
        metrics["characterize"] = characterize
    if reach is not None:
        metrics["frequency_reach"] = reach
    metrics["data"] = data_summary(dataset)
    from .report import write_report

    start = time.perf_counter()
    write_report(out, metrics, dataset)
    metrics["timing"]["report_s"] = time.perf_counter() - start
    metrics["timing"]["total_s"] = time.perf_counter() - wall
    write_json(out / "metrics.json", metrics)  # last: a run with metrics.json has finished, report included
    return metrics


def spice_test_waveform(export_dir: Path, dataset, simulators, d: Path) -> dict:
    """The exported student in each simulator on the first test sequence of the data (its first
    SPICE_WAVEFORM_MAX_SAMPLES samples, one PWL source per driven terminal through the samples; reltol 1e-4, max step
    the data's coarsest step), against the PyTorch student replayed on SPICE's accepted grid with SPICE's rule
    (`verification.replay`). Writes d/waveform.npz (times, currents, replay error per simulator) for the report's
    plots; returns per simulator the accepted points and max |I_spice - I_pytorch| / max |I_pytorch| (or, where the
    simulator failed, its failure class and message: the run goes on without that curve)."""
    from . import spice
    from . import stimuli as st
    from .stress import spice_model
    from .verification import REALISTIC_RELTOL, _failure, _run, replay

    model = spice_model(export_dir)
    seq = dataset.subset("test")[0]
    n = min(len(seq), SPICE_WAVEFORM_MAX_SAMPLES)
    t = seq.t_s[:n] - seq.t_s[0]
    v = seq.inputs_v[:n].reshape(n, -1)
    stims = [st.Pwl(tuple(t.tolist()), tuple(v[:, k].tolist())) for k in range(v.shape[1])]
    t_stop, max_step = float(t[-1]), float(np.max(np.diff(t)))
    bps = np.concatenate([s.breakpoints(t_stop) for s in stims])
    arrays: dict[str, np.ndarray] = {"t_data": t}
    summary: dict = {"samples": int(n), "duration_s": t_stop, "reltol": REALISTIC_RELTOL}
    for sim in simulators:
        try:
            w = _run(model.bench, stims, t_stop, max_step, REALISTIC_RELTOL, sim)
        except spice.SimulationError as exc:  # only the plots need this run: say why it is missing, go on
            status, message = _failure(exc)
            summary[sim] = {"status": status, "message": message}
            continue
        t_sp, i_sp, v_sp = model.bench.accepted(w)
        y, _ = replay(model.student, model.scales.input_scale_v, model.scales.output_scale_a, t_sp, v_sp, bps)
        y = np.asarray(y, float).reshape(t_sp.size, -1)
        err = (i_sp - y) / np.maximum(np.max(np.abs(y), axis=0), 1e-300)
        arrays |= {f"{sim}_t": t_sp, f"{sim}_i": i_sp, f"{sim}_err_rel": err}
        summary[sim] = {
            "status": "ok",
            "accepted_points": int(t_sp.size),
            "replay_max_rel_err": float(np.max(np.abs(err))),
        }
    np.savez_compressed(d / "waveform.npz", **arrays)
    return summary


def stress_stage(
    first: Path, dataset, export_dir: Path, simulators, sb: StressBudget, d: Path, progress: bool, workers: int = 1
):
    """`stress.run_stress` of the first seed's teacher and students and the exported clustered student with the
    preset's plan `sb` on `workers` processes; writes d/stress.json and d/stress.png; returns `stress_summary` of the
    report."""
    from .distillation import load_student
    from .fitting import load_teacher
    from .stress import DEVICE_STRESS, run_stress, stress_plan

    teacher, _, _ = load_teacher(first / "teacher")
    students = {f"student_{k}": load_student(first / k)[0] for k in STUDENT_KINDS}
    scales = dataset.scales or dataset.compute_scales()
    widths = tuple(DEVICE_STRESS[dataset.device].widths_s[i] for i in sb.widths)
    plan = stress_plan(dataset.device, scales.input_scale_v, amplitudes=sb.amplitudes, widths_s=widths, signs=sb.signs)
    report = run_stress(teacher, students, dataset, export_dir, simulators, d, plan, progress=progress, workers=workers)
    return stress_summary(report)


def stress_summary(report: dict) -> dict:
    """metrics.json's `stress`: the plan, and per model (truth, teacher, students, ngspice, vacask) the worst peak
    error during the impulse and after it (/ the current range), the worst recovery time (s; None if no case
    recovered), cases recovered of those run, and for SPICE the worst error against the student replayed on SPICE's
    grid and against the converged student. The truth's row: its largest current (/ range) and the time its response
    takes to come back within 1 % of the range of its undisturbed response."""
    plan, cases = report["plan"], report["cases"]
    decays = [m["perturbation"]["truth_decay_s"] for c in cases for m in c["models"].values() if "perturbation" in m]
    models: dict = {
        "truth": {
            "cases": len(cases),
            "worst_peak_current_rel": max((max(c["truth_peak_current_rel"]) for c in cases), default=None),
            "worst_decay_time_s": max(decays, default=None),
        }
    }
    for name, row in report["summary"].items():
        entry = {
            k: row.get(k)
            for k in (
                "cases",
                "failed_runs",
                "recovered",
                "worst_peak_error_rel",
                "worst_after_peak_error_rel",
                "worst_recovery_time_s",
                "median_recovery_time_s",
                "worst_perturbation_error_rel",
            )
            if k in row
        }
        if "worst_replay_max_rel_err" in row:
            entry["replay_max_rel_err"] = row["worst_replay_max_rel_err"]
            entry["vs_converged_max_rel_err"] = row["worst_vs_converged_max_rel_err"]
        models[name.removeprefix("spice_")] = entry
    from .stress import worst_case

    return {
        "plan": {
            "amplitudes_rel": sorted({abs(d["amplitude_rel"]) for d in plan["disturbances"]}),
            "signs": sorted({1.0 if d["amplitude_rel"] > 0 else -1.0 for d in plan["disturbances"]}),
            "widths_s": sorted({d["width_s"] for d in plan["disturbances"]}),
            "terminals": sorted({d["terminal"] for d in plan["disturbances"]}),
            "edge_s": plan["disturbances"][0]["edge_s"],
            "t_impulse_s": plan["t_impulse_s"],
            "t_stop_s": plan["t_stop_s"],
            "seed": plan["seed"],
            "cases": len(cases),
        },
        "i_range_a": report["i_range_a"],
        "band_floor_rel": report["band_floor_rel"],
        "reltol": report["reltol"],
        "worst_case": cases[worst_case(report)]["label"] if cases else None,
        "models": models,
    }


def _discovery_stage(teacher, dataset, d: Path) -> dict:
    from .discovery import discover
    from .plots import plot_singular_values, plot_time_constants

    # K = the known processes + 1 where they are known: students given K = 3 on the three-tau memristor spent one
    # cluster on a ~0.1 us time constant (an instantaneous nonlinearity of the input), leaving two for the three
    # processes; with K = 4 the clustered student's test NRMSE went from 1.24-1.48x to 1.15x the teacher's
    disc = discover(teacher, dataset, k=len(dataset.true_tau_s) + 1 if dataset.true_tau_s else None)
    disc.save(d)
    plot_time_constants(disc, d / "time_constants.png")
    plot_singular_values(disc, d / "singular_values.png")
    return {"tau_s": disc.tau_s, "source": disc.tau_source}


def teacher_state_count(teacher) -> int:
    """Recurrent state numbers of the teacher: sLSTM (c, n per unit) and the mLSTM matrix memories."""
    d, h = teacher.cfg.d_model, teacher.cfg.n_heads
    return 2 * d + h * (d // h) ** 2


def baseline_costs(dataset, teacher_p, names: list[str]) -> dict[str, tuple[float, int]]:
    """Latency (us per step, batch 1, as the teacher's and students' rows) and recurrent state count of each named
    baseline, measured on an untrained model of the same architecture (neither depends on the weights): the linear
    fit (an affine map, no state), the learned baselines of `fitting.baseline_models` (window models: the buffered
    past inputs and log-steps of their window), and the teacher variants (`teacher_exp`, `teacher_sigmoid`,
    `teacher_no_physics`)."""
    import torch

    from .fitting import baseline_models, teacher_config
    from .metrics import latency_us_per_step
    from .models.baselines import LinearStateSpace, LSTMBaseline, Siren, WindowMLP
    from .models.teacher import Teacher

    n_in, n_out = len(dataset.input_names), len(dataset.output_names)

    class Affine(torch.nn.Module):  # the linear fit I = a V + b, evaluated the way it is used
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = torch.nn.Parameter(torch.zeros(n_in, n_out)), torch.nn.Parameter(torch.zeros(n_out))

        def forward(self, u, dt):
            return u @ self.a + self.b

    def states(model) -> int:
        if isinstance(model, Teacher):
            return teacher_state_count(model)
        if isinstance(model, LinearStateSpace):
            return int(model.log_tau.numel())
        if isinstance(model, LSTMBaseline):
            return 2 * model.lstm.hidden_size
        if isinstance(model, WindowMLP | Siren):
            return (model.window - 1) * (n_in + 1)
        return 0

    gatings = {"teacher_exp": "exp", "teacher_sigmoid": "sigmoid", "teacher_no_physics": "exp"}
    learned = baseline_models(dataset, teacher_p) if set(names) - {"linear_fit", *gatings} else {}
    out = {}
    for name in names:
        if name == "linear_fit":
            model = Affine()
        elif name in gatings:
            model = Teacher(teacher_config(dataset, teacher_p, gatings[name]))
        elif name in learned:
            model = learned[name]
        else:
            continue
        out[name] = (latency_us_per_step(model, n_in, batch=1), states(model))
    return out


def linear_fit_report(dataset) -> dict:
    """The linear fit I = a V + b on the train split, evaluated on the test split."""
    from .fitting import dataset_bands
    from .metrics import evaluate, linear_fit_baseline

    a, c = linear_fit_baseline(dataset.subset("train"))
    test = dataset.subset("test")
    preds = [s.inputs_v @ a + c for s in test]
    return {"params": int(a.size + c.size), "test": evaluate(preds, test, dataset_bands(dataset))}


def data_summary(dataset) -> dict:
    """metrics.json's `data`: where the waveforms came from, whether a ground truth exists (simulated devices) and
    what the model errors are measured against, the splits, and the attribution and assumptions of measured data."""
    from .verification import GROUND_TRUTH_DEVICES

    truth = dataset.device in GROUND_TRUTH_DEVICES
    durations = [float(s.t_s[-1] - s.t_s[0]) for s in dataset.sequences]
    out = {
        "device": dataset.device,
        "ground_truth": truth,
        "errors_against": "the clean ground truth" if truth else "the recorded currents (no ground truth)",
        "sequences": len(dataset.sequences),
        "splits": {k: len(v) for k, v in dataset.splits.items()},
        "duration_s": {"min": min(durations), "max": max(durations)},
        "attribution": dataset.attribution,
    }
    for key in ("files", "assumed_sweep_rate_v_per_s", "time_axis", "units_in_files", "chunks_per_sequence"):
        if key in dataset.meta:
            out[key] = dataset.meta[key]
    return out


def _mean_std(values: list) -> dict:
    v = np.asarray([x for x in values if x is not None], float)
    if v.size == 0:
        return {"mean": None, "std": None}
    return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if v.size > 1 else 0.0}


def _collect(cfg: RunConfig, per_seed: list[dict], spice_report: dict, stages: Stages, total_s: float, version: str):
    """metrics.json: models (first seed, and mean/std over seeds), discovery, spice, timing, version, config."""
    from .verification import failed_runs

    models = {}
    for name, row in per_seed[0]["models"].items():
        models[name] = dict(row)
        if len(per_seed) > 1:
            models[name]["over_seeds"] = {
                key: _mean_std([s["models"].get(name, {}).get(key) for s in per_seed])
                for key in ("mse", "nrmse", "r2", "hf_error", "latency_us_per_step")
            }
    disc = per_seed[0]["discovery"]
    match = disc.get("tau_match", {}).get("probe_teacher") or disc.get("tau_match", {}).get("gates") or []
    svd = disc["svd"]["projections"]
    spice = {}
    for sim in cfg.simulators:
        entry = spice_report.get(sim, {})
        replay = [v for k, v in entry.items() if k.startswith("replay_max_rel_err")]
        rob = spice_report.get("robustness", {}).get(sim)
        spice[sim] = {
            "replay_max_rel_err": entry.get(REPLAY_KEY[sim]),
            "replay_all": replay,
            "adaptive_nrmse": entry.get("adaptive_nrmse"),
            "cost_ratio_vs_reference": entry.get("cost", {}).get("cost_ratio_vs_reference"),
            "failures": None if rob is None else failed_runs(rob),
            "robustness_runs": None if rob is None else rob["total"]["runs"],
            "dc_sweep_max_rel_err": None if rob is None else rob["dc_sweep"].get("max_rel_err_vs_pytorch"),
        }
    return {
        "version": version,
        "config": asdict(cfg),
        "budget": asdict(cfg.budget),
        "models": models,
        "discovery": {
            "tau_s": disc["tau_s"],
            "tau_source": disc["tau_source"],
            "gate_cluster_tau_s": disc["gate_cluster_tau_s"],
            "tau_true_s": disc["tau_true_s"],
            "tau_rel_err": [r["rel_err"] for r in match] or None,
            "svd_rank": {k: v["rank"] for k, v in svd.items()},
            "svd_energy": {k: v["energy"][v["rank"] - 1] for k, v in svd.items()},
        },
        "spice": spice,
        "spice_stimulus": spice_report.get("stimulus"),
        "timing": {"total_s": total_s, **{f"{k}_s": v for k, v in stages.timing.items()}},
        "stages_run": stages.ran,
    }
