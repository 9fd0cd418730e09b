"""Generation-based evaluation on real data sets (docs/method.md §5.4, §6): the policy and the SFT
model answer a prompt set; the responses are written in AlpacaEval's format for an external judge
(the paper's GPT-4 win rate), and optionally scored by a local reward model
(:mod:`ropo_jax.evaluation.reward_model`). ``GenerationEval`` holds the options.

Prompt sets (``read_prompts``):

- ``alpaca_eval``: a JSON array or JSON Lines of ``{"instruction", ["output"], ["generator"],
  ["dataset"]}`` rows — AlpacaEval's own ``alpaca_eval.json`` (805 prompts); ``output`` is kept
  as the reference response and ``dataset`` is copied to the written files;
- ``tldr``: Reddit TL;DR comparison rows (the ``tldr`` reader of ``ropo_jax.data``, e.g. the test
  split): one prompt per post, the chosen summary of its first comparison as the reference.

``prompt_style`` says how a prompt reaches the model: ``chat`` renders the instruction as one
user turn with the chat template (UltraFeedback, Alpaca); ``text`` gives the text itself (TL;DR).
Prompts are tokenized as in training (``data.encode``: BOS and turn markers where the tokenizer
and its chat template put them, left truncation to the training ``max_prompt_length``).
``num_prompts`` > 0 takes a fixed subset, the prompts with the smallest hashes of their text, in
file order — the same subset for every run and file order.

The starting model's responses depend only on it, the prompts and the sampling settings, not on
the method trained: with ``cache_dir`` and ``reference_key`` (the starting parameters' hash)
they are sampled once and read back by every run that shares them (a sweep's methods at one
seed), keyed by everything that decides them.

Written files (``output_dir``): ``policy.json``, ``sft.json`` and, when the prompt set has
reference responses, ``reference.json``; then e.g.
``alpaca_eval --model_outputs policy.json --reference_outputs sft.json``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from typing import Any

from absl import logging

from ropo_jax.data import formats
from ropo_jax.data.errors import DataError, ProblemLog
from ropo_jax.data.example import Message, Text
from ropo_jax.data.sources import iter_rows
from ropo_jax.evaluation import heldout as eval_lib
from ropo_jax.inference import sampling
from ropo_jax.models import ModelConfig
from ropo_jax.parallel import processes

PROMPT_FORMATS = ("alpaca_eval", "tldr")
PROMPT_STYLES = ("chat", "text")


@dataclasses.dataclass(frozen=True)
class EvalPrompt:
    instruction: str  # the judge's "instruction" (the prompt text)
    reference: str | None = None  # a reference response, when the prompt set has one
    dataset: str | None = None  # AlpacaEval's "dataset" field

    def model_prompt(self, style: str) -> Text:
        return (Message("user", self.instruction),) if style == "chat" else self.instruction


def read_prompts(path: str, *, format: str, num_prompts: int = 0) -> list[EvalPrompt]:
    """The prompt set at ``path`` (see the module docstring); DataError on bad rows."""
    if format not in PROMPT_FORMATS:
        raise DataError(f"eval prompts format {format!r}: expected one of {PROMPT_FORMATS}")
    path = os.path.expanduser(path)
    log = ProblemLog("fail")
    prompts = _read_tldr(path, log) if format == "tldr" else _read_alpaca_eval(path, log)
    log.raise_if_failed(hint="fix the evaluation prompt file")
    if not prompts:
        raise DataError(f"{path}: no evaluation prompts")
    if 0 < num_prompts < len(prompts):
        digest = lambda p: hashlib.blake2b(p.instruction.encode(), digest_size=8).digest()
        chosen = set(sorted(range(len(prompts)), key=lambda i: digest(prompts[i]))[:num_prompts])
        prompts = [p for i, p in enumerate(prompts) if i in chosen]
    return prompts


def _read_alpaca_eval(path: str, log: ProblemLog) -> list[EvalPrompt]:
    prompts = []
    for line, row in iter_rows(path, log):
        if not isinstance(row, dict):
            log.add(path, line, f"expected a JSON object, got {type(row).__name__}")
            continue
        instruction = row.get("instruction")
        if not isinstance(instruction, str) or not instruction.strip():
            log.add(path, line, "field 'instruction' must be a non-empty string")
            continue
        bad = [k for k in ("output", "dataset") if not isinstance(row.get(k), str | None)]
        if bad:
            log.add(path, line, f"field '{bad[0]}' must be a string")
            continue
        prompts.append(EvalPrompt(instruction, row.get("output"), row.get("dataset")))
    return prompts


def _read_tldr(path: str, log: ProblemLog) -> list[EvalPrompt]:
    located, _ = formats.read_examples("tldr", path, log)
    seen, prompts = set(), []
    for _, _, example in located:
        if example.prompt not in seen:
            seen.add(example.prompt)
            prompts.append(EvalPrompt(example.prompt, example.chosen.strip()))
    return prompts


def write_generations(
    output_dir: str,
    prompts: list[EvalPrompt],
    responses: dict[str, list[str]],
    generators: dict[str, str],
) -> dict[str, str]:
    """``output_dir/<name>.json`` per entry of ``responses`` (AlpacaEval format, generator
    ``generators[name]``), plus ``reference.json`` when every prompt has a reference."""
    instructions = [p.instruction for p in prompts]
    datasets = [p.dataset for p in prompts]
    files = {}
    for name, outputs in responses.items():
        files[name] = os.path.join(output_dir, f"{name}.json")
        eval_lib.write_alpaca_eval(files[name], instructions, outputs, generators[name], datasets)
    if all(p.reference is not None for p in prompts):
        files["reference"] = os.path.join(output_dir, "reference.json")
        eval_lib.write_alpaca_eval(
            files["reference"], instructions, [p.reference for p in prompts], "reference", datasets
        )
    return files


@dataclasses.dataclass(frozen=True)
class GenerationEval:
    """How the policy and the SFT model answer the evaluation prompts and where the answers go;
    the pipeline builds it once from the ``eval.*`` keys and the run's data."""

    prompts_path: str
    tokenizer_dir: str
    sampling: sampling.SamplingConfig
    seed: int
    generate_batch_size: int
    output_dir: str
    generator: str  # the policy's name in the files' "generator" field
    prompts_format: str = "alpaca_eval"
    prompt_style: str = "chat"
    num_prompts: int = 0  # 0: every prompt of the file
    chat_template: str | None = None  # the template's text
    max_prompt_length: int | None = None  # the training data's (prompts are cut as in training)
    reward_model: str | None = None  # a reward model directory: score both models' responses
    reward_batch_size: int = 8
    reward_device: str = "auto"
    write: bool = True  # process 0: write the files and score them (it writes the results)
    # The starting model's responses, cached across runs: the directory ("" = no cache) and the
    # starting parameters' hash (``inference.scoring.params_hash``).
    cache_dir: str = ""
    reference_key: str = ""

    def __post_init__(self):
        if self.prompt_style not in PROMPT_STYLES:
            raise ValueError(
                f"eval.prompt_style={self.prompt_style!r}: expected one of {PROMPT_STYLES}"
            )


