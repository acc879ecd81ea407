"""Music metadata and the training text built from it, as audiocraft's `MusicDataset`.

`normalize` turns a raw sidecar / manifest dict into the fields of audiocraft's `MusicInfo`
(`MusicInfo.from_dict` and its preprocessors); `describe` builds the text a model is trained on
(`augment_music_info_description`), drawing all its randomness from a given `random.Random`.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import random
import re
from collections.abc import Callable, Mapping

FIELDS = ("title", "artist", "key", "bpm", "genre", "moods", "keywords", "description", "instrument")
_MERGED = ("key", "bpm", "genre", "moods", "keywords", "instrument")  # the fields merged into the text, FIELDS order


def _string(value: object) -> str | None:
    """`value` stripped (str), or None when it is not a non-empty string other than 'None'."""
    if not isinstance(value, str) or value == "None":
        return None
    return value.strip() or None


def _keyword(value: object) -> str | None:
    """`value` stripped and lower-cased (str), or None as `_string`."""
    value = _string(value)
    return value.lower() if value is not None else None


def _musical_key(value: object) -> str | None:
    """The key as `_keyword` (str), or None when it lists several keys (contains ',')."""
    if isinstance(value, str) and "," in value:
        return None
    return _keyword(value)


def _bpm(value: object) -> float | None:
    """`float(value)` (float), or None when missing, not convertible or not finite."""
    if value is None:
        return None
    try:
        bpm = float(value)
    except (TypeError, ValueError):
        return None
    return bpm if math.isfinite(bpm) else None


def _keyword_list(values: object) -> list[str] | None:
    """The keywords (list[str]) of a list, or of a string split on commas and whitespace; None when
    there are none. A float NaN (a missing pandas cell) has none; another non-list is one keyword."""
    if isinstance(values, str):
        values = re.split(r"[,\s]", values)
    elif isinstance(values, float) and math.isnan(values):
        values = []
    if not isinstance(values, list):
        values = [str(values)]
    keywords = [keyword for keyword in map(_keyword, values) if keyword is not None]
    return keywords or None


_NORMALIZERS: dict[str, Callable[[object], object]] = {
    "title": _string,
    "artist": _string,
    "key": _musical_key,
    "bpm": _bpm,
    "genre": _keyword,
    "moods": _keyword_list,
    "keywords": _keyword_list,
    "description": _string,
    "instrument": _keyword,
}


def normalize(raw: Mapping) -> dict[str, object]:
    """The metadata of `FIELDS` (dict[str, object]) from a raw sidecar / manifest mapping, None where
    missing or unusable; other keys are ignored. Raises ValueError when `raw` is not a mapping.

    Deviations from audiocraft, so that normalized metadata survives the token shards unchanged (they
    store a missing string as `""` and a missing `bpm` as a float64 NaN) and a bad value is not fatal:

    - a string that is empty once stripped is None (audiocraft keeps `""`);
    - a `bpm` that is not finite is None (audiocraft keeps NaN / inf), and so is one that `float`
      rejects with a TypeError, such as a list (audiocraft only catches ValueError).
    """
    if not isinstance(raw, Mapping):
        raise ValueError(f"metadata must be a JSON object (a mapping of field names), got {type(raw).__name__}")
    return {name: _NORMALIZERS[name](raw[name]) if name in raw else None for name in FIELDS}


def _text(value: object) -> str:
    """A metadata value as text: str() of a number or string, a list joined with ', '."""
    return ", ".join(value) if isinstance(value, list) else str(value)


def describe(
    info: Mapping, rng: random.Random, merge_text_p: float = 0.0, drop_desc_p: float = 0.0, drop_other_p: float = 0.0
) -> str | None:
    """The training text (str or None) of normalized metadata `info`, as audiocraft's
    `augment_music_info_description`, with all randomness drawn from `rng`.

    With `merge_text_p` 0 the description is returned unchanged. Otherwise, with probability
    `merge_text_p`, those of key, bpm, genre, moods, keywords and instrument that are set are merged
    in as "name: value" pairs in random order, joined with ". ", and the description is then dropped
    with probability `drop_desc_p`. Despite its name, `drop_other_p` is the probability that a field is KEPT (a
    quirk of audiocraft, which keeps a field when `uniform(0, 1) < drop_other_p`; followed here).
    The description and the pairs are joined with ". " (a trailing '.' of the description removed),
    so even without a merge the description gains a final '.'; an empty result is None.
    """
    description = info.get("description")
    if not merge_text_p:
        return description
    metadata_text = ""
    if rng.random() < merge_text_p:
        pairs = []
        for name in _MERGED:
            value = info.get(name)
            keep = rng.random() < drop_other_p
            if keep and isinstance(value, (int, float, str, list)):
                pairs.append(f"{name}: {_text(value)}")
        rng.shuffle(pairs)
        metadata_text = ". ".join(pairs)
        if rng.random() < drop_desc_p:
            description = None
    if description is None:
        description = metadata_text if len(metadata_text) > 1 else None
    else:
        description = ". ".join([description.rstrip("."), metadata_text])
    return description.strip() if description else None


@dataclasses.dataclass(frozen=True)
class TextAugmentation:
    """The probabilities of `describe`, each a real number in [0, 1]. Note that `drop_other_p` is
    the probability of keeping a metadata field (as audiocraft), not of dropping it."""

    merge_text_p: float = 0.0
    drop_desc_p: float = 0.0
    drop_other_p: float = 0.0

    def __post_init__(self):
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= value <= 1:
                raise ValueError(f"TextAugmentation.{field.name} must be a number in [0, 1], got {value!r}")

    def describe(self, info: Mapping, rng: random.Random) -> str | None:
        """The training text (str or None) of normalized metadata `info`; see `describe`."""
        return describe(info, rng, self.merge_text_p, self.drop_desc_p, self.drop_other_p)


AUDIOCRAFT_DEFAULTS = TextAugmentation(merge_text_p=0.25, drop_desc_p=0.5, drop_other_p=0.5)
