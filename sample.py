"""Generate music from text prompts: `musicgen_jax.cli.sample` (also installed as `musicgen-sample`).

python sample.py --prompt "lofi hip hop with a jazzy piano" --duration 8 --out lofi.wav
"""

import sys

from musicgen_jax.cli.sample import main

if __name__ == "__main__":
    sys.exit(main())
