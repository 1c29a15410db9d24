"""The random-weighting litmus test (Lin et al., TMLR 2022) on offline data, over seeds.

Lin, Ye, Xu, Shi, Zhang, Kwok, "Reasonable Effectiveness of Random Weighting: A Litmus Test for
Multi-Task Learning", TMLR 2022, claim that random loss/gradient weighting (RLW/RGW) is
competitive with the state of the art, so every method should be compared with it, and that
random weights also help gradient methods (their Table 3: "RW + MGDA", ...). This script trains,
through ``mtlx.training``, on one offline dataset:

1. 15 methods: EW, RLW (normal -> softmax), RGW, UW, DWA, IMTL-L, GLS, MGDA, PCGrad, CAGrad,
   IMTL-G, GradVac, GradDrop, Nash-MTL, UPGrad;
2. random weights combined with MGDA, PCGrad, CAGrad, IMTL-G and GradVac
   (``mtlx.random_row_weights`` chained before the method), each paired with the plain method;
3. RLW's distributions against each other (normal, uniform, Dirichlet, Bernoulli, constrained
   Bernoulli);

with every seed, plus the single-task runs that Δm is measured against, and writes
``results.json``, ``results.md`` and ``delta_m.png`` to ``--out``.

Commands (each ≤ 15 min on 2 CPU cores)::

  python experiments/rlw_litmus.py --dataset digits --out experiments/results/rlw_litmus_digits
  python experiments/rlw_litmus.py --dataset yeast --out experiments/results/rlw_litmus_yeast

Digits: Multi-Digits with 4 tasks (left digit, right digit, parity of their sum, left > right),
MLP 128-256-256 with linear heads. Yeast: the 14-label Yeast multi-label benchmark (2,417
examples, 103 features), MLP 103-256-256 with one logistic head per label. Adam 1e-3, batch 64.
"""

from __future__ import annotations

import argparse
import json
import os
import time

from mtlx.training import TrainConfig
from mtlx.training import study as study_lib

METHODS = (
    "ew", "rlw", "rgw", "uw", "dwa", "imtl_l", "gls",
    "mgda", "pcgrad", "cagrad", "imtl_g", "gradvac", "graddrop", "nash_mtl", "upgrad",
)  # fmt: skip
# The paper's Table 3 combines RLW with MGDA-UB, PCGrad, GradDrop, IMTL-G, GradVac and CAGrad.
RW_METHODS = ("mgda", "pcgrad", "cagrad", "imtl_g", "gradvac", "graddrop")
DISTRIBUTIONS = ("uniform", "dirichlet", "bernoulli", "constrained_bernoulli")
DATASETS = {
    "digits": dict(
        dataset="digits",
        dataset_kwargs={"tasks": ("left", "right", "sum_parity", "left_greater")},
        model="mlp_hps",
        model_kwargs={"hidden": (256, 256)},
    ),
    "yeast": dict(dataset="yeast", model="mlp_hps", model_kwargs={"hidden": (256, 256)}),
}
# The paper's own numbers (Lin et al., TMLR 2022), for the table beside ours.
PAPER = """\
The paper (arXiv 2111.10603 v2, the TMLR version; DeepLabV3+ / ResNet-50 HPS, Adam 1e-4). Its Δp
is the mean relative improvement over **EW** (not over single-task runs), in %, positive = better.

| method | NYUv2 Δp (Table 1) | Cityscapes Δp (Table 6) | CelebA avg. acc. (Table 7) |
| --- | --- | --- | --- |
| EW | +0.00 | +0.00 | 90.70 |
| UW | +0.64 | −0.09 | 90.84 |
| DWA | +0.63 | +0.05 | 90.77 |
| IMTL-L | +0.35 | +1.58 | 90.46 |
| **RLW** (normal → softmax) | **+1.04** | **+0.69** | **90.73** |
| MGDA-UB | +0.38 | +0.64 | 90.40 |
| PCGrad | −0.16 | −0.10 | 90.85 |
| GradDrop | +0.08 | −0.42 | 90.71 |
| IMTL-G | +0.80 | +1.09 | 90.80 |
| GradVac | +0.07 | −0.06 | 90.75 |
| CAGrad | +1.36 | +1.38 | 90.72 |
| **RGW** | **+0.62** | **+2.36** | **90.00** |

RW combined with gradient methods (Table 3, NYUv2 Δp, plain → + RLW): MGDA-UB +0.38 → +2.01,
PCGrad −0.16 → +0.97, GradDrop +0.08 → +0.93, IMTL-G +0.80 → +1.50, GradVac +0.07 → +0.97,
CAGrad +1.36 → +2.20 ("all the gradient balancing methods can achieve better performance").
Distributions (Sec. 5.3, Figure 1, 8 runs each, a box plot without numbers): "RLW with the
standard normal distribution achieves better and more stable performance"; c-Bernoulli slightly
better but less stable. The paper has no GLS and no Nash-MTL / UPGrad rows (later methods); its
claim: "RW methods are competitive to SOTA methods" and EW "is a weaker baseline than RLW and RGW"."""


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dataset", choices=sorted(DATASETS), default="digits")
    p.add_argument("--out", default=None, help="default: experiments/results/rlw_litmus_<dataset>")
    p.add_argument("--seeds", default="0,1,2,3,4")
    p.add_argument("--steps", type=int, default=500)
    p.add_argument("--steps-per-call", type=int, default=50)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--rw-methods", default=",".join(RW_METHODS))
    p.add_argument("--distributions", default=",".join(DISTRIBUTIONS))
    p.add_argument(
        "--smoke", action="store_true", help="tiny settings for the CI smoke test (seconds)"
    )
    return p.parse_args(argv)


