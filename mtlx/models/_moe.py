"""Mixture-of-experts architectures: MMoE, CGC, PLE and DSelect-k, after LibMTL 1.1.5.

Experts are whole backbones (MMoE, CGC, DSelect-k) or backbone stages (PLE), stacked with a
leading expert axis and run as one batched computation; per-task gates pick a convex combination
of the experts' outputs for each example, which the task's head reads.

What is shared (the ``shared=`` split that :func:`mtlx.models.is_shared` reads): as in LibMTL's
``get_share_params``, only the **shared experts** are shared. Gates and task experts are used by
one task each: they live under ``task_specific`` with a leading task axis T (slice t: task t's),
so :func:`mtlx.value_and_jacobian` gives them their own task's gradient.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from mtlx.models._stages import (
    BackboneSpec,
    StagedEncoder,
    backbone_spec,
    heads_per_task,
    map_stacked,
    stack,
    stage_input_shapes,
)


def _flat(x: jax.Array) -> jax.Array:
    return jnp.reshape(x, (x.shape[0], -1))


def _check_in_features(x: jax.Array, in_features: int, what: str) -> jax.Array:
    flat = _flat(x)
    if flat.shape[1] != in_features:
        raise ValueError(
            f"{what}'s gates read the flattened input: {in_features} features per example; got "
            f"input of shape {x.shape}."
        )
    return flat


def _experts_on(experts: nnx.Module, x: jax.Array) -> jax.Array:
    """Every stacked expert (a whole encoder) on the same input: ``(E, N, ...)``."""
    return map_stacked(lambda e, x: e(x), experts, x, in_axes=None)


def _task_experts_on(experts: nnx.Module, x: jax.Array) -> jax.Array:
    """Task experts stacked ``(T, E_t, ...)`` on the same input: ``(T, E_t, N, ...)``."""
    return map_stacked(lambda m, x: _experts_on(m, x), experts, x, in_axes=None)


def _positive(value: int, name: str) -> int:
    if isinstance(value, bool) or int(value) != value or int(value) < 1:
        raise ValueError(f"{name} must be a positive integer; got {value!r}.")
    return int(value)


def _split_experts(num_experts: int | Sequence[int], num_tasks: int, what: str) -> tuple[int, int]:
    """``(shared, per task)`` from LibMTL's ``[shared, task_1, ..., task_T]`` or ``(shared,
    per_task)``; task experts are stacked, so every task has the same number."""
    counts = (
        (int(num_experts), int(num_experts))
        if isinstance(num_experts, int | np.integer)
        else tuple(int(k) for k in num_experts)
    )
    if len(counts) == num_tasks + 1:
        shared, per_task = counts[0], counts[1:]
        if len(set(per_task)) != 1:
            raise ValueError(
                f"{what} stacks the task experts, so every task needs the same number; got "
                f"{per_task}."
            )
        counts = (shared, per_task[0])
    if len(counts) != 2 or min(counts) < 1:
        raise ValueError(
            f"{what}'s num_experts is (shared, per task) or LibMTL's [shared, task_1, ..., "
            f"task_T] with positive counts; got {num_experts!r}."
        )
    return counts


class MMoE(nnx.Module):
    r"""Multi-gate Mixture-of-Experts (Ma et al., KDD 2018), as LibMTL's ``MMoE``.

    .. math:: y_t = h_t\Big(\sum_{e=1}^{E} \mathrm{softmax}(W_t x + b_t)_e\, f_e(x)\Big)

    E experts ``f_e`` (each a whole encoder of ``spec``) and one linear softmax gate per task on
    the flattened input. Shared: the experts (``experts``); task-specific: the gates
    (``task_specific.gates``, stacked ``(T, ...)``) and the heads.

    Args:
      spec: the experts' backbone.
      num_tasks: T.
      out_features: each head's output size, or one per task.
      num_experts: E.
      rngs: the random streams.
    """

    def __init__(
        self,
        spec: BackboneSpec,
        num_tasks: int,
        out_features: int | Sequence[int],
        num_experts: int,
        *,
        rngs: nnx.Rngs,
    ):
        if spec.in_features is None:
            raise ValueError("the gates read the flattened input: give in_features.")
        self.spec = spec
        self.num_experts = _positive(num_experts, "num_experts")
        num_tasks = _positive(num_tasks, "num_tasks")
        self.experts = stack(lambda r: StagedEncoder(spec, rngs=r), self.num_experts, rngs)
        self.task_specific = nnx.Dict(
            gates=stack(
                lambda r: nnx.Linear(spec.in_features, self.num_experts, rngs=r), num_tasks, rngs
            )
        )
        self.heads = spec.make_heads(out_features, num_tasks, rngs)

    @property
    def num_tasks(self) -> int:
        return self.heads.num_tasks

    def gate_weights(self, x: jax.Array) -> jax.Array:
        """The gates' expert weights ``(T, N, E)`` (rows on the simplex)."""
        flat = _check_in_features(x, self.spec.in_features, type(self).__name__)
        logits = map_stacked(lambda g, z: g(z), self.task_specific["gates"], flat, in_axes=None)
        return jax.nn.softmax(logits, axis=-1)

    def __call__(self, x: jax.Array) -> tuple[jax.Array, ...]:
        experts = _experts_on(self.experts, x)  # (E, N, D)
        features = jnp.einsum("tne,en...->tn...", self.gate_weights(x), experts)
        return heads_per_task(self.heads, features)


