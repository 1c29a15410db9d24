"""Do MTL features transfer better to corrupted images than STL features? (Elich et al., 2024)

Elich, Kirchdorfer, Köhler, Schott, "Challenging Common Paradigms in Multi-Task Learning" (2024,
arXiv:2311.04698) compare how features learned by multi-task (MTL) and single-task (STL) training
transfer to common image corruptions. The protocol, here on Multi-Digits:

1. train backbones on clean data through ``mtlx.training.train``: one MTL model per method
   (``--methods``, default EW, RLW, UW) and one STL model per task (the same model and budget,
   ``mtlx.scalarization`` with a one-hot weight, as :func:`mtlx.training.run_study`'s base);
2. for each corruption and severity (:mod:`mtlx.data.corruptions`, CIFAR-10-C's parameters),
   corrupt the training and the test images (targets unchanged), freeze each backbone, and fit
   **fresh** heads on the corrupted training data (``train(config, model=, tx=)`` with a ``tx``
   that zeroes every update of the shared parameters; all backbones get the same head
   initialisation, data order and head budget);
3. compare on the corrupted test data. Per task ``t``, backbone pair and seed:
   ``δ_t = 100 s_t (M_t^MTL − M_t^STL) / |M_t^STL|`` with ``s_t = +1`` if higher is better
   (accuracy) and ``−1`` if lower is better (MAE); ``δ`` = the mean over tasks, in %, so
   **δ > 0 means the MTL features transfer better** (Δm's convention, with the STL backbone
   under the same corruption as the base). The STL metric of task t comes from STL backbone t.

Each table cell is mean ± std over seeds (MTL and STL of one seed share the seed), and the 95 %
Student-t interval of δ over seeds (paired by construction). "clean" is the same head refit on
uncorrupted data: the δ every corruption is to be read against.

Command (≤ 15 min on 2 CPU cores)::

  python experiments/corruption_transfer.py

Writes ``results.json``, ``results.md`` and ``delta.png`` to ``--out`` (default
``experiments/results/corruption_transfer``).
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
import mtlx.models
from mtlx.data import corruptions
from mtlx.training import Dataset, TrainConfig, datasets, make_model, train
from mtlx.training import study as study_lib

PAPER = """\
The paper's verdict (abstract of arXiv:2311.04698): "we compare the transferability of features
learned through MTL and STL on common image corruptions, and find no conclusive evidence that MTL
leads to superior transferability." Its per-corruption figures could not be checked offline here,
so no number of the paper is quoted."""


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default=os.path.join("experiments", "results", "corruption_transfer"))
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--tasks", default="left,right", help="Multi-Digits tasks")
    p.add_argument("--methods", default="ew,rlw,uw", help="MTL methods (mtlx names)")
    p.add_argument("--corruptions", default=",".join(corruptions.CORRUPTIONS))
    p.add_argument("--severities", default="1,3,5")
    p.add_argument("--steps", type=int, default=1000, help="backbone training steps")
    p.add_argument("--head-steps", type=int, default=200, help="head-fitting steps")
    p.add_argument("--steps-per-call", type=int, default=200)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--hidden", default="256,256", help="MLP backbone widths")
    p.add_argument("--num-train", type=int, default=None)
    p.add_argument("--num-test", type=int, default=None)
    p.add_argument("--smoke", action="store_true", help="no compilation cache (CI smoke test)")
    return p.parse_args(argv)


def _split(text: str) -> list[str]:
    return [x for x in text.split(",") if x]


def frozen_backbone_tx(learning_rate: float) -> optax.GradientTransformation:
    """EW + Adam on the heads; every update of a shared parameter (the backbone) set to zero.

    The zeroing comes after Adam, so the backbone's parameters never move (its Adam moments are
    kept but unused); the heads see the same updates as under ``optax.chain(mtlx.ew(),
    optax.adam(lr))``.
    """

    def zero_shared(updates, state, params=None):
        del params
        updates = jax.tree_util.tree_map_with_path(
            lambda path, u: jnp.zeros_like(u) if mtlx.models.is_shared(path) else u, updates
        )
        return updates, state

    freeze = optax.GradientTransformation(lambda params: optax.EmptyState(), zero_shared)
    return optax.chain(mtlx.ew(), optax.adam(learning_rate), freeze)


def fresh_heads(trained: nnx.Module, config: TrainConfig, ds: Dataset, head_seed: int):
    """``trained``'s backbone (encoder) under new heads initialised from ``head_seed``."""
    model = make_model(
        config.model,
        len(ds.tasks),
        head_seed,
        np.shape(ds.train["image"][0]),
        output_sizes={t.name: t.output_size for t in ds.tasks},
        **config.model_kwargs,
    )
    nnx.update(model.encoder, nnx.state(trained.encoder))
    return model


