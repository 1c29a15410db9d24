"""Train a multi-task model with one or more mtlx methods: ``python -m mtlx.train --help``.

The default run trains on Multi-Digits (offline, bundled with scikit-learn) and prints one row of
per-task test metrics per method, and Δm against single-task baselines (each task trained alone
with the same model and budget, first; ``--baselines FILE`` reuses saved ones)::

  python -m mtlx.train --method ew rlw pcgrad mgda uw_so

A benchmark config (``experiments/<dataset>_<model>.py``, a ``get_config()`` returning a
:class:`mtlx.training.TrainConfig`) sets everything; flags override it::

  python -m mtlx.train --config experiments/multi_mnist_lenet.py --method upgrad --steps 2000

Any method on the ``mtlx`` module works (``--method cagrad --method-kwargs '{"c": 0.4}'``), any
registered dataset (``--dataset yeast``, ``--dataset cifar10_corrupted --dataset-kwargs
corruption=fog``) and any optax optimizer (``--optimizer sgd --learning-rate 0.1
--optimizer-kwargs momentum=0.9``; ``signum``, ``sign_sgd``, ``adamw``, ``adatask``, ...).
Several learning rates (``--lr 1e-3 3e-3 1e-2``) train as one vmapped sweep per method
(:func:`mtlx.training.train_sweep`; no checkpoints). Keyword-argument flags take a JSON object
or ``key=value`` pairs. With ``--workdir`` each method writes JSON-lines
logs to ``<workdir>/<method>/log.jsonl``, and with ``--checkpoint-every`` orbax checkpoints that a
rerun of the same command resumes from, bit-exactly.

Several processes (one per host, or several on one machine) train one run when each gets the same
command plus ``--coordinator HOST:PORT --num-processes N --process-id I`` (or the environment
variables ``JAX_COORDINATOR_ADDRESS``, ``JAX_NUM_PROCESSES``, ``JAX_PROCESS_ID``): the mesh spans
every process's devices, each process loads its rows of every batch, and process 0 alone prints
and writes logs (see :mod:`mtlx.training.distributed` and the README)::

  python -m mtlx.train --method upgrad --task-devices 4 --coordinator 10.0.0.1:1234 \\
      --num-processes 2 --process-id 0      # on the first host; --process-id 1 on the second
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

from mtlx.data import dataset_names

DEFAULT_METHODS = ("ew",)
# --baselines auto trains single-task baselines only up to this many tasks (one run per task).
MAX_AUTO_BASELINE_TASKS = 16


def _load_config_file(path: str):
    from mtlx.training import TrainConfig

    if not os.path.isfile(path):
        raise SystemExit(f"error: no config file {path!r}.")
    spec = importlib.util.spec_from_file_location(f"_mtlx_config_{abs(hash(path))}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise SystemExit(f"error: {path} has no get_config() function.")
    config = module.get_config()
    if not isinstance(config, TrainConfig):
        raise SystemExit(f"error: {path}: get_config() must return a mtlx.training.TrainConfig.")
    return config


def _json_arg(text: str) -> dict[str, Any]:
    """A JSON object (``'{"c": 0.4}'``) or one ``key=value`` pair (the value read as JSON when it
    parses: ``momentum=0.9``, ``nesterov=true``, ``hidden=[32,32]``; else as a string)."""
    text = text.strip()
    if "=" in text and not text.startswith("{"):
        key, _, raw = text.partition("=")
        key = key.strip()
        if not key.isidentifier():
            raise argparse.ArgumentTypeError(f"not a keyword name: {key!r} in {text!r}")
        try:
            value: Any = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        return {key: value}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(
            f"expected a JSON object like '{{\"c\": 0.4}}' or key=value pairs; got {text!r} ({e})"
        ) from e
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(
            f"expected a JSON object like '{{\"c\": 0.4}}' or key=value pairs; got {text!r}"
        )
    return value


def _merge(parts: Sequence[dict[str, Any]] | None) -> dict[str, Any] | None:
    if parts is None:
        return None
    merged: dict[str, Any] = {}
    for part in parts:
        merged.update(part)
    return merged


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m mtlx.train",
        description=(
            "Train a multi-task model with mtlx methods and print per-task test metrics. Without "
            "--config: Multi-Digits (offline) with an MLP. Flags override the config."
        ),
        epilog=(
            "Unset flags keep the config's values (the defaults: mtlx.training.TrainConfig). "
            "Example: python -m mtlx.train --method ew rlw pcgrad mgda uw_so"
        ),
    )
    add = parser.add_argument
    kwargs_help = "a JSON object or key=value pairs"
    add("--config", help="a config file with get_config() (see experiments/)", default=None)
    add(
        "--dataset",
        help="a registered dataset: " + ", ".join(n for n in dataset_names() if n != "synthetic"),
        default=None,
    )
    add(
        "--dataset-kwargs",
        type=_json_arg,
        nargs="+",
        default=None,
        help=f"dataset loader arguments, {kwargs_help}",
    )
    add(
        "--model",
        help=(
            "a factory in mtlx.models: hard sharing (mlp_hps, lenet_hps, resnet18_hps, "
            "narrow_resnet_hps, segnet_mtl) or an architecture (mmoe, cgc, ple, dselect_k, "
            "cross_stitch, nddr_cnn, mtan, ltb)"
        ),
        default=None,
    )
    add(
        "--model-kwargs",
        type=_json_arg,
        nargs="+",
        default=None,
        help=f"model arguments, {kwargs_help}",
    )
    add(
        "--method",
        nargs="+",
        default=None,
        help="one or more mtlx methods (ew rlw pcgrad mgda uw_so upgrad ...), each optionally with "
        "its own arguments (uw_so:temperature=50); one run each "
        f"(default: the config's, {DEFAULT_METHODS[0]})",
    )
    add(
        "--method-kwargs",
        type=_json_arg,
        nargs="+",
        default=None,
        help=f"method arguments, {kwargs_help}",
    )
    add(
        "--optimizer",
        default=None,
        help="an optax optimizer name (adam, sgd, signum, sign_sgd, adamw, ...)",
    )
    add(
        "--learning-rate",
        "--lr",
        dest="lr",
        type=float,
        nargs="+",
        default=None,
        help="learning rate; several values train a grid, one vmapped sweep per method "
        "(one row per rate, no checkpoints; single-task baselines use the first rate)",
    )
    add(
        "--optimizer-kwargs",
        type=_json_arg,
        nargs="+",
        default=None,
        help=f"optimizer arguments, {kwargs_help} (e.g. momentum=0.9 for sgd)",
    )
    add("--batch-size", type=int, default=None)
    add("--steps", type=int, default=None, help="optimizer steps")
    add("--steps-per-call", type=int, default=None, help="steps per device call (one host sync)")
    add(
        "--no-scan",
        action="store_true",
        help="run a call's steps as separate jitted steps instead of one lax.scan (faster for "
        "convolutional models on CPU)",
    )
    add("--eval-every", type=int, default=None, help="evaluate every N steps (0: at the end)")
    add("--log-every", type=int, default=None, help="log every N steps")
    add("--seed", type=int, default=None)
    add("--workdir", default=None, help="logs and checkpoints go to WORKDIR/<method>/")
    add("--checkpoint-every", type=int, default=None, help="checkpoint every N steps (0: never)")
    add(
        "--no-resume",
        action="store_true",
        help="start over: move existing checkpoints in the workdir aside (never deleted)",
    )
    add("--num-devices", type=int, default=None, help="data-parallel devices (mesh)")
    add("--task-devices", type=int, default=None, help="devices on the Jacobian's task axis")
    add("--chunk-size", type=int, default=None, help="Jacobian rows live at once")
    add(
        "--coordinator",
        default=None,
        metavar="HOST:PORT",
        help="multi-process run: process 0's address, the same on every process "
        "(default: $JAX_COORDINATOR_ADDRESS; none: one process)",
    )
    add(
        "--num-processes",
        type=int,
        default=None,
        help="multi-process run: processes in all (default: $JAX_NUM_PROCESSES)",
    )
    add(
        "--process-id",
        type=int,
        default=None,
        help="multi-process run: this process's rank, 0 to N-1; 0 prints and writes the logs "
        "(default: $JAX_PROCESS_ID)",
    )
    add(
        "--skip-nonfinite",
        action="store_true",
        help="skip (and count) updates whose losses or result are not finite instead of stopping "
        "(mtlx.skip_nonfinite around the chain)",
    )
    add(
        "--monitor-conflicts",
        type=int,
        default=None,
        metavar="N",
        help="record gradient conflicts between tasks on every N-th update (mtlx.conflict_monitor "
        "at the head of the chain; T backward passes on those updates) and print their summary",
    )
    add(
        "--baselines",
        default="auto",
        metavar="{auto,train,none,FILE}",
        help="single-task baselines for Δm: auto (the config's, else train each task alone "
        f"when there are at most {MAX_AUTO_BASELINE_TASKS} tasks), train, none, or a JSON file "
        "from --save-baselines",
    )
    add("--save-baselines", default=None, metavar="FILE", help="write the baselines used to FILE")
    add("--no-progress", action="store_true", help="no progress bar")
    add("--json", action="store_true", help="print the results as JSON lines instead of a table")
    return parser


_OVERRIDES = {
    "dataset": "dataset",
    "dataset_kwargs": "dataset_kwargs",
    "model": "model",
    "model_kwargs": "model_kwargs",
    "method_kwargs": "method_kwargs",
    "optimizer": "optimizer",
    "lr": "learning_rate",
    "optimizer_kwargs": "optimizer_kwargs",
    "batch_size": "batch_size",
    "steps": "num_steps",
    "steps_per_call": "steps_per_call",
    "eval_every": "eval_every",
    "log_every": "log_every",
    "seed": "seed",
    "checkpoint_every": "checkpoint_every",
    "num_devices": "num_devices",
    "task_devices": "task_devices",
    "chunk_size": "chunk_size",
    "monitor_conflicts": "conflict_monitor_every",
}


def configs_from_args(args: argparse.Namespace) -> list:
    """One :class:`~mtlx.training.TrainConfig` per requested method."""
    from mtlx.training import TrainConfig
    from mtlx.training import config as config_lib

    base = _load_config_file(args.config) if args.config else TrainConfig()
    if args.lr is not None and not isinstance(args.lr, int | float):
        args.lr = args.lr[0]  # a grid's first rate; main() sweeps the others (learning_rates)
    for name in ("dataset_kwargs", "model_kwargs", "method_kwargs", "optimizer_kwargs"):
        setattr(args, name, _merge(getattr(args, name)))
    changes = {field: getattr(args, arg) for arg, field in _OVERRIDES.items()}
    changes = {k: v for k, v in changes.items() if v is not None}
    if args.dataset is not None and args.dataset != base.dataset:
        if args.dataset not in dataset_names():
            raise ValueError(
                f"unknown dataset {args.dataset!r}; choose from {', '.join(dataset_names())}."
            )
        changes.setdefault("dataset_kwargs", {})  # the config's arguments are its dataset's
        changes.setdefault("baselines", None)  # and so are its baselines
    if args.optimizer is not None and args.optimizer != base.optimizer:
        changes.setdefault("optimizer_kwargs", {})  # the config's belong to its optimizer
    if args.model is not None and args.model != base.model and args.model_kwargs is None:
        changes["model_kwargs"] = {}  # the config's model arguments belong to its own model
    if args.steps is not None and args.steps_per_call is None and args.steps % base.steps_per_call:
        changes["steps_per_call"] = 1
    if args.no_resume:
        changes["resume"] = False
    if args.no_scan:
        changes["scan"] = False
    if args.skip_nonfinite:
        changes["skip_nonfinite"] = True
    if args.no_progress:
        changes["progress"] = False
    base = base.replace(**changes)
    methods = args.method or [base.method]
    configs = []
    for method in methods:
        spec, extra = parse_method_spec(method)
        name = config_lib.resolve_method_name(spec)
        workdir = None if args.workdir is None else os.path.join(args.workdir, name)
        kwargs = {**base.method_kwargs, **extra}
        configs.append(base.replace(method=name, method_kwargs=kwargs, workdir=workdir).validate())
    return configs


def parse_method_spec(text: str) -> tuple[str, dict[str, Any]]:
    """``"uw_so:temperature=50"`` -> ``("uw_so", {"temperature": 50})``: one method's own arguments.

    After the name, ``key=value`` pairs separated by commas (values read as JSON when they parse),
    for this method only; ``--method-kwargs`` applies to every method.
    """
    name, _, spec = text.partition(":")
    kwargs: dict[str, Any] = {}
    for item in filter(None, (x.strip() for x in spec.split(","))):
        if "=" not in item:
            raise SystemExit(
                f"error: --method {text!r}: expected NAME:key=value[,key=value]; got {item!r}."
            )
        kwargs.update(_json_arg(item))
    return name, kwargs


def resolve_baselines(args: argparse.Namespace, config: Any) -> dict[str, dict[str, float]] | None:
    """The single-task baselines ``--baselines`` asks for (training them if needed), or None."""
    from mtlx.training import datasets, distributed, load_baselines, single_task_baselines

    choice = args.baselines
    if choice == "none":
        return None
    if choice not in ("auto", "train"):
        return load_baselines(choice)
    if choice == "auto" and config.baselines:
        return dict(config.baselines)
    ds = datasets.load(config.dataset, **config.dataset_kwargs)
    num_tasks = len(ds.tasks)
    # In a multi-process run every process trains the baselines; process 0 alone says so.
    say = print if distributed.is_writer() else (lambda *a, **k: None)
    if choice == "auto" and num_tasks > MAX_AUTO_BASELINE_TASKS:
        say(
            f"no Δm: {num_tasks} tasks would need {num_tasks} single-task runs; pass "
            "--baselines train (or --baselines FILE) to get it.",
            file=sys.stderr,
        )
        return None
    say(
        f"training {num_tasks} single-task baselines for Δm (each task alone: scalarization with "
        "a one-hot weight, same model and budget; --baselines none skips this)...",
        file=sys.stderr,
        flush=True,
    )
    workdir = None if args.workdir is None else os.path.join(args.workdir, "single_task")
    return single_task_baselines(config, dataset=ds, workdir=workdir)


def format_table(results: Sequence) -> str:
    """A markdown table: one row per run, one column per (task, metric), Δm and wall time."""
    columns = [(t, m) for t, ms in results[0].results.items() for m in ms]
    has_dm = any(r.delta_m is not None for r in results)
    header = ["method", *[f"{t} {m}" for t, m in columns]]
    header += ["Δm (%)"] if has_dm else []
    header += ["time (s)"]
    rows = []
    for r in results:
        label = r.config.method
        if r.config.method_kwargs:
            label += ":" + ",".join(f"{k}={v}" for k, v in r.config.method_kwargs.items())
        if len({x.config.learning_rate for x in results}) > 1:
            label += f" @ lr={r.config.learning_rate:g}"
        row = [label, *[f"{r.results[t][m]:.4f}" for t, m in columns]]
        if has_dm:
            row.append("-" if r.delta_m is None else f"{r.delta_m:+.2f}")
        row.append(f"{r.seconds:.1f}")
        rows.append(row)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def learning_rates(args: argparse.Namespace) -> list[float] | None:
    """The ``--lr`` grid when it has several rates (``None`` for one rate or none)."""
    rates = args.lr if isinstance(args.lr, list) else None
    return rates if rates is not None and len(rates) > 1 else None


def _sweep_rows(config: Any, rates: Sequence[float]) -> list[Any]:
    """One row per learning rate of one method: ``train_sweep`` over the rates."""
    from mtlx.training import delta_m, train_sweep

    sweep = train_sweep(config, learning_rate=rates)
    rows = []
    for rate, results in zip(rates, sweep.results):
        rows.append(
            SimpleNamespace(
                config=config.replace(learning_rate=float(rate)),
                results=results,
                delta_m=(
                    delta_m(results, config.baselines, sweep.tasks) if config.baselines else None
                ),
                seconds=sweep.seconds / len(rates),
            )
        )
    return rows


def _conflicts(result: Any) -> dict[str, dict[str, Any]]:
    """The conflict monitor's summary of a run (per layer and ``"<all shared>"``)."""
    from mtlx.analysis import layer_conflict_summary

    return layer_conflict_summary(result.state.opt_state)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from mtlx.training import distributed

    try:  # before anything computes with JAX
        multi = distributed.initialize(args.coordinator, args.num_processes, args.process_id)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    rates = learning_rates(args)
    if rates is not None and multi:
        print(
            "error: a learning-rate grid trains as one vmapped sweep in one process: run it "
            "without --coordinator/--num-processes, or pass one --lr.",
            file=sys.stderr,
        )
        return 2
    if rates is not None and args.monitor_conflicts:
        print("error: a learning-rate grid runs without the conflict monitor.", file=sys.stderr)
        return 2
    if rates is not None and (args.workdir is not None or args.checkpoint_every is not None):
        print(
            "error: a learning-rate grid trains as one vmapped sweep without logs or checkpoints: "
            "drop --workdir/--checkpoint-every, or pass one --lr.",
            file=sys.stderr,
        )
        return 2
    try:
        configs = configs_from_args(args)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    # Every process trains; process 0 alone prints and writes files.
    quiet = multi and not distributed.is_writer()
    if quiet:
        args.save_baselines = None

    from mtlx.training import DELTA_M_CONVENTION, save_baselines, train

    try:
        baselines = resolve_baselines(args, configs[0])
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    configs = [c.replace(baselines=baselines) for c in configs]
    if args.save_baselines and baselines:
        save_baselines(args.save_baselines, baselines, config=configs[0])
    if args.json and baselines and not quiet:
        print(json.dumps({"baselines": baselines}), flush=True)

    results = []
    for config in configs:
        try:
            runs = [train(config)] if rates is None else _sweep_rows(config, rates)
        except ValueError as e:  # a configuration the run refuses (e.g. a mismatched resume)
            print(f"error: {e}", file=sys.stderr)
            return 2
        results.extend(runs)
        conflicts = _conflicts(runs[0]) if config.conflict_monitor_every else None
        for result in runs if args.json and not quiet else ():
            record = {
                "method": config.method,
                "learning_rate": result.config.learning_rate,
                "results": result.results,
                "delta_m": result.delta_m,
                "seconds": result.seconds,
            }
            if conflicts is not None:
                record["conflicts"] = conflicts
            print(json.dumps(record), flush=True)
        if conflicts is not None and not args.json and not quiet:
            whole = conflicts["<all shared>"]
            print(
                f"{config.method}: gradient conflicts over all shared parameters, "
                f"{whole['observations']} (update, task pair) observations: mean cosine "
                f"{whole['mean_cosine']:+.3f} ± {whole['std_cosine']:.3f}, cos < 0 in "
                f"{100 * whole['conflict_fraction'][0]:.1f} %",
                flush=True,
            )
    if not args.json and not quiet:
        c = configs[0]
        lr = c.learning_rate if rates is None else "grid"
        print(
            f"\n{c.dataset} / {c.model} / {c.optimizer}(lr={lr}), "
            f"{c.num_steps} steps of batch {c.batch_size}, seed {c.seed}; test set:"
        )
        print(format_table(results))
        if baselines:
            base = ", ".join(
                f"{t} {m} {v:.4f}" for t, ms in baselines.items() for m, v in ms.items()
            )
            print(f"\nSingle-task baselines: {base}.\n{DELTA_M_CONVENTION}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
