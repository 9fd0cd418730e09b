"""Tokenization: BOS/EOS, exact prompt/response boundaries, chat templates, truncation.

Token-level checks use the real Mistral-7B SentencePiece model shipped in the mistral-common
wheel (docs/data.md "Tokenization"); they skip only when that wheel is not installed.
"""

import os

import numpy as np
import pytest

from ropo_jax.data.encode import Encoder, Limits
from ropo_jax.data.errors import DataError
from ropo_jax.data.example import Message, PreferenceExample
from ropo_jax.data.prepare import prepare
from ropo_jax.data.prepared import load_prepared
from ropo_jax.data.tokenizer import load_tokenizer

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "data")
TEMPLATE = os.path.join(FIXTURES, "mistral_chat_template.jinja")


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Taken from the mistral-common wheel by scripts/_setup_env.sh (the file only, not the package).
MISTRAL_MODEL = os.path.join(ROOT, ".venv", "share", "ropo_jax", "mistral_tokenizer.model.v1")
MISTRAL = MISTRAL_MODEL if os.path.isfile(MISTRAL_MODEL) else None
needs_mistral = pytest.mark.skipif(
    MISTRAL is None,
    reason=f"{MISTRAL_MODEL} missing: ./scripts/test.sh extracts it from the mistral-common wheel",
)


@pytest.fixture(scope="module")
def mistral():
    tok = load_tokenizer(MISTRAL)
    with open(TEMPLATE, encoding="utf-8") as f:
        tok.chat_template = f.read()
    return tok


@pytest.fixture(scope="module")
def byte_tokenizer(tmp_path_factory):
    from data_readers_test import build_byte_tokenizer

    return load_tokenizer(build_byte_tokenizer(str(tmp_path_factory.mktemp("byte_tok"))))


def pair(prompt, chosen, rejected):
    return PreferenceExample("x", prompt, chosen, rejected)


@needs_mistral
def test_mistral_special_ids_and_vocab(mistral):
    assert (mistral.bos_id, mistral.eos_id, mistral.vocab_size) == (1, 2, 32000)


@needs_mistral
def test_text_pair_boundaries(mistral):
    enc = Encoder(mistral, Limits(64, 32))
    e = enc.encode(pair("Hello", " world", " there"))
    assert e.prompt.tolist() == [1, 22557]  # BOS, "▁Hello"
    assert e.chosen.tolist() == [1526, 2]  # "▁world", EOS
    # The prompt/response cut is exact: prompt + response == the whole text tokenized at once.
    whole = mistral.sp.encode("Hello world")
    assert np.concatenate([e.prompt, e.chosen])[1:-1].tolist() == whole


@needs_mistral
def test_sentencepiece_add_bos_token_from_tokenizer_config(tmp_path):
    import json
    import shutil

    assert load_tokenizer(MISTRAL).add_bos  # no tokenizer_config.json: Llama-2's default
    shutil.copy(MISTRAL, tmp_path / "tokenizer.model")
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"add_bos_token": False}))
    tok = load_tokenizer(str(tmp_path))
    assert not tok.add_bos and tok.bos_id == 1
    e = Encoder(tok, Limits(64, 32)).encode(pair("Hello", " world", " there"))
    assert e.prompt.tolist() == [22557] and e.chosen.tolist() == [1526, 2]


@needs_mistral
def test_tldr_boundary_matches_whole_document(mistral):
    enc = Encoder(mistral, Limits(256, 192))
    prompt = "SUBREDDIT: r/dogs\nTITLE: Barking dog\nPOST: My dog barks at night.\nTL;DR:"
    e = enc.encode(pair(prompt, " Dog barks at night, tips?", " Dog."))
    assert e.prompt[0] == 1 and np.count_nonzero(e.prompt == 1) == 1
    assert e.chosen[-1] == 2 and np.count_nonzero(e.chosen == 2) == 1
    assert np.count_nonzero(e.chosen == 1) == 0
    whole = mistral.sp.encode(prompt + " Dog barks at night, tips?")
    assert np.concatenate([e.prompt[1:], e.chosen[:-1]]).tolist() == whole
    assert mistral.decode(e.chosen[:-1]) == "Dog barks at night, tips?"


@needs_mistral
def test_no_merge_across_boundary(mistral):
    # "Hel" + "lo" would be one token if tokenized together; the boundary keeps them apart.
    enc = Encoder(mistral, Limits(64, 32))
    e = enc.encode(pair("Hel", "lo", "p"))
    assert mistral.decode(e.prompt[1:]) == "Hel"
    assert mistral.decode(e.chosen[:-1]) == "lo" and e.chosen.tolist()[-1] == 2
    assert len(mistral.sp.encode("Hello")) == 1  # the merge that must not happen


