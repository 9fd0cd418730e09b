"""Generation-based evaluation on real data sets: prompt sets (AlpacaEval, TL;DR), the
AlpacaEval-format files an external judge reads, and the whole pass with a tiny model, the
fixture tokenizer and a tiny reward model."""

import json
import os

import jax
import numpy as np
import pytest

from ropo_jax import models
from ropo_jax.data.errors import DataError
from ropo_jax.data.example import Message
from ropo_jax.evaluation import generations as eval_generations
from ropo_jax.evaluation.heldout import _truncate_left
from ropo_jax.inference import sampling

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(ROOT, "tests", "fixtures")
ALPACA_EVAL = os.path.join(FIXTURES, "data", "alpaca_eval.json")
TLDR = os.path.join(FIXTURES, "data", "tldr.jsonl")
BYTE_TOKENIZER = os.path.join(FIXTURES, "tokenizers", "byte_bpe")
# The fields alpaca_eval reads from --model_outputs / --reference_outputs.
ALPACA_FIELDS = {"instruction", "output", "generator"}


def test_alpaca_eval_prompts():
    prompts = eval_generations.read_prompts(ALPACA_EVAL, format="alpaca_eval")
    assert [p.dataset for p in prompts] == ["helpful_base", "koala", "oasst", "vicuna"]
    assert prompts[2].instruction == "Écris une phrase sur l'hiver."
    assert prompts[2].reference == "L'hiver couvre la ville d'un silence blanc."
    assert prompts[0].model_prompt("chat") == (Message("user", prompts[0].instruction),)
    assert prompts[0].model_prompt("text") == prompts[0].instruction


def test_tldr_prompts_one_per_post_with_chosen_reference():
    prompts = eval_generations.read_prompts(TLDR, format="tldr")
    assert len(prompts) == 5  # six rows, the CNN/DM one left out
    assert all(p.instruction.startswith("SUBREDDIT: r/") for p in prompts)
    assert all(p.instruction.endswith("\nTL;DR:") for p in prompts)
    # choice=1 in the second row: the chosen summary is the second one, without its space.
    expected = "Landlord wants a 30% rent increase on two weeks' notice in Ontario; is it legal?"
    assert prompts[1].reference == expected
    assert prompts[0].dataset is None


def test_subset_is_fixed_and_keeps_file_order(tmp_path):
    full = eval_generations.read_prompts(ALPACA_EVAL, format="alpaca_eval")
    subset = eval_generations.read_prompts(ALPACA_EVAL, format="alpaca_eval", num_prompts=2)
    assert len(subset) == 2
    assert [full.index(p) for p in subset] == sorted(full.index(p) for p in subset)
    # The same prompts from a file in another order (JSON Lines this time).
    with open(ALPACA_EVAL, encoding="utf-8") as f:
        rows = json.load(f)
    reordered = tmp_path / "reordered.jsonl"
    reordered.write_text("\n".join(json.dumps(r) for r in reversed(rows)), encoding="utf-8")
    again = eval_generations.read_prompts(str(reordered), format="alpaca_eval", num_prompts=2)
    assert {p.instruction for p in again} == {p.instruction for p in subset}


def test_bad_prompt_files(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"instruction": "ok"}\n{"prompt": "no instruction"}\n{"instruction": 3}\n')
    with pytest.raises(DataError, match=r"bad.jsonl:2: field 'instruction'") as error:
        eval_generations.read_prompts(str(bad), format="alpaca_eval")
    assert "bad.jsonl:3:" in str(error.value)
    with pytest.raises(DataError, match="no such file"):
        eval_generations.read_prompts(str(tmp_path / "missing.json"), format="alpaca_eval")
    with pytest.raises(DataError, match="expected one of"):
        eval_generations.read_prompts(ALPACA_EVAL, format="mt_bench")


def test_alpaca_eval_files_have_exactly_the_judge_fields(tmp_path):
    prompts = eval_generations.read_prompts(ALPACA_EVAL, format="alpaca_eval")
    responses = {"policy": ["a", "b", "c", "d"], "sft": ["e", "f", "g", "h"]}
    files = eval_generations.write_generations(
        str(tmp_path), prompts, responses, {"policy": "ropo_full_seed0", "sft": "sft"}
    )
    assert set(files) == {"policy", "sft", "reference"}
    for name, generator in (("policy", "ropo_full_seed0"), ("sft", "sft")):
        with open(files[name], encoding="utf-8") as f:
            rows = json.load(f)
        assert isinstance(rows, list) and len(rows) == 4
        assert all(set(r) == ALPACA_FIELDS | {"dataset"} for r in rows)
        assert [r["output"] for r in rows] == responses[name]
        assert {r["generator"] for r in rows} == {generator}
        assert [r["instruction"] for r in rows] == [p.instruction for p in prompts]
        assert rows[0]["dataset"] == "helpful_base"
    with open(files["reference"], encoding="utf-8") as f:
        assert [r["output"] for r in json.load(f)] == [p.reference for p in prompts]
    # A prompt set without datasets or references (TL;DR has references, no datasets).
    plain = [eval_generations.EvalPrompt("Say hi."), eval_generations.EvalPrompt("Say bye.")]
    files = eval_generations.write_generations(
        str(tmp_path / "plain"), plain, {"policy": ["hi", "bye"]}, {"policy": "p"}
    )
    assert set(files) == {"policy"}
    with open(files["policy"], encoding="utf-8") as f:
        assert all(set(r) == ALPACA_FIELDS for r in json.load(f))


def test_prompt_truncation_keeps_bos_and_the_end():
    assert _truncate_left([1, 5, 6, 7, 8], 3, 1) == [1, 7, 8]
    assert _truncate_left([5, 6, 7, 8], 3, None) == [6, 7, 8]
    assert _truncate_left([1, 5], 3, 1) == [1, 5]


