"""Full training-step time per weighting method, side by side in one run (and against TorchJD).

Models (``--model``): ``mlp``, an MLP encoder 256-512-512-512 with T linear MSE heads
(task-specific), batch 256; ``resnet18``, a ResNet-18 encoder (batch-statistics BatchNorm) on
64x64 RGB with T linear logistic heads, batch 256 (CelebA-like at T = 40; ``--batch`` and
``--image-size`` give the CPU-sized version). float32 (``--precision highest``: no TF32 on either
side), Adam. For every T and method it times one jit-compiled step (Jacobian engine + method +
Adam + apply) and reports the median over repeated steps after warm-up. Variants are interleaved round by round in
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
import importlib.metadata
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
    "skip_nonfinite",
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
        if annotation.endswith("Transformation") or "GradientTransformation" in annotation:
            names.append(name)
    return sorted(names)


def make_method(name: str, num_tasks: int):
    factory = getattr(mtlx, name)
    kwargs = EXTRA_KWARGS.get(name, lambda t: {})(num_tasks)
    if "num_tasks" in inspect.signature(factory).parameters:
        kwargs["num_tasks"] = num_tasks
    return factory(**kwargs)


class MLPWorkload:
    """The MLP encoder 256-512-512-512 with T linear MSE heads, batch 256 (inputs are noise)."""

    name = "mlp"

    def __init__(self, batch: int = BATCH, image_size: int = 0):
        del image_size  # the MLP takes flat 256-vectors
        self.batch = batch
        self.description = f"MLP {'-'.join(map(str, WIDTHS))}, T MSE heads, batch {batch}"

    def init_params(self, num_tasks: int, seed: int = 0):
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

    def make_batch(self, num_tasks: int, seed: int = 1):
        rng = np.random.default_rng(seed)
        x = rng.standard_normal((self.batch, WIDTHS[0])).astype(np.float32)
        y = rng.standard_normal((self.batch, num_tasks)).astype(np.float32)
        return x, y

    @staticmethod
    def encoder_fn(encoder, x, y):
        del y
        h = x
        for layer in encoder:
            h = jax.nn.relu(h @ layer["w"] + layer["b"])
        return h

    @staticmethod
    def heads_fn(heads, features, x, y):
        del x
        preds = features @ heads["w"].T + heads["b"]
        return jnp.mean((preds - y) ** 2, axis=0)

    @classmethod
    def loss_fn(cls, params, x, y):
        return cls.heads_fn(params["heads"], cls.encoder_fn(params["encoder"], x, y), x, y)

    def torch_encoder(self):
        import torch

        layers = []
        for a, b in zip(WIDTHS[:-1], WIDTHS[1:]):
            layers += [torch.nn.Linear(a, b), torch.nn.ReLU()]
        return torch.nn.Sequential(*layers), WIDTHS[-1]

    @staticmethod
    def torch_task_loss(prediction, target):
        return ((prediction - target) ** 2).mean()


# ResNet-18 (He et al., 2016): a 7x7/2 stem, a 3x3/2 max-pool, four stages of two basic blocks.
RESNET_STAGES = (64, 128, 256, 512)


def _conv(x, w, stride):
    return jax.lax.conv_general_dilated(
        x, w, (stride, stride), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )


def _batch_norm(x, p, eps=1e-5):
    # Batch statistics, as torch's BatchNorm2d(track_running_stats=False) on the other side.
    mean = jnp.mean(x, axis=(0, 1, 2))
    var = jnp.var(x, axis=(0, 1, 2))
    return (x - mean) * jax.lax.rsqrt(var + eps) * p["scale"] + p["bias"]


class ResNetWorkload:
    """ResNet-18 encoder (batch-statistics BatchNorm) with T linear logistic heads: CelebA-like.

    Inputs are noise images of ``image_size`` squared pixels, targets random bits; each task's loss
    is the binary cross-entropy of its head on the 512 pooled features.
    """

    name = "resnet18"

    def __init__(self, batch: int = 256, image_size: int = 64):
        self.batch, self.image_size = batch, image_size
        self.description = (
            f"ResNet-18 encoder, {image_size}x{image_size} RGB, T logistic heads, batch {batch}"
        )

    def init_params(self, num_tasks: int, seed: int = 0):
        rng = np.random.default_rng(seed)

        def conv(k, cin, cout):
            scale = np.sqrt(2.0 / (k * k * cin))
            return jnp.asarray(rng.standard_normal((k, k, cin, cout)) * scale, jnp.float32)

        def bn(c):
            return {"scale": jnp.ones((c,), jnp.float32), "bias": jnp.zeros((c,), jnp.float32)}

        encoder = {"stem": {"conv": conv(7, 3, 64), "bn": bn(64)}, "blocks": []}
        cin = 64
        for stage, cout in enumerate(RESNET_STAGES):
            for block in range(2):
                stride = 2 if (stage > 0 and block == 0) else 1
                p = {"conv1": conv(3, cin, cout), "bn1": bn(cout)}
                p |= {"conv2": conv(3, cout, cout), "bn2": bn(cout)}
                if stride != 1 or cin != cout:
                    p |= {"down": conv(1, cin, cout), "down_bn": bn(cout)}
                encoder["blocks"].append(p)
                cin = cout
        heads = {
            "w": jnp.asarray(rng.standard_normal((num_tasks, cin)) / np.sqrt(cin), jnp.float32),
            "b": jnp.zeros((num_tasks,), jnp.float32),
        }
        return {"encoder": encoder, "heads": heads}

    def make_batch(self, num_tasks: int, seed: int = 1):
        rng = np.random.default_rng(seed)
        shape = (self.batch, self.image_size, self.image_size, 3)
        x = rng.standard_normal(shape).astype(np.float32)
        y = rng.integers(0, 2, (self.batch, num_tasks)).astype(np.float32)
        return x, y

    @staticmethod
    def loss_fn(params, x, y):
        enc = params["encoder"]
        h = jax.nn.relu(_batch_norm(_conv(x, enc["stem"]["conv"], 2), enc["stem"]["bn"]))
        h = jax.lax.reduce_window(
            h, -jnp.inf, jax.lax.max, (1, 3, 3, 1), (1, 2, 2, 1), ((0, 0), (1, 1), (1, 1), (0, 0))
        )
        for p in enc["blocks"]:
            stride = 2 if "down" in p and p["conv1"].shape[2] != p["conv1"].shape[3] else 1
            out = jax.nn.relu(_batch_norm(_conv(h, p["conv1"], stride), p["bn1"]))
            out = _batch_norm(_conv(out, p["conv2"], 1), p["bn2"])
            skip = _batch_norm(_conv(h, p["down"], stride), p["down_bn"]) if "down" in p else h
            h = jax.nn.relu(out + skip)
        features = jnp.mean(h, axis=(1, 2))
        logits = features @ params["heads"]["w"].T + params["heads"]["b"]
        return jnp.mean(optax.sigmoid_binary_cross_entropy(logits, y), axis=0)

    def torch_encoder(self):
        import torch
        from torch import nn

        def bn(c):
            return nn.BatchNorm2d(c, track_running_stats=False)

        class Block(nn.Module):
            def __init__(self, cin, cout, stride):
                super().__init__()
                self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
                self.bn1 = bn(cout)
                self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
                self.bn2 = bn(cout)
                self.down = None
                if stride != 1 or cin != cout:
                    self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), bn(cout))

            def forward(self, x):
                out = torch.relu(self.bn1(self.conv1(x)))
                out = self.bn2(self.conv2(out))
                return torch.relu(out + (self.down(x) if self.down is not None else x))

        layers = [nn.Conv2d(3, 64, 7, 2, 3, bias=False), bn(64), nn.ReLU(), nn.MaxPool2d(3, 2, 1)]
        cin = 64
        for stage, cout in enumerate(RESNET_STAGES):
            for block in range(2):
                layers.append(Block(cin, cout, 2 if (stage > 0 and block == 0) else 1))
                cin = cout
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        return nn.Sequential(*layers), cin

    @staticmethod
    def torch_task_loss(prediction, target):
        import torch

        return torch.nn.functional.binary_cross_entropy_with_logits(prediction, target)


WORKLOADS = {"mlp": MLPWorkload, "resnet18": ResNetWorkload}


def is_shared(path, leaf):
    return "heads" not in jax.tree_util.keystr(path)


def mtlx_step(workload, transform, materialise_rows: bool = False, features: bool = False):
    """A jitted full step: engine, weighting, Adam, apply.

    ``features``: the Gramian of the shared features (``value_and_jacobian_through_features(...,
    gramian="features")``, MGDA-UB's upper bound generalised): a different, cheaper algorithm.
    """
    if features:
        engine = mtlx.value_and_jacobian_through_features(
            workload.encoder_fn, workload.heads_fn, gramian="features"
        )
    else:
        engine = mtlx.value_and_jacobian(workload.loss_fn, shared=is_shared)
    tx = optax.chain(transform, optax.adam(1e-4))

    def step(params, state, x, y):
        losses, jac = engine(params, x, y)
        if materialise_rows:
            jac = mtlx.jacobian_rows(jac)
        updates, state = tx.update(jac, state, params, task_losses=losses)
        return optax.apply_updates(params, updates), state

    return tx, jax.jit(step, donate_argnums=(0, 1))


class MtlxRunner:
    def __init__(self, workload, transform, num_tasks, materialise_rows=False, features=False):
        self.tx, self.step = mtlx_step(workload, transform, materialise_rows, features)
        self.params = workload.init_params(num_tasks)
        self.state = self.tx.init(self.params)
        x, y = workload.make_batch(num_tasks)
        self.x, self.y = jnp.asarray(x), jnp.asarray(y)

    def run(self, n):
        for _ in range(n):
            self.params, self.state = self.step(self.params, self.state, self.x, self.y)
        jax.block_until_ready(self.params)


class TorchJDRunner:
    """TorchJD's same aggregator on the same model: ``mtl_backward`` + ``jac_to_grad`` + Adam."""

    def __init__(self, workload, aggregator_name, kwargs, num_tasks):
        import torch
        from torchjd import aggregation
        from torchjd.autojac import jac_to_grad, mtl_backward

        self.torch, self._mtl_backward, self._jac_to_grad = torch, mtl_backward, jac_to_grad
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.task_loss = workload.torch_task_loss
        torch.manual_seed(0)
        self.encoder, width = workload.torch_encoder()
        self.encoder = self.encoder.to(self.device)
        self.heads = torch.nn.ModuleList(torch.nn.Linear(width, 1) for _ in range(num_tasks))
        self.heads = self.heads.to(self.device)
        self.params = list(self.encoder.parameters()) + list(self.heads.parameters())
        self.opt = torch.optim.Adam(self.params, lr=1e-4)
        self.aggregator = getattr(aggregation, aggregator_name)(**kwargs)
        x, y = workload.make_batch(num_tasks)
        if x.ndim == 4:  # NHWC -> NCHW
            x = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
        self.x = torch.as_tensor(x, device=self.device)
        self.y = torch.as_tensor(y, device=self.device)

    def run(self, n):
        torch = self.torch
        for _ in range(n):
            features = self.encoder(self.x)
            losses = [
                self.task_loss(head(features)[:, 0], self.y[:, t])
                for t, head in enumerate(self.heads)
            ]
            self._mtl_backward(losses, features=features)
            self._jac_to_grad(list(self.encoder.parameters()), self.aggregator)
            self.opt.step()
            self.opt.zero_grad()
        if self.device == "cuda":
            torch.cuda.synchronize()


def time_interleaved(runners: dict, steps: int, rounds: int, warmup: int) -> tuple[dict, dict]:
    """Median and p90 ms per step for each runner, interleaved round by round; warm-up seconds.

    The warm-up time of a jitted runner is mostly its compilation (the first call traces and
    compiles; later warm-up calls are steps).
    """
    warmup_s = {}
    for name, runner in list(runners.items()):
        start = time.perf_counter()
        try:
            runner.run(warmup)  # compile + warm caches
        except Exception as e:  # e.g. Krum needs T >= n_byzantine + 3
            print(f"skip {name}: {type(e).__name__}: {str(e)[:200]}", file=sys.stderr)
            del runners[name]
            continue
        warmup_s[name] = time.perf_counter() - start
    samples = {name: [] for name in runners}
    for _ in range(rounds):
        for name, runner in runners.items():
            for _ in range(steps):  # one sample per step: the p90 sees single slow steps
                start = time.perf_counter()
                runner.run(1)
                samples[name].append(1e3 * (time.perf_counter() - start))
    times = {
        name: (statistics.median(s), float(np.percentile(s, 90))) for name, s in samples.items()
    }
    return times, warmup_s


def render_markdown(meta: dict, rows: list[dict]) -> str:
    """The markdown table of a run's rows (``meta`` as written to the JSON)."""
    peak = meta.get("peak_device_memory_gib")
    lines = [
        f"# Full step time per method ({meta['model']})",
        "",
        f"Device: {meta['device']}, {meta['cpu_count']} host cores, jax {meta['jax']}"
        + (f", torch {meta['torch']}, torchjd {meta['torchjd']}" if meta.get("torch") else "")
        + f"; float32 precision '{meta['precision']}'; median (and p90) of single steps over "
        f"{meta['rounds']} interleaved rounds of {meta['steps_per_round']} steps after warm-up; "
        f"warm-up = compile + {meta['warmup_steps']} steps. Targets: gradient methods <= 1.25x "
        "the bare Jacobian step; loss-only methods <= 1.15x EW."
        + (f" Peak device memory of the whole process: {peak:.1f} GiB." if peak else "")
        + (f" {meta['note']}" if meta.get("note") else ""),
        "",
        "| T | method | kind | ms/step | p90 ms | warm-up s | vs EW | vs bare Jacobian "
        "| TorchJD ms | mtlx speed-up vs TorchJD |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        tj = f"{r['torchjd_ms']:.1f}" if r["torchjd_ms"] else "-"
        sp = f"{r['speedup_vs_torchjd']:.2f}x" if r["speedup_vs_torchjd"] else "-"
        lines.append(
            f"| {r['num_tasks']} | {r['method']} | {r['kind']} | {r['ms']:.1f} | "
            f"{r['p90_ms']:.1f} | {r['warmup_s']:.1f} | {r['vs_ew']:.2f} | "
            f"{r['vs_bare_jacobian']:.2f} | {tj} | {sp} |"
        )
    return "\n".join(lines) + "\n"


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
    parser.add_argument(
        "--feature-mode",
        action="store_true",
        help="also time every Gramian method with the Gramian of the shared features "
        "('features:<method>' rows; MLP only): a different, cheaper algorithm",
    )
    parser.add_argument("--model", default="mlp", choices=sorted(WORKLOADS))
    parser.add_argument("--batch", type=int, default=None, help="batch size (default: the model's)")
    parser.add_argument("--image-size", type=int, default=64, help="ResNet input side in pixels")
    parser.add_argument(
        "--precision",
        default="highest",
        choices=("highest", "default"),
        help="float32 matmul/conv precision on both sides: 'highest' is true float32; 'default' "
        "lets both JAX and torch use TF32 tensor cores on GPUs that have them",
    )
    parser.add_argument("--out", default=str(pathlib.Path(__file__).parent / "results"))
    args = parser.parse_args(argv)

    methods = public_methods() if args.methods == "all" else args.methods.split(",")
    workload_cls = WORKLOADS[args.model]
    batch = args.batch or BATCH
    workload = workload_cls(batch=batch, image_size=args.image_size)
    jax.config.update("jax_default_matmul_precision", args.precision)
    use_torchjd = not args.no_torchjd
    if use_torchjd:
        try:
            import torch
            import torchjd  # noqa: F401
        except ImportError:
            use_torchjd = False
            print("torch/torchjd not installed: no TorchJD column", file=sys.stderr)
        else:
            tf32 = args.precision == "default"
            torch.backends.cuda.matmul.allow_tf32 = tf32
            torch.backends.cudnn.allow_tf32 = tf32

    device = jax.devices()[0]
    device_name = f"{device.platform}:{getattr(device, 'device_kind', '')}"
    rows = []

    # Written after every T, so that a run stopped at its time limit keeps the rows it has.
    def write_results():
        out = pathlib.Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        peak = (
            (device.memory_stats() or {}).get("peak_bytes_in_use")
            if device.platform != "cpu"
            else None
        )
        meta = {
            "device": device_name,
            "precision": args.precision,
            "peak_device_memory_gib": peak / 2**30 if peak else None,
            "cpu_count": os.cpu_count(),
            "machine": platform.machine(),
            "jax": jax.__version__,
            "torch": __import__("torch").__version__ if use_torchjd else None,
            "torchjd": importlib.metadata.version("torchjd") if use_torchjd else None,
            "model": f"{workload.description}, float32, Adam",
            "steps_per_round": args.steps,
            "rounds": args.rounds,
            "warmup_steps": args.warmup,
        }
        stem = f"step_{device.platform}" + ("" if args.model == "mlp" else f"_{args.model}")
        (out / f"{stem}.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
        markdown = render_markdown(meta, rows)
        (out / f"{stem}.md").write_text(markdown)
        print(markdown)

    for num_tasks in [int(t) for t in args.tasks.split(",")]:
        runners = {
            "(bare jacobian)": MtlxRunner(workload, mtlx.mean(), num_tasks, materialise_rows=True),
            "ew": MtlxRunner(workload, mtlx.ew(), num_tasks),
        }
        for name in methods:
            if name not in runners:
                try:
                    runners[name] = MtlxRunner(workload, make_method(name, num_tasks), num_tasks)
                except Exception as e:  # a method that rejects this T (e.g. Krum at T = 2)
                    print(f"skip {name} at T={num_tasks}: {type(e).__name__}: {e}", file=sys.stderr)
        if args.feature_mode:
            if not hasattr(workload, "encoder_fn"):
                parser.error("--feature-mode needs a workload split into encoder and heads (mlp)")
            for name in methods:
                if name not in runners or name.startswith("("):
                    continue
                method = make_method(name, num_tasks)
                weighting = getattr(method, "weighting", None)
                if getattr(weighting, "reads", None) != "gramian":
                    continue  # loss-only or row methods: feature mode changes nothing or little
                runners[f"features:{name}"] = MtlxRunner(workload, method, num_tasks, features=True)
        if use_torchjd:
            for name in ["(bare jacobian)", *methods]:
                if name in TORCHJD and name in runners:
                    cls, kwargs = TORCHJD[name]
                    try:
                        runners[f"torchjd:{name}"] = TorchJDRunner(
                            workload, cls, kwargs(num_tasks), num_tasks
                        )
                    except Exception as e:  # an aggregator this TorchJD version lacks or rejects
                        print(f"skip torchjd:{name} at T={num_tasks}: {e}", file=sys.stderr)
        print(f"T={num_tasks}: timing {len(runners)} variants ...", file=sys.stderr)
        timings, warmup_s = time_interleaved(runners, args.steps, args.rounds, args.warmup)
        times = {name: median for name, (median, _) in timings.items()}
        bare, ew = times["(bare jacobian)"], times["ew"]
        for name in runners:
            if name.startswith("torchjd:"):
                continue
            kind = (
                "loss-only"
                if name in LOSS_ONLY
                else (
                    "reference"
                    if name.startswith("(")
                    else ("feature Gramian" if name.startswith("features:") else "gradient")
                )
            )
            row = {
                "num_tasks": num_tasks,
                "method": name,
                "kind": kind,
                "ms": times[name],
                "p90_ms": timings[name][1],
                "warmup_s": warmup_s[name],
                "vs_ew": times[name] / ew,
                "vs_bare_jacobian": times[name] / bare,
                "torchjd_ms": times.get(f"torchjd:{name}"),
                "torchjd_warmup_s": warmup_s.get(f"torchjd:{name}"),
            }
            row["speedup_vs_torchjd"] = (
                (row["torchjd_ms"] / row["ms"]) if row["torchjd_ms"] else None
            )
            rows.append(row)
            print(json.dumps(row), file=sys.stderr)
        write_results()


if __name__ == "__main__":
    main()