def corrupted(ds: Dataset, name: str, severity: int, seed: int, index: int) -> Dataset:
    """``ds`` with its train and test images corrupted (noise seeded by seed, corruption, split)."""
    if name == "clean":
        return ds
    rng = lambda split: np.random.default_rng([seed, index, severity, split])  # noqa: E731
    return Dataset(
        ds.tasks,
        {**ds.train, "image": corruptions.corrupt(ds.train["image"], name, severity, seed=rng(0))},
        {**ds.test, "image": corruptions.corrupt(ds.test["image"], name, severity, seed=rng(1))},
        ds.input_key,
    )


def delta(mtl: dict, stl: dict, tasks) -> float:
    """δ (%): mean over tasks of the signed relative difference MTL vs STL (positive = MTL better)."""
    out = []
    for t in tasks:
        metric = next(iter(t.kind.directions()))
        sign = 1.0 if t.kind.higher_is_better(metric) else -1.0
        out.append(
            100.0 * sign * (mtl[t.name][metric] - stl[t.name][metric]) / abs(stl[t.name][metric])
        )
    return float(np.mean(out))


def main(argv=None) -> dict:
    args = parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    if not args.smoke:  # every head fit after the first reuses the compiled step
        study_lib.enable_compilation_cache(os.path.join(args.out, ".jax_cache"))
    seeds = [int(s) for s in _split(args.seeds)]
    tasks_names = tuple(_split(args.tasks))
    methods = _split(args.methods)
    names = _split(args.corruptions)
    severities = [int(s) for s in _split(args.severities)]
    conditions = [("clean", 0)] + [(n, s) for n in names for s in severities]
    ds = datasets.load(
        "digits", tasks=tasks_names, num_train=args.num_train, num_test=args.num_test
    )
    tasks = ds.tasks
    base = TrainConfig(
        dataset="digits",
        dataset_kwargs={"tasks": tasks_names},
        model="mlp_hps",
        model_kwargs={"hidden": tuple(int(h) for h in _split(args.hidden))},
        learning_rate=args.lr,
        batch_size=args.batch_size,
        num_steps=args.steps,
        steps_per_call=args.steps_per_call,
        log_every=args.steps,
        progress=False,
    )
    head_config = base.replace(
        num_steps=args.head_steps,
        steps_per_call=min(args.steps_per_call, args.head_steps),
        log_every=args.head_steps,
    )
    backbones = [(m, base.replace(method=m)) for m in methods]
    backbones += [
        (f"stl/{t.name}", study_lib.single_task_config(base, i, len(tasks)))
        for i, t in enumerate(tasks)
    ]
    start = time.perf_counter()
    # results[seed][backbone][condition] = {task: {metric: value}}
    results: dict[int, dict[str, dict[str, dict]]] = {}
    clean_results: dict[int, dict[str, dict]] = {}
    frozen_ok = True
    for seed in seeds:
        trained = {}
        for label, config in backbones:
            run = train(config.replace(seed=seed), dataset=ds)
            trained[label] = run.model()
            clean_results.setdefault(seed, {})[label] = run.results
        print(f"seed {seed}: backbones trained ({time.perf_counter() - start:.0f} s)")
        results[seed] = {label: {} for label, _ in backbones}
        for index, (name, severity) in enumerate(conditions):
            cds = corrupted(ds, name, severity, seed, index)
            for label, _ in backbones:
                model = fresh_heads(trained[label], head_config, ds, head_seed=1000 + seed)
                before = nnx.state(model.encoder)
                fit = train(
                    head_config.replace(seed=seed),
                    dataset=cds,
                    model=model,
                    tx=frozen_backbone_tx(args.lr),
                )
                after = nnx.state(fit.model().encoder)
                frozen_ok &= all(
                    bool(jnp.array_equal(a, b))
                    for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(after))
                )
                results[seed][label][f"{name}/{severity}"] = fit.results
        print(f"seed {seed}: heads fitted ({time.perf_counter() - start:.0f} s)")
    seconds = time.perf_counter() - start
    if not frozen_ok:
        raise RuntimeError("a backbone changed while its heads were fitted: the freeze failed.")

    def stl_of(seed, cond):
        return {t.name: results[seed][f"stl/{t.name}"][cond][t.name] for t in tasks}

    conds = [f"{n}/{s}" for n, s in conditions]
    deltas = {
        m: {c: [delta(results[s][m][c], stl_of(s, c), tasks) for s in seeds] for c in conds}
        for m in methods
    }
    first_metric = {t.name: next(iter(t.kind.directions())) for t in tasks}

    def metric(seed, label, cond, task):
        return results[seed][label][cond][task][first_metric[task]]

    metrics = {
        label: {
            c: {
                t.name: study_lib.mean_std([metric(s, label, c, t.name) for s in seeds])
                for t in tasks
            }
            for c in conds
        }
        for label in methods
    }
    metrics["stl"] = {}
    for c in conds:  # the STL row: task t from STL backbone t
        metrics["stl"][c] = {
            t.name: study_lib.mean_std([metric(s, f"stl/{t.name}", c, t.name) for s in seeds])
            for t in tasks
        }
    summary = {
        m: {
            c: {
                "mean_std": study_lib.mean_std(v),
                "ci": vars(study_lib.paired_difference(v, [0.0] * len(v))),
            }
            for c, v in deltas[m].items()
        }
        for m in methods
    }
    # over the corrupted conditions: per seed the mean δ over corruptions x severities
    overall = {}
    for m in methods:
        per_seed = [float(np.mean([deltas[m][c][i] for c in conds[1:]])) for i in range(len(seeds))]
        clean = deltas[m]["clean/0"]
        overall[m] = {
            "mean_delta_corrupted": study_lib.mean_std(per_seed),
            "ci": vars(study_lib.paired_difference(per_seed, [0.0] * len(seeds))),
            "corrupted_minus_clean": vars(study_lib.paired_difference(per_seed, clean)),
            "conditions_significant_positive": [
                c
                for c in conds[1:]
                if _sig(summary[m][c]["ci"]) and summary[m][c]["ci"]["mean"] > 0
            ],
            "conditions_significant_negative": [
                c
                for c in conds[1:]
                if _sig(summary[m][c]["ci"]) and summary[m][c]["ci"]["mean"] < 0
            ],
        }
    verdict = _verdict(overall, methods)
    out = {
        "command": "python experiments/corruption_transfer.py " + " ".join(argv or []),
        "convention": "δ (%) = mean over tasks of 100 s_t (M_MTL − M_STL) / |M_STL|, s_t = +1 if "
        "higher is better, −1 if lower; positive = MTL backbone transfers better; the STL base is "
        "the single-task backbone of the same task, seed and corruption.",
        "seeds": seeds,
        "tasks": list(tasks_names),
        "methods": methods,
        "conditions": conds,
        "settings": vars(args),
        "clean_backbone_results": {str(s): r for s, r in clean_results.items()},
        "head_fit_results": {str(s): r for s, r in results.items()},
        "delta": summary,
        "metrics": metrics,
        "overall": overall,
        "verdict": verdict,
        "frozen_backbones_unchanged": frozen_ok,
        "wall_seconds": seconds,
        "device": jax.devices()[0].device_kind,
    }
    with open(os.path.join(args.out, "results.json"), "w", encoding="utf-8") as f:
        json.dump(out, f, indent=1, default=float)
    md = _markdown(out, args, tasks, methods, conds, deltas, summary, metrics, overall, seconds)
    with open(os.path.join(args.out, "results.md"), "w", encoding="utf-8") as f:
        f.write(md + "\n")
    _plot(summary, methods, names, severities, os.path.join(args.out, "delta.png"), len(seeds))
    print(md)
    return out


