"""Recon at the paper's proportions: a 19-layer CNN, the whole-vector conflict measure, controls.

Shi, Li, Zhang, Chen, Wu, "Recon: Reducing Conflicting Gradients from the Root for Multi-Task
Learning", ICLR 2023 (arXiv 2302.11289). On Multi-Digits (two scikit-learn digits side by side,
offline; tasks: left digit, right digit, parity of the sum, left > right) with
``mtlx.models.narrow_resnet_hps`` (a group-norm ResNet, widths 8/16/32: 19 Conv / GroupNorm /
Linear candidate layers, 20.5 k shared parameters; ResNet-18 trains too slowly on a 2-core CPU for
30 configurations x 3 seeds), every run through ``mtlx.training.train``:

1. **Joint training** with each method (EW, PCGrad, CAGrad, MGDA, GradDrop) and every seed, with
   ``mtlx.conflict_monitor(num_tasks=T)`` first in the chain and an ``observe`` hook recording each
   step's per-layer Gramians (``mtlx.analysis.last_layer_gramians``).
2. **Search** from those recordings (``mtlx.analysis.layer_scores_from_gramians``): the S-conflict
   score of every layer over the first ``--search-epochs`` epochs of the EW run of the first seed
   (the same steps as a separate search run: same seed, batches and constant learning rate). Top-K
   = Recon's layers. Stability: top-K of other seeds, of PCGrad instead of EW, of the longer
   search (Jaccard overlaps).
3. **Controls**, each with the five methods and every seed: Recon (top-K split), RSL (K random
   layers), RSP (as many random single parameters as Recon's layers hold), first-K and last-K
   layers (network order, ``mtlx.analysis.layer_order``). RSL and RSP use one random draw
   (``--control-seed``) for all seeds: a draw per seed would compile every run anew.
4. **Δm** against single-task runs of the same unsplit model (``train_sweep`` over one-hot
   weights, per seed), **conflicts**: the share of (step, task pair) whose cosine over all
   remaining shared parameters falls in the paper's bins (−0.01, −1], (−0.02, −1], (−0.05, −1],
   (−0.1, −1], compared with the joint run of the same method and seed on the same parameters.

Command (13.5 min on an idle 2-core CPU, cold compilation cache; 44 min on a shared one)::

  python experiments/recon_paper_scale.py --out experiments/results/recon_paper_scale

Writes ``results.json``, ``results.md``, ``delta_m.png`` and ``conflict_bins.png`` to ``--out``.
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
from mtlx.training import (
    DELTA_M_CONVENTION,
    FunctionalModel,
    TrainConfig,
    datasets,
    delta_m,
    make_method,
    paired_difference,
    train,
    train_sweep,
)
from mtlx.training.study import enable_compilation_cache, mean_std, single_task_config

TASKS = ("left", "right", "sum_parity", "left_greater")
METHODS = ("ew", "pcgrad", "cagrad", "mgda", "graddrop")
CONTROLS = ("joint", "recon", "rsl", "rsp", "first_k", "last_k")
BINS = analysis.RECON_COSINE_BINS
PAPER = """\
What we could verify of the paper (arXiv 2302.11289, abstract and method): "gradient surgery"
(PCGrad-style manipulation) "cannot effectively reduce the occurrence of conflicting gradients";
turning the shared layers with the highest S-conflict scores into task-specific layers "can
greatly reduce the occurrence of conflicting gradients in the remaining shared layers and achieve
better performance, with only a slight increase in model parameters in many cases". The search
runs once per architecture; the reference code (moukamisama/Recon) copies the selected layers per
task and counts every Conv / BatchNorm / Linear module as a candidate. We could not retrieve the
paper's tables (their bin percentages, the parameter increases, RSL / RSP numbers) in this
session: the figures "0.3–13 % of shared parameters" and "severe conflicts cut by ~70–85 %" come
from the issue and are not verified here."""


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default=os.path.join("experiments", "results", "recon_paper_scale"))
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--search-epochs", default="1,3", help="short,long search (short is Recon's)")
    p.add_argument("--top-k", type=int, default=4)
    p.add_argument("--threshold", type=float, default=0.0, help="S of the S-conflict score")
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--controls", default=",".join(CONTROLS))
    p.add_argument("--control-seed", type=int, default=0, help="the RSL / RSP draw")
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--num-train", type=int, default=None, help="training pairs (default: all)")
    p.add_argument("--widths", default="8,16,32")
    p.add_argument("--smoke", action="store_true", help="tiny settings for the CI smoke test")
    return p.parse_args(argv)


def _split(text: str) -> list[str]:
    return [x for x in text.split(",") if x]


def build_model(seed, num_tasks, widths):
    """The unsplit model of ``seed`` as the trainer builds it: ``(apply, params as a dict)``."""
    # One output size per task (10, 10, 2, 2), as mtlx.training.make_model passes them.
    sizes = tuple(t.output_size for t in datasets.load("digits", tasks=TASKS).tasks)
    model = mtlx.models.narrow_resnet_hps(num_tasks, sizes, widths=widths, rngs=nnx.Rngs(seed))
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    params = nnx.to_pure_dict(nnx.as_pure(params))
    return (lambda p, x: nnx.merge(graphdef, p, rest)(x)), params


def control_model(control, seed, num_tasks, widths, layers=(), mask=None):
    """``(FunctionalModel, shared predicate)`` of one control."""
    apply, params = build_model(seed, num_tasks, widths)
    if control == "rsp":
        split, fn, task_fn = analysis.split_entries(apply, params, mask, num_tasks)
        model = FunctionalModel(fn, split, task_apply=task_fn)

        def shared(path, leaf):
            layer = analysis.layer_of_path(path)
            return mtlx.models.is_shared(path) and layer != analysis.ENTRIES_KEY

        return model, shared
    split, axes = analysis.split_params(params, layers, num_tasks)
    chosen = set(layers)
    # One pass per task for training (mtlx.value_and_jacobian_per_task): T passes forward and
    # backward, not the batched engine's T backward passes through all T copies.
    model = FunctionalModel(
        analysis.split_apply(apply, axes, num_tasks),
        split,
        task_apply=analysis.split_task_apply(apply, axes, num_tasks),
    )

    def shared(path, leaf):
        return mtlx.models.is_shared(path) and analysis.layer_of_path(path) not in chosen

    return model, shared


def observe(ctx):
    """Each step's per-layer Gramians, kept by the monitor (no extra backward pass)."""
    return analysis.last_layer_gramians(ctx.new_opt_state)


