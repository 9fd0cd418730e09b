"""Tokenization that follows each tokenizer and its chat template (docs/data.md "Tokenization"):
chat prompts are exactly transformers' ``apply_chat_template(..., add_generation_prompt=True)``,
prompt + response is exactly the whole rendered conversation, and a text prompt gets BOS only
where the tokenizer adds it itself.

Checked on the real SmolLM2-135M-Instruct tokenizer (ChatML, BOS = ``<|im_start|>`` at every
turn, EOS = PAD; skipped when its directory is missing) and on tokenizers that transformers
builds offline here: ChatML, Qwen-like without BOS, Llama-3-like whose template and
post-processor both put BOS, and the test checkpoints' own (tests/hf_checkpoints.py). No model is
run.
"""

import json
import os

import numpy as np
import pytest
from hf_checkpoints import KINDS, build_tokenizer
from script_runner import run_module

from ropo_jax.data.encode import ENCODING_VERSION, Encoder, Limits
from ropo_jax.data.errors import DataError
from ropo_jax.data.example import Message, PreferenceExample
from ropo_jax.data.prepare import prepare, prepare_splits
from ropo_jax.data.prepared import load_prepared
from ropo_jax.data.tokenizer import load_tokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(ROOT, "tests", "fixtures", "data")
SMOLLM2 = os.environ.get(
    "ROPO_JAX_SMOLLM2", os.path.join(ROOT, ".venv", "share", "ropo_jax", "smollm2-135m-instruct")
)
needs_smollm2 = pytest.mark.skipif(
    not os.path.isfile(os.path.join(SMOLLM2, "tokenizer.json")),
    reason=f"{SMOLLM2} is missing: run scripts/fetch_smollm2.py (./scripts/test.sh does)",
)

CHATML = (
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>'"
    " + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}"
    "{% endif %}"
)
LLAMA3 = (
    "{{ bos_token }}{% for m in messages %}{{ '<|start_header_id|>' + m['role'] + "
    "'<|end_header_id|>\\n\\n' + m['content'] | trim + '<|eot_id|>' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}"
    "{% endif %}"
)
# Llama-3's pre-tokenizer pattern: newlines stay one piece before a word ("\n\n" + "Hello").
LLAMA3_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
MERGES = [("H", "e"), ("l", "l"), ("He", "ll"), ("Hell", "o"), ("Ċ", "Ċ"), ("Ġ", "t")]

SINGLE = (Message("user", "Hi"),)
WITH_SYSTEM = (Message("system", "Be brief."), Message("user", "Hi"))
MULTI_TURN = (
    Message("system", "Be brief."),
    Message("user", "What is 2+2?\n\nThink."),
    Message("assistant", "Four."),
    Message("user", "  Sure?"),
)
NO_SYSTEM_MULTI = (Message("user", "Hi"), Message("assistant", "Hello!"), Message("user", "Bye"))
PROMPTS = {
    "single": SINGLE,
    "system": WITH_SYSTEM,
    "multi": MULTI_TURN,
    "multi_no_system": NO_SYSTEM_MULTI,
}
RESPONSES = ("Hello there.", " Leading space", "\nLeading newline", "Tokyo (東京).\n\nDone")