class CGC(nnx.Module):
    r"""Customized Gate Control (Tang et al., RecSys 2020, PLE's single level), as LibMTL's ``CGC``.

    .. math:: y_t = h_t\Big(\sum_{e} \mathrm{softmax}(W_t x + b_t)_e\,
        [f^{s}_1(x), \ldots, f^{s}_{E_s}(x), f^{t}_1(x), \ldots, f^{t}_{E_t}(x)]_e\Big)

    ``E_s`` shared experts and ``E_t`` experts of each task's own; task t's gate mixes the shared
    ones and its own (in that order). Shared: the shared experts (``experts``); task-specific:
    the task experts (``task_specific.experts``, stacked ``(T, E_t, ...)``), the gates
    (``task_specific.gates``) and the heads.

    Args:
      spec: the experts' backbone.
      num_tasks: T.
      out_features: each head's output size, or one per task.
      num_experts: ``(E_s, E_t)``, or LibMTL's ``[E_s, E_1, ..., E_T]`` with equal ``E_t``.
      rngs: the random streams.
    """

    def __init__(
        self,
        spec: BackboneSpec,
        num_tasks: int,
        out_features: int | Sequence[int],
        num_experts: int | Sequence[int],
        *,
        rngs: nnx.Rngs,
    ):
        if spec.in_features is None:
            raise ValueError("the gates read the flattened input: give in_features.")
        num_tasks = _positive(num_tasks, "num_tasks")
        self.spec = spec
        self.num_shared, self.num_specific = _split_experts(num_experts, num_tasks, "CGC")
        total = self.num_shared + self.num_specific
        self.experts = stack(lambda r: StagedEncoder(spec, rngs=r), self.num_shared, rngs)
        self.task_specific = nnx.Dict(
            experts=stack(
                lambda r: stack(lambda q: StagedEncoder(spec, rngs=q), self.num_specific, r),
                num_tasks,
                rngs,
            ),
            gates=stack(lambda r: nnx.Linear(spec.in_features, total, rngs=r), num_tasks, rngs),
        )
        self.heads = spec.make_heads(out_features, num_tasks, rngs)

    @property
    def num_tasks(self) -> int:
        return self.heads.num_tasks

    def gate_weights(self, x: jax.Array) -> jax.Array:
        """The gates' weights ``(T, N, E_s + E_t)`` over [shared experts, task t's experts]."""
        flat = _check_in_features(x, self.spec.in_features, "CGC")
        logits = map_stacked(lambda g, z: g(z), self.task_specific["gates"], flat, in_axes=None)
        return jax.nn.softmax(logits, axis=-1)

    def __call__(self, x: jax.Array) -> tuple[jax.Array, ...]:
        shared = _experts_on(self.experts, x)  # (E_s, N, D)
        own = _task_experts_on(self.task_specific["experts"], x)  # (T, E_t, N, D)
        shared = jnp.broadcast_to(shared[None], (own.shape[0], *shared.shape))
        experts = jnp.concatenate([shared, own], axis=1)  # (T, E_s + E_t, N, D)
        features = jnp.einsum("tne,ten...->tn...", self.gate_weights(x), experts)
        return heads_per_task(self.heads, features)


def smooth_step(t: jax.Array, gamma: float = 1.0) -> jax.Array:
    r"""DSelect-k's smooth step: 0 below :math:`-\gamma/2`, 1 above :math:`\gamma/2`, and
    :math:`-\frac{2}{\gamma^3}t^3 + \frac{3}{2\gamma}t + \frac12` between."""
    cubic = (-2.0 / gamma**3) * t**3 + (3.0 / (2.0 * gamma)) * t + 0.5
    return jnp.where(t <= -gamma / 2, 0.0, jnp.where(t >= gamma / 2, 1.0, cubic))


