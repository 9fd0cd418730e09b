"""Local tokenizers: ``tokenizer.json`` (Hugging Face ``tokenizers``) or a SentencePiece model.

``load_tokenizer(path)`` accepts a model directory (``tokenizer.json`` preferred, else
``tokenizer.model``), a ``tokenizer.json`` file or a SentencePiece ``.model`` file; the chat
template and special tokens come from ``tokenizer_config.json`` (or ``chat_template.jinja``)
beside it. transformers 5 builds an *empty* tokenizer from a bare ``.model`` without complaint,
so SentencePiece files go through ``sentencepiece`` itself.

``encode(text, continuation=...)`` never adds BOS/EOS; special-token strings inside the text
(``<s>``, ``</s>`` from a rendered chat template) become their ids. ``continuation=True``
tokenizes text that directly follows other text, so a response is tokenized as it would be
after the prompt but never merged with it: SentencePiece without its dummy-prefix space;
``tokenizer.json`` behind an anchor ("\\n") whose tokens are then removed.

``add_bos`` says whether the tokenizer itself puts BOS before plain text: for ``tokenizer.json``,
what ``encode(text, add_special_tokens=True)`` puts before the text (its post-processor; as with
transformers' ``AutoTokenizer``, a bare ``add_bos_token`` in ``tokenizer_config.json`` does not
change it); for SentencePiece, ``add_bos_token`` from ``tokenizer_config.json`` (default True, as
for Llama-2). ``special_tokens`` are the strings ``encode`` turns into control tokens (BOS, EOS,
PAD, UNK and the other special added tokens).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re

from ropo_jax.data.errors import DataError

_ANCHORS = ("\n", "\n\n", ".")


@dataclasses.dataclass
class Tokenizer:
    """Common interface of both back ends (see the module docstring)."""

    path: str
    bos_id: int | None
    eos_id: int
    pad_id: int
    vocab_size: int
    bos_token: str
    eos_token: str
    chat_template: str | None
    add_bos: bool = False  # the tokenizer itself puts BOS before plain text
    special_tokens: tuple[str, ...] = ()  # strings encode() turns into control tokens

    def encode(self, text: str, *, continuation: bool = False) -> list[int]:
        raise NotImplementedError

    def decode(self, ids) -> str:
        raise NotImplementedError


class HFTokenizer(Tokenizer):
    def __init__(self, path: str, tokenizer_file: str, config: dict):
        from transformers import PreTrainedTokenizerFast

        directory = os.path.dirname(tokenizer_file)
        kwargs = {
            k: config[k]
            for k in ("bos_token", "eos_token", "pad_token", "unk_token")
            if isinstance(config.get(k), str)
        }
        self.hf = PreTrainedTokenizerFast(tokenizer_file=tokenizer_file, **kwargs)
        bos_id = self.hf.bos_token_id
        eos_id = self.hf.eos_token_id
        if eos_id is None:
            raise DataError(
                f"{directory}: the tokenizer has no EOS token; set 'eos_token' in "
                "tokenizer_config.json"
            )
        pad_id = self.hf.pad_token_id if self.hf.pad_token_id is not None else eos_id
        super().__init__(
            path,
            bos_id,
            eos_id,
            pad_id,
            len(self.hf),
            self.hf.bos_token or "",
            self.hf.eos_token,
            _chat_template(directory, config),
        )
        self.add_bos = _adds_bos(self.hf, bos_id, directory)
        added = [t.content for t in self.hf.added_tokens_decoder.values() if t.special]
        self.special_tokens = tuple(
            t for t in dict.fromkeys([*self.hf.all_special_tokens, *added]) if t
        )
        self._anchors = {a: self.hf.encode(a, add_special_tokens=False) for a in _ANCHORS}

    def encode(self, text: str, *, continuation: bool = False) -> list[int]:
        if not text:
            return []
        if continuation:
            for anchor, anchor_ids in self._anchors.items():
                ids = self.hf.encode(anchor + text, add_special_tokens=False)
                if ids[: len(anchor_ids)] == anchor_ids:
                    return ids[len(anchor_ids) :]
        return self.hf.encode(text, add_special_tokens=False)

    def decode(self, ids) -> str:
        return self.hf.decode(list(ids), skip_special_tokens=False)


class SentencePieceTokenizer(Tokenizer):
    def __init__(self, path: str, model_file: str, config: dict):
        import sentencepiece as spm
        from sentencepiece import sentencepiece_model_pb2 as model_pb2

        with open(model_file, "rb") as f:
            blob = f.read()
        try:
            self.sp = spm.SentencePieceProcessor(model_proto=blob)
        except (RuntimeError, OSError) as e:
            raise DataError(
                f"{model_file}: not a SentencePiece model ({e}); pass --tokenizer="
                "a tokenizer.json or tokenizer.model"
            ) from None
        proto = model_pb2.ModelProto()
        proto.ParseFromString(blob)
        proto.normalizer_spec.add_dummy_prefix = False
        self.sp_continuation = spm.SentencePieceProcessor(model_proto=proto.SerializeToString())
        bos_id, eos_id = self.sp.bos_id(), self.sp.eos_id()
        if eos_id < 0:
            raise DataError(f"{model_file}: the SentencePiece model has no EOS piece")
        pad_id = self.sp.pad_id() if self.sp.pad_id() >= 0 else eos_id
        bos = self.sp.id_to_piece(bos_id) if bos_id >= 0 else ""
        eos = self.sp.id_to_piece(eos_id)
        super().__init__(
            path,
            bos_id if bos_id >= 0 else None,
            eos_id,
            pad_id,
            self.sp.get_piece_size(),
            bos,
            eos,
            _chat_template(os.path.dirname(model_file), config),
        )
        # tokenizer_config.json's add_bos_token (Llama-2 and Mistral default: add it).
        self.add_bos = self.bos_id is not None and config.get("add_bos_token", True) is not False
        # SentencePiece does not parse control symbols in text; split on them ourselves.
        self._specials = {p: i for p, i in ((bos, bos_id), (eos, eos_id)) if p}
        self.special_tokens = tuple(self._specials)
        self._split = re.compile("(" + "|".join(map(re.escape, self._specials)) + ")")

    def encode(self, text: str, *, continuation: bool = False) -> list[int]:
        ids: list[int] = []
        first_text = not continuation
        for chunk in self._split.split(text):
            if not chunk:
                continue
            if chunk in self._specials:
                ids.append(self._specials[chunk])
                continue
            # Only the first text of a document gets the dummy-prefix space.
            processor = self.sp if first_text else self.sp_continuation
            ids.extend(processor.encode(chunk))
            first_text = False
        return ids

    def decode(self, ids) -> str:
        return self.sp.decode([int(i) for i in ids])


def _adds_bos(hf, bos_id: int | None, directory: str) -> bool:
    """Whether ``hf.encode(text, add_special_tokens=True)`` puts BOS before the text; anything
    else it puts there (not BOS) is refused, since prompts could not follow it."""
    probe = "a"
    plain = hf.encode(probe, add_special_tokens=False)
    full = hf.encode(probe, add_special_tokens=True)
    starts = [k for k in range(len(full) - len(plain) + 1) if full[k : k + len(plain)] == plain]
    prefix = full[: starts[0]] if starts else full
    if not prefix:
        return False
    if bos_id is not None and prefix == [bos_id]:
        return True
    raise DataError(
        f"{directory}: the tokenizer puts {hf.convert_ids_to_tokens(prefix)} before plain text, "
        f"not just its BOS token ({hf.bos_token!r}); set 'bos_token' in tokenizer_config.json to "
        "the token its post-processor adds"
    )


def _read_config(directory: str) -> dict:
    path = os.path.join(directory, "tokenizer_config.json")
    if not os.path.isfile(path):
        return {}
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: not valid JSON ({e}); fix or remove the file") from None


def _chat_template(directory: str, config: dict) -> str | None:
    path = os.path.join(directory, "chat_template.jinja")
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            return f.read()
    template = config.get("chat_template")
    if isinstance(template, list):  # named templates: [{"name", "template"}, ...]
        named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
        template = named.get("default")
    return template if isinstance(template, str) else None


def load_tokenizer(path: str) -> Tokenizer:
    """The tokenizer at ``path``; raises DataError naming the path and what to pass instead."""
    hint = "pass --tokenizer=a model directory with tokenizer.json or tokenizer.model"
    if not os.path.exists(path):
        raise DataError(f"{path}: tokenizer not found; {hint}")
    if os.path.isdir(path):
        config = _read_config(path)
        if os.path.isfile(os.path.join(path, "tokenizer.json")):
            return HFTokenizer(path, os.path.join(path, "tokenizer.json"), config)
        if os.path.isfile(os.path.join(path, "tokenizer.model")):
            return SentencePieceTokenizer(path, os.path.join(path, "tokenizer.model"), config)
        raise DataError(f"{path}: no tokenizer.json or tokenizer.model in this directory; {hint}")
    config = _read_config(os.path.dirname(path) or ".")
    if path.endswith(".json"):
        return HFTokenizer(path, path, config)
    return SentencePieceTokenizer(path, path, config)
