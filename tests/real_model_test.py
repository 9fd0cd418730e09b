"""The port on the real checkpoint, SmolLM2-135M-Instruct (scripts/fetch_smollm2.py, which
./scripts/test.sh runs before pytest): logits equal transformers' PyTorch model, greedy decoding
with the KV-cache sampler equals transformers' ``generate`` token for token, and an export loads
in transformers with the original's weights, tokenizer, chat template and greedy answers.

Prompts are rendered with the checkpoint's own chat template by the HF tokenizer
(``apply_chat_template``): ChatML, ``<|im_start|>`` (the BOS) opening every turn, the default
system turn, ``<|im_end|>`` (EOS = PAD) closing it. Everything is float32 on CPU; the model is
loaded once per module, on both sides.

Shape key: B batch, T length, V vocabulary.
"""

import json
import os
import time
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from script_runner import ROOT, run_script
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

from ropo_jax import export, models
from ropo_jax.inference import sampling

SMOLLM2 = os.environ.get(
    "ROPO_JAX_SMOLLM2", os.path.join(ROOT, ".venv", "share", "ropo_jax", "smollm2-135m-instruct")
)
pytestmark = pytest.mark.skipif(
    not os.path.isfile(os.path.join(SMOLLM2, "conversion.json")),
    reason=f"{SMOLLM2} is missing: run `python scripts/fetch_smollm2.py` (./scripts/test.sh does)",
)