def _binary_codes(num_experts: int, num_binary: int) -> np.ndarray:
    """``(E, m)`` bools: row e is e's m-bit binary code, most significant bit first."""
    return np.array(
        [[c == "1" for c in np.binary_repr(e, width=num_binary)] for e in range(num_experts)],
        dtype=bool,
    )


def _uniform(scale: float):
    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -scale, scale)

    return init


class DSelectK(nnx.Module):
    r"""DSelect-k (Hazimeh et al., NeurIPS 2021), as LibMTL's ``DSelect_k``.

    Each task's gate has k selectors; selector i draws an m-bit code (``m = ceil(log2 E)``) from
    smooth steps :math:`s = S(z_i)` of logits ``z_i = Z_t x`` and selects expert e with
    :math:`\prod_j (s_j \text{ if bit}_j(e) \text{ else } 1 - s_j)`; the selectors are mixed by
    :math:`\mathrm{softmax}(W_t x)`:

    .. math:: y_t = h_t\Big(\sum_e \big[\sum_i \mathrm{softmax}(W_t x)_i\, r_i(e)\big] f_e(x)\Big)

    Shared: the experts (``experts``); task-specific: ``task_specific.z_logits`` and
    ``task_specific.w_logits`` (stacked ``(T, ...)``) and the heads. Initialisation as LibMTL:
    ``Z`` uniform in :math:`\pm\gamma/100`, ``W`` uniform in :math:`\pm 0.05`.

    .. note::
      LibMTL's forward pass uses the smooth step with :math:`\gamma = 1` whatever ``kgamma``
      (which only sets its initialisation range); here ``gamma`` is used in both places, as in
      the paper (equal for the default 1.0). LibMTL 1.1.5's table of expert codes is all ones
      (``np.array(list("01")).astype(bool)`` is True for both characters), so its selectors
      cannot tell experts apart; here expert e's code is e in binary, as in the paper and the
      official implementation. LibMTL also backpropagates an entropy regulariser of
      the selectors from inside its forward pass (a side effect on the gradients); a forward pass
      here has no side effects, so it is not included.

    Args:
      spec: the experts' backbone.
      num_tasks: T.
      out_features: each head's output size, or one per task.
      num_experts: E.
      num_nonzeros: k, the selectors per gate (at most k experts get weight).
      gamma: the smooth step's width.
      rngs: the random streams.
    """

    def __init__(
        self,
        spec: BackboneSpec,
        num_tasks: int,
        out_features: int | Sequence[int],
        num_experts: int,
        num_nonzeros: int,
        gamma: float = 1.0,
        *,
        rngs: nnx.Rngs,
    ):
        if spec.in_features is None:
            raise ValueError("the gates read the flattened input: give in_features.")
        num_tasks = _positive(num_tasks, "num_tasks")
        self.spec = spec
        self.num_experts = _positive(num_experts, "num_experts")
        self.num_nonzeros = _positive(num_nonzeros, "num_nonzeros")
        if not float(gamma) > 0:
            raise ValueError(f"gamma must be positive; got {gamma!r}.")
        self.gamma = float(gamma)
        self.num_binary = max(1, int(np.ceil(np.log2(self.num_experts))))
        self.experts = stack(lambda r: StagedEncoder(spec, rngs=r), self.num_experts, rngs)
        z_init = _uniform(self.gamma / 100)
        w_init = _uniform(0.05)
        k, m, d = self.num_nonzeros, self.num_binary, spec.in_features
        self.task_specific = nnx.Dict(
            z_logits=stack(
                lambda r: nnx.Linear(d, k * m, kernel_init=z_init, bias_init=z_init, rngs=r),
                num_tasks,
                rngs,
            ),
            w_logits=stack(
                lambda r: nnx.Linear(d, k, kernel_init=w_init, bias_init=w_init, rngs=r),
                num_tasks,
                rngs,
            ),
        )
        self.heads = spec.make_heads(out_features, num_tasks, rngs)

    @property
    def num_tasks(self) -> int:
        return self.heads.num_tasks

    def gate_weights(self, x: jax.Array) -> jax.Array:
        """The expert weights ``(T, N, E)`` (rows on the simplex when E is a power of 2)."""
        flat = _check_in_features(x, self.spec.in_features, "DSelect-k")
        ts = self.task_specific
        z = map_stacked(lambda g, v: g(v), ts["z_logits"], flat, in_axes=None)
        z = jnp.reshape(z, (*z.shape[:2], self.num_nonzeros, 1, self.num_binary))
        steps = smooth_step(z, self.gamma)
        codes = jnp.asarray(_binary_codes(self.num_experts, self.num_binary))
        selectors = jnp.prod(jnp.where(codes, steps, 1.0 - steps), axis=-1)  # (T, N, k, E)
        mix = jax.nn.softmax(map_stacked(lambda g, v: g(v), ts["w_logits"], flat, in_axes=None))
        return jnp.einsum("tnk,tnke->tne", mix, selectors)

    def __call__(self, x: jax.Array) -> tuple[jax.Array, ...]:
        experts = _experts_on(self.experts, x)
        features = jnp.einsum("tne,en...->tn...", self.gate_weights(x), experts)
        return heads_per_task(self.heads, features)


