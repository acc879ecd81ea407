"""Tests for musicgen_jax.data.metadata: audiocraft's MusicInfo normalization and text augmentation."""

from __future__ import annotations

import math
import random

import pytest

from musicgen_jax.data.metadata import AUDIOCRAFT_DEFAULTS, FIELDS, TextAugmentation, describe, normalize

DRAWS = 20000
MERGED = ("key", "bpm", "genre", "moods", "keywords", "instrument")
ALL_SET = {
    "key": "c major",
    "bpm": 120.0,
    "genre": "rock",
    "moods": ["happy", "sad"],
    "keywords": ["live"],
    "instrument": "guitar",
}


class _Fixed(random.Random):
    """A random.Random whose `random()` always returns `value` and whose shuffle keeps the order."""

    def __init__(self, value):
        super().__init__(0)
        self.value = value

    def random(self):
        return self.value

    def shuffle(self, x):
        pass


def _info(**fields):
    return {**dict.fromkeys(FIELDS), **fields}


def _assert_fraction(count, n, p):
    """count / n is p within 4 standard errors of a binomial fraction, sqrt(p (1 - p) / n) (a false
    failure about once in 16000 runs, and the seeds are fixed)."""
    assert n > 0
    assert abs(count / n - p) <= 4 * math.sqrt(p * (1 - p) / n), (count, n, p)


def test_fields_in_audiocraft_order():
    assert FIELDS == ("title", "artist", "key", "bpm", "genre", "moods", "keywords", "description", "instrument")


def test_normalize_missing_and_unknown_keys():
    assert normalize({"genre": "Jazz", "path": "a.wav", "sample_rate": 32000}) == _info(genre="jazz")
    assert normalize({}) == _info()


@pytest.mark.parametrize("raw", [[1, 2], "rock", None, 3.0])
def test_normalize_rejects_non_mapping(raw):
    with pytest.raises(ValueError, match=f"JSON object.*{type(raw).__name__}"):
        normalize(raw)


@pytest.mark.parametrize("name", ["title", "artist", "description"])
@pytest.mark.parametrize(
    "value, expected",
    [(" My Song ", "My Song"), ("None", None), ("", None), ("   ", None), (None, None), (5, None), (["a"], None)],
)
def test_normalize_string(name, value, expected):
    assert normalize({name: value})[name] == expected


@pytest.mark.parametrize("name", ["genre", "instrument"])
@pytest.mark.parametrize(
    "value, expected",
    [(" Rock ", "rock"), ("Hip Hop", "hip hop"), ("None", None), ("", None), (None, None), (1.0, None)],
)
def test_normalize_keyword(name, value, expected):
    assert normalize({name: value})[name] == expected


@pytest.mark.parametrize(
    "value, expected",
    [(" C Major ", "c major"), ("C major, A minor", None), ("None", None), ("", None), (None, None), (7, None)],
)
def test_normalize_key(value, expected):
    assert normalize({"key": value})["key"] == expected


@pytest.mark.parametrize(
    "value, expected",
    [
        ("120", 120.0),
        (" 92.5 ", 92.5),
        (128, 128.0),
        (99.5, 99.5),
        ("fast", None),
        (None, None),
        ([120], None),
        ({"bpm": 1}, None),
        (float("nan"), None),
        ("inf", None),
        (float("-inf"), None),
    ],
)
def test_normalize_bpm(value, expected):
    bpm = normalize({"bpm": value})["bpm"]
    assert bpm == expected
    assert bpm is None or type(bpm) is float


@pytest.mark.parametrize("name", ["moods", "keywords"])
@pytest.mark.parametrize(
    "value, expected",
    [
        ("Happy, sad  chill", ["happy", "sad", "chill"]),
        ("calm", ["calm"]),
        ([" Happy ", "None", "", 3, "Sad"], ["happy", "sad"]),
        (float("nan"), None),
        ([], None),
        ("", None),
        (", ,", None),
        (None, None),
        (5, ["5"]),
    ],
)
def test_normalize_keyword_list(name, value, expected):
    assert normalize({name: value})[name] == expected


def test_describe_merges_field():
    info = _info(description="Desc", key="c major")
    assert describe(info, random.Random(0), merge_text_p=1, drop_desc_p=0, drop_other_p=1) == "Desc. key: c major"
    info = _info(description="Desc.", key="c major")
    assert describe(info, random.Random(0), merge_text_p=1, drop_desc_p=0, drop_other_p=1) == "Desc. key: c major"


def test_describe_drops_description():
    info = _info(description="Desc", key="c major")
    assert describe(info, random.Random(0), merge_text_p=1, drop_desc_p=1, drop_other_p=1) == "key: c major"


def test_describe_values_as_text():
    info = _info(description="Desc", **ALL_SET)
    text = describe(info, _Fixed(0.5), merge_text_p=1, drop_desc_p=0, drop_other_p=1)
    assert text == (
        "Desc. key: c major. bpm: 120.0. genre: rock. moods: happy, sad. keywords: live. instrument: guitar"
    )
    text = describe(info, random.Random(3), merge_text_p=1, drop_desc_p=0, drop_other_p=1)
    assert text.startswith("Desc. ")
    assert sorted(text.split(". ")) == sorted(
        [
            "Desc",
            "key: c major",
            "bpm: 120.0",
            "genre: rock",
            "moods: happy, sad",
            "keywords: live",
            "instrument: guitar",
        ]
    )


