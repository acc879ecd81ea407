"""musicgen-large (3.3B): audiocraft's large grid (clipping 3.0, guidance and word dropout 0.2), FSDP."""

from configs import common


def get_config():
    config = common.base_config()
    config.model.update(dim=2048, num_heads=32, num_layers=48, ffn_dim=8192)
    config.optim.max_norm = 3.0
    config.cfg_dropout = 0.2
    config.word_dropout = 0.2
    config.mesh.update(data=1, fsdp=-1)
    config.scan_layers = True
    config.remat = "full"  # a 30 s crop's activations do not fit a device otherwise (benchmarks/RESULTS.md)
    return config
