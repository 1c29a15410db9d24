import os

import hypothesis
import jax

# Parity and property tests compare against float64 references.
jax.config.update("jax_enable_x64", True)

# JAX compiles on an example's first run: a per-example deadline would time XLA, not the property.
hypothesis.settings.register_profile("dev", deadline=None, max_examples=25)
hypothesis.settings.register_profile("ci", deadline=None, max_examples=50, derandomize=True)
hypothesis.settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))
