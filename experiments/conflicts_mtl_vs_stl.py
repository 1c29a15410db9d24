"""Are task conflicts special? Inter-task vs inter-sample gradient conflicts, MTL vs STL.

After Elich, Kirchdorfer, Köhler, Schott, "Challenging Common Paradigms in Multi-Task Learning"
(2024, arXiv:2311.04698): gradient conflicts in *direction* are no worse between tasks than
between the samples of one task; what differs between tasks is gradient *magnitude*. During
training, every ``--every`` steps, draw ``--num-samples`` random examples of the batch and compute
their per-example, per-task gradients on the shared parameters (one ``jax.vmap`` over the VJP,
:func:`mtlx.analysis.sample_conflicts`). Compare

* MTL inter-task pairs: two tasks, the same example (the usual "gradient conflict");
* MTL inter-sample pairs: one task, two examples, in the same multi-task model;
* STL inter-sample pairs: one task, two examples, in a single-task model of each task;

by the cosine (direction; the fraction of pairs with cos < 0 is the conflict rate) and the
gradient-magnitude similarity GMS(g, h) = 2 |g| |h| / (|g|² + |h|²) ∈ (0, 1] (Yu et al., PCGrad;
1 = equal norms), per epoch, per seed; over ``--seeds`` the tables give mean ± std over seeds and
paired differences (inter-task − inter-sample, same seed) with Student-t 95 % intervals.

Two task sets, one command each:

* ``--tasks left,right`` (default): Multi-Digits' left / right digit, the same task twice;
* ``--tasks left,right,sum``: heterogeneous, the two digit classifiers (cross-entropy) and the
  digit sum as a regression (L1, targets 0-18, a loss on another scale), as the paper's magnitude
  finding needs tasks of different type and scale.

Every run goes through ``mtlx.training.train`` (Multi-Digits by name, a MultiLeNet encoder with
one MultiLeNet head per task, sized per task, EW + Adam); the measurement is an ``observe`` hook
that runs inside the jitted training step (under ``jax.lax.cond`` on every ``--every``-th step, on
the batch and the parameters that step uses), so the statistics come back with the losses.

Commands (each a few minutes on a 2-core CPU)::

  python experiments/conflicts_mtl_vs_stl.py
  python experiments/conflicts_mtl_vs_stl.py --tasks left,right,sum

Writes ``results.json``, ``results.md``, ``cosine_per_epoch.png``, ``gms_per_epoch.png`` and
``cosine_histograms.png`` to ``--out`` (default ``experiments/results/conflicts_mtl_vs_stl`` for
left,right and ``..._<tasks>`` otherwise).
"""

from __future__ import annotations

import argparse
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

import mtlx.models
from mtlx import analysis
from mtlx.analysis import plots
from mtlx.training import TrainConfig, datasets, per_example_losses, train
from mtlx.training import study as study_lib

KEYS = ("inter_task", "inter_sample", "inter_task_gms", "inter_sample_gms")
STATS = ("cos", "gms", "conflict")  # mean cosine, mean GMS, fraction of pairs with cos < 0


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default=None, help="default: experiments/results/conflicts_mtl_vs_stl*")
    p.add_argument("--tasks", default="left,right", help="Multi-Digits tasks, e.g. left,right,sum")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--every", type=int, default=2, help="measure every this many steps")
    p.add_argument("--num-samples", type=int, default=8, help="random examples per measurement")
    p.add_argument("--num-train", type=int, default=None, help="training pairs (default: all)")
    p.add_argument("--smoke", action="store_true", help="no compilation cache (CI smoke test)")
    return p.parse_args(argv)


def default_out(tasks) -> str:
    suffix = "" if tuple(tasks) == ("left", "right") else "_" + "_".join(tasks)
    return os.path.join("experiments", "results", f"conflicts_mtl_vs_stl{suffix}")


