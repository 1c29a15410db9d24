"""Full training-step time per weighting method, side by side in one run (against TorchJD, LibMTL).

Models (``--model``):

* ``mlp``: an MLP encoder 256-512-512-512 (``--hidden`` sets the widths after the 256 inputs) with
  T linear MSE heads (task-specific), batch 256; T in 2, 10, 40 by default;
* ``resnet18``: a ResNet-18 encoder (batch-statistics BatchNorm) on 64x64 RGB with T linear
  logistic heads, batch 256 (CelebA-like at T = 40); ``--batch`` and ``--image-size`` give the
  CPU-sized version;
* ``segnet``: an NYUv2-like dense-prediction workload: a SegNet-style conv encoder (four stages of
  two 3x3 conv + BatchNorm + ReLU, 32-64-128-256 channels, 2x2 max-pools between them: features
  at 1/8 resolution) with T = 3 task-specific dense decoders (three nearest 2x upsamplings, each
  followed by a 3x3 conv, 64-32-32 channels, and a 1x1 conv to the output): semantic segmentation
  (13 classes, pixel cross-entropy), depth (L1) and surface normals (1 - cosine of the normalised
  prediction); 128x160 RGB, batch 8. ``--image-size`` is the height (a multiple of 8); the width
  is 1.25 x the height rounded up to a multiple of 8 (128 -> 160, 32 -> 40, 16 -> 24).

The TorchJD and LibMTL columns run the same architecture in torch (same layer sizes, same losses;
BatchNorm with batch statistics on both sides). float32 (``--precision highest``: no TF32 on either
side), Adam (lr 1e-4). For every T and method it times one jit-compiled step (Jacobian engine +
method + Adam + apply) and reports the median over repeated steps after warm-up. Variants are
interleaved round by round in one process, so that machine-load drift hits them alike (CPU timings
swing 20-30 % run to run).

Ratios reported:
  * Gramian and row methods vs the *bare Jacobian step*: the same step with the Jacobian rows
    materialised and combined with fixed weights (target <= 1.25x);
  * loss-only methods vs the EW step (one backward pass; target <= 1.15x);
  * mtlx vs TorchJD's same aggregator on the same model (``mtl_backward`` + ``jac_to_grad`` + Adam)
    and vs LibMTL's same weighting class (forward, ``weighting.backward(losses, **LibMTL's default
    kwargs)``, Adam), when torch and torchjd / LibMTL are installed.

Memory: ``xla_step_mib`` is XLA's compiled memory analysis of the jitted step (arguments + outputs +
temporaries - donated aliases: the parameters, optimizer state and batch held once, plus the step's
scratch), ``xla_temp_mib`` the temporaries alone. On CUDA, ``torchjd_peak_mib``/``libmtl_peak_mib``
are torch's peak allocation during that runner's warm-up minus what was allocated before it,
plus its own parameters and batch (the same quantities). The meta records the process's peak RSS.

Variants in the same table: ``--chunk-size N`` adds ``chunk<N>:<method>`` rows (the engine
``value_and_jacobian(..., chunk_size=N)``: at most N Jacobian rows live at once) for every method
that needs per-task gradients; ``--feature-mode`` adds ``features:<method>`` rows for every Gramian
method (the Gramian of the shared features: a different, cheaper algorithm).

Usage::

  python benchmarks/bench_step.py                       # MLP, T in 2, 10, 40; writes results/
  python benchmarks/bench_step.py --tasks 2 --steps 5 --methods ew,pcgrad   # a quick look
  python benchmarks/bench_step.py --model segnet --image-size 32 --methods ew,mgda,pcgrad
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import importlib.util
import inspect
import json
import math
import os
import pathlib
import platform
import resource
import statistics
import sys
import time
import types

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
# mtlx name -> (LibMTL weighting class, LibMTL's default kwargs (its config.py), rep_grad). LibMTL
# 1.1.5 has EW, MGDA, PCGrad, CAGrad, GradVac, IMTL, DWA, GLS, RLW, UW, GradDrop and GradNorm; the
# others came later and are skipped (stderr) where the installed LibMTL lacks them. GradDrop works
# on representation gradients only (rep_grad=True). FAMO is left out: LibMTL's trainer calls its
# update_w with a second forward pass after the step.
LIBMTL = {
    "ew": ("EW", {}, False),
    "mgda": ("MGDA", {"mgda_gn": "none"}, False),
    "pcgrad": ("PCGrad", {}, False),
    "cagrad": ("CAGrad", {"calpha": 0.5, "rescale": 1}, False),
    "gradvac": ("GradVac", {"beta": 0.5}, False),
    "imtl": ("IMTL", {}, False),
    "aligned_mtl": ("Aligned_MTL", {}, False),
    "nash_mtl": (
        "Nash_MTL",
        {"update_weights_every": 1, "optim_niter": 20, "max_norm": 1.0},
        False,
    ),
    "dwa": ("DWA", {"T": 2.0}, False),
    "gls": ("GLS", {}, False),
    "rlw": ("RLW", {"dist": "Normal"}, False),
    "uw": ("UW", {}, False),
    "db_mtl": ("DB_MTL", {"DB_beta": 0.9, "DB_beta_sigma": 0.5}, False),
    "graddrop": ("GradDrop", {"leak": 0.0}, True),
    "gradnorm": ("GradNorm", {"alpha": 1.5}, False),
    "moco": (
        "MoCo",
        {
            "MoCo_beta": 0.5,
            "MoCo_beta_sigma": 0.5,
            "MoCo_gamma": 0.1,
            "MoCo_gamma_sigma": 0.5,
            "MoCo_rho": 0,
        },
        False,
    ),
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
BARE = "(bare jacobian)"


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


def libmtl_installed() -> bool:
    if hasattr(sys.modules.get("LibMTL"), "_mtlx_stub"):  # (the stub has no __spec__)
        return True
    return importlib.util.find_spec("LibMTL") is not None


def libmtl_weighting(name: str):
    """LibMTL's weighting class ``name``, loaded without LibMTL's models (they need torchvision).

    LibMTL's package ``__init__`` imports its models; its ``weighting`` modules need only torch
    (CAGrad scipy, Nash_MTL cvxpy), so they are imported from their files under a bare ``LibMTL``
    package (the same stub as ``tests/references.py``, which recognises it).
    """
    if not hasattr(sys.modules.get("LibMTL"), "_mtlx_stub"):
        spec = importlib.util.find_spec("LibMTL")
        if spec is None or not spec.submodule_search_locations:
            raise ImportError("LibMTL is not installed (pip install --no-deps LibMTL==1.1.5)")
        root = list(spec.submodule_search_locations)[0]
        package = types.ModuleType("LibMTL")
        package.__path__ = [root]
        package._mtlx_stub = True
        sys.modules["LibMTL"] = package
        weighting = types.ModuleType("LibMTL.weighting")
        weighting.__path__ = [f"{root}/weighting"]
        sys.modules["LibMTL.weighting"] = weighting
    if name == "Nash_MTL" and importlib.util.find_spec("cvxpy") is None:
        # (LibMTL's Nash_MTL module would pip-install cvxpy on import)
        raise ImportError("LibMTL's Nash_MTL needs cvxpy")
    module = importlib.import_module(f"LibMTL.weighting.{name}")
    return getattr(module, name)


def _conv(x, w, stride=1):
    return jax.lax.conv_general_dilated(
        x, w, (stride, stride), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )


def _batch_norm(x, p, eps=1e-5):
    # Batch statistics, as torch's BatchNorm2d(track_running_stats=False) on the other side.
    mean = jnp.mean(x, axis=(0, 1, 2))
    var = jnp.var(x, axis=(0, 1, 2))
    return (x - mean) * jax.lax.rsqrt(var + eps) * p["scale"] + p["bias"]


def _conv_init(rng, k, cin, cout):
    scale = np.sqrt(2.0 / (k * k * cin))
    return jnp.asarray(rng.standard_normal((k, k, cin, cout)) * scale, jnp.float32)


def _bn_init(c):
    return {"scale": jnp.ones((c,), jnp.float32), "bias": jnp.zeros((c,), jnp.float32)}


def _torch_tensors(tree):
    if isinstance(tree, dict):
        return [t for v in tree.values() for t in _torch_tensors(v)]
    if isinstance(tree, (list, tuple)):
        return [t for v in tree for t in _torch_tensors(v)]
    return [tree]


class LinearHeadsTorch:
    """The torch side of a workload with T linear heads of one output on ``width`` features."""

    def torch_heads(self, width, num_tasks):
        import torch

        return torch.nn.ModuleList(torch.nn.Linear(width, 1) for _ in range(num_tasks))

    def torch_losses(self, heads, features, y):
        """The T task losses; ``features``: task t's head reads ``features[t]``."""
        return [
            self.torch_task_loss(head(f)[:, 0], y[:, t])
            for t, (head, f) in enumerate(zip(heads, features))
        ]

    def torch_batch(self, num_tasks, device):
        import torch

        x, y = self.make_batch(num_tasks)
        if x.ndim == 4:  # NHWC -> NCHW
            x = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
        return torch.as_tensor(x, device=device), torch.as_tensor(y, device=device)


