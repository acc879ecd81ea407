"""musicgen-medium (1.5B): audiocraft's recipe; parameters and optimizer state split with FSDP."""

from configs import common


def get_config():
    config = common.base_config()
    config.model.update(dim=1536, num_heads=24, num_layers=48, ffn_dim=6144)
    config.mesh.update(data=1, fsdp=-1)
    config.scan_layers = True
    config.remat = "full"  # a 30 s crop's activations do not fit a device otherwise (benchmarks/RESULTS.md)
    return config
