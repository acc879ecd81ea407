"""Model configurations: frozen dataclasses, one place per constant.

Configurations of converted models are always read from the checkpoint's own config
(see `musicgen_jax.convert`); the presets here describe the released architectures and
are used where no checkpoint is involved (benchmarks, shape tests).
"""

from __future__ import annotations

import dataclasses
import math

PAD_MODES = ("constant", "reflect", "replicate")
DATASET_INFO_FILE = "dataset.json"  # a prepared token dataset's record of its codec, splits and chroma


class _DictIO:
    """JSON-friendly dict round trip for the frozen config dataclasses; unknown fields are errors."""

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict):
        unknown = sorted(set(d) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ValueError(f"unknown {cls.__name__} fields {unknown}")
        return cls(**d)


@dataclasses.dataclass(frozen=True)
class CodecConfig(_DictIO):
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
        positive = (
            "sample_rate",
            "channels",
            "dimension",
            "n_filters",
            "kernel_size",
            "last_kernel_size",
            "residual_kernel_size",
            "compress",
            "num_codebooks",
            "codebook_size",
        )
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


# The released facebook/encodec_32khz architecture (transformers' `EncodecConfig` of `facebook/encodec_32khz`).
# pad_mode as in its HF hub config.
ENCODEC_32KHZ = CodecConfig()


@dataclasses.dataclass(frozen=True)
class DacConfig(_DictIO):
    """Descript Audio Codec hyper-parameters, named and defaulted as the arguments of descript's `DAC` (the
    defaults are its 44.1 kHz model). transformers' `DacConfig` calls them encoder_hidden_size,
    downsampling_ratios, decoder_hidden_size, upsampling_ratios and hidden_size (the latent width).

    `latent_dim` None: `encoder_dim * 2 ** len(encoder_rates)`, the width the encoder reaches, as descript's
    `DAC` resolves it. DAC codes mono audio.
    """

    sample_rate: int = 44100
    encoder_dim: int = 64
    encoder_rates: tuple[int, ...] = (2, 4, 8, 8)
    latent_dim: int | None = None
    decoder_dim: int = 1536
    decoder_rates: tuple[int, ...] = (8, 8, 4, 2)
    n_codebooks: int = 9
    codebook_size: int = 1024
    codebook_dim: int = 8

    def __post_init__(self):
        for name in ("encoder_rates", "decoder_rates"):
            object.__setattr__(self, name, tuple(int(r) for r in getattr(self, name)))
        if self.latent_dim is None:
            object.__setattr__(self, "latent_dim", self.encoder_dim * 2 ** len(self.encoder_rates))
        scalars = ("sample_rate", "encoder_dim", "latent_dim", "decoder_dim", "n_codebooks", "codebook_size")
        bad = [name for name in (*scalars, "codebook_dim") if int(getattr(self, name)) <= 0]
        bad += [name for name in ("encoder_rates", "decoder_rates") if min(getattr(self, name), default=0) <= 0]
        if bad:
            raise ValueError(f"DacConfig has non-positive values: {bad} in {self}")

    @property
    def hop_length(self) -> int:
        """Audio samples per frame: the product of the encoder's strides (512 at 44.1 kHz, 320 at 24 / 16 kHz)."""
        return math.prod(self.encoder_rates)

    @property
    def frame_rate(self) -> float:
        """Frames per second, sample_rate / hop_length (86.13 at 44.1 kHz; audiocraft's `DAC.frame_rate`;
        transformers' `DacConfig.frame_rate` rounds it up)."""
        return self.sample_rate / self.hop_length


# descript's released models (`dac.utils.load_model`: conf/final/*.yml of descript-audio-codec; transformers'
# descript/dac_44khz, dac_24khz, dac_16khz); the 16 kbps 44.1 kHz release has a narrower latent and 18 codebooks.
DAC_44KHZ = DacConfig()
DAC_44KHZ_16KBPS = DacConfig(latent_dim=128, n_codebooks=18)
DAC_24KHZ = DacConfig(sample_rate=24000, encoder_rates=(2, 4, 5, 8), decoder_rates=(8, 5, 4, 2), n_codebooks=32)
DAC_16KHZ = DacConfig(sample_rate=16000, encoder_rates=(2, 4, 5, 8), decoder_rates=(8, 5, 4, 2), n_codebooks=12)


FEED_FORWARD_PROJS = ("relu", "gated-gelu")


@dataclasses.dataclass(frozen=True)
class T5Config(_DictIO):
    """T5 encoder hyper-parameters (names as in transformers' T5Config).

    `feed_forward_proj`: "relu" (t5-base: ReLU MLP) or "gated-gelu" (t5-v1_1 / flan-t5: tanh-GELU
    gate times a linear branch).
    """

    vocab_size: int = 32128
    d_model: int = 768
    d_kv: int = 64
    d_ff: int = 3072
    num_layers: int = 12
    num_heads: int = 12
    relative_attention_num_buckets: int = 32
    relative_attention_max_distance: int = 128
    layer_norm_epsilon: float = 1e-6
    feed_forward_proj: str = "relu"

    def __post_init__(self):
        if self.feed_forward_proj not in FEED_FORWARD_PROJS:
            raise ValueError(
                f"T5Config.feed_forward_proj must be one of {FEED_FORWARD_PROJS}, got {self.feed_forward_proj!r}"
            )
        bad = [
            f.name
            for f in dataclasses.fields(self)
            if f.name not in ("feed_forward_proj", "layer_norm_epsilon") and int(getattr(self, f.name)) <= 0
        ]
        if bad:
            raise ValueError(f"T5Config has non-positive values: {bad}")

    @property
    def gated(self) -> bool:
        return self.feed_forward_proj == "gated-gelu"


# t5-base, the text encoder of every released MusicGen model (audiocraft's `T5Conditioner`).
T5_BASE = T5Config()


def interleaved_delays(num_codebooks: int, channels: int = 1) -> tuple[int, ...]:
    """The delay pattern's delays of `num_codebooks` codebooks of `channels` interleaved channels
    ([L0, R0, L1, R1, ...] for stereo): codebook k is delayed by k // channels steps."""
    return tuple(k // channels for k in range(num_codebooks))


@dataclasses.dataclass(frozen=True)
class LMConfig(_DictIO):
    """MusicGen transformer LM hyper-parameters (audiocraft's `musicgen_lm.yaml`, transformers'
    `MusicgenDecoderConfig`).

    `card` is the codebook size; id `card` is the special token (before the first frame of each
    codebook and after its last one in the delay pattern). `delays` has one entry per codebook
    (stereo: [0, 0, 1, 1, 2, 2, 3, 3]). `text_dim` is the width of the text encoder states that the
    LM projects to `dim`.

    `chroma_bins` 0: a text-to-music model, the projected text reaches the layers by cross-attention.
    `chroma_bins` > 0: a melody model (audiocraft's `ChromaStemConditioner` and `ConditionFuser`), without
    cross-attention: `chroma_frames` frames of projected one-hot chroma, then the projected text, are prepended to
    the audio tokens.
    """

    dim: int = 1024
    num_heads: int = 16
    num_layers: int = 24
    ffn_dim: int = 4096
    card: int = 2048
    delays: tuple[int, ...] = (0, 1, 2, 3)
    text_dim: int = 768
    norm_eps: float = 1e-5
    max_period: float = 10000.0
    chroma_bins: int = 0
    chroma_frames: int = 235

    def __post_init__(self):
        object.__setattr__(self, "delays", tuple(int(d) for d in self.delays))
        if self.chroma_bins < 0 or self.chroma_frames <= 0:
            raise ValueError(
                f"LMConfig has invalid chroma_bins {self.chroma_bins} / chroma_frames {self.chroma_frames}"
            )
        if self.dim % self.num_heads or self.dim % 2:
            raise ValueError(f"LMConfig.dim {self.dim} must be even and divisible by num_heads {self.num_heads}")
        bad = [n for n in ("dim", "num_heads", "num_layers", "ffn_dim", "card", "text_dim") if getattr(self, n) <= 0]
        if bad or not self.delays or min(self.delays) < 0:
            raise ValueError(f"LMConfig has invalid values: {bad or ['delays']} in {self}")

    @property
    def num_codebooks(self) -> int:
        return len(self.delays)

    @property
    def special_token(self) -> int:
        return self.card

    @property
    def melody(self) -> bool:
        return self.chroma_bins > 0

    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads


# musicgen-small's LM (audiocraft's `musicgen_lm.yaml`, transformers' `MusicgenDecoderConfig`); medium / large differ
# only in dim, heads, layers and ffn_dim.
MUSICGEN_SMALL_LM = LMConfig()


@dataclasses.dataclass(frozen=True)
class ChromaConfig(_DictIO):
    """The melody conditioner's chroma features (audiocraft's `ChromaStemConditioner`, transformers'
    `MusicgenMelodyFeatureExtractor`): a power spectrogram (Hann window of `n_fft`, hop `hop_length`, centred with
    reflect padding, normalized by the window's energy), `bins` chroma bins from librosa's filter bank (tuning 0),
    inf-normalized and one-hot at the argmax. Frame rate sample_rate / hop_length (7.8125 Hz at 32 kHz)."""

    sample_rate: int = 32000
    n_fft: int = 16384
    hop_length: int = 4096
    bins: int = 12
    norm_eps: float = 1e-6

    def __post_init__(self):
        bad = [n for n in ("sample_rate", "n_fft", "hop_length", "bins") if getattr(self, n) <= 0]
        if bad:
            raise ValueError(f"ChromaConfig has invalid values: {bad} in {self}")