class PLE(nnx.Module):
    r"""Progressive Layered Extraction (Tang et al., RecSys 2020), as LibMTL's ``PLE``.

    The backbone's stages are extraction levels. At level l every task t carries its own
    representation :math:`r^{l}_t` (:math:`r^0_t = x`): ``E_s`` shared experts and ``E_t`` of its
    own (copies of stage l) read it, and its gate mixes them:

    .. math:: r^{l+1}_t = \sum_e \mathrm{softmax}(W^l_t\, r^l_t)_e\,
        [f^{l,s}_1(r^l_t), \ldots, f^{l,s}_{E_s}(r^l_t), f^{l,t}_1(r^l_t), \ldots]_e,
        \qquad y_t = h_t(r^L_t)

    (LibMTL's form: the shared experts read each task's representation; the paper's extra
    shared gate, which would feed a shared representation to the next level, is not in LibMTL.)
    Shared: the shared experts of every level (``experts``); task-specific: the task experts and
    gates of every level (``task_specific.experts``, ``task_specific.gates``) and the heads.

    Args:
      spec: the backbone whose stages are the levels (``"mlp"`` or ``"lenet"``).
      num_tasks: T.
      out_features: each head's output size, or one per task.
      num_experts: ``(E_s, E_t)`` or LibMTL's ``[E_s, E_1, ..., E_T]`` with equal ``E_t``.
      rngs: the random streams.
    """

    def __init__(
        self,
        spec: BackboneSpec,
        num_tasks: int,
        out_features: int | Sequence[int],
        num_experts: int | Sequence[int],
        *,
        rngs: nnx.Rngs,
    ):
        if spec.name not in ("mlp", "lenet"):
            raise ValueError(
                f"PLE runs on the mlp or lenet backbone (batch-norm-free stages: each task's "
                f"representation passes the shared experts); got {spec.name!r}."
            )
        num_tasks = _positive(num_tasks, "num_tasks")
        self.spec = spec
        self.num_shared, self.num_specific = _split_experts(num_experts, num_tasks, "PLE")
        total = self.num_shared + self.num_specific
        sizes = [int(np.prod(s)) for s in stage_input_shapes(spec)]
        if spec.in_features is not None:
            sizes[0] = int(spec.in_features)
        self.gate_inputs = tuple(sizes)
        levels = range(spec.num_stages)
        self.experts = nnx.List(
            [stack(lambda r, k=k: spec.make_stage(k, r), self.num_shared, rngs) for k in levels]
        )

        def task_experts(k):
            return stack(
                lambda r: stack(lambda q: spec.make_stage(k, q), self.num_specific, r),
                num_tasks,
                rngs,
            )

        self.task_specific = nnx.Dict(
            experts=nnx.List([task_experts(k) for k in levels]),
            gates=nnx.List(
                [
                    stack(lambda r, k=k: nnx.Linear(sizes[k], total, rngs=r), num_tasks, rngs)
                    for k in levels
                ]
            ),
        )
        self.heads = spec.make_heads(out_features, num_tasks, rngs)

    @property
    def num_tasks(self) -> int:
        return self.heads.num_tasks

    def __call__(self, x: jax.Array) -> tuple[jax.Array, ...]:
        num_tasks = self.num_tasks
        ts = self.task_specific
        # Level 0: every task reads x, so the shared experts run once.
        shared = map_stacked(lambda e, v: e(v)[1], self.experts[0], x, in_axes=None)
        own = map_stacked(
            lambda m, v: map_stacked(lambda e, u: e(u)[1], m, v, in_axes=None),
            ts["experts"][0],
            x,
            in_axes=None,
        )  # (T, E_t, N, ...)
        flat = _check_in_features(x, self.gate_inputs[0], "PLE")
        logits = map_stacked(lambda g, v: g(v), ts["gates"][0], flat, in_axes=None)
        shared = jnp.broadcast_to(shared[None], (num_tasks, *shared.shape))
        experts = jnp.concatenate([shared, own], axis=1)
        reps = jnp.einsum("tne,ten...->tn...", jax.nn.softmax(logits, axis=-1), experts)
        for level in range(1, self.spec.num_stages):
            t, n = reps.shape[:2]
            folded = jnp.reshape(reps, (t * n, *reps.shape[2:]))  # stages are per example
            shared = map_stacked(lambda e, v: e(v)[1], self.experts[level], folded, in_axes=None)
            shared = jnp.moveaxis(jnp.reshape(shared, (-1, t, n, *shared.shape[2:])), 0, 1)
            own = map_stacked(
                lambda m, v: map_stacked(lambda e, u: e(u)[1], m, v, in_axes=None),
                ts["experts"][level],
                reps,
            )
            logits = map_stacked(
                lambda g, v: g(jnp.reshape(v, (v.shape[0], -1))), ts["gates"][level], reps
            )
            experts = jnp.concatenate([shared, own], axis=1)
            reps = jnp.einsum("tne,ten...->tn...", jax.nn.softmax(logits, axis=-1), experts)
        return heads_per_task(self.heads, reps)  # mlp / lenet: no readout


