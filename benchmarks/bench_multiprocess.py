"""The Jacobian step with the task axis sharded across processes, as a ratio to one process.

The training step of :func:`mtlx.training.make_train_step` with ``shard_tasks=True`` (the T
Jacobian rows split over the mesh's ``"task"`` axis, the T x T Gramian reduced across it) on the
MLP of ``bench_step.py`` (256-512-512-512 encoder, T = 40 binary classification heads, batch 256,
float32, Adam; ``--hidden`` and ``--batch`` shrink it), for a bare Jacobian step (the rows combined with fixed weights, ``mtlx.mean``) and
PCGrad (``--methods`` adds UPGrad, whose T = 40 step hangs on this CPU mesh, see METHODS). Two layouts of the same 4-device mesh (data 1 x task 4):

* ``one process``: 1 process with 4 devices;
* ``two processes``: 2 processes with 2 devices each, joined by ``jax.distributed`` over
  loopback (gloo collectives on CPU), the task axis spanning both.

The two layouts are separate process groups, so they cannot be interleaved step by step as in
``bench_step.py``: they alternate launch by launch (``--launches`` each), every launch compiles,
warms up and then times its methods interleaved round by round; the reported time is the median
over every timed step of the layout. On CPU the "devices" of a process share its host's cores, so
this measures what crossing processes costs (the collectives leave the process), not a speed-up.

Usage::

  python benchmarks/bench_multiprocess.py                    # writes results/multiprocess_cpu.*
  python benchmarks/bench_multiprocess.py --batch 64 --hidden 256,256   # the 2-core CPU's size
  python benchmarks/bench_multiprocess.py --tasks 8 --steps 3 --launches 1 --out /tmp  # a quick look
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
METHODS = ("(bare jacobian)", "pcgrad", "upgrad")
# UPGrad's step at T = 40 on a 4-device CPU mesh (one process or two, task axis sharded or not)
# deadlocks (at T = 16, or on 2 devices, it runs): left out of the default until that is fixed.
DEFAULT_METHODS = ("(bare jacobian)", "pcgrad")
LAYOUTS = {"one process": (1, 4), "two processes": (2, 2)}  # processes, devices per process


def worker(spec: dict) -> None:
    """One process of a launch: builds the steps, times them, and (process 0) writes samples."""
    from mtlx.training import distributed

    if spec["processes"] > 1:
        distributed.initialize(spec["coordinator"], spec["processes"], spec["process_id"])
    import jax
    import numpy as np
    import optax
    from flax import nnx

    import mtlx
    from mtlx import models
    from mtlx.training import Task, datasets, make_train_step, sharding

    num_tasks, batch = spec["tasks"], spec["batch"]
    tasks = [Task(f"t{i}", "classification", num_classes=2) for i in range(num_tasks)]
    ds = datasets.synthetic(tasks, (16, 16, 1), num_train=batch, num_test=8)
    mesh = sharding.make_mesh(4, task=4)
    if distributed.is_multiprocess():
        rows = sharding.process_batch_rows(mesh, batch, batch_axis=1)
        local = {k: v[None, rows[0] : rows[1]] for k, v in ds.train.items()}
        data = sharding.shard_process_batch(local, mesh, batch, batch_axis=1)
    else:
        data = sharding.shard_batch({k: v[None] for k, v in ds.train.items()}, mesh, batch_axis=1)
    transforms = {
        "(bare jacobian)": mtlx.mean(),
        "pcgrad": mtlx.pcgrad(),
        "upgrad": mtlx.upgrad(),
    }
    runners, warmup_s = {}, {}
    for name in spec["methods"]:
        model = models.mlp_hps(
            256, hidden=tuple(spec["hidden"]), num_tasks=num_tasks, out_features=2, rngs=nnx.Rngs(0)
        )
        train_step = make_train_step(
            model,
            ds.tasks,
            optax.chain(transforms[name], optax.adam(1e-3)),
            mesh=mesh,
            shard_tasks=True,
        )
        state = train_step.init()
        start = time.perf_counter()
        for _ in range(spec["warmup"]):
            state, losses = train_step.step(state, data)
        jax.block_until_ready(losses)
        warmup_s[name] = time.perf_counter() - start
        runners[name] = [train_step.step, state]
    samples = {name: [] for name in runners}
    for _ in range(spec["rounds"]):
        for name, runner in runners.items():
            for _ in range(spec["steps"]):
                start = time.perf_counter()
                runner[1], losses = runner[0](runner[1], data)
                jax.block_until_ready(losses)
                samples[name].append(1e3 * (time.perf_counter() - start))
    losses = distributed.fetch(losses)
    if distributed.is_writer():
        with open(spec["out"], "w", encoding="utf-8") as f:
            json.dump(
                {
                    "samples": samples,
                    "warmup_s": warmup_s,
                    "finite": bool(np.isfinite(losses).all()),
                    "devices": jax.device_count(),
                    "processes": jax.process_count(),
                    "platform": jax.devices()[0].platform,
                    "jax": jax.__version__,
                },
                f,
            )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(layout: str, args: argparse.Namespace, out: str) -> dict:
    processes, devices = LAYOUTS[layout]
    env = {
        **os.environ,
        "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
        "JAX_PLATFORMS": "cpu",
    }
    port = _free_port()
    procs = []
    for i in range(processes):
        spec = {
            "processes": processes,
            "process_id": i,
            "coordinator": f"127.0.0.1:{port}",
            "tasks": args.tasks,
            "batch": args.batch,
            "hidden": args.hidden,
            "methods": args.methods,
            "warmup": args.warmup,
            "rounds": args.rounds,
            "steps": args.steps,
            "out": out,
        }
        procs.append(
            subprocess.Popen(
                [sys.executable, __file__, "--worker", json.dumps(spec)],
                env=env,
                cwd=ROOT,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    try:
        logs = [p.communicate(timeout=args.timeout)[0] for p in procs]
    finally:
        for p in procs:  # SIGKILL: jax.distributed catches SIGTERM (preemption notices)
            if p.poll() is None:
                p.kill()
                p.wait()
    if any(p.returncode for p in procs):
        tail = "\n".join(x for log in logs for x in log.splitlines() if "[Gloo]" not in x)
        raise RuntimeError(f"the {layout} launch failed:\n{tail[-3000:]}")
    with open(out, encoding="utf-8") as f:
        return json.load(f)


def render_markdown(meta: dict, rows: list[dict]) -> str:
    lines = [
        f"# Jacobian step, task axis sharded across processes (T = {meta['tasks']})",
        "",
        f"Device: {meta['device']}; jax {meta['jax']}. MLP "
        f"{'-'.join(str(w) for w in [256, *meta['hidden']])}, T = {meta['tasks']} "
        f"binary heads, batch {meta['batch']}, float32, Adam; mesh data 1 x task 4 "
        f"(`make_train_step(..., shard_tasks=True)`). Median over {meta['samples_per_layout']} "
        f"timed steps per layout ({meta['launches']} alternating launches x {meta['rounds']} "
        f"interleaved rounds x {meta['steps']} steps, after {meta['warmup']} warm-up steps).",
        "",
        "| method | 1 process x 4 devices ms | 2 processes x 2 devices ms | ratio (2 / 1) "
        "| p90 ratio | warm-up s (1 / 2) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(
            f"| {r['method']} | {r['one_ms']:.1f} | {r['two_ms']:.1f} | {r['ratio']:.2f} "
            f"| {r['p90_ratio']:.2f} | {r['one_warmup_s']:.1f} / {r['two_warmup_s']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--tasks", type=int, default=40)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--hidden", default="512,512,512", help="the encoder's hidden widths")
    parser.add_argument("--methods", default=",".join(DEFAULT_METHODS), help=f"from {METHODS}")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--launches", type=int, default=2, help="launches of each layout")
    parser.add_argument("--timeout", type=int, default=900)
    parser.add_argument("--out", default=os.path.join(HERE, "results"))
    parser.add_argument("--name", default="multiprocess_cpu")
    args = parser.parse_args(argv)
    if args.worker is not None:
        worker(json.loads(args.worker))
        return 0
    args.hidden = [int(w) for w in args.hidden.split(",")]
    args.methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = sorted(set(args.methods) - set(METHODS))
    if unknown or args.tasks % 4:
        parser.error(f"methods from {METHODS} (got {unknown}); --tasks a multiple of 4")
    os.makedirs(args.out, exist_ok=True)
    samples = {layout: {m: [] for m in args.methods} for layout in LAYOUTS}
    warmups = {layout: {m: [] for m in args.methods} for layout in LAYOUTS}
    info = None
    for i in range(args.launches):
        for layout in LAYOUTS:
            print(f"launch {i + 1}/{args.launches}: {layout}", file=sys.stderr, flush=True)
            out = os.path.join(args.out, f".{args.name}-{i}-{layout.replace(' ', '_')}.json")
            result = launch(layout, args, out)
            os.remove(out)
            if not result["finite"]:
                raise RuntimeError(f"non-finite losses in the {layout} launch")
            info = result
            for m in args.methods:
                samples[layout][m] += result["samples"][m]
                warmups[layout][m].append(result["warmup_s"][m])
    one, two = samples["one process"], samples["two processes"]
    rows = []
    for m in args.methods:

        def p90(xs):
            return sorted(xs)[int(0.9 * (len(xs) - 1))]

        rows.append(
            {
                "method": m,
                "one_ms": statistics.median(one[m]),
                "two_ms": statistics.median(two[m]),
                "ratio": statistics.median(two[m]) / statistics.median(one[m]),
                "p90_ratio": p90(two[m]) / p90(one[m]),
                "one_warmup_s": statistics.median(warmups["one process"][m]),
                "two_warmup_s": statistics.median(warmups["two processes"][m]),
            }
        )
    meta = {
        "device": f"{info['platform']}, {os.cpu_count()} cores ({platform.processor() or platform.machine()}), "
        "4 XLA host devices in all",
        "jax": info["jax"],
        "tasks": args.tasks,
        "batch": args.batch,
        "hidden": args.hidden,
        "warmup": args.warmup,
        "rounds": args.rounds,
        "steps": args.steps,
        "launches": args.launches,
        "samples_per_layout": args.launches * args.rounds * args.steps,
        "layouts": {k: {"processes": p, "devices_per_process": d} for k, (p, d) in LAYOUTS.items()},
    }
    with open(os.path.join(args.out, f"{args.name}.json"), "w", encoding="utf-8") as f:
        json.dump({"meta": meta, "rows": rows, "samples_ms": samples}, f, indent=1)
    table = render_markdown(meta, rows)
    with open(os.path.join(args.out, f"{args.name}.md"), "w", encoding="utf-8") as f:
        f.write(table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
