"""Readers for every input format (docs/data.md "Formats and their prompt/response conventions"),
one module per format.

``read_examples(format, input, log, **options) -> (located, ReadContext)`` reads every file the
input names and returns ``(path, line, PreferenceExample)`` triples; bad rows become problems in
``log`` (see :mod:`ropo_jax.data.errors`).
"""

from __future__ import annotations

from ropo_jax.data.errors import ProblemLog
from ropo_jax.data.example import PreferenceExample
from ropo_jax.data.formats import alpaca_comparison, generic, hh_rlhf, sft, tldr, ultrafeedback
from ropo_jax.data.formats.common import ReadContext, read_with
from ropo_jax.data.sources import expand_inputs

FORMATS = ("jsonl", "hh_rlhf", "ultrafeedback", "alpaca_comparison", "tldr", "sft")


def converter(format: str, *, pairing: str = "best_vs_worst", include_cnndm: bool = False):
    if format == "jsonl":
        return generic.convert_row
    if format == "hh_rlhf":
        return hh_rlhf.convert_row
    if format == "ultrafeedback":
        return ultrafeedback.convert_row
    if format == "alpaca_comparison":
        return alpaca_comparison.make_converter(pairing)
    if format == "tldr":
        return tldr.make_converter(include_cnndm)
    if format == "sft":
        return sft.convert_row
    raise ValueError(f"unknown format {format!r}; expected one of {FORMATS}")


def read_examples(
    format: str, input: str, log: ProblemLog, **options
) -> tuple[list[tuple[str, int, PreferenceExample]], ReadContext]:
    convert = converter(format, **options)
    ctx = ReadContext(log=log)
    files = expand_inputs(input)
    if not files:
        log.add(input, 0, "no input files found; check --input", fatal=True)
    examples: list[tuple[str, int, PreferenceExample]] = []
    for path in files:
        examples.extend(read_with(convert, path, ctx))
    return examples, ctx


__all__ = ["FORMATS", "ReadContext", "converter", "read_examples"]