class MLPWorkload(LinearHeadsTorch):
    """The MLP encoder 256-512-512-512 with T linear MSE heads, batch 256 (inputs are noise)."""

    name = "mlp"
    default_tasks = "2,10,40"

    def __init__(self, batch: int | None = None, image_size: int | None = None, hidden=None):
        del image_size  # the MLP takes flat 256-vectors
        self.batch = batch or BATCH
        self.widths = (WIDTHS[0], *(hidden or WIDTHS[1:]))
        self.description = f"MLP {'-'.join(map(str, self.widths))}, T MSE heads, batch {self.batch}"

    def init_params(self, num_tasks: int, seed: int = 0):
        rng = np.random.default_rng(seed)
        encoder = [
            {
                "w": jnp.asarray(rng.standard_normal((a, b)) / np.sqrt(a), jnp.float32),
                "b": jnp.zeros((b,), jnp.float32),
            }
            for a, b in zip(self.widths[:-1], self.widths[1:])
        ]
        width = self.widths[-1]
        heads = {
            "w": jnp.asarray(rng.standard_normal((num_tasks, width)) / np.sqrt(width), jnp.float32),
            "b": jnp.zeros((num_tasks,), jnp.float32),
        }
        return {"encoder": encoder, "heads": heads}

    def make_batch(self, num_tasks: int, seed: int = 1):
        rng = np.random.default_rng(seed)
        x = rng.standard_normal((self.batch, self.widths[0])).astype(np.float32)
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
        for a, b in zip(self.widths[:-1], self.widths[1:]):
            layers += [torch.nn.Linear(a, b), torch.nn.ReLU()]
        return torch.nn.Sequential(*layers), self.widths[-1]

    @staticmethod
    def torch_task_loss(prediction, target):
        return ((prediction - target) ** 2).mean()


# ResNet-18 (He et al., 2016): a 7x7/2 stem, a 3x3/2 max-pool, four stages of two basic blocks.
RESNET_STAGES = (64, 128, 256, 512)


class ResNetWorkload(LinearHeadsTorch):
    """ResNet-18 encoder (batch-statistics BatchNorm) with T linear logistic heads: CelebA-like.

    Inputs are noise images of ``image_size`` squared pixels, targets random bits; each task's loss
    is the binary cross-entropy of its head on the 512 pooled features.
    """

    name = "resnet18"
    default_tasks = "2,10,40"

    def __init__(self, batch: int | None = None, image_size: int | None = None, hidden=None):
        del hidden
        self.batch, self.image_size = batch or BATCH, image_size or 64
        self.description = (
            f"ResNet-18 encoder, {self.image_size}x{self.image_size} RGB, T logistic heads, "
            f"batch {self.batch}"
        )

    def init_params(self, num_tasks: int, seed: int = 0):
        rng = np.random.default_rng(seed)
        encoder = {"stem": {"conv": _conv_init(rng, 7, 3, 64), "bn": _bn_init(64)}, "blocks": []}
        cin = 64
        for stage, cout in enumerate(RESNET_STAGES):
            for block in range(2):
                stride = 2 if (stage > 0 and block == 0) else 1
                p = {"conv1": _conv_init(rng, 3, cin, cout), "bn1": _bn_init(cout)}
                p |= {"conv2": _conv_init(rng, 3, cout, cout), "bn2": _bn_init(cout)}
                if stride != 1 or cin != cout:
                    p |= {"down": _conv_init(rng, 1, cin, cout), "down_bn": _bn_init(cout)}
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
    def encoder_fn(enc, x, y):
        del y
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
        return jnp.mean(h, axis=(1, 2))

    @staticmethod
    def heads_fn(heads, features, x, y):
        del x
        logits = features @ heads["w"].T + heads["b"]
        return jnp.mean(optax.sigmoid_binary_cross_entropy(logits, y), axis=0)

    @classmethod
    def loss_fn(cls, params, x, y):
        return cls.heads_fn(params["heads"], cls.encoder_fn(params["encoder"], x, y), x, y)

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


