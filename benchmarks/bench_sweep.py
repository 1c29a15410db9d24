"""Brute-force scalarization: K weight vectors trained at once (jax.vmap) vs K sequential runs.

The UW-SO paper (Kirchdorfer et al.) compares against the best of a grid of fixed weight vectors.
``mtlx.scalarization_sweep`` trains the whole grid in one jitted step by vmapping the model, the
optimizer state and the weights. This script times a step of the K-way sweep against K steps of
one model (the same jitted single-model step called once per weight vector), side by side and
interleaved, and reports the throughput ratio.

Model: the benchmark MLP of ``bench_step.py`` (256-512-512-512, batch 256), T MSE heads, Adam.

  python benchmarks/bench_sweep.py                 # T = 2 (K = 9) and T = 3 (K = 36)
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import optax

import mtlx

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from bench_step import init_params, is_shared, loss_fn, make_batch  # noqa: E402


def train_step(params, opt_state, weights, x, y):
    tx = optax.chain(mtlx.scalarization(weights), optax.adam(1e-4))
    losses, jac = mtlx.value_and_jacobian(loss_fn, shared=is_shared)(params, x, y)
    updates, opt_state = tx.update(jac, opt_state, params, task_losses=losses)
    return optax.apply_updates(params, updates), opt_state, losses


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", default="2,3")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", default=str(pathlib.Path(__file__).parent / "results"))
    args = parser.parse_args(argv)

    device = jax.devices()[0]
    rows = []
    for num_tasks in [int(t) for t in args.tasks.split(",")]:
        grid = mtlx.simplex_grid(num_tasks, step=0.1, min_weight=0.1)
        k = grid.shape[0]
        x, y = make_batch(num_tasks)
        tx = optax.chain(mtlx.scalarization(grid[0]), optax.adam(1e-4))
        params = init_params(num_tasks)
        params_k = jax.tree.map(lambda p: jnp.broadcast_to(p, (k, *p.shape)), params)
        state_k = jax.vmap(tx.init)(params_k)
        sweep = jax.jit(mtlx.scalarization_sweep(train_step))
        single = jax.jit(train_step)
        states = [tx.init(params) for _ in range(k)]
        singles = [params for _ in range(k)]

        def run_sweep():
            nonlocal params_k, state_k
            params_k, state_k, _ = sweep(params_k, state_k, grid, x, y)
            jax.block_until_ready(params_k)

        def run_sequential():
            for i in range(k):
                singles[i], states[i], _ = single(singles[i], states[i], grid[i], x, y)
            jax.block_until_ready(singles)

        run_sweep(), run_sequential()  # compile
        times = {"sweep": [], "sequential": []}
        for _ in range(args.rounds):
            for name, fn in (("sweep", run_sweep), ("sequential", run_sequential)):
                start = time.perf_counter()
                fn()
                times[name].append(1e3 * (time.perf_counter() - start))
        sweep_ms, seq_ms = (statistics.median(times[n]) for n in ("sweep", "sequential"))
        row = {
            "num_tasks": num_tasks,
            "num_weight_vectors": k,
            "sweep_ms_per_step_of_all_k": sweep_ms,
            "sequential_ms_for_k_steps": seq_ms,
            "throughput_ratio": seq_ms / sweep_ms,
        }
        rows.append(row)
        print(json.dumps(row), file=sys.stderr)

    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"sweep_{device.platform}"
    meta = {
        "device": f"{device.platform}:{getattr(device, 'device_kind', '')}",
        "cpu_count": os.cpu_count(),
        "jax": jax.__version__,
        "rounds": args.rounds,
    }
    (out / f"{stem}.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    lines = [
        "# Scalarization sweep: K models in one vmapped step vs K sequential steps",
        "",
        f"Device: {meta['device']}, {os.cpu_count()} cores; MLP 256-512-512-512, batch 256, Adam; "
        f"median over {args.rounds} interleaved rounds.",
        "",
        "| T | K | vmapped sweep ms (all K) | sequential ms (K steps) | throughput ratio |",
        "| --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(
            f"| {r['num_tasks']} | {r['num_weight_vectors']} | {r['sweep_ms_per_step_of_all_k']:.1f} "
            f"| {r['sequential_ms_for_k_steps']:.1f} | {r['throughput_ratio']:.2f}x |"
        )
    (out / f"{stem}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
