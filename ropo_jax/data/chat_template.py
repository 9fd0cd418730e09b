"""Rendering Hugging Face chat templates (Jinja) without a tokenizer object.

The same sandboxed Jinja environment transformers uses (``trim_blocks``, ``lstrip_blocks``,
``loopcontrols``, ``raise_exception``, ``tojson``), so a template from ``tokenizer_config.json``
renders identically for ``tokenizer.json`` and SentencePiece tokenizers.
"""

from __future__ import annotations

import functools
import json

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from ropo_jax.data.example import Message


class TemplateError(ValueError):
    pass


def _raise(message: str):
    raise TemplateError(message)


@functools.lru_cache(maxsize=8)
def _compile(template: str) -> jinja2.Template:
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"]
    )
    env.filters["tojson"] = lambda x, indent=None: json.dumps(x, ensure_ascii=False, indent=indent)
    env.globals["raise_exception"] = _raise
    return env.from_string(template)


def render(
    template: str,
    messages: tuple[Message, ...],
    *,
    add_generation_prompt: bool,
    bos_token: str = "",
    eos_token: str = "",
) -> str:
    try:
        return _compile(template).render(
            messages=[{"role": m.role, "content": m.content} for m in messages],
            add_generation_prompt=add_generation_prompt,
            bos_token=bos_token,
            eos_token=eos_token,
        )
    except jinja2.TemplateError as e:  # includes raise_exception from the template
        raise TemplateError(f"chat template: {e}") from None
