"""Are task conflicts special? Inter-task vs inter-sample gradient conflicts on Multi-Digits.

After Elich, Kirchdorfer, Köhler, Schott, "Challenging Common Paradigms in Multi-Task Learning"
(2024): during training, every ``--every`` steps, draw ``--num-samples`` random examples of the
batch and compute their per-example, per-task gradients on the shared parameters (one ``jax.vmap``
over the VJP, :func:`mtlx.analysis.sample_conflicts`). Compare

* MTL inter-task pairs: two tasks, the same example (the usual "gradient conflict");
* MTL inter-sample pairs: one task, two examples, in the same multi-task model;
* STL inter-sample pairs: one task, two examples, in a single-task model of each task;

summarised per epoch by the mean, std and 2.5 / 97.5 percentiles of the cosine, and the fraction
of pairs with cos < 0.

Command (a few minutes on a 2-core CPU)::

  python experiments/conflicts_mtl_vs_stl.py --out /tmp/conflicts_mtl_vs_stl

Writes ``results.json``, ``results.md``, ``cosine_per_epoch.png`` and ``cosine_histograms.png``.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import mtlx
import mtlx.data
import mtlx.models
from mtlx import analysis
from mtlx.analysis import plots


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default="/tmp/conflicts_mtl_vs_stl")
    p.add_argument("--tasks", default="left,right")
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--every", type=int, default=2, help="measure every this many steps")
    p.add_argument("--num-samples", type=int, default=8, help="random examples per measurement")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def build(seed, num_tasks):
    model = mtlx.models.lenet_hps(num_tasks=num_tasks, num_classes=10, rngs=nnx.Rngs(seed))
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    def per_example_losses(params, batch):
        logits = nnx.merge(graphdef, params, rest)(batch["image"])
        return jnp.stack(
            [
                optax.softmax_cross_entropy_with_integer_labels(y, batch["labels"][:, t])
                for t, y in enumerate(logits)
            ],
            axis=1,
        )  # (N, T)

    return params, per_example_losses


def run(name, params, per_example_losses, data, args, num_tasks):
    """Trains with EW + Adam; returns per-epoch lists of inter-task / inter-sample statistics."""
    engine = mtlx.value_and_jacobian(
        lambda p, b: per_example_losses(p, b).mean(0), shared=mtlx.models.is_shared
    )
    tx = optax.chain(mtlx.ew(), optax.adam(args.lr))

    @jax.jit
    def step(params, state, batch):
        losses, jac = engine(params, batch)
        updates, state = tx.update(jac, state, params, task_losses=losses)
        return optax.apply_updates(params, updates), state, losses

    @jax.jit
    def measure(params, batch, key):
        sub = analysis.subsample(batch, key, args.num_samples)
        return analysis.sample_conflicts(
            per_example_losses, params, sub, shared=mtlx.models.is_shared, thresholds=(0.0,)
        )

    state = tx.init(params)
    rng = np.random.default_rng(args.seed)
    key = jax.random.key(args.seed)
    n = len(data["image"])
    epochs, k = [], 0
    for _ in range(args.epochs):
        collected = {
            k: [] for k in ("inter_task", "inter_sample", "inter_task_gms", "inter_sample_gms")
        }
        order = rng.permutation(n)
        for i in range(n // args.batch_size):
            idx = order[i * args.batch_size : (i + 1) * args.batch_size]
            batch = {"image": data["image"][idx], "labels": data["labels"][idx]}
            if k % args.every == 0:
                key, sub_key = jax.random.split(key)
                stats = jax.device_get(measure(params, batch, sub_key))
                collected["inter_task"].append(stats.inter_task.cosine)
                collected["inter_sample"].append(stats.inter_sample.cosine)
                collected["inter_task_gms"].append(stats.inter_task.magnitude_similarity)
                collected["inter_sample_gms"].append(stats.inter_sample.magnitude_similarity)
            params, state, losses = step(params, state, batch)
            k += 1
        epochs.append({key_: np.concatenate(v) for key_, v in collected.items()})
        print(f"{name}: epoch {len(epochs)} losses {np.round(np.asarray(losses), 3).tolist()}")
    return epochs


def summary(values):
    s = analysis.summarize(values)
    return {
        "mean": float(s.mean),
        "std": float(s.std),
        "p2.5": float(s.p2_5),
        "p97.5": float(s.p97_5),
        "conflict_fraction": float(np.mean(values < 0.0)) if values.size else float("nan"),
        "count": int(s.count),
    }


def main(argv=None):
    args = parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    tasks = tuple(args.tasks.split(","))
    t0 = time.time()
    data = mtlx.data.load_multi_digits("train", tasks=tasks)

    params, losses_fn = build(args.seed, len(tasks))
    mtl = run("mtl", params, losses_fn, data, args, len(tasks))
    series = {
        "MTL inter-task": [e["inter_task"] for e in mtl],
        "MTL inter-sample": [e["inter_sample"] for e in mtl],
    }
    gms = {
        "MTL inter-task": [e["inter_task_gms"] for e in mtl],
        "MTL inter-sample": [e["inter_sample_gms"] for e in mtl],
    }
    for t, task in enumerate(tasks):
        single = {"image": data["image"], "labels": data["labels"][:, t : t + 1]}
        params, losses_fn = build(args.seed, 1)
        stl = run(f"stl {task}", params, losses_fn, single, args, 1)
        series[f"STL inter-sample ({task})"] = [e["inter_sample"] for e in stl]
        gms[f"STL inter-sample ({task})"] = [e["inter_sample_gms"] for e in stl]

    table = {
        label: [dict(summary(v), gms_mean=float(np.mean(g))) for v, g in zip(vals, gms[label])]
        for label, vals in series.items()
    }
    wall = time.time() - t0
    result = {
        "tasks": tasks,
        "epochs": args.epochs,
        "every": args.every,
        "num_samples": args.num_samples,
        "per_epoch": table,
        "wall_time_s": wall,
        "device": jax.devices()[0].device_kind,
    }
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(result, f, indent=1)

    epochs = np.arange(1, args.epochs + 1)
    plots.plot_cosine_curves(
        {label: [r["mean"] for r in rows] for label, rows in table.items()},
        os.path.join(args.out, "cosine_per_epoch.png"),
        steps=epochs,
        bands={
            label: ([r["p2.5"] for r in rows], [r["p97.5"] for r in rows])
            for label, rows in table.items()
        },
        title="Gradient cosine per epoch: mean and 2.5-97.5 percentile band",
        xlabel="epoch",
    )
    plots.plot_conflict_histograms(
        {label: np.concatenate(vals) for label, vals in series.items()},
        os.path.join(args.out, "cosine_histograms.png"),
        title="Cosine of per-example gradients over training",
    )

    lines = [
        f"Inter-task vs inter-sample gradient cosines on Multi-Digits ({', '.join(tasks)}), "
        f"MultiLeNet, EW + Adam({args.lr}), {args.epochs} epochs, {args.num_samples} random "
        f"examples every {args.every} steps (shared parameters only).",
        "",
        "| pairs | epoch | mean cos | std | 2.5% | 97.5% | cos < 0 | mean GMS |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for label, rows in table.items():
        for e, r in enumerate(rows, 1):
            if e in (1, len(rows) // 2, len(rows)) or len(rows) <= 3:
                lines.append(
                    f"| {label} | {e} | {r['mean']:.3f} | {r['std']:.3f} | {r['p2.5']:.3f} | "
                    f"{r['p97.5']:.3f} | {100 * r['conflict_fraction']:.1f}% | "
                    f"{r['gms_mean']:.3f} |"
                )
    lines += ["", f"Wall time {wall:.0f} s on {result['device']}."]
    with open(os.path.join(args.out, "results.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
