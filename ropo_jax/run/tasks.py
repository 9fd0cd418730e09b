"""The two kinds of run (``config.task``), as objects with one interface, so that the pipeline
picks one at the start and never asks which it has:

- ``SyntheticTask``: the synthetic benchmark (docs/method.md §4.3), generated inside the run
  into ``WORKDIR/data``; its word-level vocabulary sizes the model, and its gold reward labels
  the suspects and rejection-sampling records, drives the dynamics probe's gold curve and gives
  the final gold win rate;
- ``InstructionsTask``: the verifiable-instructions benchmark on a real model (docs/method.md
  §4.4): prompts with checkable constraints, candidates sampled from the starting model itself
  and labelled by the gold reward, prepared with the model's tokenizer and chat template (into
  ``WORKDIR/data`` or a cache shared by a sweep's runs); the gold reward drives everything the
  synthetic task's does;
- ``PreparedTask``: prepared data sets (``config.data.*``), or raw files prepared inside the run
  (``config.data.raw.*``); the data's manifest sizes the model, and the final evaluation writes
  the generations for an external judge, scored by a reward model when one is given.

Everything else (loading the pairs with label noise, the held-out pairs, the tokenizer) is
shared (``Task.load``). The tasks take frozen dataclasses and plain values, never the config:
``pipeline.make_task`` builds them.
"""

from __future__ import annotations

import abc
import dataclasses
import json
import os
from collections.abc import Callable
from typing import Any

from ropo_jax.data.encode import Encoder, Limits
from ropo_jax.data.errors import DataError
from ropo_jax.data.example import Message
from ropo_jax.data.loader import load_preference_data
from ropo_jax.data.noise import NoiseConfig, NoiseResult
from ropo_jax.data.prepare import prepare_splits
from ropo_jax.data.prepared import PreferenceData, load_prepared
from ropo_jax.data.tokenizer import load_tokenizer
from ropo_jax.errors import ConfigValueError
from ropo_jax.evaluation import dynamics, generations
from ropo_jax.evaluation import final as final_evaluation
from ropo_jax.evaluation.generations import EvalPrompt, GenerationEval
from ropo_jax.instructions import constraints as instruction_constraints
from ropo_jax.instructions import dataset as instruction_dataset
from ropo_jax.instructions import sampler as instruction_sampler
from ropo_jax.parallel import processes
from ropo_jax.synthetic import dataset as synthetic_dataset
from ropo_jax.synthetic import prepare as synthetic_prepare
from ropo_jax.synthetic import task as synthetic_task


@dataclasses.dataclass(frozen=True)
class RunData:
    """A run's data, loaded once."""

    paths: dict[str, str]  # train, test, sft, tokenizer, eval_prompts, ... → path
    train: PreferenceData  # the training pairs, label noise applied (``is_flipped``)
    noise: NoiseResult | None
    heldout: PreferenceData | None  # the test pairs with their true labels, if any
    tokenizer_dir: str | None

    def sft(self) -> PreferenceData:
        return load_prepared(self.paths["sft"])


class Task(abc.ABC):
    """What differs between the synthetic task and prepared data (module docstring)."""

    # (prompt, response) → the gold reward, where the task has one (the synthetic task).
    gold_reward: Callable[[str, str], float] | None = None

    def load(self, workdir: str, noise: NoiseConfig) -> RunData:
        """The data (prepared first if the task prepares it), the training pairs with ``noise``."""
        paths = self.data_paths(workdir)
        train, noise_result = load_preference_data(paths["train"], noise)
        heldout = load_prepared(paths["test"]) if "test" in paths else None
        tokenizer_dir = paths.get("tokenizer") or train.manifest.get("tokenizer")
        return RunData(paths, train, noise_result, heldout, tokenizer_dir)

    def data_paths(self, workdir: str) -> dict[str, str]:
        """The data directories; data prepared inside the run is written by process 0, then
        found ready by the others."""
        if processes.is_writer():
            paths = self.prepare(workdir)
        processes.barrier("data prepared")
        if not processes.is_writer():
            paths = self.prepare(workdir)
        return paths

    @abc.abstractmethod
    def prepare(self, workdir: str) -> dict[str, str]:
        """The data directories, prepared into ``WORKDIR/data`` where the task makes its data
        (a re-run finds them ready)."""

    @abc.abstractmethod
    def vocab_size(self) -> int | None:
        """A model preset's vocabulary size, or None: the data's manifest sets it."""

    @abc.abstractmethod
    def model_manifest(self, data: RunData) -> dict | None:
        """The manifest a model preset takes its vocabulary and BOS/EOS ids from, and a
        checkpoint must cover; None: the task's own vocabulary (``vocab_size``)."""

    def chat_template(self) -> str | None:
        """The chat template's text the evaluation prompts are rendered with, if any."""
        return None

    def gold_probe(
        self, data: RunData, generation: GenerationEval | None, count: int
    ) -> dynamics.GoldProbe | None:
        """The dynamics probe's gold reward of samples for the first ``count`` evaluation
        prompts; None without a gold reward."""
        return None

    @abc.abstractmethod
    def final_evaluation(
        self, model_config, policy_params, sft_params, data: RunData, generation: GenerationEval
    ) -> dict[str, Any]:
        """What the task adds to ``results.json`` from the evaluation prompts: ``"eval"``
        metrics, merged into the shared ones, and its own keys."""


