"""`sampling.sample_next` against the exact distributions of audiocraft's sampling rules
(`LMModel._sample_next_token`),
written here in numpy (float64): sample frequencies over many draws from fixed logits are within a
stated total-variation bound of them, for plain sampling, temperature, top-k (ties kept) and top-p
(overriding top-k, on the tempered distribution), per row and codebook; greedy is the argmax. Each
case's exact distribution is also shown to be far (10 bounds) from what a plausible bug samples.

And `sample.py`: its sampling flags (`--temperature`, `--top-p`, `--seed`, `--cfg-coef`) and its
`--continuation` reach the generation: its saved codes equal the `MusicGen` API's with the same
settings and differ from the API's with any one of them back at its default.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from musicgen_jax.audio import read_audio, write_audio
from musicgen_jax.cli import sample
from musicgen_jax.musicgen import MusicGen
from musicgen_jax.sampling import SamplingParams, sample_next

DRAWS = 100_000
FAILURE = 1e-6  # probability, for a random seed, that an exact sampler's frequencies exceed the bound

PLAIN = np.array([2.0, 1.0, 0.4, 0.0, -0.6, -1.5])
TOP_K = np.array([1.0, 0.5, 0.0, -0.3, -0.6, -1.0])  # at T=1, 24% of the mass lies outside the top 3
TIE = np.array([1.5, 0.5, 0.5, 0.5, 0.5, -1.0])  # the 2nd to 5th largest tie: top-3 keeps 5
# top_p 0.6 keeps 3 at T=1 (cumsum - p: 0, .27, .47 | .63), 4 at T=2 (0, .22, .40, .57 | .73): never the top 2
TOP_P = np.array([1.0, 0.7, 0.5, 0.4, 0.2, 0.0])


def tv_bound(n: int, draws: int = DRAWS) -> float:
    """Total variation between `draws` exact samples' frequencies over `n` categories and their
    distribution p exceeds this with probability below FAILURE: by Cauchy-Schwarz
    E[TV] = 1/2 sum E|f_i - p_i| <= 1/2 sqrt(n sum p_i (1 - p_i) / draws) <= 1/2 sqrt((n - 1) / draws), and one
    draw moves TV by at most 1/draws, so (McDiarmid) P(TV > E[TV] + t) <= exp(-2 t^2 draws)."""
    return 0.5 * math.sqrt((n - 1) / draws) + math.sqrt(math.log(1 / FAILURE) / (2 * draws))


def reference(logits, temperature: float, top_k: int = 0, top_p: float = 0.0) -> np.ndarray:
    """audiocraft's `LMModel._sample_next_token` along the last axis: probs = softmax(logits / temperature); top_p >
    0: keep the sorted entries with cumsum - p <= top_p; else top_k > 0: keep probs >= the k-th largest (ties kept);
    renormalize."""
    z = np.asarray(logits, np.float64) / temperature
    probs = np.exp(z - z.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    if top_p > 0:
        order = np.argsort(-probs, axis=-1, kind="stable")
        ranked = np.take_along_axis(probs, order, -1)
        keep = np.zeros(probs.shape, bool)
        np.put_along_axis(keep, order, np.cumsum(ranked, -1) - ranked <= top_p, -1)
    elif top_k > 0:
        keep = probs >= np.sort(probs, -1)[..., -top_k, None]
    else:
        keep = np.ones(probs.shape, bool)
    kept = np.where(keep, probs, 0.0)
    return kept / kept.sum(-1, keepdims=True)


def frequencies(logits: np.ndarray, sampling: SamplingParams, seed: int, draws: int = DRAWS) -> np.ndarray:
    """Frequencies `[..., n]` of `draws` calls of `sample_next` on `logits [..., n]`, each with its own key."""
    draw = jax.jit(jax.vmap(lambda key: sample_next(key, jnp.asarray(logits, jnp.float32), sampling)))
    tokens = np.asarray(draw(jax.random.split(jax.random.key(seed), draws))).reshape(draws, -1)
    counts = np.stack([np.bincount(column, minlength=logits.shape[-1]) for column in tokens.T])
    return counts.reshape(logits.shape) / draws


def tv(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    return 0.5 * np.abs(p - q).sum(-1)


def renormalized(probs: np.ndarray, keep: np.ndarray) -> np.ndarray:
    kept = np.where(keep, probs, 0.0)
    return kept / kept.sum()


# name: (logits, sampling, {bug: the distribution it would sample from instead})
CASES = {
    "plain T=0.5": (PLAIN, SamplingParams(top_k=0, temperature=0.5), {"logits * T": reference(PLAIN, 2.0)}),
    "plain T=1": (PLAIN, SamplingParams(top_k=0), {"top_k=0 read as top-1": reference(PLAIN, 1.0, top_k=1)}),
    "plain T=2": (PLAIN, SamplingParams(top_k=0, temperature=2.0), {"logits * T": reference(PLAIN, 0.5)}),
    "top-3 T=1": (TOP_K, SamplingParams(top_k=3), {"not truncated": reference(TOP_K, 1.0)}),
    "top-3 T=2": (TOP_K, SamplingParams(top_k=3, temperature=2.0), {"logits * T": reference(TOP_K, 0.5, top_k=3)}),
    # strict top-3: the top entry and two of the four tied
    "top-3 tie T=1": (TIE, SamplingParams(top_k=3), {"ties dropped": np.pad(reference(TIE[:3], 1.0), (0, 3))}),
    "top-3 tie T=2": (
        TIE,
        SamplingParams(top_k=3, temperature=2.0),
        {"ties dropped": np.pad(reference(TIE[:3], 2.0), (0, 3))},
    ),
    "top-p T=1": (
        TOP_P,
        SamplingParams(top_k=2, top_p=0.6),
        {"top-k first, or one entry short": reference(TOP_P, 1.0, top_k=2)},
    ),
    "top-p T=2": (
        TOP_P,
        SamplingParams(top_k=2, top_p=0.6, temperature=2.0),
        {
            "top-k first": reference(TOP_P, 2.0, top_k=2),
            "one entry short": reference(TOP_P, 2.0, top_k=3),
            "logits * T": reference(TOP_P, 0.5, top_p=0.6),
            # the kept set chosen on the untempered distribution (T=1's three), then sampled tempered
            "untempered set": renormalized(reference(TOP_P, 2.0), reference(TOP_P, 1.0, top_p=0.6) > 0),
        },
    ),
}


@pytest.mark.parametrize("name", CASES)
def test_frequencies_match_the_exact_distribution(name):
    """Within `tv_bound(6)` = 0.0118 (100000 draws) of the exact distribution, which is more than 10
    bounds from each bug's; every kept entry is drawn and no dropped one ever is."""
    logits, sampling, bugs = CASES[name]
    exact = reference(logits, sampling.temperature, sampling.top_k, sampling.top_p)
    bound = tv_bound(logits.size)
    assert min(tv(exact, wrong) for wrong in bugs.values()) > 10 * bound
    freq = frequencies(logits, sampling, seed=list(CASES).index(name))
    np.testing.assert_array_equal(freq > 0, exact > 0)
    assert tv(freq, exact) < bound


