"""Every public weighting method, with what the shared contract and property tests need to know.

A new method adds one entry here (see tests/test_contract.py and tests/test_properties.py).

Fields:
  name: the factory's name in ``mtlx``.
  kwargs: arguments for the factory (``num_tasks`` is filled in by the tests when listed in
    ``per_num_tasks``).
  needs_losses: whether ``task_losses`` must be passed.
  per_num_tasks: the factory takes ``num_tasks`` (its state has T-sized arrays).
  non_conflicting: the update never conflicts with a task gradient (``<update, g_t> >= 0``).
  permutation_invariant: permuting the tasks leaves the update unchanged (deterministic methods).
  conflict_tolerance: how negative ``<update, g_t>`` may be, relative to ``max_t ||g_t||^2``
    (iterative solvers stop at a tolerance: MGDA's Frank-Wolfe stops at step size 1e-3).
  homogeneous: scaling every row by c > 0 scales the update by c.
  min_tasks: the smallest T the method accepts (Krum needs n_byzantine + 3).
  layout_invariant: the update does not depend on how the parameters are split into leaves
    (False for per-coordinate random draws, GradDrop: there it holds in law only).
  gramian: the method is a function of the Gramian (and losses) only; it accepts ``gramian=``.
  weighting: the update is a weighting sum_t w_t J_t (a Gramian, loss or rows-reading method):
    the transform carries its ``.weighting`` value and ``mtlx.cr_mogm`` can wrap it.
  static_args: not a field: :func:`static_args` reads the structural arguments from the factory's
    docstring ("Static under ``optax.inject_hyperparams``"), so the docstring is what is tested.
  dtypes: the Jacobian dtypes the method must accept (update in that dtype, finite).
"""

import functools
import inspect
import re

METHODS_UNDER_TEST = [
    dict(name="ew", kwargs={}, permutation_invariant=True, homogeneous=True),
    dict(name="mean", kwargs={}, permutation_invariant=True, homogeneous=True),
    dict(name="scalarization", kwargs={"weights": None}, homogeneous=True),
    dict(
        name="mgda",
        kwargs={},
        non_conflicting=True,
        conflict_tolerance=1e-2,
        homogeneous=True,
        gramian=True,
    ),
    dict(name="pcgrad", kwargs={}, homogeneous=True, gramian=True),
    dict(
        name="upgrad",
        kwargs={},
        non_conflicting=True,
        # The Gramian is regularized by reg_eps = 1e-4, as in TorchJD: <g_t, d> >= -reg_eps
        # trace(G) w_t, and w grows when the dual cone is thin (T > P; e.g. T = 3, P = 1 with
        # rows of both signs gives -1.6e-3 max ||g||^2). As DualProj.
        conflict_tolerance=1e-2,
        permutation_invariant=True,
        homogeneous=True,
        gramian=True,
    ),
    dict(name="rlw", kwargs={}, homogeneous=True),
    dict(name="rgw", kwargs={}, homogeneous=True),
    dict(name="uw_so", kwargs={}, needs_losses=True, permutation_invariant=True, homogeneous=True),
    dict(name="uw_o", kwargs={}, needs_losses=True, permutation_invariant=True, homogeneous=True),
    dict(
        name="uw",
        kwargs={},
        needs_losses=True,
        per_num_tasks=True,
        permutation_invariant=True,
        homogeneous=True,
    ),
    dict(name="excess_mtl", kwargs={}, per_num_tasks=True, permutation_invariant=True),
    dict(name="modo", kwargs={}, per_num_tasks=True, permutation_invariant=True, gramian=True),
    dict(name="sdmgrad", kwargs={}, per_num_tasks=True, permutation_invariant=True, gramian=True),
    dict(
        name="moco",  # combines tracked gradients, not the rows
        kwargs={},
        needs_losses=True,
        per_num_tasks=True,
        permutation_invariant=True,
        weighting=False,
    ),
    dict(
        name="cr_mogm",
        kwargs={"weighting": "mgda"},  # make() turns the name into mtlx.mgda()
        per_num_tasks=True,
        non_conflicting=True,
        conflict_tolerance=1e-2,  # the first update is MGDA's
        homogeneous=True,
        gramian=True,
    ),
    dict(
        name="dwa",
        kwargs={},
        needs_losses=True,
        per_num_tasks=True,
        permutation_invariant=True,
        homogeneous=True,
    ),
    dict(name="gls", kwargs={}, needs_losses=True, permutation_invariant=True, homogeneous=True),
    dict(
        name="imtl_l",
        kwargs={},
        needs_losses=True,
        per_num_tasks=True,
        permutation_invariant=True,
        homogeneous=True,
    ),
    dict(
        name="famo",
        kwargs={},
        needs_losses=True,
        per_num_tasks=True,
        permutation_invariant=True,
        homogeneous=True,
    ),
    dict(name="stch", kwargs={}, needs_losses=True, permutation_invariant=True, homogeneous=True),
    dict(
        name="gradnorm",
        kwargs={},
        needs_losses=True,
        per_num_tasks=True,
        permutation_invariant=True,
        homogeneous=True,
        gramian=True,
    ),
    dict(
        name="db_mtl",  # its state holds per-task gradients: init needs the right params
        kwargs={},
        weighting=False,
        needs_losses=True,
        per_num_tasks=True,
        permutation_invariant=True,
    ),
    dict(
        name="imtl",
        kwargs={},
        needs_losses=True,
        per_num_tasks=True,
        permutation_invariant=True,
        homogeneous=True,
        gramian=True,
    ),
    dict(
        name="gradvac",
        kwargs={"eps": 0.0},  # eps in the cosines' denominators breaks homogeneity for tiny rows
        per_num_tasks=True,
        homogeneous=True,
        gramian=True,
    ),
    dict(
        name="nash_mtl",  # scale-invariant, then clipped to max_norm: not homogeneous
        kwargs={},
        per_num_tasks=True,
        permutation_invariant=True,
        gramian=True,
    ),
    dict(name="pcd", kwargs={}, per_num_tasks=True, gramian=True),  # task 0 is the primary
    # trim_number=0 (the mean) is the only setting valid for T = 1.
    dict(
        name="krum",
        kwargs={"n_byzantine": 1, "n_selected": 2},
        min_tasks=4,
        homogeneous=True,
        gramian=True,
    ),
    dict(name="graddrop", kwargs={}, layout_invariant=False, homogeneous=True, weighting=False),
    dict(
        name="trimmed_mean",
        weighting=False,
        kwargs={"trim_number": 0},
        permutation_invariant=True,
        homogeneous=True,
    ),
    dict(name="pbi", kwargs={"pref_vector": None}, needs_losses=True, homogeneous=True),
    dict(name="cosmos", kwargs={"pref_vector": None}, needs_losses=True, homogeneous=True),
    dict(name="cagrad", kwargs={}, permutation_invariant=True, homogeneous=True, gramian=True),
    dict(name="imtl_g", kwargs={}, permutation_invariant=True, homogeneous=True, gramian=True),
    dict(
        name="dualproj",
        kwargs={},
        non_conflicting=True,
        # The QP runs on G / trace(G) + reg_eps I (reg_eps = 1e-4, as TorchJD): <g_t, d> >=
        # -reg_eps trace(G) w_t, and w grows when the dual cone is thin (T > P).
        conflict_tolerance=1e-2,
        permutation_invariant=True,
        homogeneous=True,
        gramian=True,
    ),
    dict(name="aligned_mtl", kwargs={}, permutation_invariant=True, homogeneous=True, gramian=True),
    dict(name="config", kwargs={}, permutation_invariant=True, homogeneous=True, gramian=True),
    # The update scales as c^((1 - alpha) / (1 + alpha)): not homogeneous. Non-conflicting only
    # where G w = w^(-1/alpha) has a positive root (not when 0 is in the rows' conic hull).
    dict(name="fairgrad", kwargs={}, permutation_invariant=True, gramian=True),
    # adatask / scale_by_adatask are absent on purpose: AdaTask is a complete optimizer (per-task
    # Adam moments), not a weighting, and the contract here chains a weighting before an optax
    # optimizer. tests/weighting/test_adatask.py covers it.
]

