"""One process of the multi-process tests (``tests/training/test_multiprocess.py``).

``python multiprocess_worker.py SPEC_JSON``: SPEC holds ``runs`` (name -> TrainConfig fields),
``out`` (a JSON file for this process's results) and, for a multi-process run, ``coordinator``,
``num_processes`` and ``process_id``. ``hold_after`` makes the processes stop moving after they
saved that step's checkpoint (the test then kills them, so that the kill lands at a known step).
XLA_FLAGS sets the CPU devices of the process before JAX starts (the test's environment).
"""

import json
import sys
import time


def main(spec: dict) -> None:
    from mtlx.training import distributed

    multi = distributed.initialize(
        spec.get("coordinator"), spec.get("num_processes"), spec.get("process_id")
    )
    import jax
    import numpy as np

    from mtlx.training import TrainConfig, train
    from mtlx.training import checkpoint as checkpoint_lib

    hold = spec.get("hold_after")
    if hold is not None:
        save = checkpoint_lib.Checkpointer.save

        def save_then_hold(self, state, *args, **kwargs):
            step = save(self, state, *args, **kwargs)
            if step >= hold:
                print(f"HOLDING {jax.process_index()} {step}", flush=True)
                time.sleep(3600)
            return step

        checkpoint_lib.Checkpointer.save = save_then_hold

    out = {
        "multi": multi,
        "process_index": jax.process_index(),
        "process_count": jax.process_count(),
        "devices": jax.device_count(),
        "runs": {},
    }
    for name, fields in spec["runs"].items():
        result = train(TrainConfig(**fields))
        params = distributed.fetch(jax.tree.leaves(result.state.params))
        out["runs"][name] = {
            "params": np.concatenate([np.ravel(x) for x in params]).tolist(),
            "results": result.results,
            "eval_losses": result.eval_losses,
            "replicated": all(
                x.sharding.is_fully_replicated for x in jax.tree.leaves(result.state)
            ),
            "mesh_devices": len(jax.tree.leaves(result.state.params)[0].sharding.device_set),
            "history": len(result.history),
        }
    with open(spec["out"], "w", encoding="utf-8") as f:
        json.dump(out, f)


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