def _split(text: str) -> list[str]:
    return [x for x in text.split(",") if x]


def make_runs(args) -> tuple[list[tuple[str, TrainConfig]], dict[str, str]]:
    """The study's (label, config) pairs, and the plain method each "rw+" label is paired with."""
    base = TrainConfig(
        **DATASETS[args.dataset],
        num_steps=args.steps,
        steps_per_call=args.steps_per_call,
        batch_size=args.batch_size,
        learning_rate=args.lr,
        log_every=args.steps,
        progress=False,
    )
    if args.smoke:
        base = base.replace(eval_batch_size=256)
    runs = [(m, base.replace(method=m)) for m in _split(args.methods)]
    paired = {}
    for m in _split(args.rw_methods):
        runs.append((f"rw+{m}", base.replace(method=m, random_row_weights="normal")))
        paired[f"rw+{m}"] = m
    for d in _split(args.distributions):
        runs.append((f"rlw-{d}", base.replace(method="rlw", method_kwargs={"distribution": d})))
        paired[f"rlw-{d}"] = "rlw"
    return runs, paired


def verdicts(study: study_lib.Study, methods, paired) -> dict[str, str]:
    """The claims, each decided by paired 95 % intervals over seeds."""
    out = {}
    rlw_vs_ew = study.paired_delta_m("rlw", "ew")
    out["rlw_vs_ew"] = f"Δm(RLW) − Δm(EW) = {rlw_vs_ew}: " + (
        "RLW is worse than EW beyond seed noise"
        if rlw_vs_ew.significant and rlw_vs_ew.mean < 0
        else "RLW is better than EW beyond seed noise"
        if rlw_vs_ew.significant
        else "RLW and EW are indistinguishable over these seeds"
    )
    beat = [m for m in methods if m != "rlw" and study.paired_delta_m(m, "rlw").significant
            and study.paired_delta_m(m, "rlw").mean > 0]  # fmt: skip
    lose = [m for m in methods if m != "rlw" and study.paired_delta_m(m, "rlw").significant
            and study.paired_delta_m(m, "rlw").mean < 0]  # fmt: skip
    out["beat_rlw"] = beat
    out["below_rlw"] = lose
    rw = {k: study.paired_delta_m(k, v) for k, v in paired.items() if k.startswith("rw+")}
    out["rw_helps"] = {k: str(d) for k, d in rw.items()}
    return out


