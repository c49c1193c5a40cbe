"""Training throughput: wall time of one optimiser step (forward, backward, AdamW) per time step, for the teacher,
both students and the baselines, measured side by side in one run on one thread.

    .venv/bin/python benchmarks/training_throughput.py [--teacher DIR] [--student DIR ...] [--batch 4] [--steps 1024]

The default shape is the default teacher preset's (4 sequences x 1024 steps per update). Prints microseconds per
time step and the ratio to the teacher; the ratios are what to compare (machines are noisy).
"""

from __future__ import annotations

import argparse
import time

import torch
from latency import add_model_arguments, build_models


def us_per_step(model, n_in: int, batch: int, steps: int, repeats: int = 3) -> float:
    """Best-of-`repeats` wall time (us) of one training update over batch x steps, per time step."""
    gen = torch.Generator().manual_seed(0)
    u = torch.rand(batch, steps, n_in, generator=gen) * 2 - 1
    dt = torch.full((batch, steps), 1e-6)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    model.train()
    best = float("inf")
    for k in range(repeats + 1):  # the first one compiles and warms up
        start = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        model(u, dt).y.pow(2).mean().backward()
        opt.step()
        if k:
            best = min(best, time.perf_counter() - start)
    return 1e6 * best / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arguments(parser)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=1024)
    args = parser.parse_args()
    torch.set_num_threads(1)
    models = build_models(args)
    n_in = models["teacher"].cfg.n_in
    print(f"one update of {args.batch} x {args.steps} steps, one thread")
    print(f"{'model':<20} {'params':>7} {'us/step':>10} {'x teacher':>10}")
    results = {name: us_per_step(m, n_in, args.batch, args.steps) for name, m in models.items()}
    for name, t in results.items():
        print(f"{name:<20} {models[name].n_params:>7d} {t:>10.1f} {t / results['teacher']:>10.3f}")


if __name__ == "__main__":
    main()
