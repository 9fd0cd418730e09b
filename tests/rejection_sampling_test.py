"""The steps of rejection sampling (ropo_jax/ropo/rejection_sampling.py, docs/method.md §3.5):
candidates, their log-probs, the selection under the run's options, the ``samples.jsonl`` rows
and the new pairs. The end-to-end orientation check is
``ropo_test::test_rejection_sampled_pairs_are_stored_chosen_over_rejected``."""

import json

import jax
import numpy as np
import pytest

from ropo_jax import models
from ropo_jax.data.prepared import PreferenceData
from ropo_jax.inference import scoring
from ropo_jax.ropo import rejection_sampling as rs
from ropo_jax.ropo.options import RopoConfig

PAD, BOS, EOS, VOCAB = 0, 1, 2, 32
MANIFEST = {"pad_id": PAD, "bos_id": BOS, "eos_id": EOS, "vocab_size": VOCAB, "max_length": 24}


def _data(is_flipped=None):
    """Four pairs of distinct prompt and response lengths."""
    prompts = [[BOS, 5, 6], [BOS, 7], [BOS, 8, 9, 10, 11], [BOS, 12, 13]]
    chosen = [[14, 15, EOS], [16, EOS], [17, 18, 19, 20, EOS], [21, EOS]]
    rejected = [[22, EOS], [23, 24, 25, EOS], [26, EOS], [27, 28, 29, 30, 31, EOS]]
    data = PreferenceData.from_token_lists(
        ["a", "b", "c", "d"], prompts, chosen, rejected, manifest=MANIFEST
    )
    return data if is_flipped is None else data.with_flips(is_flipped)


@pytest.fixture(scope="module")
def tiny_model():
    config = models.ModelConfig.preset("tiny", vocab_size=VOCAB)
    return config, models.init_params(config, jax.random.key(0))


