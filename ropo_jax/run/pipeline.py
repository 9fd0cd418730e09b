"""One experiment run, from a ConfigDict to ``results.json``: data → model → SFT → reference
log-probs → preference training (the rounds of docs/method.md §3.6, every method) → evaluation,
each a named step of ``run``. Every stage checkpoints, so re-running the same command resumes
where it stopped.

The config boundary: this is the only module below ``main`` that reads the ConfigDict. Each block
becomes the frozen dataclass the module below takes (``configs.to_dataclass``) or plain
arguments, and ``make_task`` picks the run's task object once (``tasks.SyntheticTask`` or
``tasks.PreparedTask``), which holds everything that differs between the two kinds of run.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging

from ropo_jax import export as export_lib
from ropo_jax import losses, models
from ropo_jax.config import defaults as configs
from ropo_jax.data.loader import load_preference_data
from ropo_jax.data.noise import NoiseConfig
from ropo_jax.data.tokenizer import load_tokenizer
from ropo_jax.errors import ConfigValueError
from ropo_jax.evaluation import dynamics
from ropo_jax.evaluation import final as final_evaluation
from ropo_jax.evaluation import heldout as eval_lib
from ropo_jax.evaluation.generations import GenerationEval
from ropo_jax.inference import sampling, scoring
from ropo_jax.instructions import dataset as instruction_dataset
from ropo_jax.models import lora as lora_lib
from ropo_jax.parallel import processes, sharding
from ropo_jax.ropo import pair_text
from ropo_jax.ropo import rounds as rounds_lib
from ropo_jax.ropo.options import FRAMEWORK_METHODS, RS_METHODS, RopoConfig, method_loss
from ropo_jax.run import tasks
from ropo_jax.run.stage_times import StageTimes
from ropo_jax.synthetic import dataset as synthetic_dataset
from ropo_jax.synthetic import task as synthetic_task
from ropo_jax.training import loop as trainer
from ropo_jax.training import step as train
from ropo_jax.training.metrics import MetricsWriter, flatten, read_metrics

# StepConfig fields a round sets itself (rounds_lib), not the config.
ROUND_STEP_FIELDS = ("loss", "hyperparams", "in_batch_filter_ratio", "one_sequence_per_row")


@dataclasses.dataclass(frozen=True)
class RunContext:
    """What every step of one run shares."""

    config: ml_collections.ConfigDict
    workdir: str
    task: tasks.Task
    mesh: Any
    writer: MetricsWriter


@dataclasses.dataclass(frozen=True)
class Reference:
    """The SFT model's log-probs, the reference of preference training and evaluation."""

    train: tuple[np.ndarray, np.ndarray]  # (chosen, rejected) of the training pairs
    heldout: tuple[Any, tuple[np.ndarray, np.ndarray]] | None  # (test pairs, their log-probs)
    key: str  # the SFT parameters' hash: the reference cache's key


@dataclasses.dataclass(frozen=True)
class Trained:
    """The policy that preference training (or SFT alone) produced."""

    params: Any
    scoring_loss: str  # the loss final_scores.npz reports
    results: dict[str, Any]  # results.json entries of the training (rounds, dynamics, ...)
    final_logps: dict  # the policy's log-probs the last round computed ("train", "heldout")


# --- the run ----------------------------------------------------------------------------------


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
    """The whole experiment; returns (and process 0 writes) ``results.json``'s contents."""
    os.makedirs(workdir, exist_ok=True)
    ctx = RunContext(
        config=config,
        workdir=workdir,
        task=make_task(config),
        mesh=sharding.make_mesh(tuple(config.mesh.shape)),
        writer=MetricsWriter(workdir, tensorboard=config.tensorboard),
    )
    times = StageTimes(workdir, write=processes.is_writer())
    with times.stage("data"):
        data = ctx.task.load(workdir, noise_config(config))
    export_lib.write_export_info(
        workdir,
        tokenizer_dir=data.tokenizer_dir,
        chat_template_path=config.data.chat_template or None,
        base_models=lora_base_models(config) if lora_config(config) else None,
    )
    with times.stage("model"):
        model_config, init_params = init_model(ctx, data)
    with times.stage("sft"):
        sft_params = sft_stage(ctx, model_config, init_params, data)
    # With LoRA and SFT the preference stage's base is WORKDIR/sft_model, read back from disk:
    # the initial base (not donated: frozen weights) would otherwise stay alive beside it.
    del init_params
    with times.stage("reference_logps"):
        reference = reference_logps(ctx, model_config, sft_params, data)
    generation = generation_eval(ctx, data, reference)
    with times.stage("preference_training"):  # the rounds, with their dynamics probes
        trained = train_policy(ctx, model_config, sft_params, data, reference, generation)
    with times.stage("export"):
        export_policy(config, workdir, "model", model_config, trained.params, stage=config.method)
        if lora_lib.KEY in trained.params:  # (method sft: merged into sft_model already)
            export_adapter(config, workdir, model_config, trained.params, stage=config.method)
    with times.stage("evaluation"):
        results = evaluate(ctx, model_config, sft_params, data, reference, trained, generation)
    write_results(ctx, results)
    return results