def plot(study: study_lib.Study, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = study.labels
    means = [study.summary(label)["delta_m"][0] for label in labels]
    stds = [study.summary(label)["delta_m"][1] for label in labels]
    fig, ax = plt.subplots(figsize=(max(6, 0.45 * len(labels)), 4.4))
    colors = ["tab:orange" if label.startswith(("rlw", "rgw")) else "tab:blue" for label in labels]
    ax.bar(range(len(labels)), means, yerr=stds, color=colors, capsize=2)
    ax.axhline(study.summary("ew")["delta_m"][0], color="k", lw=0.8, ls="--", label="EW")
    ax.set_xticks(range(len(labels)), labels, rotation=60, ha="right", fontsize=8)
    ax.set_ylabel("Δm (%), mean ± std")
    ax.set_title(
        f"{len(study.seeds)} seeds; Δm against single-task runs (positive = better)", fontsize=9
    )
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> dict:
    args = parse_args(argv)
    out = args.out or os.path.join("experiments", "results", f"rlw_litmus_{args.dataset}")
    os.makedirs(out, exist_ok=True)
    seeds = [int(s) for s in _split(args.seeds)]
    runs, paired = make_runs(args)
    start = time.perf_counter()
    study = study_lib.run_study(
        runs,
        seeds,
        out_dir=out,
        # Seeds after the first reuse the compiled steps (not in the smoke test: the cache is a
        # process-wide JAX setting).
        compilation_cache=None if args.smoke else os.path.join(out, ".jax_cache"),
        log=None if args.smoke else print,
    )
    seconds = time.perf_counter() - start
    methods = [m for m in _split(args.methods)]
    many_tasks = len(study.metric_names()) > 4
    verdict = verdicts(study, methods, paired)
    summary = {
        **study.to_json(),
        "command": "python experiments/rlw_litmus.py " + " ".join(argv or []),
        "dataset": args.dataset,
        "wall_seconds": seconds,
        "verdict": verdict,
    }
    with open(os.path.join(out, "results.json"), "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=1, default=float)
    md = [
        f"# RLW litmus test on {args.dataset} ({len(seeds)} seeds, {args.steps} steps, Adam {args.lr})",
        "",
        "## Methods against EW (paired over seeds)",
        "",
        study.markdown("ew", per_task=not many_tasks, labels=methods),
        "",
        "## Methods against RLW (paired over seeds)",
        "",
        study.markdown("rlw", per_task=False, labels=methods),
        "",
        "## Random weights combined with gradient methods (RW + X paired with X)",
        "",
        study.markdown(
            per_task=False,
            labels=[k for k in paired if k.startswith("rw+")],
            paired_with={k: v for k, v in paired.items() if k.startswith("rw+")},
        ),
        "",
        "## RLW's distributions (paired with RLW normal -> softmax)",
        "",
        study.markdown(
            per_task=False,
            labels=["rlw", *[k for k in paired if k.startswith("rlw-")]],
            paired_with={k: v for k, v in paired.items() if k.startswith("rlw-")},
        ),
        "",
        "## Verdict inputs",
        "",
        f"- {verdict['rlw_vs_ew']}",
        f"- beat RLW beyond seed noise: {verdict['beat_rlw'] or 'none'}",
        f"- below RLW beyond seed noise: {verdict['below_rlw'] or 'none'}",
        "",
        "## The paper",
        "",
        PAPER,
        "",
        f"Wall time: {seconds:.0f} s on the CPU (single-task runs included).",
    ]
    with open(os.path.join(out, "results.md"), "w", encoding="utf-8") as f:
        f.write("\n".join(md) + "\n")
    plot(study, os.path.join(out, "delta_m.png"))
    print("\n".join(md))
    return summary


if __name__ == "__main__":
    main()
