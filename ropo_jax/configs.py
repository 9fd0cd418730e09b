"""The base experiment config every ``experiments/*.py`` starts from (ml_collections).

Keys mirror the arguments of the functions they reach (``trainer.StageConfig``,
``train.StepConfig``, the loss hyper-parameters, ``data.noise.NoiseConfig``); ``main.py`` is the
only place that reads the ConfigDict.
"""

from __future__ import annotations

import ml_collections
from ml_collections import config_dict


def stage_defaults(**overrides) -> ml_collections.ConfigDict:
    stage = dict(
        epochs=1.0,
        batch_size=32,
        micro_batches=1,
        learning_rate=5e-7,
        warmup_ratio=0.1,
        schedule="cosine",
        weight_decay=0.0,
        max_grad_norm=1.0,
        batch_mode="bucketed",
        max_length=0,  # 0: the prepared data's max_length
        # Cap on the LM head's response positions per row (the completion-only head's static
        # bound C); 0: the data's longest response (packed rows: their largest response share).
        max_completion_tokens=0,
        log_every=10,
        checkpoint_every=100,
        keep_checkpoints=2,
    )
    stage.update(overrides)
    return ml_collections.ConfigDict(stage)


def base_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.method = "dpo"  # any loss of ropo_jax.losses.LOSSES, or "ropo_full" (SPEC §3)
    c.task = "prepared"  # "prepared" (data.* directories) or "synthetic"
    c.data = ml_collections.ConfigDict(
        dict(train="", test="", sft="", tokenizer="", eval_prompts="", chat_template="")
    )
    # Raw files prepared inside the run into WORKDIR/data/<split> (the splits named here instead
    # of data.train/test/sft), with data.tokenizer and data.chat_template: for small data such as
    # the smoke variants' fixtures. Full-size data is prepared once with ropo_jax.data.prepare.
    c.data.raw = ml_collections.ConfigDict(
        dict(
            format="",  # a --format of ropo_jax.data.prepare for train/test; sft is always "sft"
            train="",
            test="",
            sft="",
            max_length=1024,
            max_prompt_length=512,
            on_error="fail",
            dedupe=False,  # drop exact duplicate rows (kept under new ids by default)
            pairing="best_vs_worst",
            include_cnndm=False,
        )
    )
    c.noise = ml_collections.ConfigDict(dict(kind="none", rate=0.0, seed=0, temperature=1.0))
    c.model = ml_collections.ConfigDict(
        dict(
            preset="tiny",
            hf_path="",  # a HF model directory (overrides preset)
            dtype="float32",
            param_dtype="float32",
            # "auto": by model size (models.config.AUTO_REMAT); or a named policy of
            # ropo_jax.models.remat.
            remat_policy="auto",
            # Attention kernel (ropo_jax.models.attention): auto = splash on TPU, cuDNN flash
            # on NVIDIA GPUs (bf16/fp16), blocked XLA on CPU; or xla, blocked, cudnn, splash.
            attention_impl="auto",
        )
    )
    c.mesh = ml_collections.ConfigDict(dict(shape=(-1, 1, 1)))
    # Loss knobs; each method takes the ones it needs (losses.hyperparams_from). label_smoothing
    # and flip_rate < 0 mean "the configured noise rate" (the baselines' oracle setting).
    c.loss = ml_collections.ConfigDict(
        dict(
            beta=0.1,
            alpha=14.0,
            label_smoothing=-1.0,
            flip_rate=-1.0,
            ipo_average=False,
            nll_weight=1.0,
            gamma=0.5,
            beta_prime=1.0,
            eta=0.1,
        )
    )
    c.sft = stage_defaults(learning_rate=1e-5)
    c.sft.enabled = True
    # Preference training runs in rounds (ropo.num_rounds × ropo.epochs_per_round epochs), for
    # every method; train.* holds the rest of the stage settings.
    c.train = stage_defaults()
    del c.train["epochs"]
    c.train.online_reference = False
    c.train.nan_policy = "skip"
    c.train.logps_chunk_size = 256
    c.ropo = ml_collections.ConfigDict(
        dict(
            num_rounds=1,
            epochs_per_round=1.0,
            # ρ, or "auto": estimated from the margins early in round 1 (ropo_jax/noise_rate.py).
            filter_ratio=config_dict.FieldReference(0.2, field_type=object),
            filter_start_round=2,
            filter_mode="recompute",
            filter_granularity="dataset",
            # False: one optimizer and one learning-rate schedule across all rounds (warmup
            # once); True: a fresh optimizer, warmup and decay every round.
            restart_optimizer=False,
            rs=ml_collections.ConfigDict(
                dict(
                    enabled=False,
                    num_candidates=4,
                    temperature=0.9,
                    top_p=1.0,
                    max_new_tokens=64,
                    include_original=False,
                    selection="max_margin",
                    ranking="sum",  # "sum": r̂; "mean": r̂ per response token
                    min_margin=0.0,  # a new pair needs a ranking-score margin above this
                )
            ),
        )
    )
    c.eval = ml_collections.ConfigDict(
        dict(batch_size=64, temperature=0.7, top_p=1.0, max_new_tokens=64, generate_batch_size=64)
    )
    # The synthetic task's gold evaluation: samples per evaluation prompt (the standard errors
    # in results.json are over prompts, a prompt's samples averaged first).
    c.eval.samples_per_prompt = 1
    # Training dynamics at every epoch boundary (ropo_jax/dynamics.py): fit rates of flipped and
    # clean pairs, noise AUROC of -h, held-out accuracy (a forward pass over the training and
    # test pairs each time), and gold reward + KL of samples for the first dynamics_prompts
    # evaluation prompts (synthetic task; 0: none).
    c.eval.dynamics = True
    c.eval.dynamics_prompts = 32
    # Real data sets (task="prepared" with data.eval_prompts set): the policy's and the SFT
    # model's responses in AlpacaEval's format for an external judge (ropo_jax/eval_generations.py)
    # and, with eval.reward_model, reward-model scores of both.
    c.eval.update(
        prompts_format="alpaca_eval",  # "alpaca_eval" (instruction[, output]) or "tldr"
        prompt_style="chat",  # "chat": the instruction is one user turn; "text": the prompt itself
        num_prompts=0,  # 0: every prompt of the file; else a fixed subset of this size
        generator="",  # the name in the files' "generator" field; "" = method_noise_seed
        reward_model="",  # a Hugging Face sequence-classification model directory (PyTorch)
        reward_batch_size=8,
        reward_device="auto",  # "auto" (CUDA when available), "cpu" or "cuda"
    )
    # Every run that trains writes its final policy to WORKDIR/model/ (and the SFT stage to
    # WORKDIR/sft_model/) as a Hugging Face model directory. dtype "": the parameters' dtype.
    c.export = ml_collections.ConfigDict(dict(dtype="", max_shard_gb=2.0))
    c.tensorboard = True
    # XLA's persistent compilation cache: later runs and sweep members with the same shapes load
    # compiled steps instead of recompiling (halves a CPU benchmark run). "" turns it off.
    c.compilation_cache_dir = "~/.cache/ropo_jax/jax_compilation_cache"
    return c