def make_task(config: ml_collections.ConfigDict) -> tasks.Task:
    """The run's task object, from ``config.task`` and its blocks."""
    if config.task == "synthetic":
        s = config.synthetic
        return configs.to_dataclass(
            tasks.SyntheticTask,
            s,
            "synthetic",
            task=configs.to_dataclass(
                synthetic_task.TaskConfig, s.task, "synthetic.task", optional=True
            ),
            data=configs.to_dataclass(
                synthetic_dataset.DataConfig, s.data, "synthetic.data", optional=True
            ),
            samples_per_prompt=config.eval.samples_per_prompt,
        )
    if config.task == "instructions":
        return tasks.InstructionsTask(
            data=configs.to_dataclass(
                instruction_dataset.DataConfig, config.instructions, "instructions", optional=True
            ),
            model_path=config.model.hf_path,
            tokenizer=config.data.tokenizer,
            samples_per_prompt=config.eval.samples_per_prompt,
        )
    if config.task == "prepared":
        return tasks.PreparedTask(
            files=configs.to_dataclass(tasks.DataFiles, config.data, "data"),
            raw=configs.to_dataclass(tasks.RawData, config.data.raw, "data.raw"),
        )
    raise ConfigValueError(
        f"config.task={config.task!r}: use 'prepared', 'synthetic' or 'instructions'"
    )


def init_model(ctx: RunContext, data: tasks.RunData):
    """``(model_config, params)``: the initial policy, placed in its shardings."""
    model_config, params = build_model(
        ctx.config,
        ctx.task.vocab_size(),
        ctx.task.model_manifest(data),
        ctx.mesh,
    )
    shardings = sharding.tree_shardings(ctx.mesh, models.param_logical_axes(model_config), params)
    return model_config, jax.device_put(params, shardings)


def sft_stage(ctx: RunContext, model_config, init_params, data: tasks.RunData):
    """The SFT model (``config.sft``), exported to ``WORKDIR/sft_model``; the initial policy
    itself when SFT is off. With LoRA the SFT adapters are merged into ``WORKDIR/sft_model``,
    which is then read back as the base (and reference) of preference training, as the
    exported adapter's ``adapter_config.json`` names it (docs/lora.md)."""
    config = ctx.config
    if not config.sft.enabled:
        return init_params
    sft_params = trainer.run_stage(
        stage_config(config.sft, "sft", "sft", config.seed),
        train.StepConfig(logps_chunk_size=step_config(config).logps_chunk_size),
        model_config,
        init_params,
        data.sft(),
        workdir=ctx.workdir,
        writer=ctx.writer,
        mesh=ctx.mesh,
        donate_init=True,  # the initial policy is read by nothing after SFT
    )
    export_policy(config, ctx.workdir, "sft_model", model_config, sft_params, stage="sft")
    if model_config.lora is None:
        return sft_params
    del sft_params  # the adapted initial model: its base and SFT adapters, merged on disk now
    return load_base(ctx, model_config, os.path.join(ctx.workdir, SFT_MODEL))


