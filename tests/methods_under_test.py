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
  homogeneous: scaling every row by c > 0 scales the update by c.
  gramian: the method is a function of the Gramian (and losses) only; it accepts ``gramian=``.
"""

METHODS_UNDER_TEST = [
    dict(name="ew", kwargs={}, permutation_invariant=True, homogeneous=True),
    dict(name="mean", kwargs={}, permutation_invariant=True, homogeneous=True),
    dict(name="scalarization", kwargs={"weights": None}, homogeneous=True),
    dict(name="mgda", kwargs={}, non_conflicting=True, homogeneous=True, gramian=True),
    dict(name="pcgrad", kwargs={}, homogeneous=True, gramian=True),
    dict(
        name="upgrad",
        kwargs={},
        non_conflicting=True,
        permutation_invariant=True,
        homogeneous=True,
        gramian=True,
    ),
]

DEFAULTS = dict(
    needs_losses=False,
    per_num_tasks=False,
    non_conflicting=False,
    permutation_invariant=False,
    homogeneous=False,
    gramian=False,
)


def entries():
    return [{**DEFAULTS, **entry} for entry in METHODS_UNDER_TEST]


def ids():
    return [entry["name"] for entry in METHODS_UNDER_TEST]


def make(entry, num_tasks):
    """The transform of ``entry`` for ``num_tasks`` tasks."""
    import jax.numpy as jnp

    import mtlx

    kwargs = dict(entry["kwargs"])
    if entry["name"] == "scalarization":
        kwargs["weights"] = jnp.linspace(0.5, 1.5, num_tasks)
    if entry["per_num_tasks"]:
        kwargs["num_tasks"] = num_tasks
    return getattr(mtlx, entry["name"])(**kwargs)
