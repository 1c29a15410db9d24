"""Lin et al.'s Table 4 question at CPU scale: does random weighting hold up on other architectures?

Lin, Ye, Xu, Shi, Zhang, Kwok, "Reasonable Effectiveness of Random Weighting: A Litmus Test for
Multi-Task Learning", TMLR 2022, compare weightings not only with hard parameter sharing but on
four architectures (their Table 4: HPS, Cross-stitch, MTAN, NDDR-CNN, on NYUv2), asking whether
random loss weighting (RLW) and random weights combined with a gradient method stay competitive
with equal weighting (EW) whatever the architecture. This script asks the same on offline data:

* architectures: ``mlp_hps``, ``cross_stitch``, ``mtan``, ``nddr_cnn`` on the same MLP backbone
  (128 -> 128 -> 128 -> 128; columns and attention between its layers; MTAN's attention units
  without batch norm, ``batch_norm=False``: with it, its eval-mode running statistics cost one
  task up to 25 accuracy points on this data, see :class:`mtlx.models.MTAN`);
* methods: EW, RLW (normal -> softmax), RLW + CAGrad (``mtlx.random_row_weights("normal")``
  chained before ``mtlx.cagrad()``);
* Multi-Digits with three tasks (left digit, right digit, parity of their sum), Adam 1e-3,
  batch 64; every (architecture, method) with every seed, and the single-task runs (the HPS MLP
  trained on one task) that Δm is measured against.

It writes ``results.json`` and ``results.md`` to ``--out``; paired differences over seeds with
95 % intervals decide each comparison.

Command (≤ 15 min on 2 CPU cores)::

  python experiments/architectures_table4.py --out experiments/results/architectures_table4
"""

from __future__ import annotations

import argparse
import json
import os
import time

from mtlx.training import TrainConfig
from mtlx.training import study as study_lib

ARCHITECTURES = ("mlp_hps", "cross_stitch", "mtan", "nddr_cnn")
METHODS = {
    "ew": dict(method="ew"),
    "rlw": dict(method="rlw"),
    "rw+cagrad": dict(method="cagrad", random_row_weights="normal"),
}
TASKS = ("left", "right", "sum_parity")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default=os.path.join("experiments", "results", "architectures_table4"))
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--steps-per-call", type=int, default=50)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--hidden", default="128,128,128")
    p.add_argument("--architectures", default=",".join(ARCHITECTURES))
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--smoke", action="store_true", help="tiny settings for the smoke test")
    return p.parse_args(argv)


def _split(text: str) -> list[str]:
    return [x for x in text.split(",") if x]


def label(arch: str, method: str) -> str:
    return f"{arch}.{method}"


def make_runs(args) -> list[tuple[str, TrainConfig]]:
    """Every (architecture, method); the first is HPS + EW, whose model the single-task runs use."""
    hidden = tuple(int(h) for h in _split(args.hidden))
    base = TrainConfig(
        dataset="digits",
        dataset_kwargs={"tasks": TASKS},
        num_steps=args.steps,
        steps_per_call=args.steps_per_call,
        batch_size=args.batch_size,
        learning_rate=args.lr,
        log_every=args.steps,
        progress=False,
    )
    if args.smoke:
        base = base.replace(eval_batch_size=256)
    extra = {"mtan": {"batch_norm": False}}
    return [
        (
            label(a, m),
            base.replace(
                model=a, model_kwargs={"hidden": hidden, **extra.get(a, {})}, **METHODS[m]
            ),
        )
        for a in _split(args.architectures)
        for m in _split(args.methods)
    ]


def verdicts(study: study_lib.Study, archs, methods) -> dict[str, object]:
    """Per architecture, each random-weighting method against EW (paired over seeds), and each
    architecture against HPS under the same method."""

    def word(d) -> str:
        if not d.significant:
            return "indistinguishable"
        return "better" if d.mean > 0 else "worse"

    out: dict[str, object] = {"vs_ew": {}, "vs_hps": {}}
    for a in archs:
        for m in methods:
            if m != "ew":
                d = study.paired_delta_m(label(a, m), label(a, "ew"))
                out["vs_ew"][label(a, m)] = {"difference": str(d), "verdict": word(d)}
    hps = archs[0]
    for a in archs[1:]:
        for m in methods:
            d = study.paired_delta_m(label(a, m), label(hps, m))
            out["vs_hps"][label(a, m)] = {"difference": str(d), "verdict": word(d)}
    return out


def delta_m_grid(study: study_lib.Study, archs, methods) -> list[str]:
    """Δm (mean ± std over seeds), architectures as rows and methods as columns (Table 4)."""
    lines = ["| architecture | " + " | ".join(methods) + " |", "|" + " --- |" * (len(methods) + 1)]
    for a in archs:
        cells = []
        for m in methods:
            mean, std = study.summary(label(a, m))["delta_m"]
            cells.append(f"{mean:+.2f} ± {std:.2f}")
        lines.append(f"| {a} | " + " | ".join(cells) + " |")
    return lines


def main(argv=None) -> dict:
    args = parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    seeds = [int(s) for s in _split(args.seeds)]
    archs, methods = _split(args.architectures), _split(args.methods)
    start = time.perf_counter()
    study = study_lib.run_study(
        make_runs(args),
        seeds,
        out_dir=args.out,
        compilation_cache=None if args.smoke else os.path.join(args.out, ".jax_cache"),
        log=None if args.smoke else print,
    )
    seconds = time.perf_counter() - start
    verdict = verdicts(study, archs, methods)
    summary = {
        **study.to_json(),
        "command": "python experiments/architectures_table4.py " + " ".join(argv or []),
        "wall_seconds": seconds,
        "verdict": verdict,
    }
    with open(os.path.join(args.out, "results.json"), "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=1, default=float)
    md = [
        f"# Architectures x random weighting ({len(seeds)} seeds, {args.steps} steps, "
        f"Adam {args.lr}, Multi-Digits {'/'.join(TASKS)})",
        "",
        "## Δm (%) against single-task HPS runs, mean ± std over seeds",
        "",
        *delta_m_grid(study, archs, methods),
        "",
        "## Every run, paired with EW on the same architecture",
        "",
        study.markdown(
            per_task=True,
            labels=[label(a, m) for a in archs for m in methods if m != "ew"],
            paired_with={label(a, m): label(a, "ew") for a in archs for m in methods if m != "ew"},
        ),
        "",
        "## Each architecture paired with HPS under the same method",
        "",
        study.markdown(
            per_task=False,
            labels=[label(a, m) for a in archs[1:] for m in methods],
            paired_with={label(a, m): label(archs[0], m) for a in archs[1:] for m in methods},
        ),
        "",
        "## Verdict inputs",
        "",
        *[f"- {k} vs EW: {v['verdict']} ({v['difference']})" for k, v in verdict["vs_ew"].items()],
        *[
            f"- {k} vs HPS: {v['verdict']} ({v['difference']})"
            for k, v in verdict["vs_hps"].items()
        ],
        "",
        f"Wall time: {seconds:.0f} s on the CPU (single-task runs included).",
    ]
    with open(os.path.join(args.out, "results.md"), "w", encoding="utf-8") as f:
        f.write("\n".join(md) + "\n")
    print("\n".join(md))
    return summary


if __name__ == "__main__":
    main()
