"""Model configurations: frozen dataclasses, one place per constant.

Configurations of converted models are always read from the checkpoint's own config
(see `musicgen_jax.convert`); the presets here describe the released architectures and
are used where no checkpoint is involved (benchmarks, shape tests).
"""

from __future__ import annotations

import dataclasses
import math

PAD_MODES = ("constant", "reflect", "replicate")


@dataclasses.dataclass(frozen=True)
class CodecConfig:
    """EnCodec (SEANet encoder/decoder + residual vector quantizer) hyper-parameters.

    Names follow audiocraft's SEANet arguments. `ratios` are in decoder order (the encoder
    uses them reversed); `channels` is the number of audio channels the codec itself codes
    (1 for MusicGen; stereo models code each channel with the mono codec).
    """

    sample_rate: int = 32000
    channels: int = 1
    dimension: int = 128
    n_filters: int = 64
    ratios: tuple[int, ...] = (8, 5, 4, 4)
    n_residual_layers: int = 1
    kernel_size: int = 7
    last_kernel_size: int = 7
    residual_kernel_size: int = 3
    dilation_base: int = 2
    compress: int = 2
    lstm_layers: int = 2
    pad_mode: str = "reflect"
    causal: bool = False
    true_skip: bool = True
    trim_right_ratio: float = 1.0
    num_codebooks: int = 4
    codebook_size: int = 2048

    def __post_init__(self):
        object.__setattr__(self, "ratios", tuple(int(r) for r in self.ratios))
        if self.pad_mode not in PAD_MODES:
            raise ValueError(f"CodecConfig.pad_mode must be one of {PAD_MODES}, got {self.pad_mode!r}")
        positive = ("sample_rate", "channels", "dimension", "n_filters", "kernel_size", "last_kernel_size",
                    "residual_kernel_size", "compress", "num_codebooks", "codebook_size")
        bad = [name for name in positive if int(getattr(self, name)) <= 0]
        if bad or not self.ratios or min(self.ratios) <= 0:
            raise ValueError(f"CodecConfig has non-positive values: {bad or ['ratios']} in {self}")
        if not 0.0 <= self.trim_right_ratio <= 1.0:
            raise ValueError(f"CodecConfig.trim_right_ratio must be in [0, 1], got {self.trim_right_ratio}")

    @property
    def hop_length(self) -> int:
        """Audio samples per codec frame (640 for the 32 kHz model)."""
        return math.prod(self.ratios)

    @property
    def frame_rate(self) -> int:
        """Codec frames per second (50 for the 32 kHz model)."""
        return math.ceil(self.sample_rate / self.hop_length)

    def num_frames(self, num_samples: int) -> int:
        """Frames produced by encoding `num_samples` samples: ceil(samples / hop)."""
        return math.ceil(num_samples / self.hop_length)

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "ratios": list(self.ratios)}

    @classmethod
    def from_dict(cls, d: dict) -> "CodecConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown CodecConfig fields {unknown}")
        return cls(**d)


# The released facebook/encodec_32khz architecture (SPEC 1.1). pad_mode as in its HF hub config.
ENCODEC_32KHZ = CodecConfig()