def reference_logps(ctx: RunContext, model_config, sft_params, data: tasks.RunData) -> Reference:
    """The SFT model's log-probs of the training and held-out pairs (cached in WORKDIR/cache)."""
    key = scoring.params_hash(sft_params)  # once: hashing reads every weight

    def logps(pairs):
        return scoring.reference_logps(
            model_config,
            sft_params,
            pairs,
            cache_dir=run_cache_dir(ctx),
            batch_size=int(ctx.config.eval.batch_size),
            mesh=ctx.mesh,
            params_key=key,
        )

    train_logps = logps(data.train)
    heldout = None if data.heldout is None else (data.heldout, logps(data.heldout))
    return Reference(train=train_logps, heldout=heldout, key=key)


def train_policy(
    ctx: RunContext,
    model_config,
    sft_params,
    data: tasks.RunData,
    reference: Reference,
    generation: GenerationEval | None,
) -> Trained:
    """Preference training in rounds for every method but ``sft``, whose policy is the SFT
    model; the training's results.json entries include the per-epoch dynamics."""
    config = ctx.config
    if config.method == "sft":  # supervised fine-tuning only; the SFT model is evaluated
        if not config.sft.enabled:
            raise ConfigValueError("config.method='sft' needs config.sft.enabled=True")
        return Trained(sft_params, "dpo", {}, {})
    probe = None
    if config.eval.dynamics:
        probe = dynamics_probe(ctx, model_config, sft_params, data, reference, generation)
    params, loss, results, final_logps = preference_rounds(
        ctx, model_config, sft_params, data, reference, probe
    )
    results["dynamics"] = dynamics.collect(
        read_metrics(ctx.workdir), float(config.ropo.epochs_per_round)
    )
    results["selected_by_noisy_validation"] = dynamics.select_by_noisy_validation(
        results["dynamics"]
    )
    return Trained(params, loss, results, final_logps)


def evaluate(
    ctx: RunContext,
    model_config,
    sft_params,
    data: tasks.RunData,
    reference: Reference,
    trained: Trained,
    generation: GenerationEval | None,
) -> dict[str, Any]:
    """``results.json``: the shared evaluation, the task's (from the evaluation prompts), the
    training's entries and the realised noise rate."""
    results = final_evaluation.evaluate(
        ctx.workdir,
        model_config,
        trained.params,
        data.train,
        reference.train,
        reference.heldout,
        final_eval(ctx, trained.scoring_loss),
        mesh=ctx.mesh,
        policy_logps=trained.final_logps,
    )
    if generation is not None:
        added = dict(
            ctx.task.final_evaluation(model_config, trained.params, sft_params, data, generation)
        )
        results["eval"].update(added.pop("eval", {}))
        results.update(added)
    results.update(trained.results)
    rate = None if data.noise is None else float(data.noise.is_flipped.mean())
    results["noise"]["realised_rate"] = rate
    return results


def write_results(ctx: RunContext, results: dict[str, Any]) -> None:
    """``WORKDIR/results.json`` (process 0) and the final metrics record."""
    if processes.is_writer():
        with open(os.path.join(ctx.workdir, "results.json"), "w") as f:
            json.dump(results, f, indent=1)
    ctx.writer.write({"stage": "final", **flatten(results)})
    ctx.writer.close()


# --- config blocks → the dataclasses and values below -----------------------------------------


def stage_config(
    block: ml_collections.ConfigDict, name: str, kind: str, seed: int, *, key: str | None = None
) -> trainer.StageConfig:
    """A training stage from ``config.sft`` or ``config.train`` (``key``: the block's name,
    default ``name``). Preference rounds set ``epochs`` (ropo.epochs_per_round); a
    ``max_length``/``max_completion_tokens`` of 0 means "from the data"."""
    return configs.to_dataclass(
        trainer.StageConfig,
        block,
        key or name,
        optional=("epochs", "schedule_steps"),
        none_when_unset=("max_length", "max_completion_tokens"),
        name=name,
        kind=kind,
        seed=seed,
    )


def step_config(config: ml_collections.ConfigDict) -> train.StepConfig:
    """The preference train step's options from ``config.train``."""
    return configs.to_dataclass(train.StepConfig, config.train, "train", optional=ROUND_STEP_FIELDS)