@dataclasses.dataclass(frozen=True)
class SyntheticTask(Task):
    """The synthetic task (``config.synthetic.*``; ``samples_per_prompt`` is
    ``eval.samples_per_prompt``)."""

    task: synthetic_task.TaskConfig
    data: synthetic_dataset.DataConfig
    data_seed: int
    samples_per_prompt: int = 1

    def prepare(self, workdir: str) -> dict[str, str]:
        return synthetic_prepare.prepare_synthetic(
            os.path.join(workdir, "data"), self.task, self.data, seed=self.data_seed
        )

    def vocab_size(self) -> int:
        return len(synthetic_task.vocabulary(self.task))

    def model_manifest(self, data: RunData) -> None:
        return None

    def gold_reward(self, prompt: str, response: str) -> float:
        return synthetic_task.gold_reward(self.task, prompt, response)

    def gold_probe(self, data, generation, count):
        if not count or generation is None:
            return None
        texts = synthetic_prepare.read_eval_prompts(generation.prompts_path)[:count]
        prompts = [(t, t) for t in texts]
        return _gold_probe(data.paths["tokenizer"], prompts, self.gold_reward, generation, data)

    def final_evaluation(self, model_config, policy_params, sft_params, data, generation):
        """The gold win rate against the SFT model, and how many evaluation prompts also
        occur in training."""
        metrics = final_evaluation.gold_evaluation(
            model_config,
            policy_params,
            sft_params,
            synthetic_prepare.read_eval_prompts(generation.prompts_path),
            self.gold_reward,
            samples_per_prompt=self.samples_per_prompt,
            generation=generation,
        )
        return {"eval": metrics, "prompts": synthetic_prepare.prompt_counts(data.paths)}


def _gold_probe(tokenizer_dir, prompts, gold_reward, generation, data) -> dynamics.GoldProbe:
    """The dynamics probe's gold reward of samples for ``prompts``: (what the model is given,
    text or chat messages; the prompt's text the gold reward reads)."""
    tokenizer = load_tokenizer(tokenizer_dir)
    encoder = Encoder(tokenizer, Limits(max_length=2**30, max_prompt_length=2**29))

    def reward(i, response_ids):
        text = tokenizer.decode([t for t in response_ids if t != tokenizer.eos_id])
        return gold_reward(prompts[i][1], text.strip())

    return dynamics.GoldProbe(
        prompt_ids=[encoder.prompt_ids(model_prompt) for model_prompt, _ in prompts],
        reward=reward,
        sampling_config=dataclasses.replace(generation.sampling, pad_token_id=data.train.pad_id),
    )


@dataclasses.dataclass(frozen=True)
class InstructionsTask(Task):
    """The verifiable-instructions benchmark (``config.instructions.*``) on the checkpoint
    ``model_path`` (``config.model.hf_path``), which samples the candidates; the data is
    prepared with ``tokenizer`` (``config.data.tokenizer``, else the checkpoint's own)."""

    data: instruction_dataset.DataConfig
    model_path: str
    tokenizer: str = ""
    samples_per_prompt: int = 1

    def _tokenizer(self) -> str:
        return self.tokenizer or self.model_path

    def prepare(self, workdir: str) -> dict[str, str]:
        root = os.path.expanduser(self.data.cache_dir) or os.path.join(workdir, "data")
        model = instruction_sampler.checkpoint_fingerprint(self.model_path, self._tokenizer())
        directory = os.path.join(
            root, f"instructions-{instruction_dataset.fingerprint(self.data, model)}"
        )
        paths = instruction_dataset.paths(directory)
        if not os.path.isfile(paths["summary"]):
            instruction_dataset.build(
                directory,
                self.data,
                instruction_sampler.model_sampler(self.model_path, self._tokenizer(), self.data),
                tokenizer=self._tokenizer(),
                model=model,
            )
        return {**paths, "tokenizer": self._tokenizer()}

    def vocab_size(self) -> None:
        return None

    def model_manifest(self, data: RunData) -> dict:
        return data.train.manifest

    def gold_reward(self, prompt: str, response: str) -> float:
        return instruction_constraints.gold_reward(prompt, response)

    def _prompts(self, path: str) -> list[tuple[tuple[Message, ...], str]]:
        """(chat prompt, instruction text) of each evaluation prompt."""
        texts = instruction_dataset.read_eval_prompts(path)
        return [((Message("user", t),), t) for t in texts]

    def gold_probe(self, data, generation, count):
        if not count or generation is None:
            return None
        prompts = self._prompts(generation.prompts_path)[:count]
        return _gold_probe(data.tokenizer_dir, prompts, self.gold_reward, generation, data)

    def final_evaluation(self, model_config, policy_params, sft_params, data, generation):
        """The gold win rate against the starting model on the evaluation prompts, and both
        models' answers in AlpacaEval's format (``WORKDIR/eval``)."""
        prompts = self._prompts(generation.prompts_path)
        repeated = [p for p in prompts for _ in range(self.samples_per_prompt)]
        responses = generations.generate_both(
            model_config, policy_params, sft_params, [m for m, _ in repeated], generation
        )
        texts = [t for _, t in repeated]
        metrics = final_evaluation.gold_metrics(
            texts, responses, self.gold_reward, samples_per_prompt=self.samples_per_prompt
        )
        files = {}
        if generation.write:
            os.makedirs(generation.output_dir, exist_ok=True)
            files = generations.write_generations(
                generation.output_dir,
                [EvalPrompt(t) for t in texts],
                responses,
                {"policy": generation.generator, "sft": "sft"},
            )
        with open(data.paths["summary"], encoding="utf-8") as f:
            summary = json.load(f)
        return {
            "eval": metrics,
            "generations": {"files": files},
            "prompts": summary["prompts"],
            "instructions_data": summary,
        }


