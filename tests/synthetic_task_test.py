"""The synthetic task's gold reward, generators and tokenizer."""

import itertools
import json

import numpy as np
import pytest
from transformers import AutoTokenizer

from ropo_jax.synthetic import task, tokenizer

CONFIG = task.TaskConfig()


def test_gold_reward_grades_quality_and_length():
    prompt = task.Prompt(topic=1, length=4)
    assert task.gold_reward(CONFIG, prompt, "g1_0 g1_1 g1_2 g1_3") == 1.0  # the optimum
    assert task.gold_reward(CONFIG, prompt, "g1_0 g1_1 g1_2 f0") == 0.75
    assert task.gold_reward(CONFIG, prompt, "g1_0 g1_1 g1_2 bad1") == 0.5
    assert task.gold_reward(CONFIG, prompt, "g1_0 g1_1 g1_2 g0_0") == pytest.approx(0.6875)
    # Longer than asked: same mean quality, penalised by λ·|8−4|/4.
    assert task.gold_reward(CONFIG, prompt, " ".join(["g1_0"] * 8)) == pytest.approx(0.5)
    assert task.gold_reward(CONFIG, prompt.text, "") == -1.5
    with pytest.raises(ValueError, match="not a task prompt"):
        task.gold_reward(CONFIG, "write a poem", "g1_0")


def test_generator_quality_orders_mean_gold_reward():
    rng = np.random.default_rng(0)
    prompts = task.sample_prompts(CONFIG, rng, 400)
    means = []
    for quality in (0.1, 0.4, 0.7, 1.0):
        rewards = [
            task.gold_reward(CONFIG, p, task.generate_response(CONFIG, p, quality, rng))
            for p in prompts
        ]
        means.append(np.mean(rewards))
    assert all(a < b for a, b in itertools.pairwise(means)), means
    assert means[-1] == 1.0


def test_tokenizer_saves_and_loads_with_exact_word_ids(tmp_path):
    tokenizer.save_tokenizer(CONFIG, str(tmp_path))
    loaded = AutoTokenizer.from_pretrained(str(tmp_path))
    vocab = task.vocabulary(CONFIG)
    ids = loaded("topic T1 length 4", add_special_tokens=False).input_ids
    assert [vocab[i] for i in ids] == ["topic", "T1", "length", "4"]
    assert loaded.bos_token_id == 1 and loaded.eos_token_id == 2 and loaded.pad_token_id == 0
    # The tokenizer puts <bos> before text itself, as Llama-2's does (every prompt starts with it).
    assert loaded("g1_2").input_ids == [vocab.index("<bos>"), vocab.index("g1_2")]
    assert (
        loaded.decode(loaded("g1_2 f3 bad0").input_ids, skip_special_tokens=True) == "g1_2 f3 bad0"
    )
    assert loaded("zzz", add_special_tokens=False).input_ids == [vocab.index("<unk>")]
    assert len(loaded) == len(vocab) <= 64


def test_dataset_is_deterministic_and_gold_labelled(tmp_path):
    from ropo_jax.synthetic import dataset

    data = dataset.DataConfig(num_sft=20, num_train_pairs=50, num_test_pairs=10, num_eval_prompts=5)
    summary = dataset.write_dataset(str(tmp_path / "a"), CONFIG, data, seed=3)
    dataset.write_dataset(str(tmp_path / "b"), CONFIG, data, seed=3)
    for name in ("train.jsonl", "test.jsonl", "sft.jsonl", "eval_prompts.jsonl"):
        assert (tmp_path / "a" / name).read_text() == (tmp_path / "b" / name).read_text()
    rows = [json.loads(line) for line in (tmp_path / "a" / "train.jsonl").read_text().splitlines()]
    assert len(rows) == summary["train_pairs"] == 50
    assert len({r["id"] for r in rows}) == 50
    for r in rows:
        assert r["score_chosen"] > r["score_rejected"]
        assert r["score_chosen"] == task.gold_reward(CONFIG, r["prompt"], r["chosen"])
        assert r["source_chosen"] in dataset.SOURCES


KEYWORDS = task.TaskConfig(num_topics=8, words_per_topic=8, num_keywords=8)


def test_keyword_prompts_multiply_the_prompts_and_the_reward_asks_for_the_keyword():
    assert len(task.all_prompts(CONFIG)) == 4 * 6
    prompts = task.all_prompts(KEYWORDS)
    assert len(prompts) == len({p.text for p in prompts}) == 8 * 6 * 8
    prompt = task.Prompt(topic=2, length=3, keyword=5)
    assert prompt.text == "topic T2 length 3 with g2_5"
    assert task.parse_prompt(prompt.text) == prompt
    assert task.gold_reward(KEYWORDS, prompt, "g2_5 g2_0 g2_1") == 1.0  # the optimum
    # On topic and the right length, but without the keyword: − keyword_weight.
    assert task.gold_reward(KEYWORDS, prompt, "g2_0 g2_1 g2_2") == pytest.approx(0.5)
    assert "with" in task.vocabulary(KEYWORDS) and "with" not in task.vocabulary(CONFIG)
    rng = np.random.default_rng(0)
    for quality, bound in ((0.2, 0.0), (1.0, 1.0)):
        rewards = [
            task.gold_reward(KEYWORDS, p, task.generate_response(KEYWORDS, p, quality, rng))
            for p in prompts[:200]
        ]
        assert (np.mean(rewards) < bound) if quality < 1 else np.mean(rewards) == bound
    with pytest.raises(ValueError, match="num_keywords=9"):
        task.TaskConfig(words_per_topic=8, num_keywords=9)


def test_heldout_prompts_are_never_trained_on(tmp_path):
    from ropo_jax.synthetic import dataset, prepare

    data = dataset.DataConfig(
        num_sft=64,
        num_train_pairs=200,
        num_test_pairs=40,
        num_eval_prompts=500,
        heldout_prompt_fraction=0.25,
    )
    train_pool, heldout_pool = dataset.prompt_pools(KEYWORDS, data)
    assert 0.2 < len(heldout_pool) / (len(train_pool) + len(heldout_pool)) < 0.3
    dataset.write_dataset(str(tmp_path / "raw"), KEYWORDS, data, seed=0)

    def prompts_of(name):
        with open(tmp_path / "raw" / name) as f:
            return [json.loads(line)["prompt"] for line in f]

    trained = set(prompts_of("train.jsonl")) | set(prompts_of("sft.jsonl"))
    evaluated = prompts_of("eval_prompts.jsonl")
    assert len(evaluated) == len(set(evaluated)) == len(heldout_pool)  # each held-out prompt once
    assert not trained & set(evaluated) and not trained & set(prompts_of("test.jsonl"))
    paths = {
        "raw": str(tmp_path / "raw"),
        "eval_prompts": str(tmp_path / "raw" / "eval_prompts.jsonl"),
    }
    counts = prepare.prompt_counts(paths)
    assert counts["overlap"] == 0 and counts["eval"] == len(heldout_pool)
    assert counts["train"] > 100  # a few pairs per prompt, not dozens
