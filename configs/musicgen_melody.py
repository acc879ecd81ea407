"""musicgen-melody (1.5B, the medium width): text and the chroma of each 30 s crop prepended to the audio
tokens (no cross-attention), audiocraft's chroma2music recipe: guidance dropout 0.2, T5 word dropout 0.2,
melody dropout 0.5. Needs a dataset prepared with `--chroma` (audiocraft separates the melody with Demucs
first: add `--melody-stems`)."""

from configs import common


def get_config():
    config = common.base_config()
    config.model.update(dim=1536, num_heads=24, num_layers=48, ffn_dim=6144)
    config.melody = True
    config.cfg_dropout = 0.2
    config.word_dropout = 0.2
    config.melody_dropout = 0.5
    config.mesh.update(data=1, fsdp=-1)
    config.scan_layers = True
    config.remat = "full"  # a 30 s crop's activations do not fit a device otherwise (benchmarks/RESULTS.md)
    return config