def _sig(ci: dict) -> bool:
    return ci["n"] > 1 and (ci["low"] > 0 or ci["high"] < 0)


def _ci(ci: dict, digits: int = 2) -> str:
    if ci["n"] < 2:
        return f"{ci['mean']:+.{digits}f} (n = {ci['n']})"
    mark = " *" if _sig(ci) else ""
    return f"[{ci['low']:+.{digits}f}, {ci['high']:+.{digits}f}]{mark}"


def _verdict(overall, methods) -> dict[str, str]:
    out = {}
    for m in methods:
        o = overall[m]
        ci = o["ci"]
        if ci["n"] < 2:
            out[m] = "inconclusive (one seed)"
        elif _sig(ci) and ci["mean"] < 0:
            out[m] = (
                f"contradicted for {m}: over the corruptions the MTL backbone transfers worse "
                f"(mean δ {ci['mean']:+.2f} % {_ci(ci)})"
            )
        elif _sig(ci):
            out[m] = (
                f"reproduced for {m}: over the corruptions the MTL backbone transfers better "
                f"(mean δ {ci['mean']:+.2f} % {_ci(ci)})"
            )
        else:
            out[m] = (
                f"reproduced (no worse) for {m}: mean δ {ci['mean']:+.2f} % {_ci(ci)} is not "
                "distinguishable from 0"
            )
        out[m] += (
            f"; significant conditions: {len(o['conditions_significant_positive'])} positive, "
            f"{len(o['conditions_significant_negative'])} negative"
        )
    return out


