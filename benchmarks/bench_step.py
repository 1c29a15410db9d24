"""Full training-step time per weighting method, side by side in one run (and against TorchJD).

Model: an MLP encoder 256-512-512-512 with T linear MSE heads (task-specific), batch 256, float32,
Adam. For every T and method it times one jit-compiled step (Jacobian engine + method + Adam + apply)
and reports the median over repeated steps after warm-up. Variants are interleaved round by round in
one process, so that machine-load drift hits them alike (CPU timings swing 20-30 % run to run).

Ratios reported:
  * Gramian and row methods vs the *bare Jacobian step*: the same step with the Jacobian rows
    materialised and combined with fixed weights (target <= 1.25x);
  * loss-only methods vs the EW step (one backward pass; target <= 1.15x);
  * mtlx vs TorchJD's same aggregator on the same model (``mtl_backward`` + ``jac_to_grad`` + Adam),
    when torch and torchjd are installed.

Usage::

  python benchmarks/bench_step.py                       # T in 2, 10, 40; writes benchmarks/results/
  python benchmarks/bench_step.py --tasks 2 --steps 5 --methods ew,pcgrad   # a quick look
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import pathlib
import platform
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import mtlx

WIDTHS = (256, 512, 512, 512)
BATCH = 256

# Loss-only methods: their weights come from the losses (and state), one backward pass.
LOSS_ONLY = {
    "ew",
    "mean",
    "scalarization",
    "rlw",
    "rgw",
    "uw",
    "uw_so",
    "uw_o",
    "dwa",
    "gls",
    "geometric_mean",
    "imtl_l",
    "famo",
    "stch",
    "pbi",
    "cosmos",
}
# mtlx name -> kwargs for the factory at T tasks (besides num_tasks, passed when it takes it)
# mtlx name -> (TorchJD aggregator class name, kwargs builder from T)
TORCHJD = {
    "ew": ("Sum", lambda t: {}),
    "mean": ("Mean", lambda t: {}),
    "mgda": ("MGDA", lambda t: {}),
    "pcgrad": ("PCGrad", lambda t: {}),
    "upgrad": ("UPGrad", lambda t: {}),
    "dualproj": ("DualProj", lambda t: {}),
    "cagrad": ("CAGrad", lambda t: {"c": 0.5}),
    "imtl_g": ("IMTLG", lambda t: {}),
    "aligned_mtl": ("AlignedMTL", lambda t: {}),
    "config": ("ConFIG", lambda t: {}),
    "fairgrad": ("FairGrad", lambda t: {"alpha": 1.0}),
    "nash_mtl": ("NashMTL", lambda t: {"n_tasks": t}),
    "graddrop": ("GradDrop", lambda t: {}),
    "gradvac": ("GradVac", lambda t: {}),
    "rgw": ("Random", lambda t: {}),
}
# factories that need arguments beyond num_tasks
EXTRA_KWARGS = {
    "scalarization": lambda t: {"weights": jnp.ones((t,))},
    "krum": lambda t: {"n_byzantine": max(1, (t - 3) // 2)},
    "trimmed_mean": lambda t: {"trim_number": max(1, (t - 1) // 3)},
    "pbi": lambda t: {"pref_vector": jnp.full((t,), 1.0 / t)},
    "cosmos": lambda t: {"pref_vector": jnp.full((t,), 1.0 / t)},
}
NOT_METHODS = {  # a wrapper, an identity statistics transform, a builder, pre-method rows, optimizers
    "cr_mogm", "conflict_monitor", "as_transform", "random_row_weights", "adatask", "scale_by_adatask",
}  # fmt: skip


def public_methods() -> list[str]:
    """Every weighting factory the public API exports: functions returning an optax transform."""
    names = []
    for name in mtlx.__all__:
        obj = getattr(mtlx, name)
        if not inspect.isfunction(obj) or name in NOT_METHODS:
            continue
        annotation = inspect.signature(obj).return_annotation
        annotation = (
            annotation if isinstance(annotation, str) else getattr(annotation, "__name__", "")
        )
        if "GradientTransformation" in annotation:
            names.append(name)
    return sorted(names)


def make_method(name: str, num_tasks: int):
    factory = getattr(mtlx, name)
    kwargs = EXTRA_KWARGS.get(name, lambda t: {})(num_tasks)
    if "num_tasks" in inspect.signature(factory).parameters:
        kwargs["num_tasks"] = num_tasks
    return factory(**kwargs)


def init_params(num_tasks: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    encoder = [
        {
            "w": jnp.asarray(rng.standard_normal((a, b)) / np.sqrt(a), jnp.float32),
            "b": jnp.zeros((b,), jnp.float32),
        }
        for a, b in zip(WIDTHS[:-1], WIDTHS[1:])
    ]
    heads = {
        "w": jnp.asarray(
            rng.standard_normal((num_tasks, WIDTHS[-1])) / np.sqrt(WIDTHS[-1]), jnp.float32
        ),
        "b": jnp.zeros((num_tasks,), jnp.float32),
    }
    return {"encoder": encoder, "heads": heads}


def make_batch(num_tasks: int, seed: int = 1):
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.standard_normal((BATCH, WIDTHS[0])), jnp.float32)
    y = jnp.asarray(rng.standard_normal((BATCH, num_tasks)), jnp.float32)
    return x, y


def loss_fn(params, x, y):
    h = x
    for layer in params["encoder"]:
        h = jax.nn.relu(h @ layer["w"] + layer["b"])
    preds = h @ params["heads"]["w"].T + params["heads"]["b"]
    return jnp.mean((preds - y) ** 2, axis=0)


def is_shared(path, leaf):
    return "heads" not in jax.tree_util.keystr(path)


def mtlx_step(transform, materialise_rows: bool = False):
    """A jitted full step: engine, weighting, Adam, apply."""
    engine = mtlx.value_and_jacobian(loss_fn, shared=is_shared)
    tx = optax.chain(transform, optax.adam(1e-4))

    def step(params, state, x, y):
        losses, jac = engine(params, x, y)
        if materialise_rows:
            jac = mtlx.jacobian_rows(jac)
        updates, state = tx.update(jac, state, params, task_losses=losses)
        return optax.apply_updates(params, updates), state

    return tx, jax.jit(step, donate_argnums=(0, 1))


class MtlxRunner:
    def __init__(self, transform, num_tasks, materialise_rows=False):
        self.tx, self.step = mtlx_step(transform, materialise_rows)
        self.params = init_params(num_tasks)
        self.state = self.tx.init(self.params)
        self.x, self.y = make_batch(num_tasks)

    def run(self, n):
        for _ in range(n):
            self.params, self.state = self.step(self.params, self.state, self.x, self.y)
        jax.block_until_ready(self.params)


class TorchJDRunner:
    def __init__(self, aggregator_name, kwargs, num_tasks):
        import torch
        from torchjd import aggregation
        from torchjd.autojac import jac_to_grad, mtl_backward

        self.torch, self._mtl_backward, self._jac_to_grad = torch, mtl_backward, jac_to_grad
        torch.manual_seed(0)
        layers = []
        for a, b in zip(WIDTHS[:-1], WIDTHS[1:]):
            layers += [torch.nn.Linear(a, b), torch.nn.ReLU()]
        self.encoder = torch.nn.Sequential(*layers)
        self.heads = torch.nn.ModuleList(torch.nn.Linear(WIDTHS[-1], 1) for _ in range(num_tasks))
        self.params = list(self.encoder.parameters()) + list(self.heads.parameters())
        self.opt = torch.optim.Adam(self.params, lr=1e-4)
        self.aggregator = getattr(aggregation, aggregator_name)(**kwargs)
        x, y = make_batch(num_tasks)
        self.x, self.y = torch.as_tensor(np.asarray(x)), torch.as_tensor(np.asarray(y))

    def run(self, n):
        torch = self.torch
        for _ in range(n):
            features = self.encoder(self.x)
            losses = [
                ((head(features)[:, 0] - self.y[:, t]) ** 2).mean()
                for t, head in enumerate(self.heads)
            ]
            self._mtl_backward(losses, features=features)
            self._jac_to_grad(list(self.encoder.parameters()), self.aggregator)
            self.opt.step()
            self.opt.zero_grad()
        torch.cuda.synchronize() if torch.cuda.is_available() else None


def time_interleaved(runners: dict, steps: int, rounds: int, warmup: int) -> dict:
    """Median ms per step for each runner, the runners interleaved round by round."""
    for name, runner in list(runners.items()):
        try:
            runner.run(warmup)  # compile + warm caches
        except Exception as e:  # e.g. Krum needs T >= n_byzantine + 3
            print(f"skip {name}: {type(e).__name__}: {str(e)[:200]}", file=sys.stderr)
            del runners[name]
    samples = {name: [] for name in runners}
    for _ in range(rounds):
        for name, runner in runners.items():
            start = time.perf_counter()
            runner.run(steps)
            samples[name].append(1e3 * (time.perf_counter() - start) / steps)
    return {name: statistics.median(s) for name, s in samples.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tasks", default="2,10,40", help="comma-separated numbers of tasks")
    parser.add_argument(
        "--methods", default="all", help="comma-separated mtlx method names, or all"
    )
    parser.add_argument("--steps", type=int, default=5, help="steps per timed round")
    parser.add_argument(
        "--rounds", type=int, default=5, help="interleaved rounds (median over them)"
    )
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--no-torchjd", action="store_true", help="skip the TorchJD comparison")
    parser.add_argument("--out", default=str(pathlib.Path(__file__).parent / "results"))
    args = parser.parse_args(argv)

    methods = public_methods() if args.methods == "all" else args.methods.split(",")
    use_torchjd = not args.no_torchjd
    if use_torchjd:
        try:
            import torch  # noqa: F401
            import torchjd  # noqa: F401
        except ImportError:
            use_torchjd = False
            print("torch/torchjd not installed: no TorchJD column", file=sys.stderr)

    device = jax.devices()[0]
    device_name = f"{device.platform}:{getattr(device, 'device_kind', '')}"
    rows = []
    for num_tasks in [int(t) for t in args.tasks.split(",")]:
        runners = {
            "(bare jacobian)": MtlxRunner(mtlx.mean(), num_tasks, materialise_rows=True),
            "ew": MtlxRunner(mtlx.ew(), num_tasks),
        }
        for name in methods:
            if name not in runners:
                try:
                    runners[name] = MtlxRunner(make_method(name, num_tasks), num_tasks)
                except Exception as e:  # a method that rejects this T (e.g. Krum at T = 2)
                    print(f"skip {name} at T={num_tasks}: {type(e).__name__}: {e}", file=sys.stderr)
        if use_torchjd:
            for name in ["(bare jacobian)", *methods]:
                if name in TORCHJD and name in runners:
                    cls, kwargs = TORCHJD[name]
                    try:
                        runners[f"torchjd:{name}"] = TorchJDRunner(
                            cls, kwargs(num_tasks), num_tasks
                        )
                    except Exception as e:  # an aggregator this TorchJD version lacks or rejects
                        print(f"skip torchjd:{name} at T={num_tasks}: {e}", file=sys.stderr)
        print(f"T={num_tasks}: timing {len(runners)} variants ...", file=sys.stderr)
        times = time_interleaved(runners, args.steps, args.rounds, args.warmup)
        bare, ew = times["(bare jacobian)"], times["ew"]
        for name in runners:
            if name.startswith("torchjd:"):
                continue
            kind = (
                "loss-only"
                if name in LOSS_ONLY
                else ("reference" if name.startswith("(") else "gradient")
            )
            row = {
                "num_tasks": num_tasks,
                "method": name,
                "kind": kind,
                "ms": times[name],
                "vs_ew": times[name] / ew,
                "vs_bare_jacobian": times[name] / bare,
                "torchjd_ms": times.get(f"torchjd:{name}"),
            }
            row["speedup_vs_torchjd"] = (
                (row["torchjd_ms"] / row["ms"]) if row["torchjd_ms"] else None
            )
            rows.append(row)
            print(json.dumps(row), file=sys.stderr)

    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    meta = {
        "device": device_name,
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "jax": jax.__version__,
        "model": f"MLP {'-'.join(map(str, WIDTHS))}, T MSE heads, batch {BATCH}, float32, Adam",
        "steps_per_round": args.steps,
        "rounds": args.rounds,
    }
    stem = f"step_{device.platform}"
    (out / f"{stem}.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    lines = [
        f"# Full step time per method ({meta['model']})",
        "",
        f"Device: {device_name}, {os.cpu_count()} cores; median over {args.rounds} interleaved rounds "
        f"of {args.steps} steps after warm-up. Targets: gradient methods <= 1.25x the bare Jacobian "
        "step; loss-only methods <= 1.15x EW.",
        "",
        "| T | method | kind | ms/step | vs EW | vs bare Jacobian | TorchJD ms | mtlx speed-up vs TorchJD |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        tj = f"{r['torchjd_ms']:.1f}" if r["torchjd_ms"] else "-"
        sp = f"{r['speedup_vs_torchjd']:.2f}x" if r["speedup_vs_torchjd"] else "-"
        lines.append(
            f"| {r['num_tasks']} | {r['method']} | {r['kind']} | {r['ms']:.1f} | {r['vs_ew']:.2f} | "
            f"{r['vs_bare_jacobian']:.2f} | {tj} | {sp} |"
        )
    (out / f"{stem}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