def build_hf_tokenizer(
    directory,
    *,
    specials,
    bos,
    eos,
    pad,
    unk=None,
    template,
    post_bos=False,
    pattern=None,
):
    """A byte-level BPE tokenizer (a few merges) saved by transformers, as a model ships it."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    merged = ["".join(m) for m in MERGES]
    vocab = {t: i for i, t in enumerate([*specials, *alphabet, *merged])}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=MERGES))
    if pattern is None:
        backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    else:
        backend.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(pattern), behavior="isolated"),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )
    backend.decoder = decoders.ByteLevel()
    if post_bos:
        backend.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, vocab[bos])]
        )
    tok = PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token=bos, eos_token=eos, pad_token=pad, unk_token=unk
    )
    tok.chat_template = template
    tok.save_pretrained(str(directory))
    return str(directory)


def _messages(conversation):
    return [{"role": m.role, "content": m.content} for m in conversation]


def _hf_ids(hf, conversation, **kwargs):
    out = hf.apply_chat_template(_messages(conversation), tokenize=True, **kwargs)
    return list(out["input_ids"] if hasattr(out, "keys") else out)


def check_against_transformers(directory):
    """Prompt ids == apply_chat_template(prompt, add_generation_prompt=True); prompt + response
    ids == apply_chat_template(prompt + response) without what follows its final EOS."""
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(directory)
    tok = load_tokenizer(directory)
    enc = Encoder(tok, Limits(4096, 2048))
    for prompt in PROMPTS.values():
        ids = enc.prompt_ids(prompt)
        assert ids == _hf_ids(hf, prompt, add_generation_prompt=True)
        for text in RESPONSES:
            response = (Message("assistant", text),)
            reply = enc.response_ids(prompt, response)
            whole = _hf_ids(hf, prompt + response)
            end = len(whole) - 1 - whole[::-1].index(tok.eos_id)
            assert not hf.decode(whole[end + 1 :]).strip()  # only whitespace after the EOS
            assert ids + reply == whole[: end + 1]
            assert reply.count(tok.eos_id) == 1 and reply[-1] == tok.eos_id
    return hf, tok, enc


def pair(prompt, chosen, rejected):
    return PreferenceExample("x", prompt, chosen, rejected)


def reply(text):
    return (Message("assistant", text),)


# --- the real SmolLM2 tokenizer ------------------------------------------------------------------


@pytest.fixture(scope="module")
def smollm2():
    return load_tokenizer(SMOLLM2)


@needs_smollm2
def test_smollm2_special_tokens(smollm2):
    tok = smollm2
    assert (tok.bos_token, tok.eos_token) == ("<|im_start|>", "<|im_end|>")
    assert (tok.bos_id, tok.eos_id, tok.pad_id, tok.vocab_size) == (1, 2, 2, 49152)  # EOS = PAD
    assert (
        not tok.add_bos
        and tok.hf("hi")["input_ids"] == tok.hf("hi", add_special_tokens=False)["input_ids"]
    )


@needs_smollm2
def test_smollm2_matches_apply_chat_template():
    hf, tok, enc = check_against_transformers(SMOLLM2)
    # ChatML's BOS at every turn stays where the template put it: the default system turn, each
    # message and the generation prompt.
    for prompt in PROMPTS.values():
        ids = enc.prompt_ids(prompt)
        turns = len(prompt) + (prompt[0].role != "system")
        assert ids[0] == tok.bos_id and ids.count(tok.bos_id) == turns + 1
    text = hf.decode(enc.prompt_ids(SINGLE))
    assert text.startswith("<|im_start|>system\nYou are a helpful AI assistant named SmolLM")
    assert text.endswith("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")


@needs_smollm2
def test_smollm2_text_prompts_get_no_bos(smollm2):
    enc = Encoder(smollm2, Limits(64, 32))
    e = enc.encode(pair("2+2=", " 4", " 5"))
    assert e.prompt.tolist() == smollm2.hf("2+2=")["input_ids"] and smollm2.bos_id not in e.prompt
    assert e.chosen.tolist()[-1] == smollm2.eos_id
    # BOS marks turns here, so pre-rendered ChatML text is accepted as the model would see it.
    rendered = "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    assert enc.bos_marks_turns()
    assert enc.prompt_ids(rendered) == smollm2.hf(rendered)["input_ids"]
    with pytest.raises(ValueError, match="empty prompt"):
        enc.prompt_ids("")


@needs_smollm2
def test_smollm2_truncation_keeps_the_leading_bos(smollm2):
    enc = Encoder(smollm2, Limits(max_length=24, max_prompt_length=12))
    e = enc.encode(pair(MULTI_TURN, reply("Four, surely."), reply("No.")))
    full = enc.prompt_ids(MULTI_TURN)
    assert e.prompt.tolist() == [smollm2.bos_id, *full[-11:]]
    assert e.truncated[0] and e.original_lengths[0] == len(full)


@needs_smollm2
@pytest.mark.parametrize(
    "where,token",
    [("prompt", "<|im_end|>"), ("prompt", "<|im_start|>"), ("response", "<|endoftext|>")],
)
def test_smollm2_special_tokens_in_contents_are_refused(smollm2, where, token):
    enc = Encoder(smollm2, Limits(256, 128))
    inject = f"Hi{token}user\nmore"
    prompt = (Message("user", inject),) if where == "prompt" else SINGLE
    chosen = reply(inject) if where == "response" else reply("a")
    index = 0 if where == "prompt" else 1
    role = "user" if where == "prompt" else "assistant"
    with pytest.raises(ValueError, match=rf"message {index} \({role}\) contains the special token"):
        enc.encode(pair(prompt, chosen, reply("b")))


@needs_smollm2
def test_prepare_smollm2_chat_data(tmp_path):
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(SMOLLM2)
    for fmt, name in (("ultrafeedback", "ultrafeedback.jsonl"), ("sft", "sft.jsonl")):
        out = tmp_path / fmt
        summary = prepare(
            format=fmt,
            input=os.path.join(FIXTURES, name),
            tokenizer=SMOLLM2,
            output_dir=str(out),
            progress=False,
        )
        assert summary["rejected"] == 0 and summary["examples_written"] == 5
        data = load_prepared(str(out))
        assert data.manifest["encoding_version"] == ENCODING_VERSION
        assert data.manifest["pad_id"] == data.manifest["eos_id"] == 2
        for i in range(len(data)):
            prompt, chosen, _ = data.parts(i)
            assert chosen[-1] == 2 and np.count_nonzero(chosen == 2) == 1
            assert hf.decode(prompt).endswith("<|im_start|>assistant\n") or fmt == "sft"


@needs_smollm2
@pytest.mark.e2e
def test_cli_prepares_chatml_chat_data(tmp_path):
    from transformers import AutoTokenizer

    out = tmp_path / "uf"
    result = run_module(
        "ropo_jax.data.prepare",
        "--format=ultrafeedback",
        f"--input={os.path.join(FIXTURES, 'ultrafeedback.jsonl')}",
        f"--tokenizer={SMOLLM2}",
        f"--output_dir={out}",
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == (
        f"prepared {out}: 5 rows read, 5 examples written, 0 truncated (prompt 0, chosen 0, "
        "rejected 0), 0 rejected, 0 exact duplicates (0 dropped)"
    )
    hf = AutoTokenizer.from_pretrained(SMOLLM2)
    data = load_prepared(str(out))
    with open(os.path.join(FIXTURES, "ultrafeedback.jsonl"), encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    for i, row in enumerate(rows):
        prompt, chosen, rejected = (p.tolist() for p in data.parts(i))
        history = row["chosen"][:-1]
        assert prompt == _hf_ids(hf, [Message(**m) for m in history], add_generation_prompt=True)
        for response, messages in ((chosen, row["chosen"]), (rejected, row["rejected"])):
            whole = _hf_ids(hf, [Message(**m) for m in messages])
            assert prompt + response == whole[:-1] and hf.decode(whole[-1:]) == "\n"


# --- tokenizers transformers builds here -------------------------------------------------------


@pytest.fixture(scope="module")
def chatml_dir(tmp_path_factory):
    """ChatML with BOS = <|im_start|> and EOS = PAD = <|im_end|>, no default system message."""
    return build_hf_tokenizer(
        tmp_path_factory.mktemp("chatml"),
        specials=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        bos="<|im_start|>",
        eos="<|im_end|>",
        pad="<|im_end|>",
        unk="<|endoftext|>",
        template=CHATML,
    )


@pytest.fixture(scope="module")
def qwen_like_dir(tmp_path_factory):
    """ChatML without a BOS token at all (as Qwen's tokenizer)."""
    return build_hf_tokenizer(
        tmp_path_factory.mktemp("no_bos"),
        specials=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        bos=None,
        eos="<|im_end|>",
        pad="<|endoftext|>",
        template=CHATML,
    )


@pytest.fixture(scope="module")
def llama3_dir(tmp_path_factory):
    """Llama-3 style: the template renders {{ bos_token }} and the post-processor adds BOS."""
    return build_hf_tokenizer(
        tmp_path_factory.mktemp("llama3"),
        specials=[
            "<|begin_of_text|>",
            "<|end_of_text|>",
            "<|start_header_id|>",
            "<|end_header_id|>",
            "<|eot_id|>",
        ],
        bos="<|begin_of_text|>",
        eos="<|eot_id|>",
        pad=None,
        template=LLAMA3,
        post_bos=True,
        pattern=LLAMA3_PATTERN,
    )


def test_chatml_with_bos_as_turn_marker(chatml_dir):
    _, tok, enc = check_against_transformers(chatml_dir)
    assert tok.bos_token == "<|im_start|>" and tok.pad_id == tok.eos_id and not tok.add_bos
    ids = enc.prompt_ids(MULTI_TURN)
    assert ids[0] == tok.bos_id and ids.count(tok.bos_id) == len(MULTI_TURN) + 1
    assert ids.count(tok.eos_id) == len(MULTI_TURN)  # each earlier turn closed by the template
    e = enc.encode(pair(MULTI_TURN, reply("Yes."), reply("No.")))
    assert e.chosen.tolist() == [*tok.encode("Yes.", continuation=True), tok.eos_id]


def test_tokenizer_without_bos(qwen_like_dir):
    _, tok, enc = check_against_transformers(qwen_like_dir)
    assert tok.bos_id is None and not tok.add_bos and tok.bos_token == ""
    e = enc.encode(pair("Q: 2+2?", " 4", " 5"))
    assert e.prompt.tolist() == tok.hf("Q: 2+2?")["input_ids"]
    assert e.chosen.tolist() == [*tok.encode(" 4", continuation=True), tok.eos_id]
    with pytest.raises(ValueError, match="empty prompt"):
        enc.encode(pair("", " 4", " 5"))
    # Truncation without BOS keeps the last tokens only.
    short = Encoder(tok, Limits(max_length=8, max_prompt_length=4))
    e = short.encode(pair("one two three four five", " a", " b"))
    assert e.prompt.tolist() == tok.hf("one two three four five")["input_ids"][-4:]


def test_llama3_style_has_exactly_one_bos(llama3_dir):
    from transformers import AutoTokenizer

    _, tok, enc = check_against_transformers(llama3_dir)
    hf = AutoTokenizer.from_pretrained(llama3_dir)
    assert tok.add_bos and tok.pad_id == tok.eos_id
    for prompt in PROMPTS.values():
        ids = enc.prompt_ids(prompt)
        assert ids[0] == tok.bos_id and ids.count(tok.bos_id) == 1
    # Text prompts: the BOS the tokenizer adds itself, once, also when the text starts with it.
    text = "Q: 2+2?"
    assert enc.prompt_ids(text) == hf(text)["input_ids"] == [tok.bos_id, *tok.encode(text)]
    assert enc.prompt_ids("<|begin_of_text|>" + text) == hf(text)["input_ids"]
    with pytest.raises(ValueError, match=r"contains the BOS token '<\|begin_of_text\|>' after"):
        enc.prompt_ids(text + "<|begin_of_text|>")
    with pytest.raises(ValueError, match="a response contains the BOS token"):
        enc.response_ids(text, " 4<|begin_of_text|>")
    # A row that already contains BOS next to the template's own: refused, not deduplicated.
    with pytest.raises(ValueError, match=r"message 0 \(user\) contains the special token"):
        enc.prompt_ids((Message("user", "<|begin_of_text|>Hi"),))


def test_text_bos_agrees_with_auto_tokenizer(tmp_path):
    # tokenizer.json's post-processor decides; transformers' AutoTokenizer does not apply a bare
    # add_bos_token from tokenizer_config.json to it either.
    from transformers import AutoTokenizer

    directory = build_hf_tokenizer(
        tmp_path, specials=["<s>", "</s>"], bos="<s>", eos="</s>", pad="</s>", template=CHATML
    )
    assert not load_tokenizer(directory).add_bos
    path = os.path.join(directory, "tokenizer_config.json")
    with open(path, encoding="utf-8") as f:
        config = json.load(f)
    with open(path, "w", encoding="utf-8") as f:
        json.dump({**config, "add_bos_token": True}, f)
    tok = load_tokenizer(directory)
    enc = Encoder(tok, Limits(64, 32))
    assert enc.prompt_ids("Hi") == AutoTokenizer.from_pretrained(directory)("Hi")["input_ids"]


@pytest.mark.parametrize("kind", KINDS)
def test_test_checkpoint_tokenizers_match_apply_chat_template(tmp_path, kind):
    check_against_transformers(build_tokenizer(str(tmp_path), kind))


# --- refusals ------------------------------------------------------------------------------------


def test_rendering_that_does_not_extend_the_prompt_is_refused(tmp_path):
    # The message count at the start: the conversation renders another prefix than the prompt.
    template = "{{ messages | length }}" + CHATML
    directory = build_hf_tokenizer(
        tmp_path,
        specials=["<|im_start|>", "<|im_end|>"],
        bos="<|im_start|>",
        eos="<|im_end|>",
        pad="<|im_end|>",
        template=template,
    )
    enc = Encoder(load_tokenizer(directory), Limits(128, 64))
    with pytest.raises(ValueError, match="different prefix than the prompt alone"):
        enc.encode(pair(SINGLE, reply("a"), reply("b")))


def test_token_straddling_the_generation_prompt_is_refused(tmp_path):
    # A GPT-2 pre-tokenizer reads "\n\n" before a word as "\n" "\n", but a prompt ending in
    # "\n\n" as one merged token: the conversation's tokens do not start with the prompt's.
    directory = build_hf_tokenizer(
        tmp_path,
        specials=["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"],
        bos="<|begin_of_text|>",
        eos="<|eot_id|>",
        pad=None,
        template=LLAMA3,
    )
    enc = Encoder(load_tokenizer(directory), Limits(128, 64))
    with pytest.raises(ValueError, match="does not tokenize as the prompt's tokens followed"):
        enc.encode(pair(SINGLE, reply("Hello"), reply("b")))


def test_template_rendering_bos_twice_is_refused(tmp_path):
    directory = build_hf_tokenizer(
        tmp_path,
        specials=["<s>", "</s>"],
        bos="<s>",
        eos="</s>",
        pad="</s>",
        template="{{ bos_token }}{{ bos_token }}" + CHATML,
    )
    enc = Encoder(load_tokenizer(directory), Limits(128, 64))
    with pytest.raises(ValueError, match="renders BOS twice at the start of the prompt"):
        enc.prompt_ids(SINGLE)


def test_document_bos_in_text_is_refused(chatml_dir, tmp_path):
    # BOS marking documents only (the template renders none; the tokenizer adds none).
    directory = build_hf_tokenizer(
        tmp_path, specials=["<s>", "</s>"], bos="<s>", eos="</s>", pad="</s>", template=CHATML
    )
    enc = Encoder(load_tokenizer(directory), Limits(128, 64))
    assert not enc.bos_marks_turns()
    assert enc.prompt_ids("<s>Hi")[0] == enc.tok.bos_id  # a text that starts with it keeps it
    with pytest.raises(ValueError, match="contains the BOS token '<s>' after its start"):
        enc.prompt_ids("Hi<s>there")
    with pytest.raises(ValueError, match="a response contains the BOS token '<s>'"):
        enc.response_ids("Hi", " a<s>b")
    # ChatML's BOS marks turns: the same text is a turn boundary there and accepted.
    chatml = Encoder(load_tokenizer(chatml_dir), Limits(128, 64))
    assert chatml.bos_marks_turns()
    assert chatml.prompt_ids("Hi<|im_start|>there").count(chatml.tok.bos_id) == 1


def test_older_encoding_is_prepared_again(tmp_path, chatml_dir):
    rows = tmp_path / "rows.jsonl"
    rows.write_text(json.dumps({"prompt": "q", "chosen": " a", "rejected": " b"}) + "\n")
    options = dict(tokenizer=chatml_dir, max_length=64, max_prompt_length=32)
    paths = prepare_splits(str(tmp_path / "run"), {"train": ("jsonl", str(rows))}, **options)
    manifest_path = os.path.join(paths["train"], "manifest.json")
    with open(manifest_path, encoding="utf-8") as f:
        manifest = json.load(f)
    del manifest["encoding_version"]  # as written before the field existed
    with open(manifest_path, "w", encoding="utf-8") as f:
        json.dump(manifest, f)
    assert prepare_splits(str(tmp_path / "run"), {"train": ("jsonl", str(rows))}, **options)
    assert load_prepared(paths["train"]).manifest["encoding_version"] == ENCODING_VERSION


def test_tokenizer_with_another_prefix_than_bos_is_refused(tmp_path):
    from tokenizers import processors

    directory = build_hf_tokenizer(
        tmp_path,
        specials=["<s>", "</s>", "[X]"],
        bos="<s>",
        eos="</s>",
        pad="</s>",
        template=CHATML,
    )
    path = os.path.join(directory, "tokenizer.json")
    with open(path, encoding="utf-8") as f:
        spec = json.load(f)
    spec["post_processor"] = json.loads(
        processors.TemplateProcessing(
            single="[X] $A", pair="[X] $A $B", special_tokens=[("[X]", 2)]
        ).__getstate__()
    )
    with open(path, "w", encoding="utf-8") as f:
        json.dump(spec, f)
    with pytest.raises(DataError, match=r"puts \['\[X\]'\] before plain text"):
        load_tokenizer(directory)


def test_synthetic_tokenizer_adds_its_bos_itself(tmp_path):
    """The synthetic task's prompts keep their BOS (its prepared ids are unchanged): its tokenizer
    adds BOS itself; one saved before it did is replaced when the prepared data is reused."""
    from ropo_jax.synthetic import dataset, prepare, task, tokenizer

    config = task.TaskConfig()
    data = dataset.DataConfig(num_sft=4, num_train_pairs=4, num_test_pairs=2, num_eval_prompts=2)
    paths = prepare.prepare_synthetic(str(tmp_path), config, data, seed=0)
    tok = load_tokenizer(paths["tokenizer"])
    assert tok.add_bos
    for split in ("train", "test", "sft"):
        prepared = load_prepared(paths[split])
        assert all(prepared.parts(i)[0][0] == tok.bos_id for i in range(len(prepared)))
    old = tokenizer.build_tokenizer(config)
    old.add_bos_token = False  # as saved before
    old.save_pretrained(paths["tokenizer"])
    assert not load_tokenizer(paths["tokenizer"]).add_bos
    assert prepare.prepare_synthetic(str(tmp_path), config, data, seed=0) == paths
    assert load_tokenizer(paths["tokenizer"]).add_bos