# SegNet-style encoder (VGG-like stages, 2x2 max-pools between them) and per-task dense decoders.
SEGNET_STAGES = (32, 64, 128, 256)  # two 3x3 conv + BN + ReLU each; features at 1/8 resolution
SEGNET_DECODER = (64, 32, 32)  # each: nearest 2x upsampling, 3x3 conv (+ bias) + ReLU
NYU_TASKS = (("segmentation", 13), ("depth", 1), ("normals", 3))  # name, output channels


def _upsample2(h):
    return jnp.repeat(jnp.repeat(h, 2, axis=1), 2, axis=2)  # = torch's nearest, scale_factor=2


class SegNetWorkload:
    """NYUv2-like: a SegNet-style encoder with 3 dense decoders (segmentation, depth, normals).

    Inputs are noise images of ``height`` x ``width`` (width = 1.25 x height rounded up to a
    multiple of 8); targets are random labels in 0..12, depths in [0.5, 10) and unit normals.
    """

    name = "segnet"
    default_tasks = "3"

    def __init__(self, batch: int | None = None, image_size: int | None = None, hidden=None):
        self.batch = batch or 8
        # ``hidden``: other encoder stage widths (a pool between stages, so one decoder upsampling
        # per pool, the decoder widths then the stage widths reversed): the smoke test's small net
        self.stages = tuple(hidden) if hidden else SEGNET_STAGES
        self.decoder = SEGNET_DECODER if not hidden else tuple(reversed(self.stages[:-1]))
        factor = 2 ** (len(self.stages) - 1)
        self.height = image_size or 128
        if self.height % factor:
            raise ValueError(
                f"segnet: --image-size (height) must be a multiple of {factor}, not {image_size}"
            )
        self.width = factor * math.ceil(1.25 * self.height / factor)
        self.description = (
            f"SegNet-style encoder {'-'.join(map(str, self.stages))}, 3 dense decoders "
            f"{'-'.join(map(str, self.decoder))} (segmentation 13 classes CE, depth L1, normals "
            f"1 - cos), {self.height}x{self.width} RGB, batch {self.batch}"
        )

    def init_params(self, num_tasks: int, seed: int = 0):
        if num_tasks != len(NYU_TASKS):
            raise ValueError(f"segnet has {len(NYU_TASKS)} tasks, not {num_tasks}")
        rng = np.random.default_rng(seed)
        blocks, cin = [], 3
        for cout in self.stages:
            blocks.append(
                {
                    "conv1": _conv_init(rng, 3, cin, cout),
                    "bn1": _bn_init(cout),
                    "conv2": _conv_init(rng, 3, cout, cout),
                    "bn2": _bn_init(cout),
                }
            )
            cin = cout
        heads = []
        for _, out in NYU_TASKS:
            convs, c = [], cin
            for d in self.decoder:
                convs.append({"w": _conv_init(rng, 3, c, d), "b": jnp.zeros((d,), jnp.float32)})
                c = d
            out_layer = {"w": _conv_init(rng, 1, c, out), "b": jnp.zeros((out,), jnp.float32)}
            heads.append({"convs": convs, "out": out_layer})
        return {"encoder": {"blocks": blocks}, "heads": heads}

    def make_batch(self, num_tasks: int, seed: int = 1):
        del num_tasks
        rng = np.random.default_rng(seed)
        b, h, w = self.batch, self.height, self.width
        x = rng.standard_normal((b, h, w, 3)).astype(np.float32)
        normals = rng.standard_normal((b, h, w, 3))
        normals /= np.linalg.norm(normals, axis=-1, keepdims=True)
        y = {
            "seg": rng.integers(0, NYU_TASKS[0][1], (b, h, w)).astype(np.int32),
            "depth": rng.uniform(0.5, 10.0, (b, h, w, 1)).astype(np.float32),
            "normals": normals.astype(np.float32),
        }
        return x, y

    @staticmethod
    def encoder_fn(encoder, x, y):
        del y
        h = x
        for i, p in enumerate(encoder["blocks"]):
            if i:
                h = jax.lax.reduce_window(
                    h, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID"
                )
            h = jax.nn.relu(_batch_norm(_conv(h, p["conv1"]), p["bn1"]))
            h = jax.nn.relu(_batch_norm(_conv(h, p["conv2"]), p["bn2"]))
        return h

    @staticmethod
    def _decode(head, h):
        for layer in head["convs"]:
            h = jax.nn.relu(_conv(_upsample2(h), layer["w"]) + layer["b"])
        return _conv(h, head["out"]["w"]) + head["out"]["b"]

    @classmethod
    def heads_fn(cls, heads, features, x, y):
        del x
        logits = cls._decode(heads[0], features)
        seg = jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, y["seg"]))
        depth = jnp.mean(jnp.abs(cls._decode(heads[1], features) - y["depth"]))
        n = cls._decode(heads[2], features)
        n = n / jnp.maximum(jnp.linalg.norm(n, axis=-1, keepdims=True), 1e-12)  # F.normalize
        normals = 1.0 - jnp.mean(jnp.sum(n * y["normals"], axis=-1))
        return jnp.stack([seg, depth, normals])

    @classmethod
    def loss_fn(cls, params, x, y):
        return cls.heads_fn(params["heads"], cls.encoder_fn(params["encoder"], x, y), x, y)

    def torch_encoder(self):
        from torch import nn

        layers, cin = [], 3
        for i, cout in enumerate(self.stages):
            if i:
                layers.append(nn.MaxPool2d(2))
            for a, b in ((cin, cout), (cout, cout)):
                layers += [
                    nn.Conv2d(a, b, 3, 1, 1, bias=False),
                    nn.BatchNorm2d(b, track_running_stats=False),
                    nn.ReLU(),
                ]
            cin = cout
        return nn.Sequential(*layers), cin

    def torch_heads(self, width, num_tasks):
        from torch import nn

        heads = nn.ModuleList()
        for _, out in NYU_TASKS:
            layers, c = [], width
            for d in self.decoder:
                layers += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(c, d, 3, 1, 1)]
                layers.append(nn.ReLU())
                c = d
            layers.append(nn.Conv2d(c, out, 1))
            heads.append(nn.Sequential(*layers))
        return heads

    def torch_losses(self, heads, features, y):
        import torch.nn.functional as F

        seg = F.cross_entropy(heads[0](features[0]), y["seg"])
        depth = (heads[1](features[1]) - y["depth"]).abs().mean()
        n = F.normalize(heads[2](features[2]), dim=1)
        normals = 1.0 - (n * y["normals"]).sum(1).mean()
        return [seg, depth, normals]

    def torch_batch(self, num_tasks, device):
        import torch

        x, y = self.make_batch(num_tasks)

        def nchw(a):
            return torch.as_tensor(np.ascontiguousarray(a.transpose(0, 3, 1, 2)), device=device)

        y = {
            "seg": torch.as_tensor(y["seg"].astype(np.int64), device=device),
            "depth": nchw(y["depth"]),
            "normals": nchw(y["normals"]),
        }
        return nchw(x), y