EOS = 2  # <|im_end|>: the checkpoint's EOS and PAD
NEW_TOKENS = 32
CONVERSATIONS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [
        {"role": "system", "content": "You are a poet."},
        {"role": "user", "content": "Write a haiku about the sea."},
    ],
    [{"role": "user", "content": "Tell me a story about a dragon."}],
    [
        {"role": "user", "content": "Hi!"},
        {"role": "assistant", "content": "Hello! How can I help you today?"},
        {"role": "user", "content": "Name a prime number greater than 10."},
    ],
]
# Logit tolerance. Float32 through 30 layers, XLA's CPU kernels against PyTorch's (other
# summation orders, exp and rsqrt): measured 1.5e-4 at most on these prompts, logits up to |42|
# (3.6e-6 relative); our own two attention kernels (blocked, xla) differ from each other by
# 2.3e-4 on the same batch, so that is the rounding noise. The smallest plausible port bugs
# tried on this batch are two orders larger: rms_norm_eps 1e-6 instead of 1e-5 moves the
# logits by 3.1e-2, rope_theta off by 1 % by 8.2e-2 (10 000 instead of 100 000: by 13.5).
# 1e-3 sits in between: ~5x the noise, 30x below those bugs.
LOGIT_ATOL = 1e-3


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    """PyTorch's OpenMP threads spin while they wait. On the 2-core machine, busy with other
    processes, two of them made ``generate`` 10x slower than one (84-108 s against 8.5 s for
    this module's batch), so the module runs PyTorch on one thread (restored afterwards)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def ours():
    return models.load_hf(SMOLLM2, dtype=jnp.float32)


@pytest.fixture(scope="module")
def hf_model():
    return LlamaForCausalLM.from_pretrained(SMOLLM2, dtype=torch.float32).eval()


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(SMOLLM2)


def _render(tokenizer, conversation) -> list[int]:
    return tokenizer.apply_chat_template(
        conversation, add_generation_prompt=True, return_dict=False
    )


@pytest.fixture(scope="module")
def prompts(tokenizer):
    return [_render(tokenizer, c) for c in CONVERSATIONS]


def _until_eos(tokens: list[int]) -> list[int]:
    return tokens[: tokens.index(EOS) + 1] if EOS in tokens else tokens


def _hf_greedy(model, prompts, new_tokens=NEW_TOKENS) -> list[list[int]]:
    """transformers' greedy ``generate`` on one left-padded batch (its layout for decoding),
    each continuation cut after its first EOS."""
    width = max(map(len, prompts))
    ids_BT = torch.full((len(prompts), width), EOS, dtype=torch.long)
    mask_BT = torch.zeros((len(prompts), width), dtype=torch.long)
    for i, p in enumerate(prompts):
        ids_BT[i, width - len(p) :] = torch.tensor(p)
        mask_BT[i, width - len(p) :] = 1
    with torch.inference_mode():
        out = model.generate(
            input_ids=ids_BT,
            attention_mask=mask_BT,
            max_new_tokens=new_tokens,
            do_sample=False,
            eos_token_id=EOS,
            pad_token_id=EOS,
        )
    return [_until_eos(row[width:].tolist()) for row in out]


@pytest.fixture(scope="module")
def hf_greedy(hf_model, prompts):
    return _hf_greedy(hf_model, prompts)


def test_conversion_record_and_config(ours):
    config, _ = ours
    with open(os.path.join(SMOLLM2, "conversion.json")) as f:
        record = json.load(f)
    assert record["dtype"] == "float32"
    assert record["gguf_tensor_types"] == {"Q4_1": 210, "Q8_0": 1, "F32": 61}
    assert record["parameters"] == config.num_params() == 134_515_008
    assert (config.num_layers, config.hidden_size, config.num_heads, config.num_kv_heads) == (
        30,
        576,
        9,
        3,
    )
    assert config.tie_word_embeddings and config.rope_theta == 100_000.0
    assert (config.bos_token_id, config.eos_token_id, config.pad_token_id) == (1, EOS, EOS)


def test_logits_match_transformers_on_chat_prompts(ours, hf_model, prompts):
    config, params = ours
    batch, width = len(prompts), max(map(len, prompts))
    tokens_BT = np.full((batch, width), EOS, np.int32)
    mask_BT = np.zeros((batch, width), np.int32)
    for i, p in enumerate(prompts):
        tokens_BT[i, : len(p)] = p
        mask_BT[i, : len(p)] = 1
    got_BTV = np.asarray(
        models.forward(config, params, jnp.asarray(tokens_BT), segment_ids_BT=jnp.asarray(mask_BT))
    )
    with torch.inference_mode():
        expected_BTV = hf_model(
            torch.tensor(tokens_BT, dtype=torch.long), attention_mask=torch.tensor(mask_BT)
        ).logits.numpy()
    real_BT = mask_BT.astype(bool)
    got_NV, expected_NV = got_BTV[real_BT], expected_BTV[real_BT]
    diff = float(np.abs(got_NV - expected_NV).max())
    relative = diff / float(np.abs(expected_NV).max())
    print(
        f"SmolLM2 logits, {real_BT.sum()} positions: max |Δ| = {diff:.3g}, "
        f"max |Δ| / max |logit| = {relative:.3g}"
    )
    assert diff <= LOGIT_ATOL, (diff, relative)
    np.testing.assert_array_equal(got_NV.argmax(-1), expected_NV.argmax(-1))


def test_kv_cache_greedy_equals_transformers_generate(ours, prompts, hf_greedy):
    config, params = ours
    # The sampler's layout: right-padded prompts with their lengths, one batch; it stops a row
    # at the model's EOS (<|im_end|>) and returns it, like generate's output cut after EOS.
    greedy = sampling.SamplingConfig(
        max_new_tokens=NEW_TOKENS, temperature=0.0, pad_token_id=EOS, length_bucket=8
    )
    start = time.perf_counter()
    got = sampling.generate(
        config, params, prompts, greedy, rng=jax.random.key(0), batch_size=len(prompts)
    )
    print(f"sampler: {len(prompts)} x {NEW_TOKENS} tokens in {time.perf_counter() - start:.1f} s")
    for row, (ours_row, hf_row) in enumerate(zip(got, hf_greedy, strict=True)):
        assert ours_row == hf_row, (row, ours_row, hf_row)
    # Every way of ending is exercised: EOS before the limit (France: 8 tokens, the prime: 14),
    # EOS as the very last token allowed (the haiku: 32), the limit without EOS (the dragon).
    endings = [(len(r), r[-1] == EOS) for r in got]
    assert endings == [(8, True), (NEW_TOKENS, True), (NEW_TOKENS, False), (14, True)], endings
    print(f"greedy: {sum(map(len, got))} tokens equal over {len(got)} prompts")


def test_export_loads_in_transformers_and_answers_like_the_original(
    ours, hf_model, tokenizer, prompts, hf_greedy, tmp_path
):
    config, params = ours
    out = str(tmp_path / "smollm2")
    export.export_model(config, params, out, tokenizer_dir=SMOLLM2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warnings about missing/unexpected weights
        model, info = AutoModelForCausalLM.from_pretrained(out, output_loading_info=True)
    assert not any(info.values()), info
    assert type(model).__name__ == "LlamaForCausalLM"
    for key in (
        "vocab_size",
        "hidden_size",
        "intermediate_size",
        "num_hidden_layers",
        "num_attention_heads",
        "num_key_value_heads",
        "head_dim",
        "rms_norm_eps",
        "rope_parameters",
        "tie_word_embeddings",
        "max_position_embeddings",
        "bos_token_id",
        "eos_token_id",
        "pad_token_id",
    ):
        assert getattr(model.config, key) == getattr(hf_model.config, key), key
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    # float32 in, float32 out: the exported weights are the original's, bit for bit.
    exported, original = model.state_dict(), hf_model.state_dict()
    assert set(exported) == set(original)
    assert all(torch.equal(exported[k], original[k]) for k in original)
    assert (model.generation_config.eos_token_id, model.generation_config.pad_token_id) == (
        EOS,
        EOS,
    )

    # The tokenizer and its chat template are carried over (transformers 5 writes the template
    # to chat_template.jinja beside tokenizer_config.json).
    with open(os.path.join(SMOLLM2, "chat_template.jinja")) as f:
        template = f.read()
    with open(os.path.join(out, "chat_template.jinja")) as f:
        assert f.read() == template
    exported_tokenizer = AutoTokenizer.from_pretrained(out)
    assert exported_tokenizer.chat_template == tokenizer.chat_template == template
    assert len(exported_tokenizer) == len(tokenizer) == config.vocab_size
    for attr in ("bos_token", "eos_token", "pad_token"):
        assert getattr(exported_tokenizer, attr) == getattr(tokenizer, attr), attr
    for conversation, prompt in zip(CONVERSATIONS, prompts, strict=True):
        assert _render(exported_tokenizer, conversation) == prompt

    # transformers' greedy answer from the export is the original checkpoint's.
    answer = _hf_greedy(model, prompts[:1])[0]
    assert answer == hf_greedy[0]
    text = exported_tokenizer.decode(answer, skip_special_tokens=True)
    assert "Paris" in text, text
    print(f"exported model: {text!r}")


@pytest.mark.e2e
def test_fetch_script_returns_at_once_when_the_directory_is_ready():
    before = os.stat(os.path.join(SMOLLM2, "model.safetensors")).st_mtime_ns
    start = time.perf_counter()
    result = run_script("scripts/fetch_smollm2.py", f"--output={SMOLLM2}", timeout=60)
    assert "is ready" in result.stdout and time.perf_counter() - start < 30
    assert os.stat(os.path.join(SMOLLM2, "model.safetensors")).st_mtime_ns == before
