"""musicgen-melody (1.5B, musicgen-medium's sizes and sharding): text and the chroma of each 30 s crop
prepended to the audio tokens (no cross-attention), audiocraft's chroma2music recipe: guidance dropout 0.2,
T5 word dropout 0.2, melody dropout 0.5. Needs a dataset prepared with `--chroma` (audiocraft separates the
melody with Demucs first: add `--melody-stems`)."""

from configs import musicgen_medium


def get_config():
    config = musicgen_medium.get_config()
    config.melody = True
    config.cfg_dropout = 0.2
    config.word_dropout = 0.2
    config.melody_dropout = 0.5
    return config
