"""Stage: read the physics out of a trained teacher.

- Gate time constants: tau_j(t) = -dt / ln f_j(t) in seconds for every sLSTM unit and mLSTM head along the data,
  summarised per unit (median, spread), clustered by k-means on log10 tau with K chosen by silhouette (or forced).
- Relaxation probes: the teacher is driven by a probe (memristor: a SET pulse, then small reads at V = 0 rests;
  other devices: a step) and a sum of exponentials is fitted to its response. The same probe on the ground-truth
  device, where there is one, shows what the probe itself can resolve.
- Low-rank structure: SVD of the mLSTM projections and of the matrix memory C along the data (time-averaged and per
  sample), energy curve, rank at a threshold (default 0.92).
Each estimate says where it comes from; the time constants handed to the students are the probe fit when it
succeeded, else the gate clusters (`tau_source`), none slower than the probe lasts.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from scipy.optimize import least_squares

from . import stimuli as st
from .data import Dataset, Scales
from .models.teacher import Teacher
from .training import make_batch


def kmeans_1d(x: np.ndarray, k: int, seed: int = 0, restarts: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """k-means on a 1-D array (k-means++ init, Lloyd iterations, best of `restarts`): (sorted centres, labels)."""
    x = np.asarray(x, dtype=np.float64)
    if k < 1 or k > np.unique(x).size:
        raise ValueError(f"k = {k} clusters need at least k distinct values, got {np.unique(x).size}")
    rng = np.random.default_rng(seed)
    best = (np.inf, None, None)
    for _ in range(restarts):
        centres = [x[rng.integers(x.size)]]
        for _ in range(k - 1):
            d2 = np.min((x[:, None] - np.array(centres)[None]) ** 2, axis=1)
            centres.append(x[rng.choice(x.size, p=d2 / d2.sum())] if d2.sum() > 0 else x[rng.integers(x.size)])
        c = np.array(centres)
        for _ in range(100):
            labels = np.argmin((x[:, None] - c[None]) ** 2, axis=1)
            new = np.array([x[labels == j].mean() if np.any(labels == j) else c[j] for j in range(k)])
            if np.allclose(new, c):
                break
            c = new
        inertia = float(np.sum((x - c[labels]) ** 2))
        if inertia < best[0]:
            best = (inertia, c, labels)
    order = np.argsort(best[1])
    remap = np.empty(k, dtype=int)
    remap[order] = np.arange(k)
    return best[1][order], remap[best[2]]


def silhouette(x: np.ndarray, labels: np.ndarray) -> float:
    """Mean silhouette score of a 1-D clustering (nan for a single cluster)."""
    ks = np.unique(labels)
    if ks.size < 2:
        return float("nan")
    d = np.abs(x[:, None] - x[None, :])
    scores = []
    for i in range(x.size):
        same = labels == labels[i]
        a = d[i, same].sum() / max(same.sum() - 1, 1)
        b = min(d[i, labels == k].mean() for k in ks if k != labels[i])
        scores.append((b - a) / max(a, b) if max(a, b) > 0 else 0.0)
    return float(np.mean(scores))


MIN_TAU_RATIO = 1.5  # adjacent fitted time constants at least this far apart


def fit_exponentials(t_s: np.ndarray, y: np.ndarray, k: int, min_ratio: float = MIN_TAU_RATIO) -> dict:
    """Fit y(t) = c + sum_j a_j exp(-t / tau_j) by variable projection (amplitudes linear, log taus nonlinear),
    from several log-spaced starts; returns taus (s, sorted), amplitudes, offset and relative RMS residual.

    Adjacent taus are kept at least `min_ratio` apart (the log taus are parameterised by their gaps): free fits of a
    response that is not a sum of k exponentials collapse two taus onto each other with huge amplitudes of opposite
    sign (a t exp(-t / tau) term), which match nothing physical (seen on a teacher: 5.375 and 5.375 ms, +-2340)."""
    t = np.asarray(t_s, float) - float(t_s[0])
    y = np.asarray(y, float)
    lo, hi = np.log(max(t[1] - t[0], 1e-12) * 2), np.log(t[-1] / 2)
    gap = np.log(min_ratio)

    def log_tau(z):
        return np.cumsum(z)  # z = [log tau_1, gap_2, ..., gap_k]

    def design(z):
        return np.column_stack([np.exp(-t[:, None] / np.exp(log_tau(z))[None]), np.ones_like(t)])

    def residual(z):
        a = design(z)
        coef, *_ = np.linalg.lstsq(a, y, rcond=None)
        return a @ coef - y

    lower = np.concatenate([[lo - 2], np.full(k - 1, gap)])
    upper = np.concatenate([[hi + 2], np.full(k - 1, np.inf)])
    best = None
    for shift in np.linspace(-1.0, 1.0, 5):
        start = np.linspace(lo, hi, k + 2)[1:-1] + shift * (hi - lo) / (2 * k + 2)
        z0 = np.clip(np.concatenate([start[:1], np.diff(start)]), lower, np.nextafter(upper, -np.inf))
        sol = least_squares(residual, z0, bounds=(lower, upper))
        if best is None or sol.cost < best.cost:
            best = sol
    coef, *_ = np.linalg.lstsq(design(best.x), y, rcond=None)
    scale = float(np.sqrt(np.mean((y - y.mean()) ** 2))) or 1.0
    return {
        "tau_s": [float(v) for v in np.exp(log_tau(best.x))],
        "amplitudes": [float(v) for v in coef[:-1]],
        "offset": float(coef[-1]),
        "rel_rms_residual": float(np.sqrt(2 * best.cost / y.size) / scale),
        # per adjacent pair: the fit sits on the min_ratio bound, so the pair's taus are the bound's, not the data's
        "at_ratio_bound": [bool(g <= gap * (1 + 1e-6)) for g in best.x[1:]],
    }


def fit_free_exponentials(t_s: np.ndarray, y: np.ndarray, k: int, min_ratio: float = MIN_TAU_RATIO) -> dict:
    """`fit_exponentials` with the most exponentials (at most k) whose fit leaves every ratio bound inactive: the
    time constants that the response itself determines."""
    for kk in range(k, 1, -1):
        fit = fit_exponentials(t_s, y, kk, min_ratio)
        if not any(fit["at_ratio_bound"]):
            return fit
    return fit_exponentials(t_s, y, 1, min_ratio)  # one exponential has no ratio to bound


def match_taus(found_s: list[float], true_s: list[float]) -> list[dict]:
    """Match each true tau to a discovered one, one to one where there are enough, minimising the total
    |log(found / true)| over all assignments."""
    true_sorted = sorted(true_s)
    if len(found_s) >= len(true_sorted):
        best = min(
            itertools.permutations(found_s, len(true_sorted)),
            key=lambda cand: sum(abs(np.log(f / t)) for f, t in zip(cand, true_sorted, strict=True)),
        )
    else:
        best = [min(found_s, key=lambda f, t=t: abs(np.log(f / t))) for t in true_sorted]
    return [{"true_s": t, "found_s": f, "rel_err": abs(f - t) / t} for t, f in zip(true_sorted, best, strict=True)]


@torch.no_grad()
def gate_time_constants(teacher: Teacher, dataset: Dataset) -> dict[str, np.ndarray]:
    """Median and 10-90 % spread of each unit's tau (s) along the training data: {"names", "median_s", "p10_s",
    "p90_s"} over sLSTM units then mLSTM heads."""
    teacher.eval()
    batch = make_batch(dataset.subset("train"), dataset.scales)
    out = teacher(batch.u, batch.dt)
    taus = teacher.time_constants_s(out)
    mask = batch.mask.bool()
    names, med, p10, p90 = [], [], [], []
    for block, tau in taus.items():
        values = tau[mask].numpy()  # (N_valid, units)
        for j in range(values.shape[1]):
            names.append(f"{block}.{j}")
            med.append(np.median(values[:, j]))
            p10.append(np.percentile(values[:, j], 10))
            p90.append(np.percentile(values[:, j], 90))
    return {"names": names, "median_s": np.array(med), "p10_s": np.array(p10), "p90_s": np.array(p90)}


def relaxation_probe(kind: str, scales: Scales, duration_s: float) -> tuple[list, np.ndarray, np.ndarray]:
    """Probe stimuli (one per input), its time grid, and the indices where the response is read out.

    Memristor: a 500 us SET pulse at 85 % of the input range, then 20 us reads at 0.2 V spaced geometrically from
    20 us to 1 ms (at V = 0 a memristor carries no current, so relaxation is only visible through reads)."""
    v_max = float(scales.input_scale_v[0])
    if kind == "memristor":
        times, values, read_mid = [0.0, 10e-6, 11e-6, 511e-6, 512e-6], [0.0, 0.0, 0.85 * v_max, 0.85 * v_max, 0.0], []
        t, gap = 540e-6, 20e-6
        while t + 25e-6 < duration_s:
            times += [t, t + 1e-6, t + 21e-6, t + 22e-6]
            values += [0.0, 0.2, 0.2, 0.0]
            read_mid.append(t + 11e-6)
            t += 22e-6 + gap
            gap = min(gap * 1.3, 1e-3)
        times.append(duration_s)
        values.append(0.0)
        stim = st.Pwl(tuple(times), tuple(values))
        grid = np.unique(np.concatenate([st.multirate_grid(stim, duration_s, 0.5e-6, 5e-6), read_mid]))
        return [stim], grid, np.searchsorted(grid, read_mid)
    t_step, v_step = duration_s / 100, 0.8 * float(scales.input_scale_v[0])
    stims = [st.Pwl((0.0, t_step, t_step + duration_s / 1e4, duration_s), (0.0, 0.0, v_step, v_step))]
    stims += [st.Dc(0.5 * float(s)) for s in scales.input_scale_v[1:]]
    grid = st.multirate_grid(stims[0], duration_s, duration_s / 1e4, duration_s / 200)
    after = np.flatnonzero(grid > t_step + duration_s / 1e4)
    return stims, grid, after


def _probe_response(kind: str, current_a: np.ndarray, v: np.ndarray) -> np.ndarray:
    if kind == "memristor":
        return np.log(np.maximum(np.abs(current_a / v), 1e-30))
    return current_a


@torch.no_grad()
def probe_teacher(teacher: Teacher, scales: Scales, stims: list, grid: np.ndarray) -> np.ndarray:
    """Teacher currents (A) for probe stimuli on a grid."""
    teacher.eval()
    v = np.stack([s.sample(grid) for s in stims], 1)
    u = torch.tensor(v / scales.input_scale_v, dtype=torch.float32)[None]
    steps = np.diff(grid)
    dt = torch.tensor(np.concatenate([[steps[0]], steps]), dtype=torch.float32)[None]
    return teacher(u, dt).y[0].double().numpy() * scales.output_scale_a


def svd_report(matrix: np.ndarray, threshold: float) -> dict:
    s = np.linalg.svd(np.asarray(matrix, float), compute_uv=False)
    energy = np.cumsum(s**2) / np.sum(s**2)
    return {
        "singular_values": s.tolist(),
        "energy": energy.tolist(),
        "rank": int(np.searchsorted(energy, threshold) + 1),
        "threshold": threshold,
    }


@torch.no_grad()
def memory_svd(teacher: Teacher, dataset: Dataset, threshold: float, every: int = 64) -> dict:
    """SVD of the mLSTM matrix memory C (per head) along the training data, sampled every `every` steps:
    of the time-averaged |C| and the mean rank per sample."""
    teacher.eval()
    batch = make_batch(dataset.subset("train"), dataset.scales)
    state, samples = None, []
    for s in range(0, batch.u.shape[1], every):
        out = teacher(batch.u[:, s : s + every], batch.dt[:, s : s + every], state)
        state = out.state
        live = batch.mask[:, min(s + every, batch.u.shape[1]) - 1] > 0
        C, _, m = state[1]
        samples.append((C * torch.exp(m)[..., None, None])[live])  # undo the stabilizer scaling
    C_all = torch.cat(samples).double().numpy()  # (N, H, dk, dv)
    heads = []
    for h in range(C_all.shape[1]):
        mats = C_all[:, h]
        norms = np.linalg.norm(mats, axis=(1, 2), keepdims=True)
        mean_abs = np.mean(mats / np.maximum(norms, 1e-30), axis=0)
        ranks = [svd_report(m_, threshold)["rank"] for m_ in mats[:: max(1, len(mats) // 200)]]
        heads.append(
            {
                "time_averaged": svd_report(mean_abs, threshold),
                "per_sample_mean_rank": float(np.mean(ranks)),
                "per_sample_max_rank": int(np.max(ranks)),
            }
        )
    return {"heads": heads, "samples": int(C_all.shape[0])}


@dataclass
class Discovery:
    unit_names: list[str]
    unit_tau_median_s: list[float]
    unit_tau_p10_s: list[float]
    unit_tau_p90_s: list[float]
    k: int
    silhouette_by_k: dict[str, float]
    gate_cluster_tau_s: list[float]
    gate_cluster_spread_log10: list[float]  # within-cluster std of log10 tau
    probe: dict  # teacher fit, truth fit (if any)
    tau_s: list[float]  # handed to the students (the probe fit or the gate clusters, at most the probe duration)
    tau_source: str  # "probe" or "gates"
    tau_true_s: list[float] | None
    tau_match: dict[str, list[dict]] = field(default_factory=dict)
    svd: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    def save(self, directory: str | Path) -> Path:
        from .artifacts import write_json

        path = Path(directory) / "discovery.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json(path, self.to_dict())
        return path

    @classmethod
    def load(cls, directory: str | Path) -> Discovery:
        path = Path(directory) / "discovery.json"
        if not path.exists():
            raise FileNotFoundError(f"{path} missing: run psi-xlstm discover first")
        return cls(**json.loads(path.read_text()))


def discover(
    teacher: Teacher,
    dataset: Dataset,
    *,
    k: int | None = None,
    k_range: tuple[int, int] = (2, 5),
    svd_threshold: float = 0.92,
    probe_duration_s: float | None = None,
    seed: int = 0,
) -> Discovery:
    """Time constants (gates + probes), their clusters, the match to the true taus, and the SVD ranks."""
    gates = gate_time_constants(teacher, dataset)
    log_tau = np.log10(gates["median_s"])
    ks = [k] if k is not None else list(range(k_range[0], min(k_range[1], np.unique(log_tau).size - 1) + 1))
    fits = {kk: kmeans_1d(log_tau, kk, seed) for kk in ks}
    scores = {str(kk): silhouette(log_tau, fits[kk][1]) for kk in ks}
    k_best = k if k is not None else max(ks, key=lambda kk: scores[str(kk)])
    centres, labels = fits[k_best]
    spread = [float(np.std(log_tau[labels == j])) for j in range(k_best)]
    longest = max(float(s.t_s[-1] - s.t_s[0]) for s in dataset.sequences)
    duration = probe_duration_s or min(longest, 40e-3)
    kind = teacher.cfg.physics.kind
    stims, grid, read_idx = relaxation_probe(kind, dataset.scales, duration)
    i_teacher = probe_teacher(teacher, dataset.scales, stims, grid)[:, 0]
    v0 = stims[0].sample(grid)
    # memristor: log-conductance at the reads (states enter the conductance exponentially, so log G is a sum of
    # relaxing states); other devices: the current itself
    response = _probe_response(kind, i_teacher[read_idx], v0[read_idx])
    probe = {"kind": kind, "duration_s": duration, "teacher": fit_exponentials(grid[read_idx], response, k_best)}
    # a fit on the ratio bound has (at least) one tau too many: the one with fewer exponentials is what the teacher's
    # response determines, and is the one scored against the true taus. The students still start from the k_best
    # fit (one tau per cluster; training moves them)
    probe["teacher_free"] = (
        fit_free_exponentials(grid[read_idx], response, k_best - 1)
        if any(probe["teacher"]["at_ratio_bound"])
        else probe["teacher"]
    )
    if dataset.device == "memristor":
        from .devices import memristor

        truth = memristor.simulate(stims[0], grid)
        probe["truth"] = fit_exponentials(
            grid[read_idx], _probe_response(kind, truth.current_a[read_idx], v0[read_idx]), k_best
        )
    use_probe = probe["teacher"]["rel_rms_residual"] < 0.05
    tau_s = probe["teacher"]["tau_s"] if use_probe else [float(10**c) for c in centres]
    # the students start no cluster slower than the probe lasts: a fitted tau beyond it is a drift the response cannot
    # resolve (a default-run teacher's probe fit gave 0.06 / 0.28 / 4.0 ms and 2460 s, a cluster that integrates over
    # every record instead of relaxing). Training still moves the taus past it where the data asks for that
    tau_s = [min(t, duration) for t in tau_s]
    disc = Discovery(
        unit_names=gates["names"],
        unit_tau_median_s=gates["median_s"].tolist(),
        unit_tau_p10_s=gates["p10_s"].tolist(),
        unit_tau_p90_s=gates["p90_s"].tolist(),
        k=int(k_best),
        silhouette_by_k=scores,
        gate_cluster_tau_s=[float(10**c) for c in centres],
        gate_cluster_spread_log10=spread,
        probe=probe,
        tau_s=[float(t) for t in tau_s],
        tau_source="probe" if use_probe else "gates",
        tau_true_s=dataset.true_tau_s,
    )
    if dataset.true_tau_s:
        disc.tau_match = {
            "gates": match_taus(disc.gate_cluster_tau_s, dataset.true_tau_s),
            "probe_teacher": match_taus(probe["teacher_free"]["tau_s"], dataset.true_tau_s),
        }
        if "truth" in probe:
            disc.tau_match["probe_truth"] = match_taus(probe["truth"]["tau_s"], dataset.true_tau_s)
    m = teacher.mlstm
    disc.svd = {
        "projections": {
            name: svd_report(getattr(m, name).weight.detach().numpy(), svd_threshold) for name in ("q", "k", "v", "o")
        },
        "memory": memory_svd(teacher, dataset, svd_threshold),
    }
    return disc
