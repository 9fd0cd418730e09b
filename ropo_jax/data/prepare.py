"""``python -m ropo_jax.data.prepare``: read, validate, tokenize and write a prepared data set.

    python -m ropo_jax.data.prepare --format={jsonl,hh_rlhf,ultrafeedback,alpaca_comparison,tldr}
        --input=PATH --tokenizer=PATH --output_dir=DIR [--max_length=N --max_prompt_length=N]
        [--on_error={fail,skip}] [--pairing=...] [--include_cnndm] [--chat_template=FILE]
        [--dedupe]

Exit 0 with a one-line summary (rows read, examples written / truncated / rejected /
duplicates). On bad input, exit 2 with ``PATH:LINE: reason`` for the first 20 problems and a
count, no traceback; ``--on_error=skip`` drops the bad rows instead, counts them in the summary
and lists them in ``DIR/skipped.jsonl``. Label noise is not stored: it is applied at load time
(docs/method.md §4.1).

Duplicates are data, not errors: an example that exactly repeats an earlier one with the same
id (same prompt, chosen, rejected and metadata, after the reader normalised the row) is kept
under the id ``ID#dup1``, ``ID#dup2``, ... (never an id the input already uses), or dropped
with ``--dedupe``; both are counted. The same id with different content is a real conflict and
a problem like any other bad row.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
import re
import sys

import numpy as np
from absl import app, flags, logging

from ropo_jax.data import formats
from ropo_jax.data.encode import ENCODING_VERSION, Encoder, Limits
from ropo_jax.data.errors import DataError, ProblemLog, format_problems
from ropo_jax.data.example import PreferenceExample, to_jsonable
from ropo_jax.data.formats.alpaca_comparison import PAIRINGS
from ropo_jax.data.prepared import FORMAT_VERSION, PreferenceData
from ropo_jax.data.tokenizer import load_tokenizer
from ropo_jax.parallel import processes

FLAGS = flags.FLAGS
flags.DEFINE_enum("format", None, list(formats.FORMATS), "Input format (docs/data.md).")
flags.DEFINE_string("input", None, "File, directory, glob or comma-separated list of them.")
flags.DEFINE_string("tokenizer", None, "Model directory, tokenizer.json or SentencePiece .model.")
flags.DEFINE_string(
    "output_dir", None, "Where the prepared data set is written (any etils.epath path: gs://...)."
)
flags.DEFINE_string("split", "train", "The TFDS split name the directory holds.")
flags.DEFINE_integer("max_length", 1024, "Longest prompt+response sequence, in tokens.")
flags.DEFINE_integer("max_prompt_length", 512, "Longest prompt, in tokens (cut from the left).")
flags.DEFINE_enum("on_error", "fail", ["fail", "skip"], "Stop on bad rows, or skip and list them.")
flags.DEFINE_enum("pairing", "best_vs_worst", list(PAIRINGS), "alpaca_comparison pairing rule.")
flags.DEFINE_bool("include_cnndm", False, "tldr: keep CNN/DM rows (left out by default).")
flags.DEFINE_string("chat_template", None, "Jinja chat template file overriding the tokenizer's.")
flags.DEFINE_bool(
    "dedupe", False, "Drop exact duplicate examples (default: keep them as ID#dup1, ...)."
)


def prepare(
    *,
    format: str,
    input: str,
    tokenizer: str,
    output_dir: str,
    max_length: int = 1024,
    max_prompt_length: int = 512,
    on_error: str = "fail",
    pairing: str = "best_vs_worst",
    include_cnndm: bool = False,
    chat_template: str | None = None,
    dedupe: bool = False,
    split: str = "train",
    progress: bool = True,
) -> dict:
    """The command as a function: returns the summary counts, raises DataError on bad input.

    Steps: read and validate the rows (``formats.read_examples``), resolve duplicates and
    tokenize with truncation (``_encode_examples``), then write the prepared directory and
    report (``_write_prepared``).
    """
    # Flags like --input=~/x reach us unexpanded (the shell expands ~ only at a word's start).
    input, tokenizer = (os.path.expanduser(p) for p in (input, tokenizer))
    output_dir = output_dir if "://" in output_dir else os.path.expanduser(output_dir)
    if not re.fullmatch(r"\w+", split):
        raise DataError(f"--split={split!r}: a TFDS split name is letters, digits and _")
    limits = Limits(max_length=max_length, max_prompt_length=max_prompt_length)
    log = ProblemLog(on_error)
    tok = load_tokenizer(tokenizer)
    template = _read_chat_template(chat_template)
    located, ctx = formats.read_examples(
        format, input, log, pairing=pairing, include_cnndm=include_cnndm
    )
    log.raise_if_failed()  # unreadable files: nothing sensible to tokenize
    encoder = Encoder(tok, limits, chat_template=template)
    kept, encoded, duplicates = _encode_examples(
        located, encoder, log, dedupe=dedupe, progress=progress
    )
    if not kept:
        raise DataError(f"{input}: no usable examples; check --format={format}")
    manifest = {
        "kind": "sft" if format == "sft" else "preference",
        "source_format": format,
        "input": input,
        "tokenizer": tokenizer,
        "encoding_version": ENCODING_VERSION,
        "bos_id": tok.bos_id,
        "eos_id": tok.eos_id,
        "pad_id": tok.pad_id,
        "vocab_size": tok.vocab_size,
        "max_length": max_length,
        "max_prompt_length": max_prompt_length,
        "dedupe": bool(dedupe),
        "split": split,
        "summary": _summary(ctx, kept, encoded, log, duplicates),
    }
    return _write_prepared(output_dir, kept, encoded, manifest, log)


def _read_chat_template(path: str | None) -> str | None:
    """The text of ``--chat_template`` (None: the tokenizer's own template)."""
    if not path:
        return None
    if not os.path.isfile(path):
        raise DataError(f"{path}: chat template file not found; fix --chat_template")
    with open(path, encoding="utf-8") as f:
        return f.read()


@dataclasses.dataclass
class _Duplicates:
    """Examples whose id was seen before: an exact repeat is kept under a new id (or dropped
    with ``dedupe``) and counted; the same id with other content is a problem of its row."""

    dedupe: bool
    taken: set[str]  # ids a copy's new id must avoid: the input's and earlier copies'
    first: dict[str, tuple[str, int, PreferenceExample]] = dataclasses.field(default_factory=dict)
    copies: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    found: int = 0
    dropped: int = 0

    def resolve(
        self, path: str, line: int, example: PreferenceExample, log: ProblemLog
    ) -> PreferenceExample | None:
        """The example to encode (itself, or an exact repeat under ``ID#dupK``), or None when it
        is dropped (``dedupe``) or conflicts with the first example of its id (logged)."""
        if example.id not in self.first:
            self.first[example.id] = (path, line, example)
            return example
        at_path, at_line, original = self.first[example.id]
        if _content(example) != _content(original):
            log.add(
                path,
                line,
                f"duplicate id {example.id!r} with different content "
                f"(first at {at_path}:{at_line})",
            )
            return None
        self.found += 1
        if self.dedupe:
            self.dropped += 1
            return None
        return dataclasses.replace(example, id=_copy_id(example.id, self.copies, self.taken))


def _encode_examples(located, encoder: Encoder, log: ProblemLog, *, dedupe: bool, progress: bool):
    """(kept examples, their encodings, the duplicates found): every read example through
    ``_Duplicates.resolve`` and the encoder (tokenization and truncation to the limits); rows
    that fail either are problems. Raises DataError when the problems end the run."""
    duplicates = _Duplicates(dedupe, taken={example.id for _, _, example in located})
    kept, encoded = [], []
    for path, line, example in processes.progress(
        located, desc="tokenizing", unit="ex", disable=not progress
    ):
        example = duplicates.resolve(path, line, example, log)
        if example is None:
            continue
        try:
            encoded.append(encoder.encode(example))
        except ValueError as e:
            log.add(path, line, str(e))
            continue
        kept.append(example)
    log.raise_if_failed()
    return kept, encoded, duplicates


def _summary(ctx, kept, encoded, log: ProblemLog, duplicates: _Duplicates) -> dict:
    """The manifest's ``summary``: rows read, examples written, truncations per part, rejected
    rows, duplicates and the rows the reader left out by design."""
    truncated = collections.Counter()
    for e in encoded:
        for name, cut in zip(("prompt", "chosen", "rejected"), e.truncated, strict=True):
            truncated[name] += cut
        truncated["examples"] += any(e.truncated)
    return {
        "rows_read": ctx.rows,
        "examples_written": len(kept),
        "truncated": dict(truncated),
        "rejected": len(log),
        "duplicates": duplicates.found,
        "duplicates_dropped": duplicates.dropped,
        "left_out": dict(ctx.dropped),
    }


def _write_prepared(output_dir: str, kept, encoded, manifest: dict, log: ProblemLog) -> dict:
    """Writes the prepared directory (and ``skipped.jsonl`` when rows were skipped); returns the
    summary with the problems as ``PATH:LINE: reason`` strings."""
    data = PreferenceData.from_token_lists(
        [x.id for x in kept],
        [e.prompt for e in encoded],
        [e.chosen for e in encoded],
        [e.rejected for e in encoded],
        manifest=manifest,
        metadata=[x.metadata for x in kept],
        original_lengths=np.array([e.original_lengths for e in encoded], dtype=np.int32),
    )
    data.save(output_dir)
    summary = dict(manifest["summary"], problems=[str(p) for p in log.problems])
    if log.problems:
        log.write(f"{output_dir.rstrip('/')}/skipped.jsonl")
    return summary


def _content(example: PreferenceExample) -> str:
    """What makes two examples with one id exact duplicates: everything the reader kept but the
    id, canonically serialised (so NaN scores compare equal, and key order does not matter)."""
    parts = (example.prompt, example.chosen, example.rejected)
    return json.dumps(
        [None if p is None else to_jsonable(p) for p in parts] + [example.metadata],
        ensure_ascii=False,
        sort_keys=True,
    )


def _copy_id(base: str, copies: collections.Counter, taken: set[str]) -> str:
    """``base#dupK`` for the next K not already an id (of the input or of an earlier copy)."""
    while True:
        copies[base] += 1
        candidate = f"{base}#dup{copies[base]}"
        if candidate not in taken:
            taken.add(candidate)
            return candidate


def prepare_splits(
    directory: str,
    inputs: dict[str, tuple[str, str]],
    *,
    tokenizer: str,
    dedupe: bool = False,
    **options,
) -> dict[str, str]:
    """Prepares raw files inside a run: ``inputs`` maps a split name to ``(format, input)``; each
    goes to ``directory/<split>`` through :func:`prepare` with ``dedupe`` and the shared
    ``options``. A split already prepared from the same format, input, tokenizer, limits and
    ``dedupe`` is reused (a re-run resumes) unless an older encoder tokenized it
    (``encode.ENCODING_VERSION``), then it is prepared again; one prepared from anything else is
    an error rather than silently replaced. Returns ``{split: prepared directory}``."""
    paths = {}
    for split, (format, input) in inputs.items():
        output_dir = os.path.join(directory, split)
        wanted = {
            "source_format": format,
            "input": os.path.expanduser(input),
            "tokenizer": os.path.expanduser(tokenizer),
            "max_length": options.get("max_length", 1024),
            "max_prompt_length": options.get("max_prompt_length", 512),
            "dedupe": bool(dedupe),
        }
        manifest_path = os.path.join(output_dir, "manifest.json")
        reuse = False
        if os.path.isfile(manifest_path):
            with open(manifest_path, encoding="utf-8") as f:
                manifest = json.load(f)
            format_version = manifest.get("format_version")
            # Prepared before `dedupe` existed (duplicates were then refused or skipped): reused
            # whatever `dedupe` is now, so resuming an older run does not stop here.
            found = {k: manifest.get(k, wanted[k] if k == "dedupe" else None) for k in wanted}
            if found != wanted:
                raise DataError(
                    f"{output_dir} was prepared from {found}, not {wanted}; use a new run "
                    "directory for other data"
                )
            version = manifest.get("encoding_version", 1)  # 1: written before the field
            reuse = version == ENCODING_VERSION and format_version == FORMAT_VERSION
            if format_version != FORMAT_VERSION:
                logging.warning(
                    "%s holds prepared format %s, not %s (TFDS): preparing it again",
                    output_dir,
                    format_version,
                    FORMAT_VERSION,
                )
            elif not reuse:
                logging.warning(
                    "%s was tokenized by encoding version %s, not %s: preparing it again",
                    output_dir,
                    version,
                    ENCODING_VERSION,
                )
        if not reuse:
            summary = prepare(
                format=format,
                input=input,
                tokenizer=tokenizer,
                output_dir=output_dir,
                dedupe=dedupe,
                split=split,
                progress=False,
                **options,
            )
            logging.info("%s", summary_line(summary, output_dir))
        paths[split] = output_dir
    return paths


def summary_line(summary: dict, output_dir: str) -> str:
    t = summary["truncated"]
    line = (
        f"prepared {output_dir}: {summary['rows_read']} rows read, "
        f"{summary['examples_written']} examples written, {t.get('examples', 0)} truncated "
        f"(prompt {t.get('prompt', 0)}, chosen {t.get('chosen', 0)}, "
        f"rejected {t.get('rejected', 0)}), {summary['rejected']} rejected"
    )
    if summary["rejected"]:
        line += f" (listed in {os.path.join(output_dir, 'skipped.jsonl')})"
    line += (
        f", {summary.get('duplicates', 0)} exact duplicates "
        f"({summary.get('duplicates_dropped', 0)} dropped)"
    )
    for reason, count in summary["left_out"].items():
        line += f", {count} left out ({reason})"
    return line


def main(argv):
    del argv
    missing = [n for n in ("format", "input", "tokenizer", "output_dir") if not FLAGS[n].value]
    if missing:
        sys.stderr.write(f"error: missing flag(s): {', '.join('--' + m for m in missing)}\n")
        sys.exit(2)
    try:
        summary = prepare(
            format=FLAGS.format,
            input=FLAGS.input,
            tokenizer=FLAGS.tokenizer,
            output_dir=FLAGS.output_dir,
            max_length=FLAGS.max_length,
            max_prompt_length=FLAGS.max_prompt_length,
            on_error=FLAGS.on_error,
            pairing=FLAGS.pairing,
            include_cnndm=FLAGS.include_cnndm,
            chat_template=FLAGS.chat_template,
            dedupe=FLAGS.dedupe,
            split=FLAGS.split,
        )
    except DataError as e:
        sys.stderr.write(f"{e}\n")
        sys.exit(2)
    if summary["problems"]:
        sys.stderr.write("skipped:\n" + format_problems(summary["problems"]) + "\n")
    logging.info("prepared data written to %s", FLAGS.output_dir)
    sys.stdout.write(summary_line(summary, FLAGS.output_dir) + "\n")


if __name__ == "__main__":
    app.run(main)