def test_candidate_logps_equal_the_pair_scorers(tiny_model):
    """Each candidate scored as one sequence gets the log-prob the pair scorer gives the same
    prompt + response, at its [prompt, candidate] place; an empty candidate is scored as one
    pad token."""
    config, params = tiny_model
    data = _data()
    chosen_N, rejected_N = scoring.sequence_logps_over(config, params, data, batch_size=2)
    prompts = [data.pair(i)[0].tolist() for i in range(len(data))]
    # Per prompt: chosen, rejected, and an empty candidate (P = 4, K = 3).
    candidates = [[data.pair(i)[1].tolist(), data.pair(i)[2].tolist(), []] for i in range(4)]
    logps = rs.candidate_logps(
        config, {"m": params}, prompts, candidates, manifest=MANIFEST, batch_size=2
    )["m"]
    assert logps.shape == (4, 3)
    np.testing.assert_allclose(logps[:, 0], chosen_N, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(logps[:, 1], rejected_N, rtol=1e-5, atol=1e-5)
    pad_logps = rs.score_sequences(
        config, params, prompts, [[PAD]] * 4, manifest=MANIFEST, batch_size=4
    )
    np.testing.assert_allclose(logps[:, 2], pad_logps, rtol=1e-5, atol=1e-5)


def test_sample_candidates_groups_k_samples_per_prompt(monkeypatch):
    """K samples per prompt, in prompt order; ``max_new_tokens=0`` samples up to the longest
    response; ``reorient_original`` samples nothing."""
    calls = []

    def fake_generate(model_config, params, prompts, config, *, rng, batch_size):
        calls.append(config)
        return [[p[-1], n] for n, p in enumerate(prompts)]  # the prompt's last token, the call

    monkeypatch.setattr(rs.sampling, "generate", fake_generate)
    data = _data()
    prompts = rs.candidate_prompts(data, [2, 0])
    assert prompts == [[BOS, 8, 9, 10, 11], [BOS, 5, 6]]
    options = RopoConfig(rs_num_candidates=3, rs_max_new_tokens=0)
    candidates = rs.sample_candidates(
        None, None, data, prompts, ropo=options, round_index=1, seed=0, batch_size=4
    )
    assert candidates == [[[11, 0], [11, 1], [11, 2]], [[6, 3], [6, 4], [6, 5]]]
    assert calls[0].max_new_tokens == 6  # data "d"'s rejected response
    reorient = RopoConfig(rs_include_original=True, rs_selection="reorient_original")
    none = rs.sample_candidates(
        None, None, data, prompts, ropo=reorient, round_index=1, seed=0, batch_size=4
    )
    assert none == [[], []] and len(calls) == 1


def test_with_originals_appends_the_pair_in_training_orientation():
    data = _data(is_flipped=np.array([False, True, False, False]))
    sampled = [[[3]], [[4]]]
    candidates, is_original_PK = rs.with_originals(sampled, data, [0, 1], include=True)
    assert candidates == [[[3], [14, 15, EOS], [22, EOS]], [[4], [23, 24, 25, EOS], [16, EOS]]]
    assert is_original_PK.tolist() == [[False, True, True], [False, True, True]]
    same, none_PK = rs.with_originals(sampled, data, [0, 1], include=False)
    assert same == sampled and not none_PK.any() and none_PK.shape == (2, 1)


def test_select_candidates_orients_by_reward_and_applies_the_options():
    """Hand-made log-probs: chosen = the highest-ranked valid candidate, rejected = the lowest;
    ``mean`` ranks by reward per token; an empty candidate is never picked."""
    policy_PK = np.array([[3.0, 1.0, 2.0, 9.0], [0.0, 4.0, 4.0, -9.0]])
    logps = {"policy": policy_PK, "reference": np.zeros_like(policy_PK)}
    candidates = [[[5] * 6, [5], [5, 5], []], [[5], [5] * 8, [5, 5], []]]  # last: empty
    no_originals_PK = np.zeros((2, 4), bool)
    picked = rs.select_candidates(logps, candidates, no_originals_PK, ropo=RopoConfig(), beta=0.5)
    assert picked["chosen_index"].tolist() == [0, 1]  # ties go to the lower index
    assert picked["rejected_index"].tolist() == [1, 0]
    np.testing.assert_allclose(picked["margin"], [2.0, 4.0])  # h = Δ log-ratio, not β·Δ
    np.testing.assert_allclose(picked["reward"][0], [1.5, 0.5, 1.0, 4.5])
    per_token = rs.select_candidates(
        logps, candidates, no_originals_PK, ropo=RopoConfig(rs_ranking="mean"), beta=0.5
    )
    # Row 0 per token: 0.25, 0.5, 0.5 → chosen 1, rejected 0; row 1: 0, 0.25, 1 → 2 over 0.
    assert per_token["chosen_index"].tolist() == [1, 2]
    assert per_token["rejected_index"].tolist() == [0, 0]
    strict = rs.select_candidates(
        logps, candidates, no_originals_PK, ropo=RopoConfig(rs_min_margin=1.5), beta=0.5
    )
    assert strict["pair_valid"].tolist() == [False, True]  # score margins 1.0 and 2.0


def _picked():
    return {
        "pair_valid": np.array([True, False, True]),
        "chosen_index": np.array([2, 0, 0]),
        "rejected_index": np.array([0, 1, 1]),
        "margin": np.array([3.0, 0.0, 1.0]),
        "score_margin": np.array([0.3, 0.0, 0.1]),
        "reward": np.array([[0.1, 0.2, 0.4], [0.0, 0.0, 0.0], [0.5, 0.4, 0.0]]),
    }


def test_sample_records_are_the_samples_jsonl_rows():
    candidates = [[[7], [8, 2], [9, 9, 2]], [[1], [2], [3]], [[4], [5], [6, 2]]]
    is_original_PK = np.array([[False, True, True]] * 3)
    records = rs.sample_records(
        _picked(), candidates, is_original_PK, ["a", "b", "c"], round_index=2
    )
    assert records == [
        {
            "id": "rs2:a",
            "source_id": "a",
            "round": 2,
            "margin": 3.0,
            "score_margin": 0.3,
            "chosen_reward": 0.4,
            "rejected_reward": 0.1,
            "candidate_rewards": [0.1, 0.2, 0.4],
            "chosen_original": True,
            "rejected_original": False,
            "chosen_tokens": [9, 9, 2],
            "rejected_tokens": [7],
        },
        {
            "id": "rs2:c",
            "source_id": "c",
            "round": 2,
            "margin": 1.0,
            "score_margin": 0.1,
            "chosen_reward": 0.5,
            "rejected_reward": 0.4,
            "candidate_rewards": [0.5, 0.4, 0.0],
            "chosen_original": False,
            "rejected_original": True,
            "chosen_tokens": [4],
            "rejected_tokens": [5],
        },
    ]
    assert all(type(v) is float for r in records for v in r["candidate_rewards"])
    json.dumps(records)  # plain Python values: one JSON line each


def test_records_to_pairs_store_chosen_over_rejected():
    candidates = [[[7], [8, 2], [9, 9, 2]], [[1], [2], [3]], [[4], [5], [6, 2]]]
    records = rs.sample_records(
        _picked(), candidates, np.zeros((3, 3), bool), ["a", "b", "c"], round_index=1
    )
    prompts = {"a": [BOS, 3], "b": [BOS], "c": [BOS, 4, 4]}
    new = rs.records_to_pairs(records, prompts, manifest=MANIFEST, round_index=1)
    assert new.ids == ["rs1:a", "rs1:c"] and not new.is_flipped.any()
    assert [[x.tolist() for x in new.pair(i)] for i in range(2)] == [
        [[BOS, 3], [9, 9, 2], [7]],
        [[BOS, 4, 4], [4], [5]],
    ]
    assert new.metadata == [{"provenance": "rejection_sampling", "round": 1}] * 2


def test_no_prompts_give_no_pairs_without_running_a_model():
    new, records = rs.rejection_sample(
        None,
        None,
        None,
        _data(),
        np.array([], np.int64),
        ropo=RopoConfig(),
        beta=0.1,
        round_index=1,
        seed=0,
        batch_size=4,
    )
    assert len(new) == 0 and records == [] and new.manifest == MANIFEST
