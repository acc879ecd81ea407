"""musicgen-small (300M): audiocraft's recipe, global batch 192 of 30 s crops, 1M steps."""

from configs import common


def get_config():
    return common.base_config()
