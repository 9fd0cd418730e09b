"""Local reward-model scoring: a tiny LlamaForSequenceClassification whose score is set by hand
must rank a constructed pair, read the last real token whatever the padding, and give the win
rate; bad model directories are refused with one message; the command prints the comparison."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from ropo_jax.evaluation import reward_model  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BYTE_TOKENIZER = os.path.join(ROOT, "tests", "fixtures", "tokenizers", "byte_bpe")
WORDS = ["<pad>", "<s>", "</s>", "<unk>", "question", "good", "bad", "and"]


def _word_tokenizer(directory):
    from tokenizers import Tokenizer, models, pre_tokenizers

    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<s>", eos_token="</s>", pad_token="<pad>"
    )
    tokenizer.save_pretrained(directory)


def _tiny_llama(vocab_size, num_labels=1):
    config = transformers.LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=8,
        intermediate_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=512,
        pad_token_id=0,
        num_labels=num_labels,
    )
    torch.manual_seed(0)
    return transformers.LlamaForSequenceClassification(config)


def build_reward_model(directory, tokenizer_dir=BYTE_TOKENIZER):
    """A randomly initialised single-score Llama reward model with the byte-level tokenizer."""
    shutil.copytree(tokenizer_dir, directory, dirs_exist_ok=True)
    _tiny_llama(259).save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def hand_set_model(tmp_path_factory):
    """Reward = +c when the last token is "good", −c for "bad", 0 otherwise: attention and MLP
    outputs are zeroed, so the last hidden state is the normalised embedding of the last token,
    and the score head reads its first coordinate."""
    directory = str(tmp_path_factory.mktemp("hand_set_rm"))
    _word_tokenizer(directory)
    model = _tiny_llama(len(WORDS))
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        embed = model.model.embed_tokens.weight
        embed.zero_()
        embed[:, 1] = 1.0  # every word along axis 1 ...
        embed[WORDS.index("good")] = torch.eye(8)[0]  # ... except "good" (+axis 0)
        embed[WORDS.index("bad")] = -torch.eye(8)[0]  # and "bad" (−axis 0)
        model.score.weight.zero_()
        model.score.weight[0, 0] = 1.0
    model.save_pretrained(directory)
    return reward_model.RewardModel(directory, device="cpu")


def test_hand_set_head_ranks_the_pair(hand_set_model):
    rewards = hand_set_model.score(
        ["question", "question", "question"], ["good", "bad", "good and bad"], batch_size=1
    )
    c = 1 / np.sqrt(1 / 8 + 1e-6)  # RMSNorm of a unit vector in 8 dimensions
    np.testing.assert_allclose(rewards, [c, -c, -c], rtol=1e-5)
    # Different lengths in one right-padded batch: the head still reads the last real token.
    batched = hand_set_model.score(
        ["question", "question and question", "question"],
        ["good", "bad", "good and bad"],
        batch_size=3,
    )
    np.testing.assert_allclose(batched, [c, -c, -c], rtol=1e-5)


def test_win_rate_of_constructed_generations(hand_set_model):
    prompts = ["question"] * 4
    policy = hand_set_model.score(prompts, ["good", "good", "bad", "and good"])
    sft = hand_set_model.score(prompts, ["bad", "and bad", "bad", "bad"])
    result = reward_model.compare(policy, sft)
    assert result["reward_win_rate_vs_sft"] == pytest.approx(3.5 / 4)  # one tie counts ½
    assert result["reward_mean"] == pytest.approx(policy.mean())
    assert result["sft_reward_mean"] == pytest.approx(sft.mean()) and sft.mean() < 0
    assert reward_model.compare(sft, policy)["reward_win_rate_vs_sft"] == pytest.approx(0.5 / 4)


def test_chat_template_renders_both_turns(tmp_path):
    scorer = reward_model.RewardModel(build_reward_model(str(tmp_path / "rm")), device="cpu")
    ids = scorer.encode("Hi", "Hello")
    assert scorer.tokenizer.decode(ids) == "<s>[INST] Hi [/INST]Hello</s>"
    rewards = scorer.score(["Hi", "Hi there"], ["Hello", "Go"], batch_size=2)
    assert rewards.shape == (2,) and np.isfinite(rewards).all()


def test_refuses_bad_directories(tmp_path):
    with pytest.raises(ValueError, match=r"no config\.json"):
        reward_model.RewardModel(str(tmp_path), device="cpu")
    two = str(tmp_path / "two_labels")
    shutil.copytree(BYTE_TOKENIZER, two)
    _tiny_llama(259, num_labels=2).save_pretrained(two)
    with pytest.raises(ValueError, match="num_labels=2"):
        reward_model.RewardModel(two, device="cpu")
    pickled = str(tmp_path / "pickled")
    shutil.copytree(BYTE_TOKENIZER, pickled)
    model = _tiny_llama(259)
    model.config.save_pretrained(pickled)
    torch.save(model.state_dict(), os.path.join(pickled, "pytorch_model.bin"))
    with pytest.raises(ValueError, match="safetensors"):
        reward_model.RewardModel(pickled, device="cpu")


@pytest.mark.e2e
def test_command_compares_two_files(hand_set_model, tmp_path):
    from ropo_jax.evaluation.heldout import write_alpaca_eval

    prompts = ["question", "question"]
    write_alpaca_eval(str(tmp_path / "policy.json"), prompts, ["good", "good"], "policy")
    write_alpaca_eval(str(tmp_path / "sft.json"), prompts, ["bad", "good"], "sft")
    directory = hand_set_model.model.name_or_path
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "ropo_jax.evaluation.reward_model",
            f"--reward_model={directory}",
            f"--outputs={tmp_path / 'policy.json'}",
            f"--baseline={tmp_path / 'sft.json'}",
            "--device=cpu",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["reward_win_rate_vs_sft"] == pytest.approx(0.75)
    bad = subprocess.run(
        [sys.executable, "-m", "ropo_jax.evaluation.reward_model", f"--reward_model={tmp_path}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert bad.returncode == 2 and "error:" in bad.stderr and "Traceback" not in bad.stderr