def _spec(backbone, in_features, in_channels, hidden, small_inputs) -> BackboneSpec:
    return backbone_spec(
        backbone,
        in_features=in_features,
        in_channels=in_channels,
        hidden=hidden,
        small_inputs=small_inputs,
    )


def mmoe(
    num_tasks: int = 2,
    out_features: int | Sequence[int] = 10,
    *,
    in_features: int,
    backbone: str = "mlp",
    hidden: Sequence[int] = (64, 64),
    in_channels: int = 1,
    small_inputs: bool = False,
    num_experts: int = 4,
    rngs: nnx.Rngs,
) -> MMoE:
    """An :class:`MMoE`: ``num_experts`` encoders of ``backbone`` and T softmax gates.

    ``model(x)`` returns T arrays ``(N, out_features)``. ``in_features`` is the flattened input
    size (the gates' input; the MLP's input); ``hidden`` the MLP's widths; ``in_channels`` and
    ``small_inputs`` the image backbones' (``"lenet"``, ``"resnet18"``).
    """
    spec = _spec(backbone, in_features, in_channels, hidden, small_inputs)
    return MMoE(spec, num_tasks, out_features, num_experts, rngs=rngs)


def cgc(
    num_tasks: int = 2,
    out_features: int | Sequence[int] = 10,
    *,
    in_features: int,
    backbone: str = "mlp",
    hidden: Sequence[int] = (64, 64),
    in_channels: int = 1,
    small_inputs: bool = False,
    num_experts: int | Sequence[int] = (2, 1),
    rngs: nnx.Rngs,
) -> CGC:
    """A :class:`CGC` with ``num_experts = (shared, per task)`` encoders of ``backbone`` (the
    other arguments as :func:`mmoe`)."""
    spec = _spec(backbone, in_features, in_channels, hidden, small_inputs)
    return CGC(spec, num_tasks, out_features, num_experts, rngs=rngs)


def ple(
    num_tasks: int = 2,
    out_features: int | Sequence[int] = 10,
    *,
    in_features: int,
    backbone: str = "mlp",
    hidden: Sequence[int] = (64, 64),
    in_channels: int = 1,
    num_experts: int | Sequence[int] = (2, 1),
    rngs: nnx.Rngs,
) -> PLE:
    """A :class:`PLE` whose levels are the stages of ``backbone`` (``"mlp"``: one per hidden
    width; ``"lenet"``: three), ``num_experts = (shared, per task)`` at every level."""
    spec = _spec(backbone, in_features, in_channels, hidden, False)
    return PLE(spec, num_tasks, out_features, num_experts, rngs=rngs)


def dselect_k(
    num_tasks: int = 2,
    out_features: int | Sequence[int] = 10,
    *,
    in_features: int,
    backbone: str = "mlp",
    hidden: Sequence[int] = (64, 64),
    in_channels: int = 1,
    small_inputs: bool = False,
    num_experts: int = 4,
    num_nonzeros: int = 2,
    gamma: float = 1.0,
    rngs: nnx.Rngs,
) -> DSelectK:
    """A :class:`DSelectK` over ``num_experts`` encoders of ``backbone``, k = ``num_nonzeros``
    selectors per gate (the other arguments as :func:`mmoe`)."""
    spec = _spec(backbone, in_features, in_channels, hidden, small_inputs)
    return DSelectK(spec, num_tasks, out_features, num_experts, num_nonzeros, gamma, rngs=rngs)
