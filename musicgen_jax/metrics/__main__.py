"""`python -m musicgen_jax.metrics`: see `musicgen_jax.cli.metrics`."""

import sys

from musicgen_jax.cli.metrics import main

if __name__ == "__main__":
    sys.exit(main())