def generate_both(
    model_config: ModelConfig, policy_params, sft_params, model_prompts, options: GenerationEval
) -> dict[str, list[str]]:
    """``{"policy": responses, "sft": responses}``: the same prompts, the same RNG."""
    kwargs = dict(
        tokenizer_dir=options.tokenizer_dir,
        sampling_config=options.sampling,
        seed=options.seed,
        batch_size=options.generate_batch_size,
        chat_template=options.chat_template,
        max_prompt_length=options.max_prompt_length,
    )
    policy = eval_lib.generate_responses(model_config, policy_params, model_prompts, **kwargs)
    path = _sft_cache_path(model_config, model_prompts, options)
    if path and processes.agree(os.path.exists(path)):
        with open(path, encoding="utf-8") as f:
            sft = json.load(f)
        logging.info("the starting model's %d responses from cache %s", len(sft), path)
    else:
        sft = eval_lib.generate_responses(model_config, sft_params, model_prompts, **kwargs)
        if path and processes.is_writer():
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path + ".tmp", "w", encoding="utf-8") as f:
                json.dump(sft, f)
            os.replace(path + ".tmp", path)  # atomic: never a half-written cache
    return {"policy": policy, "sft": sft}


def _sft_cache_path(model_config: ModelConfig, model_prompts, options: GenerationEval) -> str:
    """The cache file of the starting model's responses: a hash of everything that decides
    them (its parameters, the model config, the prompts, the tokenizer and template, the
    sampling settings, seed and batch size); "" without a cache."""
    if not (options.cache_dir and options.reference_key):
        return ""
    identity = repr(
        (
            options.reference_key,
            model_config,
            [repr(p) for p in model_prompts],
            os.path.abspath(options.tokenizer_dir),
            options.chat_template,
            options.max_prompt_length,
            options.sampling,
            options.seed,
            options.generate_batch_size,
        )
    )
    key = hashlib.sha256(identity.encode()).hexdigest()[:24]
    return os.path.join(os.path.expanduser(options.cache_dir), f"start_responses_{key}.json")


def evaluate_generations(
    model_config: ModelConfig, policy_params, sft_params, options: GenerationEval
) -> dict[str, Any]:
    """Generates with the policy and the SFT model (same prompts, same RNG); the writing process
    (``options.write``: process 0, which writes the run's results) writes the AlpacaEval files
    and scores both with ``options.reward_model`` when given.

    Returns ``{"eval": {reward metrics, or nothing}, "generations": {files, counts}}``.
    """
    prompts = read_prompts(
        options.prompts_path, format=options.prompts_format, num_prompts=options.num_prompts
    )
    model_prompts = [p.model_prompt(options.prompt_style) for p in prompts]
    responses = generate_both(model_config, policy_params, sft_params, model_prompts, options)
    logging.info(
        "sample generation: %r → %r (SFT: %r)",
        prompts[0].instruction,
        responses["policy"][0],
        responses["sft"][0],
    )
    files = {}
    if options.write:
        generators = {"policy": options.generator, "sft": "sft"}
        files = write_generations(options.output_dir, prompts, responses, generators)
    result: dict[str, Any] = {
        "eval": {},
        "generations": {"num_prompts": len(prompts), "files": files},
    }
    if options.reward_model and options.write:
        result["eval"] = score_with_reward_model(prompts, responses, options)
    return result


def score_with_reward_model(
    prompts: list[EvalPrompt], responses: dict[str, list[str]], options: GenerationEval
) -> dict[str, Any]:
    """The reward model's comparison of the policy's responses with the SFT model's."""
    from ropo_jax.evaluation import reward_model as reward_lib  # PyTorch: imported only when used

    scorer = reward_lib.RewardModel(options.reward_model, device=options.reward_device)
    instructions = [p.instruction for p in prompts]
    rewards = {
        name: scorer.score(instructions, outputs, batch_size=options.reward_batch_size)
        for name, outputs in responses.items()
    }
    metrics = reward_lib.compare(rewards["policy"], rewards["sft"])
    metrics["reward_model"] = options.reward_model
    return metrics