def _tiny_model():
    config = models.ModelConfig.preset("tiny", vocab_size=259)  # the byte tokenizer's vocabulary
    return config, models.init_params(config, jax.random.key(0))


def _evaluate(tmp_path, params_pair, config, **kwargs):
    options = dict(
        prompts_path=ALPACA_EVAL,
        prompts_format="alpaca_eval",
        prompt_style="chat",
        num_prompts=0,
        tokenizer_dir=BYTE_TOKENIZER,
        chat_template=None,
        max_prompt_length=48,
        sampling=sampling.SamplingConfig(max_new_tokens=6, temperature=0.7),
        seed=0,
        generate_batch_size=4,
        output_dir=str(tmp_path / "eval"),
        generator="dpo_seed0",
    )
    options.update(kwargs)
    generation = eval_generations.GenerationEval(**options)
    return eval_generations.evaluate_generations(config, *params_pair, generation)


def test_evaluate_generations_with_a_reward_model(tmp_path):
    pytest.importorskip("torch")
    from reward_model_test import build_reward_model

    config, policy = _tiny_model()
    sft = models.init_params(config, jax.random.key(1))
    rm = build_reward_model(str(tmp_path / "rm"))
    out = _evaluate(tmp_path, (policy, sft), config, reward_model=rm, reward_device="cpu")
    assert out["generations"]["num_prompts"] == 4
    files = out["generations"]["files"]
    assert set(files) == {"policy", "sft", "reference"}
    with open(files["policy"], encoding="utf-8") as f:
        policy_rows = json.load(f)
    assert {r["generator"] for r in policy_rows} == {"dpo_seed0"}
    metrics = out["eval"]
    assert 0.0 <= metrics["reward_win_rate_vs_sft"] <= 1.0
    assert np.isfinite([metrics["reward_mean"], metrics["sft_reward_mean"]]).all()
    assert metrics["reward_model"] == rm
    # The same params answer identically (same prompts, same RNG): every comparison ties.
    same = _evaluate(tmp_path / "same", (policy, policy), config, reward_model=rm)
    assert same["eval"]["reward_win_rate_vs_sft"] == 0.5
    # Process > 0 generates but neither writes nor scores (process 0 writes the results).
    quiet = _evaluate(
        tmp_path / "quiet", (policy, sft), config, write=False, num_prompts=2, reward_model=rm
    )
    assert quiet["generations"] == {"num_prompts": 2, "files": {}} and quiet["eval"] == {}
    assert not os.path.exists(tmp_path / "quiet" / "eval")


def test_text_style_and_bad_style(tmp_path):
    config, params = _tiny_model()
    tldr = dict(prompts_path=TLDR, prompts_format="tldr", prompt_style="text", num_prompts=2)
    out = _evaluate(tmp_path, (params, params), config, **tldr)
    with open(out["generations"]["files"]["reference"], encoding="utf-8") as f:
        assert all(r["instruction"].endswith("TL;DR:") for r in json.load(f))
    with pytest.raises(ValueError, match="prompt_style"):
        _evaluate(tmp_path, (params, params), config, prompt_style="markdown")


def test_stored_tokenizer_is_the_byte_tokenizer(tmp_path):
    """tests/fixtures/tokenizers/byte_bpe is ``build_byte_tokenizer``'s output, stored so that
    configs can name it: the same ids, specials and chat template."""
    from data_readers_test import build_byte_tokenizer

    from ropo_jax.data.tokenizer import load_tokenizer

    stored = load_tokenizer(BYTE_TOKENIZER)
    built = load_tokenizer(build_byte_tokenizer(str(tmp_path)))
    assert (stored.vocab_size, stored.bos_id, stored.eos_id, stored.pad_id) == (259, 1, 2, 0)
    assert stored.chat_template == built.chat_template
    text = "Écris un poème court sur la mer 👋 (神奈川)"
    assert stored.encode(text) == built.encode(text)
    assert stored.encode(text, continuation=True) == built.encode(text, continuation=True)


def test_the_starting_model_responses_are_cached_by_what_decides_them(tmp_path, monkeypatch):
    config, policy = _tiny_model()
    sft = models.init_params(config, jax.random.key(1))
    real = eval_generations.eval_lib.generate_responses
    calls = []

    def counted(model_config, params, prompts, **kwargs):
        calls.append("policy" if params is policy else "sft")
        return real(model_config, params, prompts, **kwargs)

    monkeypatch.setattr(eval_generations.eval_lib, "generate_responses", counted)
    cache = dict(cache_dir=str(tmp_path / "cache"), reference_key="start-params")
    first = _evaluate(tmp_path / "a", (policy, sft), config, **cache)
    assert calls == ["policy", "sft"]
    second = _evaluate(tmp_path / "b", (policy, sft), config, **cache)
    assert calls == ["policy", "sft", "policy"]  # the starting model's answers from the cache
    for run in (first, second):
        with open(run["generations"]["files"]["sft"], encoding="utf-8") as f:
            run["sft_rows"] = json.load(f)
    assert first["sft_rows"] == second["sft_rows"]
    # Another seed, another starting model or no key: sampled again.
    _evaluate(tmp_path / "c", (policy, sft), config, seed=1, **cache)
    _evaluate(tmp_path / "d", (policy, sft), config, **{**cache, "reference_key": "other"})
    _evaluate(tmp_path / "e", (policy, sft), config, cache_dir=cache["cache_dir"])
    assert calls[3:] == ["policy", "sft"] * 3
    assert len(os.listdir(tmp_path / "cache")) == 3
