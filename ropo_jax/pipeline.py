"""One experiment run, from a ConfigDict to ``results.json``: data → model → SFT → preference
training (one stage, or the ROPO rounds) → evaluation. Every stage checkpoints, so re-running the
same command resumes where it stopped. This is the only module besides ``main`` that reads the
ConfigDict; everything below it takes explicit arguments.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import jax
import ml_collections
from absl import logging

from ropo_jax import (
    dynamics,
    final_evaluation,
    losses,
    models,
    pair_text,
    processes,
    sampling,
    scoring,
    sharding,
    train,
    trainer,
)
from ropo_jax import eval as eval_lib
from ropo_jax import export as export_lib
from ropo_jax import ropo as ropo_lib
from ropo_jax import rounds as rounds_lib
from ropo_jax.data.encode import Encoder, Limits
from ropo_jax.data.errors import DataError
from ropo_jax.data.loader import load_preference_data
from ropo_jax.data.noise import NoiseConfig
from ropo_jax.data.prepare import prepare_splits
from ropo_jax.data.prepared import load_prepared
from ropo_jax.data.tokenizer import load_tokenizer
from ropo_jax.errors import ConfigValueError
from ropo_jax.metrics import MetricsWriter, flatten, read_metrics
from ropo_jax.synthetic import dataset as synthetic_dataset
from ropo_jax.synthetic import prepare as synthetic_prepare
from ropo_jax.synthetic import task as synthetic_task

SYNTHETIC_SOURCE_STRENGTHS = (("weak", 1.0), ("medium", 2.0), ("strong", 3.0))


def stage_config(block: ml_collections.ConfigDict, name: str, kind: str, seed: int):
    return trainer.StageConfig(
        name=name,
        kind=kind,
        epochs=float(block.get("epochs", 1.0)),  # preference rounds set ropo.epochs_per_round
        batch_size=int(block.batch_size),
        micro_batches=int(block.micro_batches),
        learning_rate=float(block.learning_rate),
        warmup_ratio=float(block.warmup_ratio),
        schedule=block.schedule,
        weight_decay=float(block.weight_decay),
        max_grad_norm=float(block.max_grad_norm),
        batch_mode=block.batch_mode,
        max_length=int(block.max_length) or None,
        max_completion_tokens=int(block.get("max_completion_tokens", 0)) or None,
        seed=seed,
        log_every=int(block.log_every),
        checkpoint_every=int(block.checkpoint_every),
        keep_checkpoints=int(block.keep_checkpoints),
    )


def loss_hyperparams(config: ml_collections.ConfigDict, loss: str) -> dict[str, Any]:
    knobs = dict(config.loss)
    for key in ("label_smoothing", "flip_rate"):
        if knobs[key] < 0:  # the oracle setting: the configured noise rate (< 0.5)
            knobs[key] = min(float(config.noise.rate), 0.49)
    return losses.hyperparams_from(loss, knobs)


def data_paths(config: ml_collections.ConfigDict, workdir: str) -> dict[str, str]:
    """The run's data directories; data prepared inside the run (the synthetic task,
    ``data.raw``) is written by process 0, then found ready by the others."""
    if processes.is_writer():
        paths = _data_paths(config, workdir)
    processes.barrier("data prepared")
    if not processes.is_writer():
        paths = _data_paths(config, workdir)
    return paths


def _data_paths(config: ml_collections.ConfigDict, workdir: str) -> dict[str, str]:
    if config.task == "synthetic":
        s = config.synthetic
        task_config = synthetic_task.TaskConfig(**dict(s.task))
        data_config = synthetic_dataset.DataConfig(**dict(s.data))
        return synthetic_prepare.prepare_synthetic(
            os.path.join(workdir, "data"), task_config, data_config, seed=int(s.data_seed)
        )
    if config.task != "prepared":
        raise ConfigValueError(f"config.task={config.task!r}: use 'prepared' or 'synthetic'")
    paths = {k: v for k, v in dict(config.data).items() if isinstance(v, str) and v}
    raw = config.data.raw
    if raw.format:
        paths.update(_prepare_raw(config, workdir, given=paths))
    if "train" not in paths:
        raise ConfigValueError(
            "config.data.train is empty: prepare a data set with ropo_jax.data.prepare"
        )
    return paths


def _prepare_raw(config: ml_collections.ConfigDict, workdir: str, *, given) -> dict[str, str]:
    """The splits of ``config.data.raw`` prepared into ``WORKDIR/data`` (reused on a re-run)."""
    raw, data = config.data.raw, config.data
    inputs = {
        split: ("sft" if split == "sft" else raw.format, raw[split])
        for split in ("train", "test", "sft")
        if raw[split]
    }
    both = sorted(set(inputs) & set(given))
    if both:
        raise ConfigValueError(f"config.data.{both[0]} and config.data.raw.{both[0]} are both set")
    if not data.tokenizer:
        raise ConfigValueError(
            "config.data.raw needs config.data.tokenizer (a tokenizer directory)"
        )
    try:
        return prepare_splits(
            os.path.join(workdir, "data"),
            inputs,
            tokenizer=data.tokenizer,
            max_length=int(raw.max_length),
            max_prompt_length=int(raw.max_prompt_length),
            on_error=raw.on_error,
            dedupe=bool(raw.dedupe),
            pairing=raw.pairing,
            include_cnndm=bool(raw.include_cnndm),
            chat_template=data.chat_template or None,
        )
    except DataError as e:
        raise DataError(f"config.data.raw: {e}") from None


def build_model(
    config: ml_collections.ConfigDict, vocab_size: int | None, manifest=None, mesh=None
):
    """A HF checkpoint (streamed into its shardings on ``mesh``), or a preset with random
    weights. With a prepared data set's ``manifest`` a preset takes the tokenizer's vocabulary
    size and BOS/EOS ids, and a checkpoint must cover the vocabulary."""
    m = config.model
    if m.hf_path:
        model_config, params = models.load_hf(
            m.hf_path,
            dtype=m.param_dtype,
            compute_dtype=m.dtype,
            mesh=mesh,
            remat_policy=m.remat_policy,
            attention_impl=m.attention_impl,
        )
        if manifest is not None and int(manifest["vocab_size"]) > model_config.vocab_size:
            raise ConfigValueError(
                f"the data's tokenizer {manifest.get('tokenizer')} has {manifest['vocab_size']} "
                f"tokens but {m.hf_path} embeds {model_config.vocab_size}; prepare the data "
                "with the model's own tokenizer"
            )
        return model_config, params
    overrides = dict(dtype=m.dtype, remat_policy=m.remat_policy, attention_impl=m.attention_impl)
    if vocab_size is not None:
        overrides["vocab_size"] = vocab_size
    elif manifest is not None:
        overrides.update(
            vocab_size=int(manifest["vocab_size"]),
            bos_token_id=manifest["bos_id"],
            eos_token_id=int(manifest["eos_id"]),
        )
    model_config = models.ModelConfig.preset(m.preset, param_dtype=m.param_dtype, **overrides)
    return model_config, models.init_params(model_config, jax.random.key(config.seed))


def export_policy(config, workdir, name, model_config, params, *, stage: str) -> None:
    """``WORKDIR/<name>/`` as a Hugging Face model directory (``ropo_jax.export``), unless a
    previous run of this command already exported exactly these parameters."""
    e = config.export
    provenance = {
        "stage": stage,
        "params_hash": scoring.params_hash(params),
        "dtype": e.dtype or model_config.param_dtype,
    }
    output_dir = os.path.join(workdir, name)
    if processes.agree(export_lib.is_exported(output_dir, provenance)):
        return
    info = export_lib.read_export_info(workdir)
    chat_template = None
    if info["chat_template"]:
        with open(info["chat_template"], encoding="utf-8") as f:
            chat_template = f.read()
    export_lib.export_model(
        model_config,
        params,
        output_dir,
        tokenizer_dir=info["tokenizer"],
        chat_template=chat_template,
        dtype=e.dtype or None,
        max_shard_bytes=int(float(e.max_shard_gb) * 1024**3),
        provenance=provenance,
    )
    logging.info("%s: exported to %s", stage, output_dir)


def noise_config(config: ml_collections.ConfigDict) -> NoiseConfig:
    n = config.noise
    strengths = SYNTHETIC_SOURCE_STRENGTHS if config.task == "synthetic" else None
    kwargs = dict(
        kind=n.kind, rate=float(n.rate), seed=int(n.seed), temperature=float(n.temperature)
    )
    if strengths:
        kwargs["source_strengths"] = strengths
    return NoiseConfig(**kwargs)


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
    os.makedirs(workdir, exist_ok=True)
    mesh = sharding.make_mesh(tuple(config.mesh.shape))
    writer = MetricsWriter(workdir, tensorboard=config.tensorboard)
    paths = data_paths(config, workdir)
    train_data, noise_result = load_preference_data(paths["train"], noise_config(config))
    vocab = None
    if config.task == "synthetic":
        vocab = len(
            synthetic_task.vocabulary(synthetic_task.TaskConfig(**dict(config.synthetic.task)))
        )
    export_lib.write_export_info(
        workdir,
        tokenizer_dir=paths.get("tokenizer") or train_data.manifest.get("tokenizer"),
        chat_template_path=config.data.chat_template or None,
    )
    manifest = train_data.manifest if config.task == "prepared" else None
    model_config, init_params = build_model(config, vocab, manifest, mesh)
    init_params = jax.device_put(
        init_params,
        sharding.tree_shardings(mesh, models.param_logical_axes(model_config), init_params),
    )
    chunk = int(config.train.logps_chunk_size)

    sft_params = init_params
    if config.sft.enabled:
        sft_data = load_prepared(paths["sft"])
        sft_params = trainer.run_stage(
            stage_config(config.sft, "sft", "sft", config.seed),
            train.StepConfig(logps_chunk_size=chunk),
            model_config,
            init_params,
            sft_data,
            workdir=workdir,
            writer=writer,
            mesh=mesh,
        )
        export_policy(config, workdir, "sft_model", model_config, sft_params, stage="sft")

    cache_dir = os.path.join(workdir, "cache")
    batch_size = int(config.eval.batch_size)
    reference_key = scoring.params_hash(sft_params)  # once: hashing reads every weight
    reference = scoring.reference_logps(
        model_config,
        sft_params,
        train_data,
        cache_dir=cache_dir,
        batch_size=batch_size,
        mesh=mesh,
        params_key=reference_key,
    )
    heldout = None  # the held-out pairs and their reference log-probs
    if "test" in paths:
        test = load_prepared(paths["test"])
        heldout = (
            test,
            scoring.reference_logps(
                model_config,
                sft_params,
                test,
                cache_dir=cache_dir,
                batch_size=batch_size,
                mesh=mesh,
                params_key=reference_key,
            ),
        )
    if config.method == "sft":  # supervised fine-tuning only; the SFT model is evaluated
        if not config.sft.enabled:
            raise ConfigValueError("config.method='sft' needs config.sft.enabled=True")
        policy_params, scoring_loss, extra = sft_params, "dpo", {}
    else:
        probe = None
        if config.eval.dynamics:
            probe = dynamics_probe(
                config, paths, model_config, sft_params, train_data, reference, heldout, mesh
            )
        policy_params, scoring_loss, extra = _preference_rounds(
            config,
            workdir,
            model_config,
            sft_params,
            train_data,
            reference,
            heldout,
            writer=writer,
            mesh=mesh,
            reference_key=reference_key,
            paths=paths,
            probe=probe,
        )
        extra["dynamics"] = dynamics.collect(
            read_metrics(workdir), float(config.ropo.epochs_per_round)
        )
        extra["selected_by_noisy_validation"] = dynamics.select_by_noisy_validation(
            extra["dynamics"]
        )
    if config.method != "sft" or config.sft.enabled:  # a run that trained
        export_policy(config, workdir, "model", model_config, policy_params, stage=config.method)

    final_logps = extra.pop("final_logps", {})
    results = final_evaluation.evaluate(
        config,
        workdir,
        model_config,
        policy_params,
        sft_params,
        paths,
        train_data,
        reference,
        heldout,
        scoring_loss=scoring_loss,
        scoring_hyperparams=loss_hyperparams(config, scoring_loss),
        mesh=mesh,
        policy_logps=final_logps,
    )
    results.update(extra)
    results["noise"]["realised_rate"] = (
        None if noise_result is None else float(noise_result.is_flipped.mean())
    )
    if processes.is_writer():
        with open(os.path.join(workdir, "results.json"), "w") as f:
            json.dump(results, f, indent=1)
    writer.write({"stage": "final", **flatten(results)})
    writer.close()
    return results


def ropo_config(config: ml_collections.ConfigDict) -> ropo_lib.RopoConfig:
    r, full = config.ropo, config.method == "ropo_full"
    return ropo_lib.RopoConfig(
        num_rounds=int(r.num_rounds),
        filter_ratio="auto" if r.filter_ratio == "auto" else float(r.filter_ratio),
        filter_start_round=int(r.filter_start_round),
        filter_mode=r.filter_mode,
        filter_granularity=r.filter_granularity,
        filtering=full,
        rs_enabled=full and bool(r.rs.enabled),
        rs_num_candidates=int(r.rs.num_candidates),
        rs_temperature=float(r.rs.temperature),
        rs_top_p=float(r.rs.top_p),
        rs_max_new_tokens=int(r.rs.max_new_tokens),
        rs_include_original=bool(r.rs.include_original),
        rs_selection=r.rs.selection,
        rs_ranking=r.rs.ranking,
        rs_min_margin=float(r.rs.min_margin),
        restart_optimizer=bool(r.restart_optimizer),
    )


def _preference_rounds(
    config,
    workdir,
    model_config,
    sft_params,
    train_data,
    reference,
    heldout,
    *,
    writer,
    mesh,
    reference_key,
    paths,
    probe=None,
):
    """Every method through the same loop (SPEC §3): ROPO's rounds filter and rejection-sample;
    the baselines' rounds only train, for the same number of epochs."""
    loss = "ropo" if config.method == "ropo_full" else config.method
    hparams = loss_hyperparams(config, loss)
    stage = stage_config(config.train, "round", "preference", config.seed)
    stage = dataclasses.replace(stage, epochs=float(config.ropo.epochs_per_round))
    step = train.StepConfig(
        logps_chunk_size=int(config.train.logps_chunk_size),
        online_reference=bool(config.train.online_reference),
        nan_policy=config.train.nan_policy,
    )
    batch_size = int(config.eval.batch_size)
    evaluate_round = None
    if heldout is not None:

        def evaluate_round(params, logps=None):
            return eval_lib.preference_accuracy(
                model_config, params, *heldout, batch_size=batch_size, mesh=mesh, logps=logps
            )

    run = rounds_lib.RoundsRun(
        workdir=workdir,
        ropo=ropo_config(config),
        loss=loss,
        hyperparams=hparams,
        model_config=model_config,
        sft_params=sft_params,
        train_data=train_data,
        reference=reference,
        writer=writer,
        mesh=mesh,
        batch_size=batch_size,
        seed=int(config.seed),
        reference_key=reference_key,
        texts=pair_texts(config, paths, train_data),
        noise_applied=config.noise.kind != "none",
    )
    params, rounds, final_logps = rounds_lib.run_rounds(
        run,
        stage_template=stage,
        step_template=step,
        evaluate_round=evaluate_round,
        probe=probe,
    )
    extra = {"rounds": rounds, "final_logps": final_logps}
    estimate = rounds_lib.read_estimate(workdir)
    if estimate is not None:
        extra["filter_ratio_estimate"] = estimate
    return params, loss, extra


