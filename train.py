"""Train the MusicGen LM: `musicgen_jax.cli.train` (also installed as `musicgen-train`).

python train.py --config configs/debug.py --workdir runs/debug --config.data_dir=data/mymusic
"""

from musicgen_jax.cli.train import run

if __name__ == "__main__":
    run()
