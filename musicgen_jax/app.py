"""`python -m musicgen_jax.app`: the gradio demo, `musicgen_jax.apps.demo` (`musicgen-app`)."""

import sys

from musicgen_jax.apps.demo import main

if __name__ == "__main__":
    sys.exit(main())