def pair_texts(config, paths, train_data) -> pair_text.PairText | None:
    """Decoding (and on the synthetic task the gold reward) for the files people read: each
    round's suspects and rejection-sampling records."""
    tokenizer_dir = paths.get("tokenizer") or train_data.manifest.get("tokenizer")
    if not tokenizer_dir:
        return None
    gold = None
    if config.task == "synthetic":
        task_config = synthetic_task.TaskConfig(**dict(config.synthetic.task))

        def gold(prompt, response):
            return synthetic_task.gold_reward(task_config, prompt, response)

    return pair_text.PairText.from_tokenizer(load_tokenizer(tokenizer_dir), gold_reward=gold)


def dynamics_probe(config, paths, model_config, sft_params, train_data, reference, heldout, mesh):
    """The training-dynamics probe of a run (``ropo_jax.dynamics``): fit rates and noise AUROC
    on the training pairs, held-out accuracy, and on the synthetic task the gold reward and KL
    of samples for the first ``eval.dynamics_prompts`` evaluation prompts."""
    gold = None
    count = int(config.eval.dynamics_prompts)
    if config.task == "synthetic" and count and "eval_prompts" in paths:
        task_config = synthetic_task.TaskConfig(**dict(config.synthetic.task))
        texts = synthetic_prepare.read_eval_prompts(paths["eval_prompts"])[:count]
        tokenizer = load_tokenizer(paths["tokenizer"])
        encoder = Encoder(tokenizer, Limits(max_length=2**30, max_prompt_length=2**29))

        def reward(i, response_ids):
            text = tokenizer.decode([t for t in response_ids if t != tokenizer.eos_id])
            return synthetic_task.gold_reward(task_config, texts[i], text.strip())

        gold = dynamics.GoldProbe(
            prompt_ids=[encoder.prompt_ids(t) for t in texts],
            reward=reward,
            sampling_config=sampling.SamplingConfig(
                max_new_tokens=int(config.eval.max_new_tokens),
                temperature=float(config.eval.temperature),
                top_p=float(config.eval.top_p),
                pad_token_id=train_data.pad_id,
                length_bucket=16,
            ),
        )
    heldout_flips = None
    if heldout is not None and config.noise.kind != "none":
        # The noisy validation labels: the run's noise model, an independent draw.
        noise = dataclasses.replace(noise_config(config), seed=int(config.noise.seed) + 7919)
        heldout_flips = load_preference_data(heldout[0], noise)[1].is_flipped
    return dynamics.DynamicsProbe(
        model_config=model_config,
        ref_params=sft_params,
        train_data=train_data,
        reference=reference,
        heldout=heldout,
        heldout_flips=heldout_flips,
        gold=gold,
        batch_size=int(config.eval.batch_size),
        seed=int(config.seed) + 2000,
        mesh=mesh,
    )
