"""The rounds of the iterative ROPO framework (docs/ropo.md "The loop"), with every round's
artefacts on disk.

    π_θ ← π_ref (SFT); w ← 1
    for round t = 1..T:
        θ-step: train E epochs on (original pairs weighted by w) + (last round's RS pairs)
        score every original pair with π_θ (margin and loss, training orientation)
        w-step: keep the (1−ρ)N lowest-loss pairs (from round filter_start_round − 1 on)
        RS: for the discarded prompts, a new pair ranked by the implicit reward

Baselines run through the same loop with filtering and RS off (their loss instead of ROPO's),
so every method is trained by the same code for the same number of epochs. A round's directory
``round_t/`` holds ``scores.npz`` (ids, margin, loss, flip mask, kept), ``kept_ids.json``,
``suspects.jsonl`` (the discarded pairs as text, ``ropo_jax.ropo.suspects``), ``samples.jsonl`` (RS
pairs with provenance and scores), ``rs_pairs/``, ``weights_next.npy``, ``eval.json``; its
``done.json`` is written last, so a killed run redoes at most the unfinished round (whose
training resumes from its checkpoint). With ``ropo.filter_ratio="auto"`` or ``"holder"`` the
run's estimate of ρ is ``filter_ratio_estimate.json``; every round's summary also reports the
flip rate both estimators read from its end margins (``rate_estimates``).

Shape key: N original examples.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import numpy as np
from absl import logging

from ropo_jax.data.prepared import PreferenceData, load_prepared
from ropo_jax.evaluation import heldout as eval_lib
from ropo_jax.inference import scoring
from ropo_jax.losses.registry import DEFAULT_BETA, DEFAULT_HOLDER_GAMMA
from ropo_jax.models import ModelConfig
from ropo_jax.parallel import processes
from ropo_jax.ropo import noise_rate, pair_text, suspects
from ropo_jax.ropo.framework import (
    concat,
    rejection_sample,
    schedule_steps,
    step_config_for,
    w_step,
)
from ropo_jax.ropo.options import ESTIMATED_RATIOS, RopoConfig
from ropo_jax.training import loop as trainer
from ropo_jax.training import step as train
from ropo_jax.training.metrics import flatten

ESTIMATE_FILE = "filter_ratio_estimate.json"


@dataclasses.dataclass
class RoundsRun:
    """What every round of one run shares (the arguments of ``run_rounds``)."""

    workdir: str
    ropo: RopoConfig
    loss: str
    hyperparams: dict[str, Any]
    model_config: ModelConfig
    sft_params: Any
    train_data: PreferenceData
    reference: tuple[np.ndarray, np.ndarray]
    writer: Any
    mesh: Any = None
    batch_size: int = 64
    seed: int = 0
    reference_key: str | None = None
    texts: pair_text.PairText | None = None
    noise_applied: bool = False
    # Hölder's γ where the loss has no holder_gamma knob (the config's loss.holder_gamma).
    holder_gamma: float = DEFAULT_HOLDER_GAMMA

    def holder_knobs(self) -> dict[str, float]:
        """β and γ of Hölder's ε̂ (``noise_rate.estimate_holder_rate``): the loss's own knobs
        where it has them (holder_dpo has both), else the loss's β and ``holder_gamma``."""
        return {
            "beta": float(self.hyperparams.get("beta", DEFAULT_BETA)),
            "gamma": float(self.hyperparams.get("holder_gamma", self.holder_gamma)),
        }

    def train_logps(self, params, desc: str):
        """The policy's (chosen, rejected) log-probs of every original pair under ``params``."""
        return scoring.sequence_logps_over(
            self.model_config,
            params,
            self.train_data,
            batch_size=self.batch_size,
            mesh=self.mesh,
            desc=desc,
        )

    def round_dir(self, t: int) -> str:
        path = os.path.join(self.workdir, f"round_{t}")
        os.makedirs(path, exist_ok=True)
        return path

    def scores(self, params, desc: str, logps=None) -> dict[str, np.ndarray]:
        """Margin and loss of every original pair under ``params``, training orientation
        (from ``logps``, the policy's (chosen, rejected) log-probs, if already computed)."""
        if logps is None:
            logps = self.train_logps(params, desc)
        chosen_N, rejected_N = logps
        return scoring.example_scores(
            chosen_N,
            rejected_N,
            *self.reference,
            self.train_data.is_flipped,
            loss=self.loss,
            hyperparams=self.hyperparams,
            response_lengths_N2=self.train_data.lengths[:, 1:3],
        )