def test_kept_sets():
    """The cases' premises: top-3 of TIE keeps 5; top-p 0.6 keeps 3 of TOP_P at T=1 and 4 at T=2 (never
    top-2's two, and a tempered nucleus other than the untempered one)."""
    assert np.count_nonzero(reference(TIE, 1.0, top_k=3)) == 5
    assert np.count_nonzero(reference(TOP_P, 1.0, top_p=0.6)) == 3
    assert np.count_nonzero(reference(TOP_P, 2.0, top_p=0.6)) == 4


# rows and codebooks [3, 4, 6]: 12 permutations of TOP_P (so top-p keeps 3 of each at T=1), pairwise far apart
BATCH_LOGITS = np.random.default_rng(4).permuted(np.tile(TOP_P, (12, 1)), axis=1).reshape(3, 4, 6)


@pytest.mark.parametrize(
    "sampling", [SamplingParams(top_k=3, temperature=2.0), SamplingParams(top_k=2, top_p=0.6)], ids=["top-k", "top-p"]
)
def test_batched_rows_sampled_independently(sampling):
    """Logits `[3, 4, 6]`: each (row, codebook) within `tv_bound(6, 20000)` = 0.0265 of its own exact
    distribution (12 rows: a random seed fails with probability < 1.2e-5); the rows' distributions are
    pairwise more than 10 bounds apart, so a row sampled with another's distribution fails."""
    exact = reference(BATCH_LOGITS, sampling.temperature, sampling.top_k, sampling.top_p).reshape(12, 6)
    bound = tv_bound(6, 20_000)
    apart = tv(exact[:, None], exact[None])
    assert np.all(apart[~np.eye(12, dtype=bool)] > 10 * bound)
    freq = frequencies(BATCH_LOGITS, sampling, seed=7, draws=20_000).reshape(12, 6)
    np.testing.assert_array_equal(freq > 0, exact > 0)
    assert np.all(tv(freq, exact) < bound)


