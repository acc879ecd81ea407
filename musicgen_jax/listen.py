"""`python -m musicgen_jax.listen`: the listening page, `musicgen_jax.apps.listen` (`musicgen-listen`)."""

import sys

from musicgen_jax.apps.listen import main

if __name__ == "__main__":
    sys.exit(main())
