"""Test-wide settings.

XLA:CPU takes about 2 s to compile each partitionable threefry RNG call (jax 0.10.2, measured on
this project's 2-core machines), which made random initialization of a tiny codec take 20 s; the
classic threefry compiles in 0.1 s. Tests draw random values only where no value is asserted, so
they use the classic one.
"""

import jax

jax.config.update("jax_threefry_partitionable", False)