# --- ρ = "auto" or "holder" ----------------------------------------------------------------------


def read_estimate(workdir: str) -> dict | None:
    """The run's estimate of ρ (``filter_ratio="auto"`` or ``"holder"``; the latter's has
    ``"estimator": "holder"``), or None before it is made."""
    path = os.path.join(workdir, ESTIMATE_FILE)
    if not processes.agree(os.path.exists(path)):
        return None
    with open(path) as f:
        return json.load(f)


def estimate_filter_ratio(
    run: RoundsRun, params, *, where: dict, logps=None, ratio: str = "auto"
) -> dict:
    """Estimates the flip rate from the margins under ``params`` and records it, with where in
    training it was made and, under controlled noise, the realised rate. ``ratio``: the
    configured ``filter_ratio``, "auto" (the tail ratio, ``noise_rate.estimate_flip_rate``) or
    "holder" (Hölder's ε̂, ``noise_rate.estimate_holder_rate``, recorded with
    ``"estimator": "holder"``)."""
    margin_N = run.scores(params, desc="estimate ρ", logps=logps)["margin"]
    if ratio == "holder":
        found = noise_rate.estimate_holder_rate(margin_N, **run.holder_knobs())
        estimate = {"estimator": "holder", **found, **where}
    else:
        estimate = {**noise_rate.estimate_flip_rate(margin_N), **where}
    if run.noise_applied:
        estimate["realised_rate"] = float(np.mean(run.train_data.is_flipped))
    processes.write_json(os.path.join(run.workdir, ESTIMATE_FILE), estimate)
    logging.info("filter_ratio=%s: estimated ρ = %.4f (%s)", ratio, estimate["rate"], where)
    return estimate


def rate_estimates(run: RoundsRun, margin_N) -> dict:
    """The flip rate as each estimator reads it from ``margin_N`` (a round's end margins), side
    by side: Hölder's ε̂ and the tail ratio, both capped at ``noise_rate.MAX_RATE``, and under
    controlled noise the realised rate (else None). An estimator that fails (too few finite
    margins, invalid knobs) gives None."""

    def guarded(name, estimate):
        try:
            return float(estimate()["rate"])
        except (ValueError, TypeError, ArithmeticError) as error:
            logging.warning("rate estimate %s failed: %s", name, error)
            return None

    return {
        "holder": guarded(
            "holder", lambda: noise_rate.estimate_holder_rate(margin_N, **run.holder_knobs())
        ),
        "tail_ratio": guarded("tail_ratio", lambda: noise_rate.estimate_flip_rate(margin_N)),
        "realised": float(np.mean(run.train_data.is_flipped)) if run.noise_applied else None,
    }


def _epoch_hook(run: RoundsRun, t: int, probe, needs_estimate: bool, final_logps: dict):
    """``on_epoch`` of round t: the dynamics probe's record and, at the first epoch boundary
    of round 1 under ``filter_ratio="auto"``, the estimate of ρ (early in training, before the
    policy memorises flipped labels; docs/ropo.md "Estimating ρ"). At the round's last step it
    leaves the probe's log-probs in ``final_logps``: the round's end scores the same pairs
    with the same parameters."""
    if probe is None and not needs_estimate:
        return None
    pending = [needs_estimate]

    def on_epoch(params, final=False):
        record = {"round": t, **probe(params)} if probe is not None else {}
        logps = probe.last_logps if probe is not None else {}
        if pending[0]:
            pending[0] = False
            estimate = read_estimate(run.workdir)
            if estimate is None:
                estimate = estimate_filter_ratio(
                    run, params, where={"round": t, "at": "epoch"}, logps=logps.get("train")
                )
            record["filter_ratio_estimate"] = estimate["rate"]
        if final:
            final_logps.update(logps)
        return record

    return on_epoch


