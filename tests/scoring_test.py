"""``scoring``: the reference cache key (``params_hash``, computed where the parameters live), and
the orientation of noisy labels in reference joins and per-example scores."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ropo_jax import models
from ropo_jax.data.loader import load_preference_data, make_loader
from ropo_jax.data.noise import NoiseConfig
from ropo_jax.inference import scoring
from ropo_jax.parallel import sharding
from ropo_jax.synthetic import dataset, prepare, task
from ropo_jax.training import step as train


def _params():
    config = models.ModelConfig.preset("tiny", vocab_size=64)
    return config, models.init_params(config, jax.random.key(0))


def test_hash_is_the_same_on_any_mesh():
    config, params = _params()
    axes = models.param_logical_axes(config)
    expected = scoring.params_hash(params)
    for shape in ((1, 8, 1), (2, 2, 2), (8, 1, 1)):
        mesh = sharding.make_mesh(shape)
        placed = jax.device_put(params, sharding.tree_shardings(mesh, axes, params))
        assert scoring.params_hash(placed) == expected, shape


def test_hash_sees_small_changes():
    """A sign flip, a swap of two weights and a dtype change each change the key (a plain
    weighted sum of the bits would miss the first two)."""
    _, params = _params()
    embedding = params["embed"]["embedding"]
    flipped = {**params, "embed": {"embedding": embedding.at[0, 0].multiply(-1.0)}}
    swapped_values = embedding.at[0, 0].set(embedding[0, 1]).at[0, 1].set(embedding[0, 0])
    swapped = {**params, "embed": {"embedding": swapped_values}}
    bf16 = jax.tree.map(lambda x: x.astype(jnp.bfloat16), params)
    keys = {scoring.params_hash(p) for p in (params, flipped, swapped, bf16)}
    assert len(keys) == 4


# --- the flip orientation, pinned ----------------------------------------------------------------


def test_join_reference_by_hand():
    """Rows name their examples by index, in any order, with padding rows (index −1) between:
    each real row gets its own example's stored log-probs, swapped exactly where the row's pair
    is flipped; padding rows get zeros."""
    ref_chosen_N = np.array([-1.0, -2.0, -3.0, -4.0])
    ref_rejected_N = np.array([-10.0, -20.0, -30.0, -40.0])
    batch = {
        "example_index": np.array([2, -1, 0, 3, 1]),
        "is_flipped": np.array([True, False, False, True, False]),
        "weight": np.ones(5, np.float32),
    }
    joined = scoring.join_reference(batch, ref_chosen_N, ref_rejected_N)
    np.testing.assert_array_equal(joined["ref_chosen_logps"], [-30.0, 0.0, -1.0, -40.0, -2.0])
    np.testing.assert_array_equal(joined["ref_rejected_logps"], [-3.0, 0.0, -10.0, -4.0, -20.0])
    assert joined["ref_chosen_logps"].dtype == np.float32
    assert joined["weight"] is batch["weight"]  # the rest of the batch passes through


def test_example_scores_by_hand():
    """DPO on two pairs with the same stored log-probs, one flipped: the clean pair's margin is
    h = (πc − rc) − (πr − rr) in stored orientation, the flipped pair's is −h, and each loss is
    −log σ(βh) of its own margin."""
    policy = (np.array([-1.0, -1.0]), np.array([-4.0, -4.0]))
    reference = (np.array([-2.0, -2.0]), np.array([-2.5, -2.5]))
    h = (-1.0 + 2.0) - (-4.0 + 2.5)  # 2.5 nats towards the stored chosen response
    scores = scoring.example_scores(
        *policy, *reference, np.array([False, True]), loss="dpo", hyperparams=dict(beta=0.5)
    )
    np.testing.assert_allclose(scores["margin"], [h, -h], rtol=1e-6)
    np.testing.assert_allclose(
        scores["loss"], [np.log1p(np.exp(-0.5 * h)), np.log1p(np.exp(0.5 * h))], rtol=1e-6
    )


@pytest.fixture(scope="module")
def noisy(tmp_path_factory):
    """A small synthetic data set with 40 % of its labels flipped, a tiny model and its
    reference log-probs in stored orientation."""
    paths = prepare.prepare_synthetic(
        str(tmp_path_factory.mktemp("orientation")),
        task.TaskConfig(),
        dataset.DataConfig(num_sft=8, num_train_pairs=32, num_test_pairs=8, num_eval_prompts=4),
        seed=0,
    )
    data, noise = load_preference_data(paths["train"], NoiseConfig("symmetric", rate=0.4, seed=1))
    assert 0 < noise.is_flipped.sum() < len(data)
    config = models.ModelConfig.preset("tiny", vocab_size=int(data.manifest["vocab_size"]))
    params = models.init_params(config, jax.random.key(3))
    stored = scoring.sequence_logps_over(config, params, data, batch_size=8)
    return data, config, params, stored


def test_stored_orientation_is_the_gold_orientation(noisy):
    """sequence_logps_over scores the data as labelled in the input (chosen = the gold-preferred
    response here), whatever noise flipped."""
    data, config, params, (chosen_N, rejected_N) = noisy
    clean = scoring.sequence_logps_over(
        config, params, data.with_flips(np.zeros(len(data), bool)), batch_size=8
    )
    np.testing.assert_array_equal(chosen_N, clean[0])
    np.testing.assert_array_equal(rejected_N, clean[1])


def test_join_reference_swaps_exactly_the_flipped_pairs(noisy):
    """With the policy equal to the reference, every pair's reference log-probs joined to a
    training batch equal the policy's log-probs of that batch's own rows (training orientation:
    a flipped pair's chosen row is the stored rejected response). Without the swap in
    join_reference every flipped pair would disagree."""
    data, config, params, (chosen_N, rejected_N) = noisy
    batch = next(make_loader(data, batch_size=32, shuffle=False, shard_index=0, shard_count=1))
    joined = scoring.join_reference(batch, chosen_N, rejected_N)
    logps_S, _ = train.sequence_logps(config, params, jax.tree.map(jnp.asarray, batch), 256)
    policy_chosen_B, policy_rejected_B = np.split(np.asarray(logps_S), 2)
    real_B = batch["example_index"] >= 0
    assert batch["is_flipped"][real_B].any()
    np.testing.assert_allclose(
        joined["ref_chosen_logps"][real_B], policy_chosen_B[real_B], rtol=1e-5, atol=1e-4
    )
    np.testing.assert_allclose(
        joined["ref_rejected_logps"][real_B], policy_rejected_B[real_B], rtol=1e-5, atol=1e-4
    )


def test_example_scores_use_the_noisy_labels(noisy):
    """The margin h that the w-step and noise identification rank is in training orientation:
    a flipped pair's h is minus its margin under the gold label, so a policy that prefers the
    gold response contradicts exactly the flipped labels (h < 0) and ROPO's loss is higher
    there."""
    data, _, _, (chosen_N, rejected_N) = noisy
    reference = (chosen_N - 1.0, rejected_N + 1.0)  # the policy leans 2 nats to the gold label
    scores = scoring.example_scores(
        chosen_N,
        rejected_N,
        *reference,
        data.is_flipped,
        loss="ropo",
        hyperparams=dict(beta=0.1, alpha=14.0),
    )
    np.testing.assert_allclose(scores["margin"], np.where(data.is_flipped, -2.0, 2.0), atol=1e-4)
    flipped_loss = scores["loss"][data.is_flipped]
    assert flipped_loss.min() > scores["loss"][~data.is_flipped].max()


def test_dynamics_fit_rates_are_in_training_orientation(noisy):
    """A policy that prefers every gold response by 2 nats over the reference fits every clean
    label and no flipped one; −h ranks exactly the flipped pairs first; held-out accuracy is 1
    on the true labels and 1 − (flip rate) on the noisy ones."""
    from ropo_jax.evaluation import dynamics

    data, config, params, (chosen_N, rejected_N) = noisy
    reference = (chosen_N - 1.0, rejected_N + 1.0)
    probe = dynamics.DynamicsProbe(
        model_config=config,
        ref_params=params,
        train_data=data,
        reference=reference,
        heldout=(data, reference),
        gold=None,
        batch_size=8,
        heldout_flips=data.is_flipped,
    )
    record = probe(params)
    assert record["flipped_fit_rate"] == 0.0 and record["clean_fit_rate"] == 1.0
    assert record["noise_auroc"] == 1.0
    assert record["heldout_accuracy"] == 1.0
    assert record["noisy_heldout_accuracy"] == pytest.approx(1.0 - data.is_flipped.mean())
    assert record["gold_reward_mean"] is None and record["kl"] is None
    # Before training the policy is the reference: every margin is 0, a tie, and every rate
    # and accuracy is chance (0.5), not 0.
    untrained = dataclasses.replace(probe, reference=(chosen_N, rejected_N))
    untrained = dataclasses.replace(untrained, heldout=(data, (chosen_N, rejected_N)))
    start = untrained(params)
    for key in ("flipped_fit_rate", "clean_fit_rate", "heldout_accuracy", "noisy_heldout_accuracy"):
        assert start[key] == 0.5, key


def test_example_scores_give_length_normalised_losses_the_training_orientation_lengths():
    """SimPO's per-example loss (what ROPO's w-step and the final scores rank by) needs the
    response lengths, swapped with the log-probs where a label is flipped."""
    from ropo_jax import losses

    rng = np.random.default_rng(0)
    pc, pr, rc, rr = (rng.normal(size=6).astype(np.float32) for _ in range(4))
    lengths_N2 = rng.integers(1, 20, size=(6, 2))
    flipped = np.array([0, 1, 0, 1, 1, 0], bool)
    hyper = {"beta": 2.0, "gamma": 0.5}
    got = scoring.example_scores(
        pc, pr, rc, rr, flipped, loss="simpo", hyperparams=hyper, response_lengths_N2=lengths_N2
    )

    def oriented(a, b):
        return np.where(flipped, b, a), np.where(flipped, a, b)

    logps = [*oriented(pc, pr), *oriented(rc, rr), *oriented(*lengths_N2.T.astype(np.float32))]
    want, _ = losses.preference_loss("simpo", losses.PairLogps(*map(jnp.asarray, logps)), **hyper)
    np.testing.assert_allclose(got["loss"], np.asarray(want), rtol=1e-6)
    with pytest.raises(ValueError, match="chosen_lengths"):
        scoring.example_scores(pc, pr, rc, rr, flipped, loss="simpo", hyperparams=hyper)
