"""The w-step, in-batch filtering, rejection-sampling pair selection and docs/method.md §5
metrics."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ropo_jax.evaluation import metrics as eval_metrics
from ropo_jax.losses import filtering
from ropo_jax.ropo import rejection_sampling


def test_keeps_exactly_the_lowest_scores():
    rng = np.random.default_rng(0)
    scores = rng.normal(size=1000).astype(np.float32)
    keep = np.asarray(filtering.keep_lowest(jnp.asarray(scores), filter_ratio=0.2))
    assert keep.sum() == 800
    assert scores[keep].max() < scores[~keep].min()


@pytest.mark.parametrize(
    ("n", "rho", "kept"), [(10, 0.2, 8), (7, 0.2, 6), (5, 0.0, 5), (3, 0.99, 1)]
)
def test_number_kept_is_n_minus_floor_rho_n(n, rho, kept):
    keep = filtering.keep_lowest(jnp.arange(n, dtype=jnp.float32), filter_ratio=rho)
    assert int(keep.sum()) == kept
    np.testing.assert_array_equal(np.flatnonzero(keep), np.arange(kept))


def test_ties_are_broken_by_position_under_jit():
    scores = jnp.asarray([1.0, 0.0, 1.0, 1.0, 2.0, 1.0])
    keep = jax.jit(lambda s, r: filtering.keep_lowest(s, filter_ratio=r))(scores, 0.5)
    # 3 kept: the 0.0, then the two earliest 1.0s.
    np.testing.assert_array_equal(keep, [True, True, True, False, False, False])
    # Same answer for every ρ under one compiled function (ρ is traced).
    fn = jax.jit(lambda s, r: filtering.keep_lowest(s, filter_ratio=r))
    for rho in (0.0, 0.17, 0.34, 0.5, 0.84):
        eager = filtering.keep_lowest(scores, filter_ratio=rho)
        np.testing.assert_array_equal(fn(scores, rho), eager)


def test_matches_brute_force_on_small_sets():
    """Against the constrained problem itself: min Σ wᵢℓᵢ, Σw = N − ⌊ρN⌋, w ∈ {0,1}."""
    rng = np.random.default_rng(1)
    for _ in range(20):
        scores = rng.integers(0, 4, size=7).astype(np.float32)  # many ties
        keep = np.asarray(filtering.keep_lowest(jnp.asarray(scores), filter_ratio=0.3))
        k = 7 - int(np.floor(0.3 * 7))
        best = min(sum(scores[list(c)]) for c in itertools.combinations(range(7), k))
        assert keep.sum() == k and np.isclose(scores[keep].sum(), best)


def test_nan_scores_are_discarded_first_and_invalid_never_kept():
    scores = jnp.asarray([0.5, jnp.nan, 0.1, 0.2, -1.0])
    valid = jnp.asarray([True, True, True, True, False])
    keep = filtering.keep_lowest(scores, filter_ratio=0.25, valid_N=valid)  # 4 valid → drop 1
    np.testing.assert_array_equal(keep, [True, False, True, True, False])


def test_cumulative_mode_never_readmits():
    scores_round1 = jnp.asarray([5.0, 4.0, 3.0, 2.0, 1.0, 0.0, 0.5, 0.7, 0.9, 1.1])
    w1 = filtering.filter_weights(scores_round1, filter_ratio=0.2)
    np.testing.assert_array_equal(w1, [0, 0, 1, 1, 1, 1, 1, 1, 1, 1])
    scores_round2 = -scores_round1  # the dropped ones now look clean
    w2 = filtering.filter_weights(scores_round2, filter_ratio=0.25, previous_keep_N=w1 > 0)
    assert float(w2[0]) == 0.0 and float(w2[1]) == 0.0  # never re-admitted
    assert int(w2.sum()) == 6  # 8 active, ⌊0.25·8⌋ = 2 more dropped
    w_recompute = filtering.filter_weights(scores_round2, filter_ratio=0.2)
    assert float(w_recompute[0]) == 1.0


def test_in_batch_filter_drops_the_highest_losses_of_real_rows():
    loss = jnp.asarray([0.1, 3.0, 0.2, 9.0, 0.3, 5.0, 0.4, 100.0])
    weight = jnp.asarray([1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0])  # last row is padding
    out = filtering.in_batch_weights(loss, weight, filter_ratio=0.3)  # 7 real → drop 2
    np.testing.assert_array_equal(out, [1, 1, 1, 0, 1, 0, 1, 0])

    def weighted_total(loss_B):
        return jnp.sum(filtering.in_batch_weights(loss_B, weight, filter_ratio=0.3) * loss_B)

    grad = jax.grad(weighted_total)(loss)
    np.testing.assert_array_equal(grad, out)  # the selection itself carries no gradient


def test_rejection_sampling_picks_the_max_margin_pair():
    beta = 0.5
    policy = jnp.asarray([[-10.0, -4.0, -8.0, -6.0], [-3.0, -3.0, -3.0, -3.0]])
    ref = jnp.asarray([[-9.0, -9.0, -5.0, -6.0], [-3.0, -3.0, -3.0, -3.0]])
    valid = jnp.ones((2, 4), bool)
    out = rejection_sampling.select_pairs(policy, ref, valid, beta=beta)
    # r̂/β = [-1, 5, -3, 0]: chosen = 1, rejected = 2, h = 8; brute force agrees.
    assert int(out["chosen_index"][0]) == 1 and int(out["rejected_index"][0]) == 2
    np.testing.assert_allclose(out["margin"][0], 8.0)
    assert bool(out["pair_valid"][0])
    assert not bool(out["pair_valid"][1])  # all candidates tie: no informative pair
    # Invalid candidates are never picked.
    out2 = rejection_sampling.select_pairs(
        policy, ref, jnp.asarray([[True, False, True, True]] * 2), beta=beta
    )
    assert int(out2["chosen_index"][0]) == 3 and int(out2["rejected_index"][0]) == 2


def test_rejection_sampling_best_vs_worst_original():
    policy = jnp.asarray([[-1.0, -2.0, -9.0, -3.0]])
    ref = jnp.zeros((1, 4))
    is_original = jnp.asarray([[False, False, True, True]])
    out = rejection_sampling.select_pairs(
        policy,
        ref,
        jnp.ones((1, 4), bool),
        beta=1.0,
        selection="best_vs_worst_original",
        is_original_PK=is_original,
    )
    assert int(out["chosen_index"][0]) == 0 and int(out["rejected_index"][0]) == 2
    with pytest.raises(ValueError, match=r"rs\.selection='best'"):
        rejection_sampling.select_pairs(
            policy, ref, jnp.ones((1, 4), bool), beta=1.0, selection="best"
        )


def test_rejection_sampling_per_token_ranking_undoes_the_length_advantage():
    # r̂/β = [6, 4, -1] over lengths [12, 2, 1]: the sum prefers the long candidate 0, the
    # per-token mean (0.5, 2, -1) the short candidate 1.
    policy = jnp.asarray([[6.0, 4.0, -1.0]])
    ref = jnp.zeros((1, 3))
    lengths = jnp.asarray([[12, 2, 1]])
    valid = jnp.ones((1, 3), bool)
    by_sum = rejection_sampling.select_pairs(policy, ref, valid, beta=1.0, lengths_PK=lengths)
    by_mean = rejection_sampling.select_pairs(
        policy, ref, valid, beta=1.0, lengths_PK=lengths, ranking="mean"
    )
    assert int(by_sum["chosen_index"][0]) == 0 and int(by_mean["chosen_index"][0]) == 1
    assert int(by_mean["rejected_index"][0]) == 2
    np.testing.assert_allclose(by_mean["margin"][0], 5.0)  # h stays the summed margin
    np.testing.assert_allclose(by_mean["score_margin"][0], 3.0)
    with pytest.raises(ValueError, match="needs the candidates' lengths"):
        rejection_sampling.select_pairs(policy, ref, valid, beta=1.0, ranking="mean")


def test_rejection_sampling_reorients_the_original_pair():
    # Samples 0-1 score highest, but only the originals (2, 3) may form the pair, ordered by
    # the model: original 3 (r̂ = -1) above original 2 (r̂ = -4), the label corrected.
    policy = jnp.asarray([[5.0, 7.0, -4.0, -1.0]])
    out = rejection_sampling.select_pairs(
        policy,
        jnp.zeros((1, 4)),
        jnp.ones((1, 4), bool),
        beta=1.0,
        selection="reorient_original",
        is_original_PK=jnp.asarray([[False, False, True, True]]),
    )
    assert (int(out["chosen_index"][0]), int(out["rejected_index"][0])) == (3, 2)
    np.testing.assert_allclose(out["margin"][0], 3.0)


def test_rejection_sampling_drops_pairs_below_the_margin_threshold():
    policy = jnp.asarray([[1.0, 0.0], [5.0, 0.0]])
    kwargs = dict(beta=0.5, min_margin=1.0)
    out = rejection_sampling.select_pairs(
        policy, jnp.zeros((2, 2)), jnp.ones((2, 2), bool), **kwargs
    )
    # β·h = 0.5 and 2.5: only the second clears the threshold; the first adds no pair.
    assert out["pair_valid"].tolist() == [False, True]
    assert float(out["margin"][0]) == 0.0 and float(out["margin"][1]) == 5.0


def test_auroc_against_pairwise_definition():
    rng = np.random.default_rng(2)
    scores = rng.integers(0, 5, size=60).astype(float)  # ties
    labels = rng.random(60) < 0.3
    pos, neg = scores[labels], scores[~labels]
    expected = np.mean((pos[:, None] > neg[None]) + 0.5 * (pos[:, None] == neg[None]))
    assert eval_metrics.auroc(scores, labels) == pytest.approx(expected)
    assert eval_metrics.auroc(scores, np.zeros(60, bool)) is None
    assert eval_metrics.auroc([1.0, 2.0], [False, True]) == 1.0
    with pytest.raises(ValueError, match="NaN"):
        eval_metrics.auroc([np.nan, 1.0], [True, False])


def test_auroc_ties_count_half():
    # flipped 1, 2 vs clean 1, 0: (1, 1) is a tie (½), the other three pairs are ordered.
    assert eval_metrics.auroc([1.0, 1.0, 2.0, 0.0], [True, False, True, False]) == 3.5 / 4
    assert eval_metrics.auroc([3.0, 3.0, 3.0], [True, False, False]) == 0.5
    # A tie inside one class changes nothing: flipped 2, 2 vs clean 1.
    assert eval_metrics.auroc([2.0, 2.0, 1.0], [True, True, False]) == 1.0


def test_noise_identification_and_accuracies():
    flipped = np.array([1, 1, 0, 0, 0, 1], bool)
    discarded = np.array([1, 0, 1, 0, 0, 1], bool)
    out = eval_metrics.noise_identification(flipped, discarded, scores_N=[5, 1, 4, 0, 0, 6])
    assert out["precision"] == pytest.approx(2 / 3) and out["recall"] == pytest.approx(2 / 3)
    assert out["f1"] == pytest.approx(2 / 3)
    # flipped scores 5, 1, 6 vs clean 4, 0, 0: 8 of the 9 (flipped, clean) pairs ordered.
    assert out["auroc"] == pytest.approx(8 / 9)
    none = eval_metrics.noise_identification(np.zeros(3, bool), np.zeros(3, bool))
    assert none == {"precision": None, "recall": None, "f1": None, "auroc": None}
    # A tie (h = 0) counts ½: (1 + 0 + ½ + 1) / 4.
    assert eval_metrics.preference_accuracy([1.0, -1.0, 0.0, 2.0]) == 0.625
    assert eval_metrics.preference_accuracy([0.0, 0.0]) == 0.5
    assert eval_metrics.win_rate([1, 2, 3], [1, 1, 4]) == pytest.approx((0.5 + 1 + 0) / 3)


def test_standard_errors_are_over_prompts_not_samples():
    """Two samples per prompt: the error is the std of the 3 prompt means / √3, not of the 6
    values / √6 (samples of one prompt are not independent)."""
    values = [1.0, 3.0, 0.0, 0.0, 5.0, 7.0]  # prompt means 2, 0, 6
    mean, stderr = eval_metrics.mean_and_stderr(values, 2)
    assert mean == pytest.approx(8 / 3)
    assert stderr == pytest.approx(np.std([2.0, 0.0, 6.0], ddof=1) / np.sqrt(3))
    assert eval_metrics.mean_and_stderr([4.0], 1) == (4.0, None)
    with pytest.raises(ValueError, match="groups of 4"):
        eval_metrics.mean_and_stderr(values, 4)


def test_gold_win_rate_pairs_the_kth_samples_of_each_prompt():
    from ropo_jax.evaluation import heldout as eval_lib

    prompts = ["a", "a", "b", "b"]
    reward = {"good": 1.0, "bad": 0.0, "ok": 0.5}
    out = eval_lib.gold_win_rate(
        prompts,
        ["good", "bad", "ok", "good"],
        ["bad", "bad", "good", "ok"],
        lambda p, r: reward[r],
        samples_per_prompt=2,
    )
    # wins 1, ½ | 0, 1 → prompt means ¾, ½
    assert out["gold_win_rate_vs_sft"] == pytest.approx(0.625)
    assert out["gold_win_rate_stderr"] == pytest.approx(np.std([0.75, 0.5], ddof=1) / np.sqrt(2))
    assert out["gold_reward_mean"] == pytest.approx(0.625)
    assert out["sft_gold_reward_mean"] == pytest.approx(0.375)


def test_noise_identification_ranks_every_method_by_minus_h():
    """The pairs the model contradicts most (lowest h) are the suspects, whatever the loss; for
    ROPO, whose loss decreases in h, the w-step's discards by loss are the same pairs."""
    from ropo_jax import losses
    from ropo_jax.evaluation import heldout as eval_lib

    rng = np.random.default_rng(0)
    margin = rng.normal(size=200)
    flipped = np.zeros(200, bool)
    flipped[np.argsort(margin)[:40]] = True  # the 40 lowest margins are the flipped pairs
    out = eval_lib.noise_identification(margin, flipped, filter_ratio=0.2)
    assert out == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "auroc": 1.0}
    assert eval_lib.noise_identification(margin, np.zeros(200, bool), filter_ratio=0.2) == {
        "precision": None,
        "recall": None,
        "f1": None,
        "auroc": None,
    }
    zeros = np.zeros(200, np.float32)
    loss, _ = losses.ropo_loss(margin.astype(np.float32), zeros, zeros, zeros, beta=0.1, alpha=14.0)
    by_loss = np.asarray(filtering.keep_lowest(np.asarray(loss), filter_ratio=0.2))
    by_margin = np.asarray(filtering.keep_lowest(-margin, filter_ratio=0.2))
    np.testing.assert_array_equal(by_loss, by_margin)