# --- one round ----------------------------------------------------------------------------------


def _round_data(run: RoundsRun, weights_N, rs_data):
    """Round t's training set (original pairs + last round's RS pairs), weights and reference
    log-probs (the RS pairs' from the reference cache)."""
    data_t = concat(run.train_data, rs_data)
    weights_t = np.concatenate([weights_N, np.ones(len(data_t) - len(weights_N), np.float32)])
    if rs_data is None or not len(rs_data):
        return data_t, weights_t, run.reference
    rs_ref = scoring.reference_logps(
        run.model_config,
        run.sft_params,
        rs_data,
        cache_dir=os.path.join(run.workdir, "cache"),
        batch_size=run.batch_size,
        mesh=run.mesh,
        params_key=run.reference_key,
    )
    reference_t = tuple(np.concatenate([a, b]) for a, b in zip(run.reference, rs_ref, strict=True))
    return data_t, weights_t, reference_t


def _write_scores(run: RoundsRun, round_dir, scores, keep_N, weights_N, filter_next):
    data = run.train_data
    processes.write_npz(
        os.path.join(round_dir, "scores.npz"),
        ids=np.array(data.ids),
        margin=scores["margin"],
        loss=scores["loss"],
        is_flipped=data.is_flipped,
        kept=keep_N,
        weights_trained=weights_N,
    )
    processes.write_json(
        os.path.join(round_dir, "kept_ids.json"),
        {
            "kept": [data.ids[i] for i in np.flatnonzero(keep_N)],
            "discarded": [data.ids[i] for i in np.flatnonzero(~keep_N)],
            "applied_next_round": bool(filter_next),
        },
    )
    if processes.is_writer():
        rows = suspects.records(
            data,
            scores["margin"],
            scores["loss"],
            keep_N,
            run.texts,
            noise_applied=run.noise_applied,
        )
        suspects.write(os.path.join(round_dir, suspects.FILE), rows)


def _rejection_sample_round(run: RoundsRun, t, round_dir, params, keep_N):
    """Round t's RS pairs for the discarded prompts, saved with their records and the pairs'
    quality (count, gold agreement on the synthetic task, length gap)."""
    new_rs, records = rejection_sample(
        run.model_config,
        params,
        run.sft_params,
        run.train_data,
        np.flatnonzero(~keep_N),
        ropo=run.ropo,
        beta=float(run.hyperparams["beta"]),
        round_index=t,
        seed=run.seed,
        batch_size=run.batch_size,
        mesh=run.mesh,
    )
    prompts = {r["id"]: new_rs.pair(k)[0] for k, r in enumerate(records)}
    quality = pair_text.pair_quality(
        run.texts,
        [(prompts[r["id"]], r["chosen_tokens"], r["rejected_tokens"]) for r in records],
    )
    if processes.is_writer():
        new_rs.save(os.path.join(round_dir, "rs_pairs"))
    return new_rs, records, quality