WORKLOADS = {"mlp": MLPWorkload, "resnet18": ResNetWorkload, "segnet": SegNetWorkload}


def is_shared(path, leaf):
    return "heads" not in jax.tree_util.keystr(path)


# jax.jit compiler options of every mtlx step: mtlx.jit_compiler_options() (what mtlx's trainer
# uses), or XLA's defaults with --xla-defaults.
COMPILER_OPTIONS: dict | None = None


def mtlx_step(
    workload,
    transform,
    materialise_rows: bool = False,
    features: bool = False,
    chunk_size: int | None = None,
    xla_defaults: bool = False,
):
    """A jitted full step: engine, weighting, Adam, apply.

    ``features``: ``True`` or ``"features"``, the Gramian of the shared features
    (``value_and_jacobian_through_features(..., gramian="features")``, MGDA-UB's upper bound
    generalised): a different, cheaper algorithm. ``"params"``: the same algorithm as the default
    engine through ``value_and_jacobian_through_features(..., gramian="params")``, which runs the
    heads' backward once per task and only the encoder's T times (what TorchJD's ``mtl_backward``
    does).
    ``chunk_size``: at most that many Jacobian rows live at once (the Gramian in column blocks).
    """
    if features:
        engine = mtlx.value_and_jacobian_through_features(
            workload.encoder_fn,
            workload.heads_fn,
            gramian="params" if features == "params" else "features",
            chunk_size=chunk_size,
        )
    else:
        engine = mtlx.value_and_jacobian(workload.loss_fn, shared=is_shared, chunk_size=chunk_size)
    tx = optax.chain(transform, optax.adam(1e-4))

    def step(params, state, x, y):
        losses, jac = engine(params, x, y)
        if materialise_rows:
            jac = mtlx.jacobian_rows(jac)
        updates, state = tx.update(jac, state, params, task_losses=losses)
        return optax.apply_updates(params, updates), state

    options = mtlx.jit_compiler_options() if COMPILER_OPTIONS is None else COMPILER_OPTIONS
    options = {} if xla_defaults else options
    return tx, jax.jit(step, donate_argnums=(0, 1), compiler_options=options)


def xla_memory(compiled) -> dict:
    """XLA's memory analysis of a compiled step, in MiB (empty where the backend gives none)."""
    try:
        stats = compiled.memory_analysis()
    except Exception:  # a backend without memory analysis
        return {}
    if isinstance(stats, (list, tuple)):
        stats = stats[0] if stats else None
    if stats is None:
        return {}
    total = (
        stats.temp_size_in_bytes
        + stats.argument_size_in_bytes
        + stats.output_size_in_bytes
        - stats.alias_size_in_bytes
    )
    return {"xla_step_mib": total / 2**20, "xla_temp_mib": stats.temp_size_in_bytes / 2**20}


class MtlxRunner:
    """One mtlx variant: compiled ahead of time on its first run (memory analysis), then stepped."""

    def __init__(
        self,
        workload,
        transform,
        num_tasks,
        materialise_rows=False,
        features=False,
        chunk_size=None,
        xla_defaults=False,
    ):
        self.tx, self.jitted = mtlx_step(
            workload, transform, materialise_rows, features, chunk_size, xla_defaults
        )
        self.reads = getattr(getattr(transform, "weighting", None), "reads", None)
        self.params = workload.init_params(num_tasks)
        self.state = self.tx.init(
            self.params
        )  # donated: every method's state holds each array once
        x, y = workload.make_batch(num_tasks)
        self.x, self.y = jnp.asarray(x), jax.tree.map(jnp.asarray, y)
        self.step, self.memory = None, {}

    def run(self, n):
        if self.step is None:  # the first call compiles: part of the warm-up
            compiled = self.jitted.lower(self.params, self.state, self.x, self.y).compile()
            self.memory = xla_memory(compiled)
            self.step = compiled
        for _ in range(n):
            try:
                self.params, self.state = self.step(self.params, self.state, self.x, self.y)
            except TypeError:  # the compiled step rejects the new state's types: jit retraces
                if self.step is self.jitted:
                    raise
                self.step = self.jitted
                self.params, self.state = self.step(self.params, self.state, self.x, self.y)
        jax.block_until_ready(self.params)


