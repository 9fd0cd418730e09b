"""Next-token selection: frequencies match the softmax; top-k/top-p keep the right tokens."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ropo_jax.inference import sampling_ops

# 0.999 quantile of the chi-square distribution with 4 degrees of freedom (tables): a correct
# sampler exceeds it with probability 1e-3; with the fixed seed the test is deterministic.
CHI2_DF4_Q999 = 18.467


def _chi_square(counts, probs):
    expected = probs * counts.sum()
    return float(np.sum((counts - expected) ** 2 / expected))


def _sample_counts(logits_V, n, **kwargs):
    logits_NV = jnp.broadcast_to(jnp.asarray(logits_V, jnp.float32), (n, len(logits_V)))
    tokens = jax.jit(lambda logits, rng: sampling_ops.select_next_token(logits, rng, **kwargs))(
        logits_NV, jax.random.key(0)
    )
    return np.bincount(np.asarray(tokens), minlength=len(logits_V))


def test_sampling_frequencies_match_the_softmax():
    logits = np.array([1.0, 0.0, -1.0, 2.0, 0.5])
    counts = _sample_counts(logits, 40_000, temperature=1.0)
    probs = np.exp(logits) / np.exp(logits).sum()
    assert _chi_square(counts, probs) < CHI2_DF4_Q999
    # Temperature 0.5 sharpens to softmax(2·logits).
    counts_t = _sample_counts(logits, 40_000, temperature=0.5)
    probs_t = np.exp(2 * logits) / np.exp(2 * logits).sum()
    assert _chi_square(counts_t, probs_t) < CHI2_DF4_Q999
    # A wrong distribution is rejected by the same test (the test can fail).
    assert _chi_square(counts_t, probs) > 10 * CHI2_DF4_Q999


def test_top_p_keeps_the_smallest_set_reaching_the_mass():
    probs = np.array([0.05, 0.4, 0.3, 0.15, 0.1])
    logits = jnp.log(jnp.asarray(probs))[None]
    kept = lambda p: set(
        np.flatnonzero(np.asarray(sampling_ops.top_p_filter(logits, p))[0] > -1e29)
    )
    assert kept(0.3) == {1}  # 0.4 alone reaches 0.3
    assert kept(0.5) == {1, 2}  # 0.4 < 0.5 → add 0.3
    assert kept(0.85) == {1, 2, 3}  # 0.85 reached exactly by three tokens
    assert kept(0.86) == {1, 2, 3, 4}
    assert kept(1.0) == {0, 1, 2, 3, 4}
    counts = _sample_counts(np.log(probs), 20_000, temperature=1.0, top_p=0.7)
    assert counts[0] == counts[3] == counts[4] == 0
    renormalised = np.array([0.4, 0.3]) / 0.7
    assert abs(counts[1] / counts.sum() - renormalised[0]) < 0.02


def test_top_k_and_greedy():
    logits = jnp.asarray([[0.1, 3.0, 2.0, -1.0, 2.5]])
    filtered = np.asarray(sampling_ops.top_k_filter(logits, 2))[0]
    assert set(np.flatnonzero(filtered > -1e29)) == {1, 4}
    counts = _sample_counts(np.asarray(logits[0]), 5_000, temperature=1.0, top_k=2)
    assert set(np.flatnonzero(counts)) == {1, 4}
    greedy = sampling_ops.select_next_token(logits, jax.random.key(1), temperature=0.0)
    assert int(greedy[0]) == 1


@pytest.mark.parametrize("top_p", [0.0, 1e-6])
def test_degenerate_filters_keep_the_argmax(top_p):
    logits = jnp.asarray([[0.1, 3.0, 2.0]])
    counts = _sample_counts(np.asarray(logits[0]), 100, temperature=1.0, top_p=top_p)
    assert counts[1] == 100
