"""The end-of-run evaluation of one experiment (SPEC §5), from the run's config: what
``pipeline.run`` writes to ``results.json`` besides the per-round records."""

from __future__ import annotations

import os
from typing import Any

from absl import logging

from ropo_jax import eval as eval_lib
from ropo_jax import eval_generations, processes, rounds, sampling, scoring
from ropo_jax.synthetic import prepare as synthetic_prepare
from ropo_jax.synthetic import task as synthetic_task


def filter_ratio(config, workdir: str) -> float:
    """ρ of the run: the configured one, or with "auto" the run's estimate (the ROPO default
    0.2 for a run that made none, e.g. SFT only)."""
    if config.ropo.filter_ratio != "auto":
        return float(config.ropo.filter_ratio)
    estimate = rounds.read_estimate(workdir)
    return 0.2 if estimate is None else float(estimate["rate"])


def evaluate(
    config,
    workdir,
    model_config,
    policy_params,
    sft_params,
    paths,
    train_data,
    reference,
    heldout,
    *,
    scoring_loss,
    scoring_hyperparams,
    mesh,
    policy_logps=None,
) -> dict[str, Any]:
    """``results.json``'s evaluation (SPEC §5): clean held-out accuracy, noise identification
    by the final policy's per-example loss, and generation-based evaluation — gold win rate on
    the synthetic task, AlpacaEval files and optional reward-model scores on real data.
    ``policy_logps``: the policy's (chosen, rejected) log-probs of the training ("train") and
    held-out ("heldout") pairs where the last round already computed them."""
    policy_logps = policy_logps or {}
    batch_size = int(config.eval.batch_size)
    results: dict[str, Any] = {
        "method": config.method,
        "noise": {"kind": config.noise.kind, "rate": float(config.noise.rate)},
        "seed": int(config.seed),
        "eval": {
            "pref_accuracy_clean": None,
            "gold_win_rate_vs_sft": None,
            "gold_win_rate_stderr": None,
            "gold_reward_mean": None,
            "gold_reward_stderr": None,
        },
        "noise_identification": {"precision": None, "recall": None, "f1": None, "auroc": None},
    }
    if heldout is not None:
        results["eval"].update(
            eval_lib.preference_accuracy(
                model_config,
                policy_params,
                *heldout,
                batch_size=batch_size,
                mesh=mesh,
                logps=policy_logps.get("heldout"),
            )
        )
    # Noise identification on the training set with the final policy's per-example loss.
    policy_chosen, policy_rejected = policy_logps.get("train") or scoring.sequence_logps_over(
        model_config,
        policy_params,
        train_data,
        batch_size=batch_size,
        mesh=mesh,
        desc="train scores",
    )
    scores = scoring.example_scores(
        policy_chosen,
        policy_rejected,
        *reference,
        train_data.is_flipped,
        loss=scoring_loss,
        hyperparams=scoring_hyperparams,
    )
    if train_data.is_flipped.any():
        results["noise_identification"] = eval_lib.noise_identification(
            scores["margin"], train_data.is_flipped, filter_ratio=filter_ratio(config, workdir)
        )
    processes.write_npz(
        os.path.join(workdir, "final_scores.npz"), **scores, is_flipped=train_data.is_flipped
    )
    if config.task == "synthetic" and "eval_prompts" in paths:
        results["eval"].update(
            _gold_evaluation(config, model_config, policy_params, sft_params, paths)
        )
        results["prompts"] = synthetic_prepare.prompt_counts(paths)
    elif "eval_prompts" in paths:
        generated = _generation_evaluation(
            config, workdir, model_config, policy_params, sft_params, paths, train_data
        )
        results["eval"].update(generated["eval"])
        results["generations"] = generated["generations"]
    return results


def _generation_evaluation(
    config, workdir, model_config, policy_params, sft_params, paths, train_data
) -> dict[str, Any]:
    """Real data sets: AlpacaEval files of the policy's and the SFT model's responses, and
    reward-model scores when ``eval.reward_model`` is set (``eval_generations``)."""
    e, noise, template = config.eval, config.noise, None
    if config.data.chat_template:
        with open(os.path.expanduser(config.data.chat_template), encoding="utf-8") as f:
            template = f.read()
    run_name = f"{config.method}_{noise.kind}{float(noise.rate):g}_seed{config.seed}"
    return eval_generations.evaluate_generations(
        model_config,
        policy_params,
        sft_params,
        prompts_path=paths["eval_prompts"],
        prompts_format=e.prompts_format,
        prompt_style=e.prompt_style,
        num_prompts=int(e.num_prompts),
        tokenizer_dir=paths.get("tokenizer") or train_data.manifest["tokenizer"],
        chat_template=template,
        max_prompt_length=int(train_data.manifest["max_prompt_length"]),
        sampling_config=sampling.SamplingConfig(
            max_new_tokens=int(e.max_new_tokens),
            temperature=float(e.temperature),
            top_p=float(e.top_p),
            length_bucket=16,
        ),
        seed=int(config.seed) + 1000,
        batch_size=int(e.generate_batch_size),
        output_dir=os.path.join(workdir, "eval"),
        generator=e.generator or run_name,
        reward_model=e.reward_model or None,
        reward_batch_size=int(e.reward_batch_size),
        reward_device=e.reward_device,
        write=processes.is_writer(),
    )


def _gold_evaluation(config, model_config, policy_params, sft_params, paths) -> dict[str, Any]:
    task_config = synthetic_task.TaskConfig(**dict(config.synthetic.task))
    samples = int(config.eval.samples_per_prompt)
    distinct = synthetic_prepare.read_eval_prompts(paths["eval_prompts"])
    prompts = [p for p in distinct for _ in range(samples)]
    sampling_config = sampling.SamplingConfig(
        max_new_tokens=int(config.eval.max_new_tokens),
        temperature=float(config.eval.temperature),
        top_p=float(config.eval.top_p),
        length_bucket=16,
    )
    kwargs = dict(
        tokenizer_dir=paths["tokenizer"],
        sampling_config=sampling_config,
        seed=int(config.seed) + 1000,
        batch_size=int(config.eval.generate_batch_size),
    )
    policy = eval_lib.generate_responses(model_config, policy_params, prompts, **kwargs)
    sft = eval_lib.generate_responses(model_config, sft_params, prompts, **kwargs)
    logging.info("sample generation: %r → %r (SFT: %r)", prompts[0], policy[0], sft[0])
    return eval_lib.gold_win_rate(
        prompts,
        policy,
        sft,
        lambda p, r: synthetic_task.gold_reward(task_config, p, r),
        samples_per_prompt=samples,
    )
