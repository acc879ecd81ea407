"""musicgen-small (300M): audiocraft's recipe, global batch 192 of 30 s crops, 1M steps.

Layers scanned: at the full 24 layers the scanned train step ran 13.2 s against the unrolled one's 25.0 s
(and compiled in a fraction of its 53 s) on the benchmark CPU (`python -m benchmarks.train --layers 24`)."""

from configs import common


def get_config():
    config = common.base_config()
    config.scan_layers = True
    return config