def build_model(ds, seed: int) -> mtlx.models.MultiTaskModel:
    """MultiLeNet's encoder and one MultiLeNet head per task, sized by the task (10 classes, 1
    regression output); the heads are task-specific by path (``heads``)."""
    rngs = nnx.Rngs(seed)
    encoder = mtlx.models.LeNetEncoder(1, rngs=rngs)
    heads = {
        t.name: mtlx.models.LeNetHead(encoder.out_features, t.output_size, rngs=rngs)
        for t in ds.tasks
    }
    return mtlx.models.MultiTaskModel(encoder, mtlx.models.PerTaskHeads(heads))


def make_observe(args, seed):
    """The per-step measurement: ``sample_conflicts`` on ``--num-samples`` examples of the step's
    batch, at the parameters the step starts from, every ``--every`` steps (zeros elsewhere)."""

    def observe(ctx):
        def measure(_):
            key = jax.random.fold_in(jax.random.key(seed), ctx.step)
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


def run(name, tasks, args, seed):
    """Trains Multi-Digits ``tasks`` with EW + Adam through the trainer; returns per-epoch arrays
    (inter-task values ``(n, P)`` over the P task pairs, inter-sample values ``(n, T)``) and the
    run's result."""
    dataset_kwargs = {"tasks": tuple(tasks), "num_train": args.num_train}
    ds = datasets.load("digits", **dataset_kwargs)
    num_train = len(ds.train["image"])
    steps_per_epoch = num_train // args.batch_size
    config = TrainConfig(
        dataset="digits",
        dataset_kwargs=dataset_kwargs,
        model="lenet_hps",  # recorded only: the model is built per task set by build_model
        method="ew",
        optimizer="adam",
        learning_rate=args.lr,
        batch_size=args.batch_size,
        num_steps=args.epochs * steps_per_epoch,
        steps_per_call=steps_per_epoch,
        scan=False,  # XLA:CPU runs the convolutions' batched VJPs slowly inside a scan
        log_every=steps_per_epoch,
        seed=seed,
        progress=False,
    )
    result = train(
        config, dataset=ds, model=build_model(ds, seed), observe=make_observe(args, seed)
    )
    obs = result.observations
    t = len(tasks)
    epochs = []
    for e in range(args.epochs):
        window = slice(e * steps_per_epoch, (e + 1) * steps_per_epoch)
        measured = obs["measured"][window]
        epoch = {}
        for k in ("inter_task", "inter_task_gms"):  # (steps, k P), sample-major
            v = obs[k][window][measured]
            epoch[k] = v.reshape(-1, t * (t - 1) // 2) if t > 1 else np.zeros((0, 0))
        for k in ("inter_sample", "inter_sample_gms"):  # (steps, T K2), task-major
            v = obs[k][window][measured]
            epoch[k] = v.reshape(v.shape[0], t, -1).transpose(0, 2, 1).reshape(-1, t)
        epochs.append(epoch)
    for record in (r for r in result.history if "train/loss/" + tasks[0] in r):
        losses = [round(record[f"train/loss/{t}"], 3) for t in tasks]
        print(f"{name} seed {seed}: epoch {record['epoch']} mean train losses {losses}")
    return epochs, result


def stats_of(cos: np.ndarray, gms: np.ndarray) -> dict[str, float]:
    """Mean cosine, mean GMS and the conflict rate (cos < 0) of a set of pairs."""
    if cos.size == 0:
        return {k: float("nan") for k in STATS}
    return {
        "cos": float(np.mean(cos)),
        "gms": float(np.mean(gms)),
        "conflict": float(np.mean(cos < 0.0)),
    }


def series_of(mtl, stl, tasks):
    """Per-epoch statistics of one seed: ``{series label: [stats per epoch]}``."""
    pairs = [(a, b) for i, a in enumerate(tasks) for b in tasks[i + 1 :]]
    out = {}
    out["MTL inter-task"] = [stats_of(e["inter_task"], e["inter_task_gms"]) for e in mtl]
    for p, (a, b) in enumerate(pairs):
        if len(pairs) > 1:
            out[f"MTL inter-task ({a}, {b})"] = [
                stats_of(e["inter_task"][:, p], e["inter_task_gms"][:, p]) for e in mtl
            ]
    out["MTL inter-sample"] = [stats_of(e["inter_sample"], e["inter_sample_gms"]) for e in mtl]
    for i, task in enumerate(tasks):
        out[f"MTL inter-sample ({task})"] = [
            stats_of(e["inter_sample"][:, i], e["inter_sample_gms"][:, i]) for e in mtl
        ]
    out["STL inter-sample"] = [
        stats_of(
            np.concatenate([stl[t][e]["inter_sample"].ravel() for t in tasks]),
            np.concatenate([stl[t][e]["inter_sample_gms"].ravel() for t in tasks]),
        )
        for e in range(len(mtl))
    ]
    for task in tasks:
        out[f"STL inter-sample ({task})"] = [
            stats_of(e["inter_sample"], e["inter_sample_gms"]) for e in stl[task]
        ]
    for a, b in pairs:  # the reference for a pair: its two tasks' STL inter-sample pairs pooled
        out[f"STL inter-sample ({a} | {b})"] = [
            stats_of(
                np.concatenate([stl[t][e]["inter_sample"].ravel() for t in (a, b)]),
                np.concatenate([stl[t][e]["inter_sample_gms"].ravel() for t in (a, b)]),
            )
            for e in range(len(mtl))
        ]
    return out, pairs


def over_training(rows):
    """The statistics averaged over the epochs of one seed."""
    return {k: float(np.mean([r[k] for r in rows])) for k in STATS}


def comparisons(tasks, pairs):
    """(label, a, b): differences a − b, paired over seeds."""
    out = [
        ("inter-task − inter-sample (MTL)", "MTL inter-task", "MTL inter-sample"),
        ("MTL inter-task − STL inter-sample", "MTL inter-task", "STL inter-sample"),
        ("MTL inter-sample − STL inter-sample", "MTL inter-sample", "STL inter-sample"),
    ]
    if len(pairs) > 1:
        for a, b in pairs:
            out.append(
                (
                    f"MTL inter-task ({a}, {b}) − STL inter-sample ({a} | {b})",
                    f"MTL inter-task ({a}, {b})",
                    f"STL inter-sample ({a} | {b})",
                )
            )
    return out


def _fmt(ms, digits=3):
    return f"{ms[0]:.{digits}f} ± {ms[1]:.{digits}f}"


def _diff(d: study_lib.PairedDifference, digits=3):
    if d.n < 2:
        return f"{d.mean:+.{digits}f} (n = {d.n})"
    mark = " *" if d.significant else ""
    return f"{d.mean:+.{digits}f} [{d.low:+.{digits}f}, {d.high:+.{digits}f}]{mark}"


def verdicts(diffs) -> dict[str, str]:
    """The two claims, decided by the paired 95 % intervals of the over-training means.

    Against STL inter-sample pairs: pooled over tasks, and (with more than two tasks) per task
    pair against the inter-sample pairs of its own two tasks, since tasks of different type have
    different inter-sample statistics. Direction: contradicted if any of these cosine differences
    is significantly negative. Magnitude: reproduced if the GMS difference is significantly
    negative (pooled, or for some pair).
    """
    keys = [k for k in diffs if k.startswith("MTL inter-task") and "STL" in k]
    cos = {k: diffs[k]["cos"] for k in keys}
    gms = {k: diffs[k]["gms"] for k in keys}
    listing = lambda ds: "; ".join(f"{k}: {_diff(d)}" for k, d in ds.items())  # noqa: E731
    if any(d.n < 2 for d in cos.values()):
        return {"direction": "inconclusive (one seed)", "magnitude": "inconclusive (one seed)"}
    worse = [k for k, d in cos.items() if d.significant and d.mean < 0]
    direction = (
        f"contradicted: inter-task cosines are significantly lower in {worse}"
        if worse
        else "reproduced: no inter-task cosine is significantly below the STL inter-sample one"
    ) + f" (Δ cos {listing(cos)})"
    lower = [k for k, d in gms.items() if d.significant and d.mean < 0]
    higher = [k for k, d in gms.items() if d.significant and d.mean > 0]
    if lower:
        magnitude = f"reproduced: inter-task GMS is significantly lower in {lower}"
    elif higher:
        magnitude = f"contradicted: inter-task GMS is significantly higher in {higher}"
    else:
        magnitude = "not shown at this scale: no significant GMS difference"
    return {"direction": direction, "magnitude": magnitude + f" (Δ GMS {listing(gms)})"}


def main(argv=None) -> dict:
    args = parse_args(argv)
    tasks = tuple(args.tasks.split(","))
    seeds = [int(s) for s in args.seeds.split(",") if s]
    out = args.out or default_out(tasks)
    os.makedirs(out, exist_ok=True)
    if not args.smoke:  # seeds after the first reuse the compiled steps
        study_lib.enable_compilation_cache(os.path.join(out, ".jax_cache"))
    t0 = time.time()

    per_seed, accuracy, pooled = {}, {}, {}
    for seed in seeds:
        mtl, mtl_result = run("mtl", tasks, args, seed)
        stl, stl_results = {}, {}
        for task in tasks:
            stl[task], result = run(f"stl {task}", (task,), args, seed)
            stl_results[task] = result.results[task]
        per_seed[seed], pairs = series_of(mtl, stl, tasks)
        accuracy[seed] = {"MTL": mtl_result.results, "STL": stl_results}
        for label, vals in (
            ("MTL inter-task", [e["inter_task"] for e in mtl]),
            ("MTL inter-sample", [e["inter_sample"] for e in mtl]),
            (
                "STL inter-sample",
                [stl[t][e]["inter_sample"] for t in tasks for e in range(len(mtl))],
            ),
        ):
            pooled.setdefault(label, []).extend(v.ravel() for v in vals)
    labels = list(per_seed[seeds[0]])

    # mean ± std over seeds: per epoch and over training
    table = {
        label: {
            "per_epoch": [
                {k: study_lib.mean_std([per_seed[s][label][e][k] for s in seeds]) for k in STATS}
                for e in range(args.epochs)
            ],
            "over_training": {
                k: study_lib.mean_std([over_training(per_seed[s][label])[k] for s in seeds])
                for k in STATS
            },
        }
        for label in labels
    }
    diffs = {
        name: {
            k: study_lib.paired_difference(
                [over_training(per_seed[s][a])[k] for s in seeds],
                [over_training(per_seed[s][b])[k] for s in seeds],
            )
            for k in STATS
        }
        for name, a, b in comparisons(tasks, pairs)
    }
    diffs_per_epoch = {
        name: [
            {
                k: study_lib.paired_difference(
                    [per_seed[s][a][e][k] for s in seeds], [per_seed[s][b][e][k] for s in seeds]
                )
                for k in ("cos", "gms")
            }
            for e in range(args.epochs)
        ]
        for name, a, b in comparisons(tasks, pairs)[:2]
    }
    verdict = verdicts(diffs)
    wall = time.time() - t0
    metrics = {
        run_name: {
            f"{t}/{m}": study_lib.mean_std([accuracy[s][run_name][t][m] for s in seeds])
            for t in tasks
            for m in accuracy[seeds[0]][run_name][t]
        }
        for run_name in ("MTL", "STL")
    }
    result = {
        "command": "python experiments/conflicts_mtl_vs_stl.py " + " ".join(argv or []),
        "tasks": tasks,
        "seeds": seeds,
        "epochs": args.epochs,
        "every": args.every,
        "num_samples": args.num_samples,
        "table": table,
        "per_seed": {str(s): per_seed[s] for s in seeds},
        "paired_differences": {
            name: {k: vars(d) for k, d in ds.items()} for name, ds in diffs.items()
        },
        "paired_differences_per_epoch": {
            name: [{k: vars(d) for k, d in row.items()} for row in rows]
            for name, rows in diffs_per_epoch.items()
        },
        "test_metrics": metrics,
        "verdict": verdict,
        "wall_time_s": wall,
        "device": jax.devices()[0].device_kind,
    }
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump(result, f, indent=1, default=float)

    epochs = np.arange(1, args.epochs + 1)
    main_labels = ["MTL inter-task", "MTL inter-sample", "STL inter-sample"]
    main_labels += [f"MTL inter-task ({a}, {b})" for a, b in pairs if len(pairs) > 1]
    for stat, name, ylabel in (("cos", "cosine", "mean cosine"), ("gms", "gms", "mean GMS")):
        plots.plot_cosine_curves(
            {label: [r[stat][0] for r in table[label]["per_epoch"]] for label in main_labels},
            os.path.join(out, f"{name}_per_epoch.png"),
            steps=epochs,
            bands={
                label: (
                    [r[stat][0] - r[stat][1] for r in table[label]["per_epoch"]],
                    [r[stat][0] + r[stat][1] for r in table[label]["per_epoch"]],
                )
                for label in main_labels
            },
            title=f"{ylabel} per epoch, mean ± std over {len(seeds)} seeds",
            xlabel="epoch",
            ylabel=ylabel,
        )
    plots.plot_conflict_histograms(
        {label: np.concatenate(v) for label, v in pooled.items()},
        os.path.join(out, "cosine_histograms.png"),
        title=f"Cosine of per-example gradients over training ({len(seeds)} seeds pooled)",
    )

    kinds = ", ".join(f"{t.name} ({t.kind.name})" for t in datasets.tasks_of("digits", tasks=tasks))
    lines = [
        f"# Inter-task vs inter-sample gradient conflicts on Multi-Digits ({kinds})",
        "",
        f"MultiLeNet encoder + one head per task, EW + Adam({args.lr}), {args.epochs} epochs, "
        f"{args.num_samples} random examples every {args.every} steps, shared parameters only; "
        f"{len(seeds)} seeds ({', '.join(map(str, seeds))}). Cosine: direction (cos < 0 = "
        "conflict); GMS = 2|g||h| / (|g|² + |h|²): 1 = equal magnitudes. Each cell: mean ± std "
        "over seeds of the per-seed mean.",
        "",
        "## Over training (mean of the epoch means)",
        "",
        "| pairs | mean cos | cos < 0 | mean GMS |",
        "| --- | --- | --- | --- |",
    ]
    for label in labels:
        r = table[label]["over_training"]
        lines.append(f"| {label} | {_fmt(r['cos'])} | {_fmt(r['conflict'])} | {_fmt(r['gms'])} |")
    lines += [
        "",
        "## Paired differences over seeds (over-training means; 95 % t-interval, * excludes 0)",
        "",
        "| difference | Δ mean cos | Δ cos < 0 | Δ mean GMS |",
        "| --- | --- | --- | --- |",
    ]
    for name, ds in diffs.items():
        lines.append(
            f"| {name} | {_diff(ds['cos'])} | {_diff(ds['conflict'])} | {_diff(ds['gms'])} |"
        )
    lines += [
        "",
        "## Per epoch (mean ± std over seeds)",
        "",
        "| pairs | epoch | mean cos | cos < 0 | mean GMS |",
        "| --- | --- | --- | --- | --- |",
    ]
    show = sorted({1, (args.epochs + 1) // 2, args.epochs})
    for label in main_labels:
        for e in show:
            r = table[label]["per_epoch"][e - 1]
            lines.append(
                f"| {label} | {e} | {_fmt(r['cos'])} | {_fmt(r['conflict'])} | {_fmt(r['gms'])} |"
            )
    lines += [
        "",
        "MTL inter-task − STL inter-sample per epoch: "
        + "; ".join(
            f"epoch {e}: cos {_diff(diffs_per_epoch['MTL inter-task − STL inter-sample'][e - 1]['cos'])}, "
            f"GMS {_diff(diffs_per_epoch['MTL inter-task − STL inter-sample'][e - 1]['gms'])}"
            for e in show
        )
        + ".",
        "",
        "Test metrics (mean ± std over seeds): "
        + "; ".join(
            f"{run_name} " + ", ".join(f"{k} {_fmt(v)}" for k, v in ms.items())
            for run_name, ms in metrics.items()
        )
        + ".",
        "",
        "## Verdict inputs",
        "",
        f"- direction: {verdict['direction']}",
        f"- magnitude: {verdict['magnitude']}",
        "",
        f"Wall time {wall:.0f} s on {result['device']}.",
    ]
    with open(os.path.join(out, "results.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    return result


if __name__ == "__main__":
    main()