@pytest.mark.parametrize("description", ["Happy rock", "Happy rock.", None])
def test_describe_without_merge_probability_is_unchanged(description):
    info = _info(description=description, key="c major")
    assert describe(info, random.Random(0)) == description
    assert describe(info, random.Random(0), merge_text_p=0, drop_desc_p=1, drop_other_p=1) == description


def test_describe_failed_merge_draw_adds_period():
    info = _info(description="Happy rock", key="c major")
    assert describe(info, _Fixed(0.9), merge_text_p=0.5, drop_desc_p=1, drop_other_p=1) == "Happy rock."
    assert describe(_info(description="Happy rock..."), _Fixed(0.9), merge_text_p=0.5) == "Happy rock."
    assert describe(_info(key="c major"), _Fixed(0.9), merge_text_p=0.5, drop_other_p=1) is None


def test_describe_nothing_to_say_is_none():
    assert describe(_info(), random.Random(0), merge_text_p=1, drop_desc_p=0, drop_other_p=1) is None
    assert describe(_info(title="T", artist="A"), random.Random(0), merge_text_p=1, drop_other_p=1) is None
    info = _info(description="Desc", key="c major")
    assert describe(info, random.Random(0), merge_text_p=1, drop_desc_p=1, drop_other_p=0) is None
    assert describe(info, random.Random(0), merge_text_p=1, drop_desc_p=0, drop_other_p=0) == "Desc."


def test_describe_is_deterministic_per_seed():
    info = _info(description="Desc", **ALL_SET)
    texts = [describe(info, random.Random(seed), 0.5, 0.5, 0.5) for seed in range(50)]
    assert texts == [describe(info, random.Random(seed), 0.5, 0.5, 0.5) for seed in range(50)]
    assert len(set(texts)) > 10


def test_describe_outcome_probabilities():
    # One field, merge 0.25, drop description 0.3, keep field 0.7: the four possible texts.
    merge, drop_desc, keep = 0.25, 0.3, 0.7
    info = _info(description="Desc", key="c major")
    rng = random.Random(1234)
    texts = [describe(info, rng, merge, drop_desc, keep) for _ in range(DRAWS)]
    expected = {
        "Desc.": 1 - merge + merge * (1 - drop_desc) * (1 - keep),
        "Desc. key: c major": merge * (1 - drop_desc) * keep,
        "key: c major": merge * drop_desc * keep,
        None: merge * drop_desc * (1 - keep),
    }
    assert set(texts) == set(expected)
    for text, p in expected.items():
        _assert_fraction(texts.count(text), DRAWS, p)


def test_describe_merge_and_drop_description_probabilities():
    merge, drop_desc = 0.25, 0.3
    info = _info(description="Desc", key="c major")
    rng = random.Random(5)
    texts = [describe(info, rng, merge, drop_desc, drop_other_p=1) for _ in range(DRAWS)]
    merged = [text for text in texts if text != "Desc."]
    _assert_fraction(len(merged), DRAWS, merge)
    _assert_fraction(merged.count("key: c major"), len(merged), drop_desc)
    assert merged.count("Desc. key: c major") + merged.count("key: c major") == len(merged)


def test_describe_field_keep_probability():
    keep = 0.7  # drop_other_p is the probability of keeping a field, as audiocraft
    info = _info(**ALL_SET)
    rng = random.Random(7)
    texts = [describe(info, rng, merge_text_p=1, drop_desc_p=0, drop_other_p=keep) for _ in range(DRAWS)]
    names = [{pair.split(":")[0] for pair in text.split(". ")} if text else set() for text in texts]
    for name in MERGED:
        _assert_fraction(sum(name in kept for kept in names), DRAWS, keep)
    _assert_fraction(sum(len(kept) == 6 for kept in names), DRAWS, keep**6)


def test_describe_shuffles_fields_uniformly():
    info = _info(description="Desc", **ALL_SET)
    rng = random.Random(11)
    texts = [describe(info, rng, merge_text_p=1, drop_desc_p=1, drop_other_p=1) for _ in range(DRAWS)]
    for position in (0, -1):
        names = [text.split(". ")[position].split(":")[0] for text in texts]
        for name in MERGED:
            _assert_fraction(names.count(name), DRAWS, 1 / 6)


@pytest.mark.parametrize("name", ["merge_text_p", "drop_desc_p", "drop_other_p"])
@pytest.mark.parametrize("value", [-0.1, 1.5, "0.5", True, float("nan"), None])
def test_text_augmentation_rejects(name, value):
    with pytest.raises(ValueError, match=f"TextAugmentation.{name} must be a number in"):
        TextAugmentation(**{name: value})


def test_text_augmentation():
    assert TextAugmentation() == TextAugmentation(0.0, 0.0, 0.0)
    assert TextAugmentation(0, 1, 0.5).drop_desc_p == 1
    assert (AUDIOCRAFT_DEFAULTS.merge_text_p, AUDIOCRAFT_DEFAULTS.drop_desc_p, AUDIOCRAFT_DEFAULTS.drop_other_p) == (
        0.25,
        0.5,
        0.5,
    )
    with pytest.raises(AttributeError):
        AUDIOCRAFT_DEFAULTS.merge_text_p = 1.0
    info = _info(description="Desc", **ALL_SET)
    augmentation = TextAugmentation(0.5, 0.3, 0.7)
    assert [augmentation.describe(info, random.Random(seed)) for seed in range(20)] == [
        describe(info, random.Random(seed), 0.5, 0.3, 0.7) for seed in range(20)
    ]
