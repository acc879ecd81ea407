"""Convert a PyTorch MusicGen checkpoint: `musicgen_jax.cli.convert` (also installed as `musicgen-convert`).

python convert_torch_weights.py facebook/musicgen-small converted/musicgen-small
"""

import sys

from musicgen_jax.cli.convert import main

if __name__ == "__main__":
    sys.exit(main())
