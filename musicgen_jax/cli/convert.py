"""Convert a PyTorch MusicGen checkpoint into this project's self-contained directory.

  python convert_torch_weights.py facebook/musicgen-small converted/musicgen-small
  python convert_torch_weights.py /path/to/audiocraft_dir out/ --format audiocraft

SOURCE: a hub id (through huggingface_hub: HF_HOME and HF_HUB_OFFLINE are honoured) or a local
directory in transformers format (config.json, safetensors or pytorch_model.bin, tokenizer files) or
audiocraft format (state_dict.bin + compression_state_dict.bin; T5 comes from the name in xp.cfg).
OUTPUT_DIR holds the codec, T5 encoder with its tokenizer, and LM; it loads without torch.
"""

from __future__ import annotations

import argparse
import sys
import time

from musicgen_jax.checkpoint.errors import CheckpointError
from musicgen_jax.components import save_converted
from musicgen_jax.convert.pretrained import FORMATS
from musicgen_jax.convert.pretrained import convert as convert_checkpoint


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", help="hub id or local checkpoint directory")
    parser.add_argument("output", help="output directory or URL (replaced as a whole if it exists)")
    parser.add_argument(
        "--format",
        default="auto",
        choices=FORMATS,
        help="checkpoint format when a repo has both (default auto: transformers if present)",
    )
    args = parser.parse_args(argv)
    start = time.time()
    try:
        components = convert_checkpoint(args.source, args.format)
        save_converted(components, args.output)
    except (CheckpointError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    lm = components.lm_config
    print(
        f"{args.source} -> {args.output} in {time.time() - start:.1f} s: LM {lm.num_layers} layers x {lm.dim}, "
        f"{lm.num_codebooks} codebooks, {'stereo' if components.codec.stereo else 'mono'} codec, "
        f"T5 d_model {components.text_encoder.config.d_model}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
