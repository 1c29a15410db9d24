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

Every run goes through ``mtlx.training.train`` (Multi-Digits by name, MultiLeNet, EW + Adam);
the measurement is an ``observe`` hook that runs inside the jitted training step (under
``jax.lax.cond`` on every ``--every``-th step, on the batch and the parameters that step uses),
so the statistics come back with the losses, one transfer per epoch.

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

import mtlx.models
from mtlx import analysis
from mtlx.analysis import plots
from mtlx.training import TrainConfig, datasets, per_example_losses, train

KEYS = ("inter_task", "inter_sample", "inter_task_gms", "inter_sample_gms")


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
    p.add_argument("--num-train", type=int, default=None, help="training pairs (default: all)")
    return p.parse_args(argv)


def make_observe(args):
    """The per-step measurement: ``sample_conflicts`` on ``--num-samples`` examples of the step's
    batch, at the parameters the step starts from, every ``--every`` steps (zeros elsewhere)."""

    def observe(ctx):
        def measure(_):
            key = jax.random.fold_in(jax.random.key(args.seed), ctx.step)
            sub = analysis.subsample(ctx.batch, key, args.num_samples)
            stats = analysis.sample_conflicts(
                lambda p, b: per_example_losses(ctx.tasks, ctx.outputs(p, b), b),
                ctx.params,
                sub,
                shared=mtlx.models.is_shared,
                thresholds=(0.0,),
            )
            return {
                "inter_task": stats.inter_task.cosine,
                "inter_sample": stats.inter_sample.cosine,
                "inter_task_gms": stats.inter_task.magnitude_similarity,
                "inter_sample_gms": stats.inter_sample.magnitude_similarity,
            }

        measured = ctx.step % args.every == 0
        shapes = jax.eval_shape(measure, None)
        skip = lambda _: jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
        return {"measured": measured, **jax.lax.cond(measured, measure, skip, None)}

    return observe


def run(name, tasks, args):
    """Trains Multi-Digits ``tasks`` with EW + Adam through the trainer; returns per-epoch arrays
    of inter-task / inter-sample statistics and the run's result."""
    dataset_kwargs = {"tasks": tuple(tasks), "num_train": args.num_train}
    num_train = len(datasets.load("digits", **dataset_kwargs).train["image"])
    steps_per_epoch = num_train // args.batch_size
    config = TrainConfig(
        dataset="digits",
        dataset_kwargs=dataset_kwargs,
        model="lenet_hps",
        model_kwargs={"num_classes": 10},
        method="ew",
        optimizer="adam",
        learning_rate=args.lr,
        batch_size=args.batch_size,
        num_steps=args.epochs * steps_per_epoch,
        steps_per_call=steps_per_epoch,
        scan=False,  # XLA:CPU runs the convolutions' batched VJPs slowly inside a scan
        log_every=steps_per_epoch,
        seed=args.seed,
        progress=False,
    )
    result = train(config, observe=make_observe(args))
    obs = result.observations
    epochs = []
    for e in range(args.epochs):
        window = slice(e * steps_per_epoch, (e + 1) * steps_per_epoch)
        measured = obs["measured"][window]
        epochs.append({k: obs[k][window][measured].ravel() for k in KEYS})
    for record in (r for r in result.history if "train/loss/" + tasks[0] in r):
        losses = [round(record[f"train/loss/{t}"], 3) for t in tasks]
        print(f"{name}: epoch {record['epoch']} mean train losses {losses}")
    return epochs, result


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

    mtl, mtl_result = run("mtl", tasks, args)
    test_accuracy = {"MTL": {t: mtl_result.results[t]["accuracy"] for t in tasks}, "STL": {}}
    series = {
        "MTL inter-task": [e["inter_task"] for e in mtl],
        "MTL inter-sample": [e["inter_sample"] for e in mtl],
    }
    gms = {
        "MTL inter-task": [e["inter_task_gms"] for e in mtl],
        "MTL inter-sample": [e["inter_sample_gms"] for e in mtl],
    }
    for task in tasks:
        stl, stl_result = run(f"stl {task}", (task,), args)
        test_accuracy["STL"][task] = stl_result.results[task]["accuracy"]
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
        "test_accuracy": test_accuracy,
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
    accuracy = "; ".join(
        f"{run_name} " + ", ".join(f"{t} {a:.3f}" for t, a in accs.items())
        for run_name, accs in test_accuracy.items()
    )
    lines += [
        "",
        f"Test accuracy: {accuracy}.",
        "",
        f"Wall time {wall:.0f} s on {result['device']}.",
    ]
    with open(os.path.join(args.out, "results.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