DEFAULTS = dict(
    needs_losses=False,
    per_num_tasks=False,
    non_conflicting=False,
    conflict_tolerance=1e-6,
    permutation_invariant=False,
    homogeneous=False,
    gramian=False,
    min_tasks=1,
    layout_invariant=True,
    weighting=True,
    dtypes=("float32", "bfloat16"),
)
_STATIC_LINE = re.compile(
    r"Static under ``optax.inject_hyperparams`` \(``static_args``\): (.*?)(?:;|\.)", re.DOTALL
)


def entries():
    return [{**DEFAULTS, **entry} for entry in METHODS_UNDER_TEST]


def ids():
    return [entry["name"] for entry in METHODS_UNDER_TEST]


def static_args(entry):
    """The structural arguments of ``entry``'s factory, as its docstring states them.

    Every factory's docstring has a line "Static under ``optax.inject_hyperparams``
    (``static_args``): ``a``, ``b``; ..." (or "none"); every other numeric argument must work
    injected (traced). A ValueError when the line is missing or names an unknown argument.
    """
    import mtlx

    factory = getattr(mtlx, entry["name"])
    match = _STATIC_LINE.search(inspect.getdoc(factory) or "")
    if match is None:
        raise ValueError(f"mtlx.{entry['name']}'s docstring does not say what is static.")
    names = tuple(re.findall(r"``(\w+)``", match.group(1)))
    unknown = set(names) - set(inspect.signature(factory).parameters)
    if unknown or (not names and match.group(1).strip() != "none"):
        raise ValueError(f"mtlx.{entry['name']}: unreadable static arguments {match.group(1)!r}.")
    return names


@functools.cache
def make_jitted(name, num_tasks):
    """``(tx, jax.jit(tx.update))`` of the method ``name`` for ``num_tasks`` tasks, built once."""
    import jax

    entry = next(e for e in entries() if e["name"] == name)
    tx = make(entry, num_tasks)
    return tx, jax.jit(tx.update)


def make(entry, num_tasks):
    """The transform of ``entry`` for ``num_tasks`` tasks."""
    import mtlx

    return getattr(mtlx, entry["name"])(**make_kwargs(entry, num_tasks))


def make_kwargs(entry, num_tasks):
    """The factory arguments of ``entry`` for ``num_tasks`` tasks."""
    import jax.numpy as jnp

    import mtlx

    kwargs = dict(entry["kwargs"])
    if entry["name"] == "scalarization":
        kwargs["weights"] = jnp.linspace(0.5, 1.5, num_tasks)
    if entry["name"] == "cr_mogm":
        kwargs["weighting"] = getattr(mtlx, kwargs["weighting"])()
    if entry["name"] in ("pbi", "cosmos"):
        kwargs["pref_vector"] = jnp.linspace(0.5, 1.5, num_tasks)
    if entry["per_num_tasks"]:
        kwargs["num_tasks"] = num_tasks
    return kwargs