def ropo_config(config: ml_collections.ConfigDict) -> RopoConfig:
    """``config.ropo``; filtering only for the framework methods (``ropo_full``,
    ``holder_full``), rejection sampling only for ``ropo_full`` (Hölder-DPO has none)."""
    return configs.to_dataclass(
        RopoConfig,
        config.ropo,
        "ropo",
        filtering=config.method in FRAMEWORK_METHODS,
        rs_enabled=config.method in RS_METHODS and config.ropo.rs.enabled,
    )


def noise_config(config: ml_collections.ConfigDict) -> NoiseConfig:
    """The training pairs' label noise (``config.noise``, docs/method.md §4)."""
    return configs.to_dataclass(NoiseConfig, config.noise, "noise")


def loss_hyperparams(config: ml_collections.ConfigDict, loss: str) -> dict[str, Any]:
    """The knobs ``loss`` takes from ``config.loss``; a negative label_smoothing or flip_rate
    is the configured noise rate (the baselines' oracle setting, below 0.5)."""
    knobs = dict(config.loss)
    for key in ("label_smoothing", "flip_rate"):
        if knobs[key] < 0:
            knobs[key] = min(float(config.noise.rate), 0.49)
    return losses.hyperparams_from(loss, knobs)


def final_eval(ctx: RunContext, scoring_loss: str) -> final_evaluation.FinalEval:
    """The final evaluation's settings: the run's identity and how its policy is scored, with
    ρ the configured one or the run's estimate."""
    config = ctx.config
    return final_evaluation.FinalEval(
        method=config.method,
        seed=int(config.seed),
        noise_kind=config.noise.kind,
        noise_rate=float(config.noise.rate),
        batch_size=int(config.eval.batch_size),
        filter_ratio=final_evaluation.filter_ratio(config.ropo.filter_ratio, ctx.workdir),
        scoring_loss=scoring_loss,
        scoring_hyperparams=loss_hyperparams(config, scoring_loss),
    )


def run_cache_dir(ctx: RunContext) -> str:
    """Where the reference log-probs and the starting model's evaluation responses are cached:
    ``config.cache_dir`` (shared by the runs that name it) or ``WORKDIR/cache``."""
    return os.path.expanduser(ctx.config.cache_dir) or os.path.join(ctx.workdir, "cache")


def generation_eval(
    ctx: RunContext, data: tasks.RunData, reference: Reference | None = None
) -> GenerationEval | None:
    """How both models answer the evaluation prompts (``eval.*``); None without prompts. With
    the ``reference``, the starting model's responses are cached (``run_cache_dir``)."""
    if "eval_prompts" not in data.paths:
        return None
    config, e = ctx.config, ctx.config.eval
    run_name = f"{config.method}_{config.noise.kind}{float(config.noise.rate):g}_seed{config.seed}"
    max_prompt_length = data.train.manifest.get("max_prompt_length")
    return configs.to_dataclass(
        GenerationEval,
        e,
        "eval",
        none_when_unset=("reward_model",),
        prompts_path=data.paths["eval_prompts"],
        tokenizer_dir=data.tokenizer_dir,
        sampling=configs.to_dataclass(
            sampling.SamplingConfig,
            e,
            "eval",
            optional=("top_k", "eos_token_id", "pad_token_id"),
            length_bucket=16,
        ),
        seed=int(config.seed) + 1000,
        output_dir=os.path.join(ctx.workdir, "eval"),
        generator=e.generator or run_name,
        chat_template=ctx.task.chat_template(),
        max_prompt_length=None if max_prompt_length is None else int(max_prompt_length),
        write=processes.is_writer(),
        cache_dir=run_cache_dir(ctx),
        reference_key="" if reference is None else reference.key,
    )


# --- the model and its exports ----------------------------------------------------------------

SFT_MODEL = "sft_model"
ADAPTER = "adapter"


def lora_config(config: ml_collections.ConfigDict) -> models.LoraConfig | None:
    """``config.model.lora`` (docs/lora.md); None for rank 0, full-weight training."""
    block = config.model.lora
    if int(block.rank) == 0:
        return None
    return configs.to_dataclass(models.LoraConfig, block, "model.lora")