def _markdown(out, args, tasks, methods, conds, deltas, summary, metrics, overall, seconds) -> str:
    lines = [
        f"# Corruption transfer, MTL vs STL backbones, on Multi-Digits ({', '.join(out['tasks'])})",
        "",
        f"MLP {args.hidden} backbone + linear heads, Adam {args.lr}, batch {args.batch_size}; "
        f"backbones {args.steps} steps on clean data; fresh heads fitted {args.head_steps} steps "
        "on the corrupted training images with the backbone frozen, evaluated on the corrupted "
        f"test images. {len(out['seeds'])} seeds ({', '.join(map(str, out['seeds']))}). "
        f"Corruptions: CIFAR-10-C's parameters (`mtlx.data.corruptions`), severities "
        f"{args.severities}.",
        "",
        f"Convention: {out['convention']}",
        "",
        "## δ (%) per corruption and severity: mean ± std over seeds, 95 % interval (* excludes 0)",
        "",
        "| corruption | severity | " + " | ".join(f"δ {m} | CI {m}" for m in methods) + " |",
        "|" + " --- |" * (2 + 2 * len(methods)),
    ]
    for c in conds:
        name, sev = c.split("/")
        cells = []
        for m in methods:
            mean, std = summary[m][c]["mean_std"]
            cells += [f"{mean:+.2f} ± {std:.2f}", _ci(summary[m][c]["ci"])]
        lines.append(f"| {name} | {sev if sev != '0' else '–'} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "## Over all corrupted conditions (per seed the mean δ, then over seeds)",
        "",
        "| method | mean δ (%) | 95 % CI | corrupted − clean δ [95 % CI] | conditions δ > 0 * | "
        "conditions δ < 0 * |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for m in methods:
        o = overall[m]
        d = o["corrupted_minus_clean"]
        lines.append(
            f"| {m} | {o['mean_delta_corrupted'][0]:+.2f} ± {o['mean_delta_corrupted'][1]:.2f} | "
            f"{_ci(o['ci'])} | {d['mean']:+.2f} {_ci(d)} | "
            f"{len(o['conditions_significant_positive'])} | "
            f"{len(o['conditions_significant_negative'])} |"
        )
    metric_names = {t.name: next(iter(t.kind.directions())) for t in tasks}
    labels = methods + ["stl"]
    lines += [
        "",
        "## Task metrics after the head refit (mean ± std over seeds; STL: task t's own backbone)",
        "",
        "| corruption | severity | "
        + " | ".join(f"{lab} {t} {metric_names[t]}" for lab in labels for t in metric_names)
        + " |",
        "|" + " --- |" * (2 + len(labels) * len(metric_names)),
    ]
    for c in conds:
        name, sev = c.split("/")
        cells = [
            f"{metrics[lab][c][t][0]:.3f} ± {metrics[lab][c][t][1]:.3f}"
            for lab in labels
            for t in metric_names
        ]
        lines.append(f"| {name} | {sev if sev != '0' else '–'} | " + " | ".join(cells) + " |")
    lines += ["", "## Verdict inputs", ""]
    lines += [f"- {v}" for v in out["verdict"].values()]
    lines += [
        "",
        "## The paper",
        "",
        PAPER,
        "",
        f"Backbones unchanged by the head fits: {out['frozen_backbones_unchanged']}. Wall time "
        f"{seconds:.0f} s on {out['device']}.",
    ]
    return "\n".join(lines)


def _plot(summary, methods, names, severities, path, num_seeds) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(
        1, len(severities), figsize=(4.2 * len(severities), 3.8), sharey=True, squeeze=False
    )
    width = 0.8 / max(len(methods), 1)
    x = np.arange(len(names))
    for ax, sev in zip(axes[0], severities):
        for j, m in enumerate(methods):
            means = [summary[m][f"{n}/{sev}"]["mean_std"][0] for n in names]
            stds = [summary[m][f"{n}/{sev}"]["mean_std"][1] for n in names]
            ax.bar(x + (j - (len(methods) - 1) / 2) * width, means, width, yerr=stds, label=m,
                   capsize=2)  # fmt: skip
        for j, m in enumerate(methods):
            ax.axhline(summary[m]["clean/0"]["mean_std"][0], color=f"C{j}", lw=0.8, ls="--")
        ax.axhline(0.0, color="k", lw=0.8)
        ax.set_xticks(x, names, rotation=50, ha="right", fontsize=8)
        ax.set_title(f"severity {sev}", fontsize=9)
    axes[0][0].set_ylabel("δ (%) MTL vs STL, mean ± std")
    axes[0][0].legend(fontsize=8)
    fig.suptitle(
        f"Head refit on corrupted data, frozen backbones; {num_seeds} seeds; dashed: clean δ; "
        "positive = MTL better",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
