"""Scores responses with a local Hugging Face reward model (PyTorch), for real data sets where no
gold reward exists: ``reward_win_rate_vs_sft`` and ``reward_mean`` (docs/method.md §5.4's win rate
with a learned reward in place of the gold one).

The model directory holds a sequence-classification checkpoint with one output
(``*ForSequenceClassification``, ``num_labels=1``, safetensors weights — pickled weights are
refused) and its tokenizer, e.g. a local copy of a Llama/Mistral reward model trained on
UltraFeedback-style preferences. Each (prompt, response) is rendered with the tokenizer's chat
template as a user turn and an assistant turn when it has one, else tokenized as a text pair
``tokenizer(prompt, response)`` (the convention of encoder reward models); the reward is the
model's single logit. Runs on CUDA when available (``device="auto"``) or on the CPU.

As a command, for files written by a run (``WORKDIR/eval/*.json``; scoring in a separate
process leaves the accelerator's memory to PyTorch alone):

    python -m ropo_jax.evaluation.reward_model --reward_model=RM_DIR \\
        --outputs=WORKDIR/eval/policy.json --baseline=WORKDIR/eval/sft.json
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np
from absl import app, flags, logging

from ropo_jax.evaluation import metrics as eval_metrics
from ropo_jax.parallel import processes


class RewardModel:
    def __init__(self, path: str, *, device: str = "auto", max_length: int = 4096):
        try:
            import torch
            import transformers
        except ImportError as e:
            raise ValueError(
                f"eval.reward_model needs PyTorch and transformers ({e}); pip install torch"
            ) from None
        path = os.path.expanduser(path)
        if not os.path.isfile(os.path.join(path, "config.json")):
            raise ValueError(f"{path}: not a model directory (no config.json); fix the path")
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if device not in ("cpu", "cuda"):
            raise ValueError(f"reward model device {device!r}: use 'auto', 'cpu' or 'cuda'")
        self.torch = torch
        self.device = device
        self.max_length = max_length
        self.tokenizer = transformers.AutoTokenizer.from_pretrained(path)
        try:
            self.model = transformers.AutoModelForSequenceClassification.from_pretrained(
                path,
                use_safetensors=True,
                dtype=torch.bfloat16 if device == "cuda" else torch.float32,
            )
        except OSError as e:
            raise ValueError(f"{path}: cannot load a safetensors reward model ({e})") from None
        if self.model.config.num_labels != 1:
            raise ValueError(
                f"{path}: the reward model has num_labels={self.model.config.num_labels}; a "
                "single-score head (num_labels=1) is needed"
            )
        # Sequence-classification heads read the last non-padding token, found by pad id.
        pad = self.model.config.pad_token_id
        if pad is None:
            pad = self.tokenizer.pad_token_id
            if pad is None:
                pad = self.tokenizer.eos_token_id
            self.model.config.pad_token_id = pad
        self.pad_id = pad
        self.model.to(device).eval()

    def encode(self, prompt: str, response: str) -> list[int]:
        if self.tokenizer.chat_template:
            messages = [
                {"role": "user", "content": prompt},
                {"role": "assistant", "content": response},
            ]
            text = self.tokenizer.apply_chat_template(messages, tokenize=False)
            ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        else:
            ids = self.tokenizer(prompt, response)["input_ids"]
        return ids[-self.max_length :]

    def score(self, prompts: list[str], responses: list[str], *, batch_size: int = 8) -> np.ndarray:
        """float64 [N] rewards; batches of similar length, right-padded."""
        encoded = [self.encode(p, r) for p, r in zip(prompts, responses, strict=True)]
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
        rewards = np.zeros(len(encoded), np.float64)
        batches = range(0, len(order), batch_size)
        for start in processes.progress(
            batches, desc="reward model", unit="batch", disable=len(batches) < 2
        ):
            rows = order[start : start + batch_size]
            width = max(len(encoded[i]) for i in rows)
            ids = np.full((len(rows), width), self.pad_id, np.int64)
            mask = np.zeros((len(rows), width), np.int64)
            for j, i in enumerate(rows):
                ids[j, : len(encoded[i])] = encoded[i]
                mask[j, : len(encoded[i])] = 1
            with self.torch.no_grad():
                logits = self.model(
                    input_ids=self.torch.from_numpy(ids).to(self.device),
                    attention_mask=self.torch.from_numpy(mask).to(self.device),
                ).logits
            rewards[rows] = logits[:, 0].float().cpu().numpy()
        return rewards


def compare(policy_rewards_N, baseline_rewards_N) -> dict[str, float | None]:
    """``reward_win_rate_vs_sft`` (ties ½), ``reward_mean`` and ``sft_reward_mean``."""
    policy_N = np.asarray(policy_rewards_N, np.float64)
    baseline_N = np.asarray(baseline_rewards_N, np.float64)
    return {
        "reward_win_rate_vs_sft": eval_metrics.win_rate(policy_N, baseline_N),
        "reward_mean": float(policy_N.mean()) if policy_N.size else None,
        "sft_reward_mean": float(baseline_N.mean()) if baseline_N.size else None,
    }


def _read_outputs(path: str) -> tuple[list[str], list[str]]:
    with open(path, encoding="utf-8") as f:
        rows = json.load(f)
    return [r["instruction"] for r in rows], [r["output"] for r in rows]


def main(argv):
    del argv
    f = flags.FLAGS
    if not (f.reward_model and f.outputs and f.baseline):
        sys.stderr.write("error: pass --reward_model, --outputs and --baseline\n")
        sys.exit(2)
    try:
        prompts, outputs = _read_outputs(f.outputs)
        baseline_prompts, baseline = _read_outputs(f.baseline)
        if baseline_prompts != prompts:
            raise ValueError(f"{f.outputs} and {f.baseline} hold different instructions")
        scorer = RewardModel(f.reward_model, device=f.device)
        rewards = [scorer.score(prompts, o, batch_size=f.batch_size) for o in (outputs, baseline)]
    except (ValueError, OSError, KeyError, TypeError, json.JSONDecodeError) as e:
        sys.stderr.write(f"error: {e}\n")
        sys.exit(2)
    logging.info("scored %d responses each from %s and %s", len(prompts), f.outputs, f.baseline)
    sys.stdout.write(json.dumps(compare(*rewards), indent=1) + "\n")


if __name__ == "__main__":
    # Flags only for the command: importing the module defines none.
    flags.DEFINE_string("reward_model", None, "Reward model directory.")
    flags.DEFINE_string("outputs", None, "AlpacaEval-format file of the model to score.")
    flags.DEFINE_string("baseline", None, "AlpacaEval-format file to compare against.")
    flags.DEFINE_integer("batch_size", 8, "Sequences per reward-model forward.")
    flags.DEFINE_enum("device", "auto", ["auto", "cpu", "cuda"], "Where the model runs.")
    app.run(main)
