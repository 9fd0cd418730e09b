"""The verifiable-instructions benchmark's data: constraints, gold reward, pairs (no model)."""

import numpy as np
import pytest

from ropo_jax.instructions import constraints, dataset
from ropo_jax.instructions.constraints import Constraint


def test_every_constraint_scores_by_hand():
    cases = [
        (Constraint("topic", "cat"), "Cats sleep a lot.", 1.0),
        (Constraint("topic", "cat"), "Dogs bark.", 0.0),
        (Constraint("include", "blue"), "The sea is Blue today.", 1.0),
        (Constraint("include", "blue"), "The sea is bluest today.", 0.0),
        (Constraint("max_words", "4"), "one two three four", 1.0),
        (Constraint("max_words", "4"), "one two three four five six", 0.5),
        (Constraint("max_words", "4"), " ".join(["w"] * 9), 0.0),
        (Constraint("lowercase", ""), "abcD", 0.75),
        (Constraint("question", ""), "Is it? ", 1.0),
        (Constraint("question", ""), "It is.", 0.0),
        (Constraint("no_commas", ""), "a, b, c", 0.0),
        (Constraint("no_commas", ""), "a, b", 0.5),
        (Constraint("start_with", "Yes"), "yes, it is", 1.0),
        (Constraint("start_with", "Yes"), "Well yes", 0.0),
    ]
    for constraint, response, expected in cases:
        assert constraints.score(constraint, response) == pytest.approx(expected), constraint


def test_prompt_text_round_trips_through_parse():
    rng = np.random.default_rng(3)
    for instruction in constraints.sample_instructions(rng, 50, per_prompt=2):
        parsed = constraints.parse(instruction.text)
        word = constraints.TOPICS[instruction.topic][1]
        assert parsed[0] == Constraint("topic", word)
        assert sorted(parsed[1:], key=lambda c: c.kind) == sorted(
            instruction.constraints, key=lambda c: c.kind
        )


def test_gold_reward_reads_the_instruction_inside_a_chat_rendering():
    # The suspects list decodes a prompt with its template; the reward must still find it.
    text = 'Write one sentence about coffee. Use the word "cup". Use at most 6 words.'
    rendered = f"system\nYou are a helpful AI assistant\nuser\n{text}\nassistant\n"
    response = "A warm cup of coffee."
    assert constraints.gold_reward(rendered, response) == constraints.gold_reward(text, response)
    assert constraints.gold_reward(text, response) == pytest.approx(1.0)
    # no topic, no "cup", 7 words against 6: (0 + 0 + (1 - 1/6)) / 3
    assert constraints.gold_reward(text, "Tea is nice, I think, maybe, yes.") == pytest.approx(
        5 / 18
    )
    assert constraints.gold_reward(text, "") == 0.0
    with pytest.raises(ValueError, match="no verifiable instruction"):
        constraints.gold_reward("Say hi.", "hi")


def test_sample_instructions_are_distinct_and_reproducible():
    a = constraints.sample_instructions(np.random.default_rng(0), 300)
    b = constraints.sample_instructions(np.random.default_rng(0), 300)
    assert [i.text for i in a] == [i.text for i in b]
    assert len({i.text for i in a}) == 300
    assert all(len({c.kind for c in i.constraints}) == 2 for i in a)


def test_pairs_take_best_against_worst_and_count_what_they_skip():
    prompt = 'Give a short fact about rain. Use the word "wet".'
    responses = ["Rain is wet.", "Sun.", "Rain is wet.", "Rain falls.", ""]
    counts = {"empty_or_duplicate": 0, "gap_below_min": 0}
    pairs = dataset.make_pairs(prompt, responses, pairs_per_prompt=2, min_gap=0.2, counts=counts)
    # distinct non-empty: "Rain is wet." (1.0), "Rain falls." (0.5), "Sun." (0.0)
    assert pairs == [("Rain is wet.", "Sun.", 1.0, 0.0)]
    assert counts == {"empty_or_duplicate": 2, "gap_below_min": 0}
    counts = {"empty_or_duplicate": 0, "gap_below_min": 0}
    assert (
        dataset.make_pairs(
            prompt, ["Rain is wet.", "Rain is wet!"], pairs_per_prompt=1, min_gap=0.2, counts=counts
        )
        == []
    )
    assert counts["gap_below_min"] == 1


def test_data_config_refuses_impossible_pairing():
    with pytest.raises(ValueError, match="pairs_per_prompt"):
        dataset.DataConfig(num_candidates=4, pairs_per_prompt=3)
    with pytest.raises(ValueError, match="num_candidates"):
        dataset.DataConfig(num_candidates=1)
