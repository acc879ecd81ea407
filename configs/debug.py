"""A tiny LM that trains on a CPU in about a minute (the smoke test of the whole training path).

python train.py --config configs/debug.py --workdir runs/debug --config.data_dir=DATA_DIR
"""

from configs import common


def get_config():
    config = common.base_config()
    config.model.update(dim=64, num_heads=4, num_layers=2, ffn_dim=256)
    config.update(total_steps=100, batch_size=8, frames=250, text_length=32, log_every=10, checkpoint_every=25)
    config.optim.update(lr=3e-3, warmup_steps=10)
    config.ema.update(every=1)
    config.compute_dtype = "float32"  # CPU
    return config
