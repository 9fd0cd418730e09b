"""Training dynamics: what the policy has learned from the noisy labels, measured at every epoch
boundary of preference training (``metrics.jsonl`` rows with ``"kind": "dynamics"``, collected
into ``results.json["dynamics"]``). This is the claim "DPO fits the flipped labels, ROPO does not"
measured as a curve:

- ``flipped_fit_rate`` / ``clean_fit_rate``: the fraction of flipped / clean training pairs
  whose margin h agrees with the label the model is trained on (h > 0 in training orientation),
  a tie (h = 0) counting ½ — before training every margin is 0, so every curve starts at 0.5;
- ``noise_auroc``: AUROC of −h against the flip mask, the same score for every method (a
  method's own loss ranks pairs meaningfully only when it decreases in h);
- ``heldout_accuracy``: clean held-out preference accuracy (h > 0 with the true labels, ties ½), and
  ``noisy_heldout_accuracy``: the same pairs with labels flipped by the run's noise model (an
  independent draw): what a user without clean labels can measure, and select checkpoints by;
- ``gold_reward_mean`` and ``kl``: on a small fixed set of evaluation prompts (synthetic task),
  the gold reward of one policy sample per prompt, and KL(π‖π_ref) estimated by the mean of
  log π(y|x) − log π_ref(y|x) over those samples.

Shape key: N examples, P probe prompts.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from ropo_jax.data.prepared import PreferenceData
from ropo_jax.evaluation import metrics as eval_metrics
from ropo_jax.inference import sampling, scoring
from ropo_jax.models import ModelConfig


@dataclasses.dataclass(frozen=True)
class GoldProbe:
    """Prompts to sample, and how to turn a sample into a gold reward (synthetic task)."""

    prompt_ids: list[list[int]]  # [P] token ids, as in training (data.encode)
    reward: Callable[[int, list[int]], float]  # (prompt index, response ids) → gold reward
    sampling_config: sampling.SamplingConfig


@dataclasses.dataclass
class DynamicsProbe:
    """Call it with the current parameters; returns one dynamics record (module docstring)."""

    model_config: ModelConfig
    ref_params: Any
    train_data: PreferenceData
    reference: tuple[np.ndarray, np.ndarray]  # train reference log-probs, stored orientation
    heldout: tuple[PreferenceData, tuple[np.ndarray, np.ndarray]] | None
    gold: GoldProbe | None
    batch_size: int
    seed: int = 0
    mesh: Any = None
    heldout_flips: np.ndarray | None = None  # [M] the noisy validation labels' flips
    # The policy log-probs (chosen, rejected) of the last call, by data set ("train",
    # "heldout"): a round's end reuses them instead of scoring the same pairs again.
    last_logps: dict = dataclasses.field(default_factory=dict)

    def __call__(self, params) -> dict[str, float | None]:
        record = self._fit(params)
        record.update(self._heldout_accuracies(params))
        record.update(self._samples(params))
        return record

    def _margins(self, params, data, reference, name: str) -> np.ndarray:
        chosen_N, rejected_N = scoring.sequence_logps_over(
            self.model_config,
            params,
            data,
            batch_size=self.batch_size,
            mesh=self.mesh,
            desc="dynamics",
        )
        self.last_logps[name] = (chosen_N, rejected_N)
        return (chosen_N - reference[0]) - (rejected_N - reference[1])  # stored orientation

    def _fit(self, params) -> dict[str, float | None]:
        flipped_N = np.asarray(self.train_data.is_flipped, bool)
        stored_N = self._margins(params, self.train_data, self.reference, "train")
        margin_N = np.where(flipped_N, -stored_N, stored_N)  # training orientation: h
        fits_N = eval_metrics.agreement_N(margin_N)  # a tie (h = 0, at step 0) counts ½
        return {
            "flipped_fit_rate": float(fits_N[flipped_N].mean()) if flipped_N.any() else None,
            "clean_fit_rate": float(fits_N[~flipped_N].mean()) if (~flipped_N).any() else None,
            "noise_auroc": eval_metrics.auroc(-margin_N, flipped_N),
        }

    def _heldout_accuracies(self, params) -> dict[str, float | None]:
        if self.heldout is None:
            return {"heldout_accuracy": None, "noisy_heldout_accuracy": None}
        data, reference = self.heldout
        margin_M = self._margins(params, data, reference, "heldout")
        noisy = None
        if self.heldout_flips is not None:
            noisy_M = np.where(self.heldout_flips, -margin_M, margin_M)
            noisy = eval_metrics.preference_accuracy(noisy_M)
        return {
            "heldout_accuracy": eval_metrics.preference_accuracy(margin_M),
            "noisy_heldout_accuracy": noisy,
        }

    def _samples(self, params) -> dict[str, float | None]:
        if self.gold is None or not self.gold.prompt_ids:
            return {"gold_reward_mean": None, "kl": None}
        prompts = self.gold.prompt_ids
        responses = sampling.generate(
            self.model_config,
            params,
            prompts,
            self.gold.sampling_config,
            rng=jax.random.key(self.seed),
            batch_size=self.batch_size,
            progress=False,
        )
        rewards_P = [self.gold.reward(i, r) for i, r in enumerate(responses)]
        # Score each sample under both models: a pair whose two responses are the sample.
        pad = self.gold.sampling_config.pad_token_id
        filled = [r or [pad] for r in responses]
        samples = PreferenceData.from_token_lists(
            [f"probe{i}" for i in range(len(prompts))],
            prompts,
            filled,
            filled,
            manifest=self.train_data.manifest,
        )
        logps = {}
        for name, p in (("policy", params), ("reference", self.ref_params)):
            logps[name], _ = scoring.sequence_logps_over(
                self.model_config,
                p,
                samples,
                batch_size=self.batch_size,
                mesh=self.mesh,
                desc=f"dynamics {name}",
            )
        return {
            "gold_reward_mean": float(np.mean(rewards_P)),
            "kl": float(np.mean(logps["policy"] - logps["reference"])),
        }


def select_by_noisy_validation(curve: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The epoch a user without clean labels would keep: the highest noisy held-out accuracy
    after training began (the earliest of ties), with everything measured there."""
    trained = [r for r in curve if r["step"] > 0 and r.get("noisy_heldout_accuracy") is not None]
    if not trained:
        return None
    return max(trained, key=lambda r: (r["noisy_heldout_accuracy"], -r["step"]))


def collect(rows: list[dict[str, Any]], epochs_per_round: float) -> list[dict[str, Any]]:
    """``results.json["dynamics"]`` from the ``kind="dynamics"`` rows of ``metrics.jsonl``: the
    last row of each (round, step) (a resumed run may have written one twice), in order, with
    ``epoch`` counted from the start of preference training and ``step`` the optimizer steps
    since then (the rounds' steps added up)."""
    latest: dict[tuple[int, int], dict[str, Any]] = {}
    for row in rows:
        if row.get("kind") == "dynamics":
            latest[(int(row["round"]), int(row["step"]))] = row
    out, offset, last_round, round_steps = [], 0, None, 0
    for (round_index, step), row in sorted(latest.items()):
        if round_index != last_round:
            offset += round_steps
            last_round, round_steps = round_index, 0
        round_steps = max(round_steps, step)
        record = {k: v for k, v in row.items() if k not in ("kind", "stage", "round_epoch")}
        record["epoch"] = (round_index - 1) * epochs_per_round + row["round_epoch"]
        record["step"] = offset + step
        record["round"] = round_index
        out.append(record)
    return out