class TorchRunner:
    """The workload's torch model on the torch device, its batch, Adam, and a warm-up peak."""

    def __init__(self, workload, num_tasks):
        import torch

        self.torch, self.workload, self.num_tasks = torch, workload, num_tasks
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        torch.manual_seed(0)
        self.encoder, width = workload.torch_encoder()
        self.encoder = self.encoder.to(self.device)
        self.heads = workload.torch_heads(width, num_tasks).to(self.device)
        self.x, self.y = workload.torch_batch(num_tasks, self.device)
        self.peak_mib = None

    def make_optimizer(self, extra=()):
        self.params = [*self.encoder.parameters(), *self.heads.parameters(), *extra]
        self.opt = self.torch.optim.Adam(self.params, lr=1e-4)

    def warm(self, n):
        """``run(n)``; on CUDA, the peak torch allocation it added, plus its own params and batch."""
        torch = self.torch
        if self.device != "cuda":
            return self.run(n)
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        self.run(n)
        own = sum(t.numel() * t.element_size() for t in [*self.params, *_torch_tensors(self.x)])
        own += sum(t.numel() * t.element_size() for t in _torch_tensors(self.y))
        self.peak_mib = (torch.cuda.max_memory_allocated() - base + own) / 2**20

    def sync(self):
        if self.device == "cuda":
            self.torch.cuda.synchronize()


class TorchJDRunner(TorchRunner):
    """TorchJD's same aggregator on the same model: ``mtl_backward`` + ``jac_to_grad`` + Adam."""

    def __init__(self, workload, aggregator_name, kwargs, num_tasks):
        super().__init__(workload, num_tasks)
        from torchjd import aggregation
        from torchjd.autojac import jac_to_grad, mtl_backward

        self._mtl_backward, self._jac_to_grad = mtl_backward, jac_to_grad
        self.make_optimizer()
        self.aggregator = getattr(aggregation, aggregator_name)(**kwargs)

    def run(self, n):
        for _ in range(n):
            features = self.encoder(self.x)
            losses = self.workload.torch_losses(self.heads, [features] * self.num_tasks, self.y)
            self._mtl_backward(losses, features=features)
            self._jac_to_grad(list(self.encoder.parameters()), self.aggregator)
            self.opt.step()
            self.opt.zero_grad()
        self.sync()


class LibMTLRunner(TorchRunner):
    """LibMTL's weighting class on the same model, as LibMTL's trainer drives it.

    Forward, the (T,) loss tensor, ``optimizer.zero_grad()``, ``weighting.backward(losses,
    **kwargs)`` (LibMTL's default kwargs), Adam step. The weighting object gets what LibMTL's
    trainer and ``AbsArchitecture`` give it: ``task_num``, ``task_name``, ``device``, ``rep_grad``,
    ``epoch`` (2: past DWA's and GradNorm's first-epoch fallbacks), ``train_loss_buffer``,
    ``get_share_params`` and ``zero_grad_share_params``; with ``rep_grad`` (GradDrop), ``rep`` (the
    shared features) and ``rep_tasks`` (a detached copy per task that the heads read).
    """

    def __init__(self, workload, class_name, kwargs, num_tasks, rep_grad=False):
        super().__init__(workload, num_tasks)
        torch = self.torch
        weighting = libmtl_weighting(class_name)()
        weighting.task_num = num_tasks
        weighting.task_name = [f"task{t}" for t in range(num_tasks)]
        weighting.device = torch.device(self.device)
        weighting.rep_grad = rep_grad
        weighting.epoch = 2
        weighting.train_loss_buffer = np.ones((num_tasks, 3))
        encoder = self.encoder
        weighting.get_share_params = encoder.parameters
        weighting.zero_grad_share_params = lambda: encoder.zero_grad(set_to_none=False)
        weighting.init_param()  # loss scales of UW, IMTL, GradNorm; buffers of DB_MTL, MoCo
        self.weighting, self.kwargs, self.rep_grad = weighting, kwargs, rep_grad
        self.make_optimizer(extra=weighting.parameters())

    def run(self, n):
        torch, w = self.torch, self.weighting
        for _ in range(n):
            features = self.encoder(self.x)
            if self.rep_grad:
                w.rep = features
                per_task = [features.detach().clone().requires_grad_(True) for _ in w.task_name]
                w.rep_tasks = dict(zip(w.task_name, per_task))
            else:
                per_task = [features] * self.num_tasks
            losses = torch.stack(self.workload.torch_losses(self.heads, per_task, self.y))
            self.opt.zero_grad()
            w.backward(losses, **self.kwargs)
            self.opt.step()
        self.sync()


def time_interleaved(
    runners: dict,
    steps: int,
    rounds: int,
    warmup: int,
    warmup_deadline: float | None = None,
    deadline: float | None = None,
) -> tuple[dict, dict, int]:
    """Median and p90 ms per step for each runner, interleaved round by round; warm-up seconds;
    the number of rounds run.

    The warm-up time of a jitted runner is mostly its compilation (the first call traces and
    compiles; later warm-up calls are steps). A runner is dropped (stderr) when it fails, or when
    its warm-up would start after ``warmup_deadline``; rounds stop after ``deadline`` (one at
    least). Deadlines are ``time.monotonic()`` values.
    """
    warmup_s, dropped = {}, set()
    for name, runner in list(runners.items()):
        if ":" in name and name.rpartition(":")[2] in dropped:
            del runners[name]  # the variant or reference of a method that failed
            continue
        if warmup_deadline is not None and time.monotonic() > warmup_deadline:
            print(f"skip {name}: out of time (--budget-s)", file=sys.stderr)
            del runners[name]
            continue
        start = time.perf_counter()
        try:
            getattr(runner, "warm", runner.run)(warmup)  # compile + warm caches
        except Exception as e:  # e.g. Krum needs T >= n_byzantine + 3
            print(f"skip {name}: {type(e).__name__}: {str(e)[:200]}", file=sys.stderr)
            del runners[name]
            if ":" not in name:
                dropped.add(name)
            continue
        warmup_s[name] = time.perf_counter() - start
    samples = {name: [] for name in runners}
    done = 0
    for _ in range(rounds):
        if done and deadline is not None and time.monotonic() > deadline:
            print(f"stopped after {done} of {rounds} rounds (--budget-s)", file=sys.stderr)
            break
        for name, runner in list(runners.items()):
            for _ in range(steps):  # one sample per step: the p90 sees single slow steps
                start = time.perf_counter()
                try:
                    runner.run(1)
                except Exception as e:  # e.g. a reference solver that fails on a later step
                    print(f"drop {name}: {type(e).__name__}: {str(e)[:200]}", file=sys.stderr)
                    del runners[name], samples[name]
                    break
                samples[name].append(1e3 * (time.perf_counter() - start))
        done += 1
    times = {
        name: (statistics.median(s), float(np.percentile(s, 90))) for name, s in samples.items()
    }
    return times, warmup_s, done