def _finish_round(
    run: RoundsRun, t, params, weights_N, data_t, weights_t, rate, evaluate_round, logps
):
    """Scores, w-step, suspects, RS and evaluation at the end of round t; returns (summary,
    next round's weights, next round's RS pairs). ``logps``: the policy log-probs of the
    training ("train") and held-out ("heldout") pairs under ``params``, where known."""
    ropo, round_dir = dataclasses.replace(run.ropo, filter_ratio=rate), run.round_dir(t)
    if "train" not in logps:
        logps["train"] = run.train_logps(params, desc=f"round {t} scores")
    scores = run.scores(params, desc=f"round {t} scores", logps=logps["train"])
    filter_next = (
        ropo.filtering and ropo.filter_granularity == "dataset" and t + 1 >= ropo.filter_start_round
    )
    # The baselines never apply it; their "discarded" set (suspects, identification) is the
    # ⌊ρN⌋ pairs the policy contradicts most (lowest h), the same ranking for every loss.
    # Hölder-DPO's loss is strictly decreasing in h, so its w-step ranks by −h too: the same
    # order (its flagged pairs, lowest σ(βh) first) without the ties of a saturated loss.
    by_loss = ropo.filtering and run.loss != "holder_dpo"
    ranking_N = scores["loss"] if by_loss else -scores["margin"]
    keep_N = w_step(ranking_N, ropo=ropo, previous_keep_N=weights_N > 0) > 0
    n = len(run.train_data)
    next_weights_N = keep_N.astype(np.float32) if filter_next else np.ones(n, np.float32)
    _write_scores(run, round_dir, scores, keep_N, weights_N, filter_next)
    new_rs, records, quality = None, [], None
    if ropo.rs_enabled and filter_next and (~keep_N).any() and t < ropo.num_rounds:
        new_rs, records, quality = _rejection_sample_round(run, t, round_dir, params, keep_N)
    if processes.is_writer():
        with open(os.path.join(round_dir, "samples.jsonl"), "w") as f:
            for record in records:
                f.write(json.dumps(record) + "\n")
    summary = {
        "round": t,
        "filter_ratio": rate,
        "rate_estimates": rate_estimates(run, scores["margin"]),
        "noise_identification": eval_lib.noise_identification(
            scores["margin"], run.train_data.is_flipped, filter_ratio=rate
        ),
        "num_discarded": int((~keep_N).sum()),
        # Made at the end of this round, trained on in the next (its trained_on_rs).
        "num_rs_pairs": len(records),
        **({"rejection_sampling": quality} if quality is not None else {}),
        # What this round trained on: the original pairs it kept (weight > 0), the RS pairs the
        # previous round made, and all rows (both, the dropped originals included at weight 0).
        "trained_on_original": int((weights_N > 0).sum()),
        "trained_on_rs": len(data_t) - n,
        "trained_on": len(data_t),
        "trained_weight_sum": float(weights_t.sum()),
        **(evaluate_round(params, logps.get("heldout")) if evaluate_round is not None else {}),
    }
    processes.write_json(os.path.join(round_dir, "eval.json"), summary)
    run.writer.write({"stage": f"round_{t}", "round": t, **flatten(summary)})
    if processes.is_writer():
        np.save(os.path.join(round_dir, "weights_next.npy"), next_weights_N)
    # Last: done.json says the round's files are complete.
    processes.write_json(os.path.join(round_dir, "done.json"), summary)
    processes.barrier(f"round {t} written")
    logging.info("round %d: %s", t, summary)
    return summary, next_weights_N, new_rs


def _load_finished_round(round_dir):
    """A finished round's summary, next weights and RS pairs (a resumed run)."""
    with open(os.path.join(round_dir, "done.json")) as f:
        summary = json.load(f)
    weights_N = np.load(os.path.join(round_dir, "weights_next.npy"))
    rs_path = os.path.join(round_dir, "rs_pairs")
    return summary, weights_N, load_prepared(rs_path) if os.path.isdir(rs_path) else None


def _log_initial_dynamics(run: RoundsRun, stage_name, probe):
    """The dynamics of the SFT policy, once, before any training of round 1 (a resumed round 1
    has its checkpoint directory)."""
    started = os.path.isdir(os.path.join(run.workdir, "checkpoints", stage_name))
    if probe is not None and not processes.agree(started):
        run.writer.write(
            {
                "stage": stage_name,
                "kind": "dynamics",
                "step": 0,
                "round_epoch": 0.0,
                "round": 1,
                **probe(run.sft_params),
            }
        )