def run_one(config, dataset, num_tasks, model=None, shared=None):
    """One run through ``mtlx.training.train``: monitor -> method -> Adam, Gramians recorded."""
    tx = optax.chain(
        analysis.conflict_monitor((0.0, *BINS), signs=False, num_tasks=num_tasks),
        make_method(config.method, num_tasks),
        optax.adam(config.learning_rate),
    )
    result = train(config, dataset=dataset, model=model, tx=tx, shared=shared, observe=observe)
    grams = {k: np.asarray(v) for k, v in result.observations.items()}
    return result, grams


def conflict_stats(grams, exclude=()):
    """Whole-vector bins (the paper's measure) and the pooled per-layer share cos < 0 (ours)."""
    names = [k for k, g in grams.items() if np.any(g) and k not in set(exclude)]
    cos = analysis.whole_vector_cosines(grams, layers=names)
    per_layer = [analysis.whole_vector_cosines(grams, layers=[k]) for k in names]
    return {
        "bins": {f"{b:g}": v for b, v in analysis.cosine_bin_fractions(cos, BINS).items()},
        "mean_cosine": float(np.mean(cos)),
        "per_layer_below_0": float(np.mean(np.concatenate([c.ravel() for c in per_layer]) < 0)),
    }


def main(argv=None) -> dict:
    args = parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    seeds = [int(s) for s in _split(args.seeds)]
    methods = _split(args.methods)
    controls = _split(args.controls)
    if "joint" not in controls or "ew" not in methods:
        raise ValueError("the study needs the joint control and EW (the search and the pairs).")
    widths = tuple(int(w) for w in _split(args.widths))
    short, long_ = (int(e) for e in _split(args.search_epochs))
    if not 1 <= short <= long_ <= args.epochs:
        raise ValueError("search epochs: 1 <= short <= long <= --epochs.")
    if not args.smoke:
        # Seeds after the first reuse each configuration's compiled step (several s on CPU).
        enable_compilation_cache(os.path.join(args.out, ".jax_cache"))
    dataset = datasets.load("digits", tasks=TASKS, num_train=args.num_train)
    tasks = dataset.tasks
    num_tasks = len(TASKS)
    steps_per_epoch = len(dataset.train["image"]) // args.batch_size
    base = TrainConfig(
        dataset="digits",
        model="narrow_resnet_hps",
        model_kwargs={"widths": widths},
        optimizer="adam",
        learning_rate=args.lr,
        batch_size=args.batch_size,
        num_steps=args.epochs * steps_per_epoch,
        steps_per_call=steps_per_epoch,
        scan=False,  # XLA:CPU runs convolutions' batched VJPs slowly inside a scan
        log_every=args.epochs * steps_per_epoch,
        eval_batch_size=512,
        progress=False,
    )
    start = time.perf_counter()
    runs: dict[tuple[str, str, int], dict] = {}
    grams_of: dict[tuple[str, str, int], dict] = {}

    def record(control, method, seed, result, grams, seconds):
        runs[(control, method, seed)] = {
            "results": result.results,
            "seconds": seconds,
        }
        grams_of[(control, method, seed)] = grams
        print(f"{control:8s} {method:9s} seed {seed}: {seconds:5.1f} s", flush=True)

    # 1. Joint training (holds the search).
    for method in methods:
        for seed in seeds:
            t0 = time.perf_counter()
            result, grams = run_one(base.replace(method=method, seed=seed), dataset, num_tasks)
            record("joint", method, seed, result, grams, time.perf_counter() - t0)

    # 2. The search and its stability.
    apply, params0 = build_model(seeds[0], num_tasks, widths)
    sizes = analysis.layer_sizes(params0)
    # Candidates: every shared Conv / GroupNorm / Linear layer, in the network's order.
    order = [
        k
        for k in analysis.layer_order(apply, params0, dataset.train["image"][:2])
        if not k.startswith("heads")
    ]
    shared_total = sum(sizes[k] for k in order)

    def search(method, seed, epochs):
        g = {k: v for k, v in grams_of[("joint", method, seed)].items() if k in order}
        scores = analysis.layer_scores_from_gramians(
            g, args.threshold, steps=epochs * steps_per_epoch
        )
        return scores, analysis.select_layers(scores, top_k=args.top_k)

    scores, selected = search("ew", seeds[0], short)
    variants = {f"ew seed {s}, {short} ep": search("ew", s, short)[1] for s in seeds}
    variants[f"ew seed {seeds[0]}, {long_} ep"] = search("ew", seeds[0], long_)[1]
    if "pcgrad" in methods:
        variants[f"pcgrad seed {seeds[0]}, {short} ep"] = search("pcgrad", seeds[0], short)[1]
    ref = f"ew seed {seeds[0]}, {short} ep"
    stability = {
        name: {"layers": sel, "jaccard_vs_recon": analysis.jaccard(sel, variants[ref])}
        for name, sel in variants.items()
    }
    seed_pairs = [
        analysis.jaccard(variants[f"ew seed {a}, {short} ep"], variants[f"ew seed {b}, {short} ep"])
        for i, a in enumerate(seeds)
        for b in seeds[i + 1 :]
    ]
    print(f"search: {selected} ({scores})")

    # 3. The controls' selections.
    count = sum(sizes[k] for k in selected)
    selections = {
        "recon": selected,
        "rsl": analysis.random_layers(order, args.top_k, key=args.control_seed),
        "first_k": analysis.first_layers(order, args.top_k),
        "last_k": analysis.last_layers(order, args.top_k),
    }
    mask = analysis.random_parameter_mask(params0, count, key=args.control_seed, layers=order)
    params_info = {}
    for control in controls:
        if control == "joint":
            layers, added = [], 0
        elif control == "rsp":
            layers, added = [], (num_tasks - 1) * count
        else:
            layers = selections[control]
            added = analysis.parameter_increase(params0, layers, num_tasks).added
        split_count = count if control == "rsp" else sum(sizes[k] for k in layers)
        params_info[control] = {
            "layers": layers,
            "task_specific_share_of_shared": split_count / shared_total,
            "model_parameters": sum(sizes.values()) + added,
            "increase_vs_joint": added / sum(sizes.values()),
        }

    for control in controls:
        if control == "joint":
            continue
        for method in methods:
            for seed in seeds:
                t0 = time.perf_counter()
                model, shared = control_model(
                    control,
                    seed,
                    num_tasks,
                    widths,
                    layers=selections.get(control, ()),
                    mask=mask if control == "rsp" else None,
                )
                config = base.replace(method=method, seed=seed)
                result, grams = run_one(config, dataset, num_tasks, model=model, shared=shared)
                record(control, method, seed, result, grams, time.perf_counter() - t0)

    # 4. Single-task runs (the Δm base): the T one-hot scalarizations of a seed as one sweep.
    t0 = time.perf_counter()
    stl = []
    for seed in seeds:
        config = single_task_config(base.replace(seed=seed), 0, num_tasks)
        sweep = train_sweep(config, {"weights": np.eye(num_tasks)}, dataset=dataset)
        stl.append({t: sweep.results[i][t] for i, t in enumerate(TASKS)})
    stl_base = {t: {m: float(np.mean([r[t][m] for r in stl])) for m in stl[0][t]} for t in TASKS}
    print(f"single-task runs: {time.perf_counter() - t0:.1f} s")

    # 5. Summaries.
    for key, run in runs.items():
        control = key[0]
        run["delta_m"] = delta_m(run["results"], stl_base, tasks)
        exclude = selections.get(control, ())
        run["conflicts"] = conflict_stats(grams_of[key])
        # The joint run of the same method and seed on the parameters this control keeps shared.
        run["joint_same_params"] = conflict_stats(grams_of[("joint", key[1], key[2])], exclude)

    def per_seed(control, method, fn):
        return [fn(runs[(control, method, s)]) for s in seeds]

    table = {}
    for control in controls:
        for method in methods:
            dm = per_seed(control, method, lambda r: r["delta_m"])
            row = {"delta_m": mean_std(dm)}
            if control != "joint":
                d = paired_difference(dm, per_seed("joint", method, lambda r: r["delta_m"]))
                row["delta_m_vs_joint"] = [d.mean, d.low, d.high, d.significant]
            for b in (f"{x:g}" for x in BINS):
                own = per_seed(control, method, lambda r, b=b: r["conflicts"]["bins"][b])
                ref_ = per_seed(control, method, lambda r, b=b: r["joint_same_params"]["bins"][b])
                row[f"bin {b}"] = mean_std(own)
                row[f"joint bin {b}"] = mean_std(ref_)
                d = paired_difference(own, ref_)
                row[f"bin {b} vs joint"] = [d.mean, d.low, d.high, d.significant]
            row["per_layer_below_0"] = mean_std(
                per_seed(control, method, lambda r: r["conflicts"]["per_layer_below_0"])
            )
            if control == "joint" and method != "ew":
                own = per_seed("joint", method, lambda r: r["conflicts"]["bins"]["-0.01"])
                ew = per_seed("joint", "ew", lambda r: r["conflicts"]["bins"]["-0.01"])
                d = paired_difference(own, ew)
                row["surgery_bin -0.01 vs ew"] = [d.mean, d.low, d.high, d.significant]
            table[f"{control}/{method}"] = row
    wall = time.perf_counter() - start

    summary = {
        "command": "python experiments/recon_paper_scale.py " + " ".join(argv or []),
        "paper": "Shi et al., ICLR 2023 (arXiv 2302.11289)",
        "convention": DELTA_M_CONVENTION,
        "tasks": TASKS,
        "seeds": seeds,
        "methods": methods,
        "controls": controls,
        "epochs": args.epochs,
        "steps": args.epochs * steps_per_epoch,
        "search_epochs": [short, long_],
        "top_k": args.top_k,
        "threshold_S": args.threshold,
        "learning_rate": args.lr,
        "model": {
            "name": "narrow_resnet_hps",
            "widths": widths,
            "candidate_layers": order,
            "layer_sizes": {k: sizes[k] for k in order},
            "shared_parameters": shared_total,
            "parameters": sum(sizes.values()),
        },
        "search_scores": scores,
        "selected": selected,
        "stability": stability,
        "jaccard_across_seeds": seed_pairs,
        "controls_parameters": params_info,
        "single_task_base": stl_base,
        "table": table,
        "runs": [{"control": c, "method": m, "seed": s, **r} for (c, m, s), r in runs.items()],
        "wall_seconds": wall,
        "device": jax.devices()[0].device_kind,
    }
    with open(os.path.join(args.out, "results.json"), "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=1, default=float)
    md = markdown(summary)
    with open(os.path.join(args.out, "results.md"), "w", encoding="utf-8") as f:
        f.write(md + "\n")
    plot(summary, args.out)
    print(md)
    return summary


def _pm(ms, scale=1.0, digits=1):
    return f"{scale * ms[0]:.{digits}f} ± {scale * ms[1]:.{digits}f}"


def _ci(d, scale=1.0, digits=1):
    mark = " *" if d[3] else ""
    return (
        f"{scale * d[0]:+.{digits}f} [{scale * d[1]:+.{digits}f}, {scale * d[2]:+.{digits}f}]{mark}"
    )


def markdown(s: dict) -> str:
    table, info = s["table"], s["controls_parameters"]
    bins = [f"{b:g}" for b in BINS]
    lines = [
        f"# Recon at the paper's proportions: Multi-Digits, narrow_resnet_hps "
        f"({len(s['model']['candidate_layers'])} candidate layers, "
        f"{s['model']['shared_parameters']} shared parameters)",
        "",
        f"Seeds {s['seeds']}, {s['epochs']} epochs ({s['steps']} steps), Adam {s['learning_rate']}, "
        f"batch 64; search: S = {s['threshold_S']:g}, first {s['search_epochs'][0]} epochs of the "
        f"EW joint run of seed {s['seeds'][0]}; K = {s['top_k']}.",
        "",
        "Search scores: " + ", ".join(f"`{k}` {v}" for k, v in s["search_scores"].items()),
        "",
        "## Parameters",
        "",
        "| control | layers | task-specific share of shared params | model params | increase |",
        "| --- | --- | --- | --- | --- |",
    ]
    for control, p in info.items():
        layers = ", ".join(f"`{k}`" for k in p["layers"]) or (
            "random entries" if control == "rsp" else "–"
        )
        lines.append(
            f"| {control} | {layers} | {100 * p['task_specific_share_of_shared']:.1f} % | "
            f"{p['model_parameters']} | +{100 * p['increase_vs_joint']:.1f} % |"
        )
    lines += [
        "",
        "## Conflicts: share of (step, pair) with whole-remaining-shared-vector cos in (b, −1] (%)",
        "",
        "Each control on its own remaining shared parameters, beside the joint run of the same "
        "method and seed on the same parameters; Δ = control − joint, paired over seeds [95 % CI].",
        "",
        "| control / method | "
        + " | ".join(f"(−{b[1:]}, −1] control | joint | Δ" for b in bins)
        + " | per-layer cos<0 (ours) |",
        "| --- |" + " --- | --- | --- |" * len(bins) + " --- |",
    ]
    for key, row in table.items():
        cells = []
        for b in bins:
            cells += [_pm(row[f"bin {b}"], 100), _pm(row[f"joint bin {b}"], 100)]
            cells.append("–" if key.startswith("joint/") else _ci(row[f"bin {b} vs joint"], 100))
        cells.append(_pm(row["per_layer_below_0"], 100))
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Gradient surgery alone (joint runs; share in (−0.01, −1] minus EW's, paired, points): "
        + "; ".join(
            f"{k.split('/')[1]} {_ci(r['surgery_bin -0.01 vs ew'], 100)}"
            for k, r in table.items()
            if "surgery_bin -0.01 vs ew" in r
        ),
        "",
        "## Δm (%) against single-task runs of the unsplit model",
        "",
        "| control | " + " | ".join(s["methods"]) + " |",
        "| --- |" + " --- |" * len(s["methods"]),
    ]
    for control in s["controls"]:
        cells = []
        for m in s["methods"]:
            row = table[f"{control}/{m}"]
            cell = _pm(row["delta_m"], digits=2)
            if "delta_m_vs_joint" in row:
                cell += f"<br>{_ci(row['delta_m_vs_joint'], digits=2)}"
            cells.append(cell)
        lines.append(f"| {control} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Second line: Δm − Δm(joint, same method), paired over seeds [95 % CI]; * excludes 0. "
        + s["convention"],
        "",
        "## Search stability (top-K Jaccard overlap with Recon's selection)",
        "",
        "| search | layers | Jaccard |",
        "| --- | --- | --- |",
    ]
    for name, v in s["stability"].items():
        layers = ", ".join(f"`{k}`" for k in v["layers"])
        lines.append(f"| {name} | {layers} | {v['jaccard_vs_recon']:.2f} |")
    lines += [
        "",
        "Pairwise Jaccard across seeds (EW, short search): "
        + ", ".join(f"{j:.2f}" for j in s["jaccard_across_seeds"]),
        "",
        "## The paper",
        "",
        PAPER,
        "",
        f"Wall time {s['wall_seconds']:.0f} s on {s['device']} (single-task runs included).",
    ]
    return "\n".join(lines)


def plot(s: dict, out: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table, controls, methods = s["table"], s["controls"], s["methods"]
    width = 0.8 / len(controls)
    fig, ax = plt.subplots(figsize=(8, 4))
    for i, c in enumerate(controls):
        means = [table[f"{c}/{m}"]["delta_m"][0] for m in methods]
        stds = [table[f"{c}/{m}"]["delta_m"][1] for m in methods]
        x = np.arange(len(methods)) + (i - (len(controls) - 1) / 2) * width
        ax.bar(x, means, width, yerr=stds, capsize=2, label=c)
    ax.set_xticks(np.arange(len(methods)), methods)
    ax.axhline(0, color="k", lw=0.6)
    ax.set_ylabel("Δm (%) vs single-task, mean ± std")
    ax.set_title(f"Recon and controls, {len(s['seeds'])} seeds (positive = better)", fontsize=9)
    ax.legend(fontsize=7, ncol=3)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "delta_m.png"), dpi=120)
    plt.close(fig)

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.8), sharey=False)
    for ax, b in zip(axes, ("-0.01", "-0.1")):
        for i, c in enumerate(controls):
            own = [table[f"{c}/{m}"][f"bin {b}"][0] * 100 for m in methods]
            x = np.arange(len(methods)) + (i - (len(controls) - 1) / 2) * width
            ax.bar(x, own, width, label=c)
        ax.set_xticks(np.arange(len(methods)), methods, fontsize=8)
        ax.set_title(f"share of (step, pair) with cos in ({b}, −1] (%)", fontsize=9)
    axes[0].legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "conflict_bins.png"), dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