def _fmt(value, spec=".1f", suffix=""):
    return "-" if value is None else f"{value:{spec}}{suffix}"


def _range(values):
    lo, hi = min(values), max(values)
    return f"{lo:.2f}x" if f"{lo:.2f}" == f"{hi:.2f}" else f"{lo:.2f}-{hi:.2f}x"


def memory_lines(rows: list[dict]) -> list[str]:
    """One line per T: XLA step memory of the Gramian methods (and variants) vs the EW step."""
    lines = []
    for t in sorted({r["num_tasks"] for r in rows}):
        at_t = {r["method"]: r for r in rows if r["num_tasks"] == t}
        ew = (at_t.get("ew") or {}).get("xla_step_mib")
        if not ew:
            continue
        groups: dict[str, list[float]] = {}
        for name, r in at_t.items():
            if r.get("reads") != "gramian" or not r.get("xla_step_mib"):
                continue
            prefix = name.split(":", 1)[0] + " " if ":" in name else ""
            groups.setdefault(f"{prefix}Gramian methods", []).append(r["xla_step_mib"] / ew)
        parts = [f"{label} {_range(v)} ({len(v)})" for label, v in groups.items()]
        bare = (at_t.get(BARE) or {}).get("xla_step_mib")
        if bare:
            parts.append(f"bare Jacobian step {bare / ew:.2f}x")
        if parts:
            lines.append(f"* T = {t} (EW step {ew:.1f} MiB): " + "; ".join(parts) + ".")
    return lines


def render_markdown(meta: dict, rows: list[dict]) -> str:
    """The markdown table of a run's rows (``meta`` as written to the JSON)."""
    peak = meta.get("peak_device_memory_gib")
    versions = "".join(
        f", {k} {meta[k]}" for k in ("torch", "torchjd", "libmtl") if meta.get(k) is not None
    )
    rounds_short = sorted(
        {r["rounds"] for r in rows if r.get("rounds", meta["rounds"]) < meta["rounds"]}
    )
    lines = [
        f"# Full step time per method ({meta['model']})",
        "",
        f"Device: {meta['device']}, {meta['cpu_count']} host cores, jax {meta['jax']}{versions}; "
        f"float32 precision '{meta['precision']}'; median (and p90) of single steps over "
        f"{meta['rounds']} interleaved rounds of {meta['steps_per_round']} steps after warm-up"
        + (f" (cut to {rounds_short} rounds by the time budget)" if rounds_short else "")
        + f"; warm-up = compile + {meta['warmup_steps']} steps; mtlx steps compiled with "
        + (
            f"compiler options {meta['compiler_options']}"
            if meta.get("compiler_options")
            else "XLA's default options"
        )  # fmt: skip
        + ". Targets: gradient methods <= 1.25x "
        "the bare Jacobian step; loss-only methods <= 1.15x EW."
        + (f" Peak device memory of the whole process: {peak:.1f} GiB." if peak else "")
        + (
            f" Peak RSS of the whole process: {meta['peak_rss_mib']:.0f} MiB."
            if meta.get("peak_rss_mib")
            else ""
        )
        + (f" {meta['note']}" if meta.get("note") else ""),
        "",
    ]
    torch_mem = any(r.get("torchjd_peak_mib") or r.get("libmtl_peak_mib") for r in rows)
    header = (
        "| T | method | kind | ms/step | p90 ms | warm-up s | vs EW | vs bare Jacobian "
        "| XLA MiB (temp) | TorchJD ms | vs TorchJD | LibMTL ms | vs LibMTL |"
    )
    columns = 13
    if torch_mem:
        header += " TorchJD MiB | LibMTL MiB |"
        columns += 2
    lines += [header, "|" + " --- |" * columns]
    for r in rows:
        xla = (
            f"{r['xla_step_mib']:.1f} ({r['xla_temp_mib']:.1f})"
            if r.get("xla_step_mib") is not None
            else "-"
        )
        line = (
            f"| {r['num_tasks']} | {r['method']} | {r['kind']} | {r['ms']:.1f} | "
            f"{r['p90_ms']:.1f} | {r['warmup_s']:.1f} | {_fmt(r['vs_ew'], '.2f')} | "
            f"{_fmt(r['vs_bare_jacobian'], '.2f')} | {xla} | {_fmt(r['torchjd_ms'])} | "
            f"{_fmt(r['speedup_vs_torchjd'], '.2f', 'x')} | {_fmt(r['libmtl_ms'])} | "
            f"{_fmt(r['speedup_vs_libmtl'], '.2f', 'x')} |"
        )
        if torch_mem:
            line += f" {_fmt(r['torchjd_peak_mib'])} | {_fmt(r['libmtl_peak_mib'])} |"
        lines.append(line)
    memory = memory_lines(rows)
    if memory:
        lines += [
            "",
            "Step memory vs the EW step (XLA's compiled memory analysis: arguments + outputs + "
            "temporaries - donated aliases; spec target for the Gramian methods on the ResNet-18 "
            "workload: <= 3x EW):",
            "",
            *memory,
        ]
    return "\n".join(lines) + "\n"