def lora_base_models(config: ml_collections.ConfigDict) -> dict[str, dict]:
    """Where each stage's frozen LoRA base comes from, for exports of its checkpoints
    (``WORKDIR/export_info.json``): ``{"hf_path": DIR}`` (relative: under the workdir) or
    ``{"init_seed": S}`` (a preset's random weights). SFT trains over the initial model;
    preference training over WORKDIR/sft_model when SFT runs, else the initial model too."""
    if config.model.hf_path:
        initial = {"hf_path": os.path.abspath(os.path.expanduser(config.model.hf_path))}
    else:
        initial = {"init_seed": int(config.seed)}
    preference = {"hf_path": SFT_MODEL} if config.sft.enabled else initial
    return {"sft": initial, "preference": preference}


def build_model(
    config: ml_collections.ConfigDict, vocab_size: int | None, manifest=None, mesh=None
):
    """A HF checkpoint (streamed into its shardings on ``mesh``), or a preset with random
    weights. With a prepared data set's ``manifest`` a preset takes the tokenizer's vocabulary
    size and BOS/EOS ids, and a checkpoint must cover the vocabulary. With LoRA the weights
    are the frozen base, held in the checkpoint's own dtype (random ones in the compute dtype;
    ``models.lora.base_dtype``), and ``param_dtype`` is the adapters'."""
    m = config.model
    lora = lora_config(config)
    weights_dtype = m.param_dtype
    if lora is not None:
        stored = models.stored_dtype(m.hf_path) if m.hf_path else None
        weights_dtype = lora_lib.base_dtype(m.dtype, stored)
    if m.hf_path:
        model_config, params = models.load_hf(
            m.hf_path,
            dtype=weights_dtype,
            compute_dtype=m.dtype,
            mesh=mesh,
            remat_policy=m.remat_policy,
            attention_impl=m.attention_impl,
        )
        model_config = model_config.replace(param_dtype=m.param_dtype, lora=lora)
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
    model_config = models.ModelConfig.preset(
        m.preset, param_dtype=m.param_dtype, lora=lora, **overrides
    )
    weights_config = model_config.replace(param_dtype=weights_dtype)
    return model_config, models.init_params(weights_config, jax.random.key(config.seed))


def load_base(ctx: RunContext, model_config, path: str):
    """The frozen LoRA base in the Hugging Face directory ``path`` (WORKDIR/sft_model), in its
    shardings and in the dtype it is stored in; it must have ``model_config``'s shapes."""
    dtype = lora_lib.base_dtype(model_config.dtype, models.stored_dtype(path))
    loaded_config, params = models.load_hf(path, dtype=dtype, mesh=ctx.mesh)
    shape_fields = ("vocab_size", "hidden_size", "intermediate_size", "num_layers")
    if any(getattr(loaded_config, f) != getattr(model_config, f) for f in shape_fields):
        raise ConfigValueError(
            f"{path} holds another model than this run's; use a new --workdir or remove it"
        )
    return params


def export_adapter(config, workdir, model_config, params, *, stage: str) -> None:
    """``WORKDIR/adapter/``: the trained LoRA adapters in PEFT's format, on the base of the
    preference stage (``lora_base_models``), unless exactly these were exported already."""
    base = lora_base_models(config)["preference"]
    base_path = base.get("hf_path")
    if base_path is not None:
        base_path = os.path.join(workdir, base_path)  # an absolute path stays as it is
    _, adapters = lora_lib.detach(params)
    provenance = {
        "stage": stage,
        "params_hash": scoring.params_hash(adapters),
        "base_model": None if base_path is None else os.path.abspath(base_path),
    }
    output_dir = os.path.join(workdir, ADAPTER)
    if processes.agree(export_lib.is_exported(output_dir, provenance)):
        return
    export_lib.export_adapter(
        model_config,
        adapters,
        output_dir,
        base_model=provenance["base_model"],
        dtype=config.export.dtype or None,
        provenance=provenance,
    )
    logging.info("%s: LoRA adapter exported to %s", stage, output_dir)


def export_policy(config, workdir, name, model_config, params, *, stage: str) -> None:
    """``WORKDIR/<name>/`` as a Hugging Face model directory (``ropo_jax.export``), unless a
    previous run of this command already exported exactly these parameters. LoRA adapters are
    merged into the weights (``models.save_hf``)."""
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
        # With LoRA the base may be held narrower (its checkpoint's dtype) than the merged
        # weights, which keep the adapters' param_dtype unless export.dtype says otherwise.
        dtype=e.dtype or model_config.param_dtype,
        max_shard_bytes=int(float(e.max_shard_gb) * 1024**3),
        provenance=provenance,
    )
    logging.info("%s: exported to %s", stage, output_dir)


