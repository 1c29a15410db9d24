"""Recon on Multi-Digits: layer search -> split the top-K conflicting layers -> retrain.

Recon (Shi et al., "Recon: Reducing Conflicting Gradients from the Root for Multi-Task Learning",
ICLR 2023), on the offline Multi-Digits set (two handwritten digits side by side, from
scikit-learn's bundled digits) with the MultiLeNet of mtlx.models:

1. search: joint training with equal weights and ``mtlx.conflict_monitor`` before the weighting;
   each shared layer's S-conflict score = number of (step, task pair) with per-layer cos < S;
2. select the top-K layers, turn them into task-specific layers (copies of the shared layer) and
   run the model as ``jax.vmap(apply, in_axes=(axes, None))``;
3. retrain from scratch, with the same seeds, the unsplit model and the split model, both monitored,
   and compare the fraction of conflicting (step, pair) in the layers that stay shared.

Every run goes through ``mtlx.training.train``: the chain ``optax.chain(mtlx.conflict_monitor(...),
method, optax.adam(lr))`` is passed as ``tx``, the split model as a
``mtlx.training.FunctionalModel`` with a ``shared`` predicate (its split layers are task-specific),
and the per-step, per-pair layer cosines of the histograms come from an ``observe`` hook inside
the jitted step.

Command (a few minutes on a 2-core CPU)::

  python experiments/recon_digits.py --out /tmp/recon_digits

Writes ``results.json``, ``results.md`` and the figures ``layer_scores.png``,
``cosine_histograms.png`` and ``cosine_curves.png`` to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import jax
import numpy as np
import optax
from flax import nnx

import mtlx
import mtlx.models
from mtlx import analysis
from mtlx.analysis import plots
from mtlx.training import FunctionalModel, TrainConfig, datasets, make_method, train

THRESHOLDS = (0.0, -0.02, -0.05, -0.1)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default="/tmp/recon_digits")
    p.add_argument("--tasks", default="left,right,sum_parity,left_greater")
    p.add_argument("--search-epochs", type=int, default=4)
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--top-k", type=int, default=1)
    p.add_argument("--threshold", type=float, default=0.0, help="the S of the S-conflict score")
    p.add_argument("--method", default="ew", help="weighting of the retrain runs: any mtlx method")
    p.add_argument("--init", default="copy", choices=("copy", "fresh"))
    p.add_argument("--seeds", default="0,1")
    p.add_argument("--num-train", type=int, default=None, help="training pairs (default: all)")
    p.add_argument(
        "--split",
        default=None,
        help="comma-separated layers to split instead of the search's top-K (the search still runs "
        "and is reported), e.g. encoder/conv2",
    )
    return p.parse_args(argv)


def lenet(seed: int, num_tasks: int) -> nnx.Module:
    """The MultiLeNet of every run (10 logits per task), initialised from ``seed``."""
    return mtlx.models.lenet_hps(num_tasks=num_tasks, num_classes=10, rngs=nnx.Rngs(seed))


def pure_params(model: nnx.Module):
    """``(graphdef, params, rest)`` of ``model`` as plain arrays."""
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    return graphdef, nnx.as_pure(params), nnx.as_pure(rest)


def split_model(seed, selected, num_tasks, init):
    """Recon's split MultiLeNet: ``selected`` layers get T task copies; a FunctionalModel around
    ``split_apply`` (the original model vmapped over the copies), and its ``shared`` predicate."""
    graphdef, params, rest = pure_params(lenet(seed, num_tasks))
    apply = lambda p, x: nnx.merge(graphdef, p, rest)(x)
    fresh = lambda key: pure_params(lenet(int(jax.random.randint(key, (), 0, 2**30)), num_tasks))[1]
    split, axes = analysis.split_params(
        params, selected, num_tasks, init=init, fresh_init=fresh, key=seed
    )
    selected = set(selected)

    def shared(path, leaf):
        return mtlx.models.is_shared(path) and analysis.layer_of_path(path) not in selected

    model = FunctionalModel(analysis.split_apply(apply, axes, num_tasks), split)
    return model, shared, analysis.parameter_increase(params, sorted(selected), num_tasks), params


def observe(ctx):
    """Per step: every shared layer's per-pair cosines (for the histograms) and the monitor's mean
    pairwise cosine per layer (for the curves)."""
    stats = analysis.layer_statistics(ctx.jac, THRESHOLDS)
    return {
        "pair_cosines": {k: v.cosine for k, v in stats.items()},
        "curves": dict(ctx.new_opt_state[0].layer_last_cosine),  # the chain's first member
    }


def run(config, dataset, tasks, *, model=None, shared=None, observe_fn=observe):
    """Trains through ``mtlx.training.train`` with ``chain(conflict_monitor, method, adam)``;
    returns the monitor's final state and the run's logs."""
    tx = optax.chain(
        mtlx.conflict_monitor(THRESHOLDS),
        make_method(config.method, len(tasks)),
        optax.adam(config.learning_rate),
    )
    result = train(config, dataset=dataset, model=model, tx=tx, shared=shared, observe=observe_fn)
    log = {"test_accuracy": [result.results[t]["accuracy"] for t in tasks]}
    if result.observations is not None:
        curves = result.observations["curves"]
        steps = len(next(iter(curves.values())))
        log["cosine_curves"] = [{k: float(v[i]) for k, v in curves.items()} for i in range(steps)]
        log["pair_cosines"] = dict(result.observations["pair_cosines"])
    return result.state.opt_state[0], log


def main(argv=None):
    args = parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    tasks = tuple(args.tasks.split(","))
    num_tasks = len(tasks)
    seeds = [int(s) for s in args.seeds.split(",")]
    dataset = datasets.load("digits", tasks=tasks, num_train=args.num_train)
    steps_per_epoch = len(dataset.train["image"]) // args.batch_size

    def config(method, epochs, seed):
        return TrainConfig(
            dataset="digits",
            model="lenet_hps",
            model_kwargs={"num_classes": 10},
            method=method,
            optimizer="adam",
            learning_rate=args.lr,
            batch_size=args.batch_size,
            num_steps=epochs * steps_per_epoch,
            steps_per_call=steps_per_epoch,
            scan=False,  # XLA:CPU runs the convolutions' batched VJPs slowly inside a scan
            log_every=steps_per_epoch,
            seed=seed,
            progress=False,
        )

    t0 = time.time()

    # 1. Search: a short joint training with equal weights (as the reference code's "Baseline").
    search_state, _ = run(
        config("mean", args.search_epochs, seeds[0]), dataset, tasks, observe_fn=None
    )
    scores = analysis.recon_scores(search_state, threshold=args.threshold)
    selected = analysis.select_layers(scores, top_k=args.top_k)
    if args.split:
        selected = args.split.split(",")
    search_time = time.time() - t0
    print(f"search ({search_time:.0f}s): S={args.threshold} scores {scores} -> split {selected}")

    # 2-3. Retrain from scratch, unsplit and split, with the same seeds.
    runs = {"unsplit": [], "recon": []}
    increase = None
    for seed in seeds:
        retrain = config(args.method, args.epochs, seed)
        state_u, log_u = run(retrain, dataset, tasks, model=lenet(seed, num_tasks))
        model, shared, increase, params = split_model(seed, selected, num_tasks, args.init)
        state_r, log_r = run(retrain, dataset, tasks, model=model, shared=shared)
        for name, state, log in (("unsplit", state_u, log_u), ("recon", state_r, log_r)):
            runs[name].append(
                {
                    "seed": seed,
                    "test_accuracy": log["test_accuracy"],
                    "conflict_fraction_remaining": {
                        f"{s:g}": analysis.conflict_fraction(state, exclude=selected, threshold=s)
                        for s in THRESHOLDS
                    },
                    "layers": analysis.layer_conflict_summary(state),
                    "cosine_curves": log["cosine_curves"],
                    "pair_cosines": log["pair_cosines"],
                }
            )
        print(
            f"seed {seed}: unsplit {runs['unsplit'][-1]['conflict_fraction_remaining']} "
            f"recon {runs['recon'][-1]['conflict_fraction_remaining']}"
        )

    remaining = [k for k in scores if k not in selected]
    s_index = THRESHOLDS.index(args.threshold)
    summary = {}
    for name, rs in runs.items():
        summary[name] = {
            "test_accuracy_mean": np.mean([r["test_accuracy"] for r in rs], axis=0).tolist(),
            "conflict_fraction_remaining_mean": {
                s: float(np.mean([r["conflict_fraction_remaining"][s] for r in rs]))
                for s in rs[0]["conflict_fraction_remaining"]
            },
            "per_layer_conflict_fraction_S": {
                layer: float(
                    np.mean([r["layers"][layer]["conflict_fraction"][s_index] for r in rs])
                )
                for layer in remaining
            },
        }
    wall = time.time() - t0
    result = {
        "tasks": tasks,
        "threshold_S": args.threshold,
        "search_epochs": args.search_epochs,
        "epochs": args.epochs,
        "method": args.method,
        "init": args.init,
        "seeds": seeds,
        "search_scores": scores,
        "search_summary": analysis.layer_conflict_summary(search_state),
        "selected": selected,
        "remaining_shared_layers": remaining,
        "parameter_increase": increase._asdict(),
        "summary": summary,
        "runs": {
            k: [
                {kk: vv for kk, vv in r.items() if kk not in ("cosine_curves", "pair_cosines")}
                for r in v
            ]
            for k, v in runs.items()
        },
        "wall_time_s": wall,
        "device": jax.devices()[0].device_kind,
    }
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(result, f, indent=1)

    # Figures: the search scores (Recon's layer-selection figure), the cosine histograms of the
    # remaining shared layers before / after splitting, and their cosine over training (seed 0).
    layer_order = [k for k in analysis.layer_names(params) if k in scores]
    plots.plot_layer_scores(
        {k: scores[k] for k in layer_order},
        os.path.join(args.out, "layer_scores.png"),
        selected=selected,
        title=f"Recon search: S-conflict score per layer, S = {args.threshold:g}",
    )
    # Per task pair: the cosines of every step and every remaining shared layer, all seeds.
    labels = analysis.pair_labels(num_tasks, tasks)
    hist = {
        pair: {
            name: np.concatenate(
                [r["pair_cosines"][layer][:, p].ravel() for r in runs[name] for layer in remaining]
            )
            for name in runs
        }
        for p, pair in enumerate(labels)
    }
    plots.plot_conflict_histograms(
        hist,
        os.path.join(args.out, "cosine_histograms.png"),
        thresholds=THRESHOLDS,
        title="Per-layer cosine of task gradients in the layers that stay shared "
        f"({', '.join(remaining)}), every step",
    )
    curves = {}
    for layer in remaining:
        for name in runs:
            curves[f"{layer} ({name})"] = [c[layer] for c in runs[name][0]["cosine_curves"]]
    plots.plot_cosine_curves(
        curves,
        os.path.join(args.out, "cosine_curves.png"),
        smooth=10,
        title="Mean pairwise cosine of the shared layers over training (seed %d)" % seeds[0],
    )

    lines = [
        f"Recon on Multi-Digits ({', '.join(tasks)}), MultiLeNet, {args.method} + Adam({args.lr}), "
        f"search {args.search_epochs} epochs, retrain {args.epochs} epochs, seeds {seeds}.",
        "",
        f"Search S-conflict scores (S = {args.threshold:g}): "
        + ", ".join(f"`{k}` {v}" for k, v in scores.items())
        + f". Split: {', '.join('`%s`' % k for k in selected)} "
        f"(+{increase.added} parameters, +{100 * increase.fraction:.1f}%).",
        "",
        "| model | "
        + " | ".join(f"acc {t}" for t in tasks)
        + " | "
        + " | ".join(f"conflicts cos<{s:g} (remaining shared)" for s in THRESHOLDS)
        + " |",
        "| --- |" + " --- |" * (len(tasks) + len(THRESHOLDS)),
    ]
    for name in runs:
        s = summary[name]
        lines.append(
            f"| {name} | "
            + " | ".join(f"{a:.3f}" for a in s["test_accuracy_mean"])
            + " | "
            + " | ".join(f"{100 * v:.1f}%" for v in s["conflict_fraction_remaining_mean"].values())
            + " |"
        )
    lines += [
        "",
        "Per remaining layer, fraction of (step, pair) with cos < S:",
        "",
        "| layer | unsplit | recon |",
        "| --- | --- | --- |",
    ]
    for layer in remaining:
        lines.append(
            f"| `{layer}` | "
            + " | ".join(
                f"{100 * summary[name]['per_layer_conflict_fraction_S'][layer]:.1f}%"
                for name in ("unsplit", "recon")
            )
            + " |"
        )
    pair_s = (0.0, min(THRESHOLDS))
    lines += [
        "",
        "Per task pair, fraction of (step, remaining shared layer) with cos < S, all seeds:",
        "",
        "| pair | " + " | ".join(f"{name} S={s:g}" for s in pair_s for name in runs) + " |",
        "| --- |" + " --- |" * (len(pair_s) * len(runs)),
    ]
    for pair, series in hist.items():
        cells = [f"{100 * np.mean(series[name] < s):.1f}%" for s in pair_s for name in runs]
        lines.append(f"| {pair} | " + " | ".join(cells) + " |")
    lines += ["", f"Wall time {wall:.0f} s on {result['device']}."]
    with open(os.path.join(args.out, "results.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