def plan_variants(workload, methods, num_tasks, args, use_torchjd, use_libmtl) -> dict:
    """The variants of one T in method-major order: name -> a function building its runner.

    A method whose factory rejects this T (e.g. Krum at T = 2) is skipped here (stderr).
    """
    variants = {BARE: lambda: MtlxRunner(workload, mtlx.mean(), num_tasks, True)}
    if args.compare_xla_defaults:
        variants[f"xla-defaults:{BARE}"] = lambda: MtlxRunner(
            workload, mtlx.mean(), num_tasks, True, xla_defaults=True
        )
    chunk_methods = args.chunk_methods.split(",") if args.chunk_methods else None
    for name in dict.fromkeys(["ew", *methods]):
        try:
            method = make_method(name, num_tasks)
        except Exception as e:
            print(f"skip {name} at T={num_tasks}: {type(e).__name__}: {e}", file=sys.stderr)
            continue
        variants[name] = lambda n=name: MtlxRunner(workload, make_method(n, num_tasks), num_tasks)
        if use_torchjd and name in TORCHJD:
            cls, kwargs = TORCHJD[name]
            variants[f"torchjd:{name}"] = lambda c=cls, k=kwargs: TorchJDRunner(
                workload, c, k(num_tasks), num_tasks
            )
        if use_libmtl and name in LIBMTL:
            cls, kwargs, rep_grad = LIBMTL[name]
            variants[f"libmtl:{name}"] = lambda c=cls, k=kwargs, r=rep_grad: LibMTLRunner(
                workload, c, k, num_tasks, r
            )
        if (
            args.chunk_size is not None
            and name not in LOSS_ONLY
            and (chunk_methods is None or name in chunk_methods)
        ):
            variants[f"chunk{args.chunk_size}:{name}"] = lambda n=name: MtlxRunner(
                workload, make_method(n, num_tasks), num_tasks, chunk_size=args.chunk_size
            )
        if args.compare_xla_defaults and name not in LOSS_ONLY:
            variants[f"xla-defaults:{name}"] = lambda n=name: MtlxRunner(
                workload, make_method(n, num_tasks), num_tasks, xla_defaults=True
            )
        if args.split_heads and name not in LOSS_ONLY:
            variants[f"split:{name}"] = lambda n=name: MtlxRunner(
                workload, make_method(n, num_tasks), num_tasks, features="params"
            )
        reads = getattr(getattr(method, "weighting", None), "reads", None)
        if args.feature_mode and reads == "gramian":
            variants[f"features:{name}"] = lambda n=name: MtlxRunner(
                workload, make_method(n, num_tasks), num_tasks, features=True
            )
    return variants


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--tasks",
        default=None,
        help="comma-separated numbers of tasks (default: 2,10,40; segnet: 3, its only value)",
    )
    parser.add_argument(
        "--methods", default="all", help="comma-separated mtlx method names, or all"
    )
    parser.add_argument("--steps", type=int, default=5, help="steps per timed round")
    parser.add_argument(
        "--rounds", type=int, default=5, help="interleaved rounds (median over them)"
    )
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--no-torchjd", action="store_true", help="skip the TorchJD comparison")
    parser.add_argument("--no-libmtl", action="store_true", help="skip the LibMTL comparison")
    parser.add_argument(
        "--feature-mode",
        action="store_true",
        help="also time every Gramian method with the Gramian of the shared features "
        "('features:<method>' rows): a different, cheaper algorithm",
    )
    parser.add_argument(
        "--chunk-size",
        type=int,
        default=None,
        help="also time every method that needs per-task gradients with at most this many "
        "Jacobian rows live at once ('chunk<N>:<method>' rows)",
    )
    parser.add_argument(
        "--chunk-methods",
        default=None,
        help="comma-separated methods for the --chunk-size rows (default: every gradient method "
        "of --methods)",
    )
    parser.add_argument("--model", default="mlp", choices=sorted(WORKLOADS))
    parser.add_argument("--batch", type=int, default=None, help="batch size (default: the model's)")
    parser.add_argument(
        "--image-size",
        type=int,
        default=None,
        help="resnet18: the input side in pixels (default 64); segnet: the height, a multiple of "
        "8, the width being 1.25x rounded up to a multiple of 8 (default 128: 128x160)",
    )
    parser.add_argument(
        "--hidden",
        default=None,
        help="mlp: comma-separated widths after the 256 inputs (default 512,512,512); segnet: the "
        "encoder stage widths (default 32,64,128,256; the decoders then take the stage widths "
        "reversed, one upsampling per pool): a smaller net for smoke tests",
    )
    parser.add_argument(
        "--precision",
        default="highest",
        choices=("highest", "default"),
        help="float32 matmul/conv precision on both sides: 'highest' is true float32; 'default' "
        "lets both JAX and torch use TF32 tensor cores on GPUs that have them",
    )
    parser.add_argument(
        "--budget-s",
        type=float,
        default=None,
        help="time budget of the run in seconds, shared evenly by the T values: a variant whose "
        "warm-up would start after 70%% of its T's share is skipped, and rounds stop at the share's "
        "end (one round at least)",
    )
    parser.add_argument(
        "--torch-threads",
        type=int,
        default=None,
        help="torch's intra-op threads (default: torch's own). On a CPU shared with other work, "
        "torch's spinning OpenMP threads can slow its steps 100-fold; 1 avoids that",
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="check the command line: print the variants each T would time, build nothing",
    )
    parser.add_argument(
        "--compare-xla-defaults",
        action="store_true",
        help="also time every gradient method (and the bare Jacobian step) compiled with XLA's "
        "default options ('xla-defaults:<method>' rows) beside mtlx.jit_compiler_options()",
    )
    parser.add_argument(
        "--split-heads",
        action="store_true",
        help="also time every gradient method through value_and_jacobian_through_features(..., "
        "gramian='params') ('split:<method>' rows): the same update, the heads' backward once "
        "per task and the encoder's T times, as TorchJD's mtl_backward",
    )
    parser.add_argument(
        "--xla-defaults",
        action="store_true",
        help="compile the mtlx steps with XLA's default options instead of "
        "mtlx.jit_compiler_options() (on CPU: YNNPACK's dot fusions left on)",
    )
    parser.add_argument("--out", default=str(pathlib.Path(__file__).parent / "results"))
    parser.add_argument(
        "--tag", default="", help="suffix of the result files: step_<platform>_<model>[_<tag>]"
    )
    args = parser.parse_args(argv)
    start_time = time.monotonic()
    global COMPILER_OPTIONS
    COMPILER_OPTIONS = {} if args.xla_defaults else None

    methods = public_methods() if args.methods == "all" else args.methods.split(",")
    unknown = [m for m in methods if m not in public_methods()]
    if unknown:
        parser.error(f"unknown methods: {', '.join(unknown)}")
    workload_cls = WORKLOADS[args.model]
    task_counts = [int(t) for t in (args.tasks or workload_cls.default_tasks).split(",")]
    if args.model == "segnet" and task_counts != [3]:
        parser.error("segnet has exactly 3 tasks (segmentation, depth, normals): --tasks 3")
    if args.chunk_size is not None and args.chunk_size < 1:
        parser.error("--chunk-size must be >= 1")
    hidden = tuple(int(w) for w in args.hidden.split(",")) if args.hidden else None
    try:
        workload = workload_cls(batch=args.batch, image_size=args.image_size, hidden=hidden)
    except ValueError as e:
        parser.error(str(e))
    if args.chunk_methods and args.chunk_size is None:
        parser.error("--chunk-methods needs --chunk-size")
    if args.chunk_methods:
        unknown = [m for m in args.chunk_methods.split(",") if m not in methods]
        if unknown:
            parser.error(f"--chunk-methods not in --methods: {', '.join(unknown)}")
    jax.config.update("jax_default_matmul_precision", args.precision)

    use_torchjd, use_libmtl = not args.no_torchjd, not args.no_libmtl
    torch = None
    if use_torchjd or use_libmtl:
        try:
            import torch
        except ImportError:
            print("torch not installed: no TorchJD or LibMTL column", file=sys.stderr)
            use_torchjd = use_libmtl = False
    if torch is not None:
        if args.torch_threads:
            torch.set_num_threads(args.torch_threads)
        tf32 = args.precision == "default"
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = tf32
    if use_torchjd and importlib.util.find_spec("torchjd") is None:
        use_torchjd = False
        print("torchjd not installed: no TorchJD column", file=sys.stderr)
    if use_libmtl and not libmtl_installed():
        use_libmtl = False
        print("LibMTL not installed: no LibMTL column", file=sys.stderr)

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
            "compiler_options": {} if args.xla_defaults else mtlx.jit_compiler_options(),
            "peak_device_memory_gib": peak / 2**30 if peak else None,
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads() if torch is not None else None,
            "machine": platform.machine(),
            "jax": jax.__version__,
            "torch": torch.__version__ if (use_torchjd or use_libmtl) else None,
            "torchjd": importlib.metadata.version("torchjd") if use_torchjd else None,
            "libmtl": importlib.metadata.version("LibMTL") if use_libmtl else None,
            "model": f"{workload.description}, float32, Adam",
            "steps_per_round": args.steps,
            "rounds": args.rounds,
            "warmup_steps": args.warmup,
            "chunk_size": args.chunk_size,
            "feature_mode": args.feature_mode,
            "budget_s": args.budget_s,
            "argv": sys.argv[1:] if argv is None else list(argv),
        }
        stem = f"step_{device.platform}_{args.model}" + (f"_{args.tag}" if args.tag else "")
        (out / f"{stem}.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
        markdown = render_markdown(meta, rows)
        (out / f"{stem}.md").write_text(markdown)
        print(markdown)

    if args.dry_run:  # the variants each T would time; nothing is built or compiled
        for num_tasks in task_counts:
            variants = plan_variants(workload, methods, num_tasks, args, use_torchjd, use_libmtl)
            print(f"T={num_tasks}: {len(variants)} variants: {', '.join(variants)}")
        return []

    for index, num_tasks in enumerate(task_counts):
        runners, failed = {}, set()
        # Method-major order: when the budget cuts warm-ups, each method keeps its comparisons.
        for name, factory in plan_variants(
            workload, methods, num_tasks, args, use_torchjd, use_libmtl
        ).items():
            if name.rpartition(":")[2] in failed:
                continue
            try:
                runners[name] = factory()
            except Exception as e:  # a method that rejects this T, a missing reference class
                if ":" not in name:
                    failed.add(name)
                print(
                    f"skip {name} at T={num_tasks}: {type(e).__name__}: {str(e)[:200]}",
                    file=sys.stderr,
                )
        warmup_deadline = deadline = None
        if args.budget_s is not None:
            now = time.monotonic()
            share = (start_time + args.budget_s - now) / (len(task_counts) - index)
            warmup_deadline, deadline = now + 0.7 * share, now + share
        print(f"T={num_tasks}: timing {len(runners)} variants ...", file=sys.stderr)
        timings, warmup_s, rounds_done = time_interleaved(
            runners, args.steps, args.rounds, args.warmup, warmup_deadline, deadline
        )
        times = {name: median for name, (median, _) in timings.items()}
        bare, ew = times.get(BARE), times.get("ew")
        for name in timings:
            if name.startswith(("torchjd:", "libmtl:")):
                continue
            prefix, _, base = name.rpartition(":")
            kind = (
                "reference"
                if name == BARE
                else "feature Gramian"
                if prefix == "features"
                else "chunked"
                if prefix.startswith("chunk")
                else "split heads"
                if prefix == "split"
                else "XLA defaults"
                if prefix == "xla-defaults"
                else "loss-only"
                if base in LOSS_ONLY
                else "gradient"
            )
            runner = runners[name]
            row = {
                "num_tasks": num_tasks,
                "method": name,
                "kind": kind,
                "reads": runner.reads,
                "ms": times[name],
                "p90_ms": timings[name][1],
                "warmup_s": warmup_s[name],
                "rounds": rounds_done,
                "vs_ew": times[name] / ew if ew else None,
                "vs_bare_jacobian": times[name] / bare if bare else None,
                "xla_step_mib": runner.memory.get("xla_step_mib"),
                "xla_temp_mib": runner.memory.get("xla_temp_mib"),
            }
            for lib in ("torchjd", "libmtl"):
                ref = runners.get(f"{lib}:{name}") if f"{lib}:{name}" in timings else None
                row[f"{lib}_ms"] = times.get(f"{lib}:{name}")
                row[f"{lib}_warmup_s"] = warmup_s.get(f"{lib}:{name}")
                row[f"{lib}_peak_mib"] = ref.peak_mib if ref is not None else None
                row[f"speedup_vs_{lib}"] = (
                    row[f"{lib}_ms"] / row["ms"] if row[f"{lib}_ms"] else None
                )
            rows.append(row)
            print(json.dumps(row), file=sys.stderr)
        write_results()
    return rows


# bench_sweep.py imports the default MLP workload's functions under these names.
_MLP = MLPWorkload()
init_params, make_batch, loss_fn = _MLP.init_params, _MLP.make_batch, MLPWorkload.loss_fn

if __name__ == "__main__":
    main()
