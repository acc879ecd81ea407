"""`python -m musicgen_jax.codec`: the audio tokenizer CLI, `musicgen_jax.cli.codec` (`musicgen-codec`)."""

import sys

from musicgen_jax.cli.codec import main

if __name__ == "__main__":
    sys.exit(main())