@dataclasses.dataclass(frozen=True)
class DataFiles:
    """``config.data.*``: prepared data directories (train, test, sft), the tokenizer, the
    evaluation prompts and the chat template."""

    train: str = ""
    test: str = ""
    sft: str = ""
    tokenizer: str = ""
    eval_prompts: str = ""
    chat_template: str = ""


@dataclasses.dataclass(frozen=True)
class RawData:
    """``config.data.raw.*``: raw files prepared inside the run (``data.prepare_splits``)."""

    format: str = ""  # a --format of ropo_jax.data.prepare for train/test; sft is "sft"
    train: str = ""
    test: str = ""
    sft: str = ""
    max_length: int = 1024
    max_prompt_length: int = 512
    on_error: str = "fail"
    dedupe: bool = False
    pairing: str = "best_vs_worst"
    include_cnndm: bool = False


@dataclasses.dataclass(frozen=True)
class PreparedTask(Task):
    """Prepared data sets, or raw files prepared in the run."""

    files: DataFiles
    raw: RawData = RawData()

    def prepare(self, workdir: str) -> dict[str, str]:
        fields = dataclasses.asdict(self.files)
        paths = {name: value for name, value in fields.items() if value}
        if self.raw.format:
            paths.update(self._prepare_raw(workdir, given=paths))
        if "train" not in paths:
            raise ConfigValueError(
                "config.data.train is empty: prepare a data set with ropo_jax.data.prepare"
            )
        return paths

    def _prepare_raw(self, workdir: str, *, given: dict[str, str]) -> dict[str, str]:
        """The splits of ``config.data.raw`` prepared into ``WORKDIR/data`` (reused on a
        re-run)."""
        raw = self.raw
        inputs = {
            split: ("sft" if split == "sft" else raw.format, getattr(raw, split))
            for split in ("train", "test", "sft")
            if getattr(raw, split)
        }
        both = sorted(set(inputs) & set(given))
        if both:
            raise ConfigValueError(
                f"config.data.{both[0]} and config.data.raw.{both[0]} are both set"
            )
        if not self.files.tokenizer:
            raise ConfigValueError(
                "config.data.raw needs config.data.tokenizer (a tokenizer directory)"
            )
        try:
            return prepare_splits(
                os.path.join(workdir, "data"),
                inputs,
                tokenizer=self.files.tokenizer,
                max_length=raw.max_length,
                max_prompt_length=raw.max_prompt_length,
                on_error=raw.on_error,
                dedupe=raw.dedupe,
                pairing=raw.pairing,
                include_cnndm=raw.include_cnndm,
                chat_template=self.files.chat_template or None,
            )
        except DataError as e:
            raise DataError(f"config.data.raw: {e}") from None

    def vocab_size(self) -> None:
        return None

    def model_manifest(self, data: RunData) -> dict:
        return data.train.manifest

    def chat_template(self) -> str | None:
        if not self.files.chat_template:
            return None
        with open(os.path.expanduser(self.files.chat_template), encoding="utf-8") as f:
            return f.read()

    def final_evaluation(self, model_config, policy_params, sft_params, data, generation):
        """The AlpacaEval files of both models' responses (``"generations"``) and, with a
        reward model, its scores."""
        return generations.evaluate_generations(model_config, policy_params, sft_params, generation)