# --- preference training ----------------------------------------------------------------------


def preference_rounds(
    ctx: RunContext, model_config, sft_params, data: tasks.RunData, reference: Reference, probe
):
    """Every method through the same loop (docs/method.md §3.6): ROPO's rounds filter and
    rejection-sample, Hölder's (``holder_full``) filter; the baselines' rounds only train, for
    the same number of epochs. Returns ``(params, loss, results.json entries, final
    log-probs)``."""
    config = ctx.config
    loss = method_loss(config.method)
    stage = dataclasses.replace(
        stage_config(config.train, "round", "preference", config.seed, key="train"),
        epochs=float(config.ropo.epochs_per_round),
    )
    batch_size = int(config.eval.batch_size)
    evaluate_round = None
    if reference.heldout is not None:

        def evaluate_round(params, logps=None):
            return eval_lib.preference_accuracy(
                model_config,
                params,
                *reference.heldout,
                batch_size=batch_size,
                mesh=ctx.mesh,
                logps=logps,
            )

    run = rounds_lib.RoundsRun(
        workdir=ctx.workdir,
        ropo=ropo_config(config),
        loss=loss,
        hyperparams=loss_hyperparams(config, loss),
        model_config=model_config,
        sft_params=sft_params,
        train_data=data.train,
        reference=reference.train,
        writer=ctx.writer,
        mesh=ctx.mesh,
        batch_size=batch_size,
        seed=int(config.seed),
        reference_key="" if reference is None else reference.key,
        texts=pair_texts(ctx.task, data),
        noise_applied=config.noise.kind != "none",
        holder_gamma=float(config.loss.get("holder_gamma", losses.registry.DEFAULT_HOLDER_GAMMA)),
    )
    params, rounds, final_logps = rounds_lib.run_rounds(
        run,
        stage_template=stage,
        step_template=step_config(config),
        evaluate_round=evaluate_round,
        probe=probe,
    )
    results = {"rounds": rounds}
    estimate = rounds_lib.read_estimate(ctx.workdir)
    if estimate is not None:
        results["filter_ratio_estimate"] = estimate
    return params, loss, results, final_logps


def pair_texts(task: tasks.Task, data: tasks.RunData) -> pair_text.PairText | None:
    """Decoding (and on the synthetic task the gold reward) for the files people read: each
    round's suspects and rejection-sampling records."""
    if not data.tokenizer_dir:
        return None
    tokenizer = load_tokenizer(data.tokenizer_dir)
    return pair_text.PairText.from_tokenizer(tokenizer, gold_reward=task.gold_reward)


def dynamics_probe(
    ctx: RunContext,
    model_config,
    sft_params,
    data: tasks.RunData,
    reference: Reference,
    generation: GenerationEval | None,
) -> dynamics.DynamicsProbe:
    """The training-dynamics probe of a run (``ropo_jax.evaluation.dynamics``): fit rates and
    noise AUROC on the training pairs, held-out accuracy (on the true labels and on labels
    noised by an independent draw), and the task's gold curve for the first
    ``eval.dynamics_prompts`` evaluation prompts (synthetic task)."""
    config = ctx.config
    heldout_flips = None
    if data.heldout is not None and config.noise.kind != "none":
        # The noisy validation labels: the run's noise model, an independent draw.
        noise = dataclasses.replace(noise_config(config), seed=int(config.noise.seed) + 7919)
        heldout_flips = load_preference_data(data.heldout, noise)[1].is_flipped
    return dynamics.DynamicsProbe(
        model_config=model_config,
        ref_params=sft_params,
        train_data=data.train,
        reference=reference.train,
        heldout=reference.heldout,
        heldout_flips=heldout_flips,
        gold=ctx.task.gold_probe(data, generation, int(config.eval.dynamics_prompts)),
        batch_size=int(config.eval.batch_size),
        seed=int(config.seed) + 2000,
        mesh=ctx.mesh,
    )