def run_rounds(
    run: RoundsRun,
    *,
    stage_template: trainer.StageConfig,
    step_template: train.StepConfig,
    evaluate_round=None,
    probe=None,
):
    """Runs the rounds and returns (final params, per-round summaries, final log-probs: the
    final policy's (chosen, rejected) log-probs of the training pairs, "train", and of the
    held-out pairs, "heldout", where this process computed them). ``probe(params)`` (a
    ``dynamics.DynamicsProbe``) measures the training dynamics before round 1 and at every epoch
    boundary; ``evaluate_round(params, heldout_logps)`` adds held-out metrics to each round's
    summary (``heldout_logps``: the probe's, when it scored the held-out pairs with ``params``,
    else None)."""
    ropo, n = run.ropo, len(run.train_data)
    estimated = ropo.filter_ratio in ESTIMATED_RATIOS
    estimate = read_estimate(run.workdir) if estimated else None
    rate = estimate["rate"] if estimate else (None if estimated else ropo.filter_ratio)
    weights_N, rs_data, opt_state, summaries = np.ones(n, np.float32), None, None, []
    params = run.sft_params
    step_config = step_config_for(step_template, run.loss, run.hyperparams)
    # One schedule over every round (unless restarted); with ρ unknown, as if ρ were its cap.
    bound = dataclasses.replace(ropo, filter_ratio=noise_rate.MAX_RATE if estimated else rate)
    shared_schedule = 0 if ropo.restart_optimizer else schedule_steps(stage_template, n, bound)
    for t in range(1, ropo.num_rounds + 1):
        round_dir = run.round_dir(t)
        data_t, weights_t, reference_t = _round_data(run, weights_N, rs_data)
        stage = dataclasses.replace(
            stage_template,
            name=f"round_{t}",
            seed=stage_template.seed + t - 1,
            schedule_steps=shared_schedule,
        )
        if t == 1:
            _log_initial_dynamics(run, stage.name, probe)
        in_batch = ropo.filtering and ropo.filter_granularity == "batch" and rate is not None
        final_logps = {}  # the probe's log-probs at the round's last step, if it ran here
        state = trainer.run_stage(
            stage,
            dataclasses.replace(step_config, in_batch_filter_ratio=rate if in_batch else 0.0),
            run.model_config,
            params,
            data_t,
            workdir=run.workdir,
            writer=run.writer,
            mesh=run.mesh,
            reference=None if step_config.online_reference else reference_t,
            ref_params=run.sft_params if step_config.online_reference else None,
            example_weights=weights_t,
            on_epoch=_epoch_hook(
                run, t, probe, rate is None and ropo.filter_ratio == "auto", final_logps
            ),
            init_opt_state=opt_state,
            # Round 1 starts from the SFT parameters, which later rounds and the evaluation
            # still read; a later round's start is the previous round's state, read by no one
            # else: its buffers become the new state's instead of staying beside it.
            donate_init=t > 1,
            return_state=True,
        )
        params = state.params
        opt_state = None if ropo.restart_optimizer else state.opt_state
        del state  # with restart_optimizer, the finished round's moments are not kept
        if rate is None and ropo.filter_ratio == "holder":
            # Hölder's ε̂ of the trained policy at the round's end (as the paper estimates it,
            # after training), from the log-probs the round's end then reuses.
            estimate = read_estimate(run.workdir)
            if estimate is None:
                if "train" not in final_logps:
                    final_logps["train"] = run.train_logps(params, desc="estimate ρ")
                estimate = estimate_filter_ratio(
                    run,
                    params,
                    where={"round": t, "at": "end"},
                    logps=final_logps["train"],
                    ratio="holder",
                )
            rate = estimate["rate"]
        if rate is None:  # the estimate the epoch hook made, or one now
            estimate = read_estimate(run.workdir) or estimate_filter_ratio(
                run, params, where={"round": t, "at": "end"}
            )
            rate = estimate["rate"]
        if processes.agree(os.path.exists(os.path.join(round_dir, "done.json"))):
            summary, weights_N, rs_data = _load_finished_round(round_dir)
            final_logps.clear()  # the probe may have run; the round's end did not
        else:
            summary, weights_N, rs_data = _finish_round(
                run, t, params, weights_N, data_t, weights_t, rate, evaluate_round, final_logps
            )
        summaries.append(summary)
    return params, summaries, final_logps