@needs_mistral
def test_mistral_chat_template_tokens(mistral):
    enc = Encoder(mistral, Limits(128, 64))
    prompt = (Message("user", "Hi"),)
    e = enc.encode(pair(prompt, (Message("assistant", "Hello"),), (Message("assistant", "Go"),)))
    # <s>[INST] Hi [/INST] — the template renders BOS; it is kept once, not duplicated.
    assert e.prompt.tolist() == [1, 733, 16289, 28793, 15359, 733, 28748, 16289, 28793]
    assert e.chosen.tolist() == [16230, 2]  # "Hello" (not "▁Hello": no space after "[/INST]")
    # System message folded into the first user turn, multi-turn history with EOS between turns.
    history = (
        Message("system", "Be brief."),
        Message("user", "Hi"),
        Message("assistant", "Hello"),
        Message("user", "Bye"),
    )
    e = enc.encode(pair(history, (Message("assistant", "Ciao"),), (Message("assistant", "No"),)))
    text = mistral.decode(e.prompt)
    assert text == "[INST] Be brief.\n\nHi [/INST]Hello[INST] Bye [/INST]"  # decode hides </s>
    assert np.count_nonzero(e.prompt == 1) == 1 and e.prompt[0] == 1
    assert np.count_nonzero(e.prompt == 2) == 1  # the EOS closing the earlier assistant turn
    assert e.chosen[-1] == 2 and np.count_nonzero(e.chosen == 2) == 1


@needs_mistral
def test_template_error_is_a_row_problem(mistral):
    enc = Encoder(mistral, Limits(128, 64))
    bad = (Message("assistant", "I speak first"),)
    with pytest.raises(ValueError, match="Conversation roles must alternate"):
        enc.encode(pair(bad, (Message("assistant", "a"),), (Message("assistant", "b"),)))


@needs_mistral
def test_truncation_policy(mistral):
    enc = Encoder(mistral, Limits(max_length=12, max_prompt_length=6))
    prompt = "one two three four five six seven eight"
    e = enc.encode(pair(prompt, " alpha beta gamma delta epsilon zeta eta theta", " short"))
    full_prompt = [1, *mistral.sp.encode(prompt)]
    # Prompt cut from the left to 6 tokens, BOS kept.
    assert e.prompt.tolist() == [1, *full_prompt[-5:]]
    # Responses cut from the right to max_length - len(prompt); a cut response has no EOS.
    assert len(e.chosen) == 6 and e.chosen[-1] != 2
    assert e.rejected[-1] == 2 and len(e.rejected) < 6
    assert e.truncated == (True, True, False)
    assert e.original_lengths[0] == len(full_prompt)


@needs_mistral
def test_prepare_counts_truncation(tmp_path):
    summary = prepare(
        format="tldr",
        input=os.path.join(FIXTURES, "tldr.jsonl"),
        tokenizer=MISTRAL,
        output_dir=str(tmp_path),
        max_length=40,
        max_prompt_length=24,
        progress=False,
    )
    data = load_prepared(str(tmp_path))
    cut = (data.original_lengths > data.lengths).sum(axis=0)
    assert summary["truncated"]["prompt"] == cut[0] == 5
    assert summary["truncated"]["chosen"] == cut[1] and summary["truncated"]["rejected"] == cut[2]
    assert summary["truncated"]["examples"] == int(
        (data.original_lengths > data.lengths).any(1).sum()
    )
    assert (data.lengths[:, 0] <= 24).all() and (data.sequence_lengths() <= 40).all()


def test_tokenizer_json_continuation(byte_tokenizer):
    tok = byte_tokenizer
    enc = Encoder(tok, Limits(128, 64))
    e = enc.encode(pair("Q: 2+2?", " 4", " 5"))
    # This tokenizer adds no BOS to text (no post-processor), so a text prompt gets none.
    assert not tok.add_bos and tok.bos_id not in e.prompt
    assert e.prompt.tolist() == tok.hf("Q: 2+2?")["input_ids"]
    assert tok.decode(e.prompt) == "Q: 2+2?"
    assert tok.decode(e.chosen[:-1]) == " 4" and e.chosen[-1] == tok.eos_id
    # Chat template from tokenizer_config.json: BOS rendered by the template, kept once.
    e = enc.encode(
        pair((Message("user", "Hi"),), (Message("assistant", "Yo"),), (Message("assistant", "No"),))
    )
    assert tok.decode(e.prompt) == "<s>[INST] Hi [/INST]"
    assert tok.decode(e.chosen) == "Yo</s>"


def test_identical_after_tokenization_is_rejected(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(["<pad>", "<s>", "</s>", "<unk>", "q", "a", "b"])}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<s>", eos_token="</s>", pad_token="<pad>"
    ).save_pretrained(str(tmp_path))
    enc = Encoder(load_tokenizer(str(tmp_path)), Limits(64, 32))
    assert enc.encode(pair("q", " a b", " b a")).chosen.tolist() == [5, 6, 2]
    with pytest.raises(ValueError, match="identical after tokenization"):
        enc.encode(pair("q", " a b", " a  b"))  # whitespace the tokenizer does not see


def test_missing_tokenizer_and_bad_limits(tmp_path):
    with pytest.raises(DataError, match="tokenizer not found"):
        load_tokenizer(str(tmp_path / "missing"))
    with pytest.raises(DataError, match=r"no tokenizer\.json or tokenizer\.model"):
        load_tokenizer(str(tmp_path))
    (tmp_path / "broken.model").write_bytes(b"not a model")
    with pytest.raises(DataError, match="not a SentencePiece model"):
        load_tokenizer(str(tmp_path / "broken.model"))
    with pytest.raises(DataError, match="max_prompt_length=512 must be positive and smaller"):
        Limits(max_length=256, max_prompt_length=512)