def test_greedy_is_the_argmax():
    """use_sampling=False: the argmax of every row and codebook, whatever the key, temperature, top-k, top-p."""
    sampling = SamplingParams(use_sampling=False, top_k=3, top_p=0.6, temperature=0.5)
    draw = jax.jit(jax.vmap(lambda key: sample_next(key, jnp.asarray(BATCH_LOGITS, jnp.float32), sampling)))
    tokens = np.asarray(draw(jax.random.split(jax.random.key(0), 16)))
    np.testing.assert_array_equal(tokens, np.broadcast_to(BATCH_LOGITS.argmax(-1), (16, 3, 4)))


PROMPTS = ["calm piano", "epic brass"]
SEED, DURATION = 11, 0.6  # prompt i: seed 11 + i; 30 frames, the first 10 the clip's
# sample.py's flags away from their defaults (--top-k is overridden by --top-p, so it cannot matter); one
# prompt a batch, so that the second prompt's seed comes from the batch offset
SETTINGS = {"temperature": 0.7, "top_k": 5, "top_p": 0.8, "cfg_coef": 2.0}
FLAGS = [
    "--temperature",
    "0.7",
    "--top-k",
    "5",
    "--top-p",
    "0.8",
    "--cfg-coef",
    "2",
    "--seed",
    str(SEED),
    "--duration",
    str(DURATION),
    "--batch-size",
    "1",
]
DEFAULTS = {"temperature": 1.0, "top_p": 0.0, "cfg_coef": 3.0}


def api_codes(converted, audio: np.ndarray | None, seed: int = SEED, **changes) -> np.ndarray:
    """The `MusicGen` API's codes for PROMPTS (prompt i alone with seed `seed + i`, as sample.py's batches of
    one; a batch of both samples alike but need not give the same bits: XLA's products may round
    differently for other row counts, as jax 0.11's XLA:CPU does) with SETTINGS but `changes`, continuing
    `audio [C, T]` unless None."""
    model = MusicGen.get_pretrained(str(converted))
    model.set_generation_params(duration=DURATION, **{**SETTINGS, **changes})
    generate = model.generate if audio is None else functools.partial(model.generate_continuation, audio[None], 32000)
    return np.concatenate(
        [generate([prompt], return_tokens=True, seed=[seed + i])[1] for i, prompt in enumerate(PROMPTS)]
    )


@pytest.fixture(scope="module")
def cli_run(converted, tmp_path_factory):
    """(codes saved by one sample.py run with FLAGS, the continuation clip [1, 6400] as read back): 0.2 s
    of noise written as 32-bit float WAV, so that it reads back exactly. No model cache is written."""
    directory = tmp_path_factory.mktemp("cli")
    clip = (0.3 * np.random.default_rng(1).standard_normal((1, 6400))).astype(np.float32)
    write_audio(directory / "clip.wav", clip, 32000, strategy="none")
    prompts = [arg for prompt in PROMPTS for arg in ("--prompt", prompt)]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MUSICGEN_JAX_CACHE", str(directory / "cache"))
        assert (
            sample.main(
                [
                    "--model",
                    str(converted),
                    *prompts,
                    *FLAGS,
                    "--continuation",
                    str(directory / "clip.wav"),
                    "--save-codes",
                    str(directory / "codes.npy"),
                    "--out",
                    str(directory / "out"),
                ]
            )
            == 0
        )
    assert not (directory / "cache").exists()
    audio, _ = read_audio(directory / "clip.wav", 32000, 1)
    np.testing.assert_array_equal(audio, clip)
    return np.load(directory / "codes.npy"), audio


@pytest.mark.e2e
def test_sample_py_codes_equal_the_api(cli_run, converted):
    """sample.py's codes equal `generate_continuation`'s with the same settings, seeds and clip; every
    row starts with the clip's own 10 frames (`codec.encode`)."""
    codes, audio = cli_run
    expected = api_codes(converted, audio)
    assert codes.shape == expected.shape == (2, 4, 30)
    np.testing.assert_array_equal(codes, expected)
    clip_codes = np.asarray(MusicGen.get_pretrained(str(converted)).codec.encode(audio[None]))
    np.testing.assert_array_equal(codes[:, :, :10], np.repeat(clip_codes, 2, 0))


@pytest.mark.parametrize("default", [*DEFAULTS, "seed", "continuation"])
def test_each_flag_changes_the_codes(cli_run, converted, default):
    """The API with one setting back at sample.py's default (seed 0, no --continuation) gives other
    codes than sample.py's in every row: a flag that sample.py dropped would fail the comparison above."""
    codes, audio = cli_run
    changes = {default: DEFAULTS[default]} if default in DEFAULTS else {}
    changed = api_codes(
        converted, None if default == "continuation" else audio, 0 if default == "seed" else SEED, **changes
    )
    assert changed.shape == codes.shape
    assert not any(np.array_equal(row, other) for row, other in zip(changed, codes))
