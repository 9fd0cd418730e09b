"""Train-step throughput of TRL's ``DPOTrainer`` on the model, weights, batch shape and tokens of
scripts/bench/train_step.py — the baseline ropo_jax is compared with.

    python scripts/bench/trl_dpo.py --preset=tiny --pairs=8 --prompt_len=32 --response_len=32 \\
        --steps=10 --loss=dpo --dtype=float32 --remat=none [--online_ref] [--micro_batches=2]

Model: ``--preset``'s config as a transformers ``LlamaForCausalLM`` (``ropo_jax.models.save_hf``
of ``common.random_params(--seed)``, loaded back in float32: the weights train_step.py trains).
``--dtype=bfloat16`` is TRL's usual mixed precision (``bf16=True``: float32 weights and AdamW
state, bf16 autocast), which matches ropo_jax's float32 params with bf16 compute.

Data: the token ids of train_step.py's random pairs, written as text for a word-level tokenizer
with one word per token id, so TRL's own tokenization gives exactly ``--prompt_len`` prompt and
``--response_len`` response tokens (responses end in EOS already, so TRL appends none; checked
after TRL's preprocessing). Every row of a batch has the same length: no padding on either side,
and both process 2·pairs·(prompt_len + response_len) tokens per optimizer step.

Same settings as the ropo_jax step: AdamW (TRL's default ``optim``), constant learning rate,
no weight decay, clipping at norm 1, β = 0.1, gradient checkpointing only when ``--remat`` is
not ``none`` (TRL enables it by default; the per-layer torch checkpoint is closest to ``full``)
unless ``--gradient_checkpointing=true|false`` sets it independently.
Reference: precomputed log-probs (``precompute_ref_log_probs=True``, computed by TRL in the
trainer's constructor, untimed — as ropo_jax's cache is filled before training) unless
``--online_ref``, where a second frozen copy of the model runs inside every step. Losses TRL
has no equivalent of (ropo, cdpo, ...) run as TRL's ``sigmoid`` (the field ``trl_loss_type``
says which ran).

Timing: a ``TrainerCallback`` reads the clock at ``on_step_begin`` and ``on_step_end`` (with a CUDA
synchronisation at both). Between the two, transformers' loop runs, for each of the
``--micro_batches`` batches, ``training_step`` (input preparation, policy forward through TRL's
fused LM head, the reference forward if online, the loss and TRL's per-step metrics, backward),
then gradient clipping, the optimizer step, the scheduler and ``zero_grad``. Not timed: fetching
and collating the step's batches (transformers prefetches them before ``on_step_begin``; ropo_jax
reuses one device batch), logging, the model/dataset set-up and the reference precompute.
The first ``--warmup`` steps are dropped, as JAX's compilation is. Prints one JSON line.
"""

import os
import sys
import tempfile
import time

# JAX here only serves ropo_jax's config and weight export; keep it off any accelerator so it
# holds no device memory next to PyTorch.
os.environ.setdefault("JAX_PLATFORMS", "cpu")

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common

from ropo_jax import losses, models

_STEP = common.define_step_flags(flags)
_THREADS = flags.DEFINE_integer(
    "torch_threads",
    0,
    "torch.set_num_threads (0: PyTorch's default, one per core). On a CPU shared with other "
    "jobs, OpenMP's spinning workers can make small ops far slower with 2 threads than with 1.",
)
_CHECKPOINTING = flags.DEFINE_enum(
    "gradient_checkpointing",
    "auto",
    ["auto", "true", "false"],
    "TRL's gradient_checkpointing (transformers' per-layer torch checkpoint). auto: on unless "
    "--remat resolves to none for the preset (what ropo_jax's side recomputes); true/false "
    "set it independently of --remat.",
)
_OMP_WAIT = flags.DEFINE_enum(
    "omp_wait_policy",
    None,
    ["ACTIVE", "PASSIVE"],
    "OMP_WAIT_POLICY for PyTorch's OpenMP pool (unset: the runtime's default, spinning). Set "
    "before torch is imported.",
)


def word_tokenizer(config):
    """A transformers tokenizer mapping word ``t{i}`` ↔ id i (BOS ``<s>``, EOS ``</s>``), adding
    no special tokens: a string of k words is exactly k tokens."""
    import transformers
    from tokenizers import Tokenizer, pre_tokenizers
    from tokenizers import models as tokenizer_models

    names = common.token_names(config)
    tokenizer = Tokenizer(
        tokenizer_models.WordLevel({n: i for i, n in enumerate(names)}, unk_token="<unk>")
    )
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, unk_token="<unk>", bos_token="<s>", eos_token="</s>"
    ), names


def text_dataset(config, num_pairs: int):
    """prompt/chosen/rejected strings of common.random_pairs' token ids."""
    import datasets

    tokenizer, names = word_tokenizer(config)
    prompts, chosen, rejected = common.random_pairs(
        config, num_pairs, _STEP.prompt_len.value, _STEP.response_len.value, seed=_STEP.seed.value
    )
    words = lambda ids: " ".join(names[i] for i in ids)
    rows = {
        "prompt": [words(p) for p in prompts],
        # A leading space: prompt + response splits into exactly the two token lists.
        "chosen": [" " + words(c) for c in chosen],
        "rejected": [" " + words(r) for r in rejected],
    }
    return datasets.Dataset.from_dict(rows), tokenizer


def gradient_checkpointing() -> bool:
    if _CHECKPOINTING.value != "auto":
        return _CHECKPOINTING.value == "true"
    preset = models.ModelConfig.preset(_STEP.preset.value, remat_policy=_STEP.remat.value)
    return preset.remat_policy != "none"


def main(argv):
    del argv
    common.set_omp_wait_policy(_OMP_WAIT.value)
    import torch
    import transformers
    import trl

    pairs, micro_batches = _STEP.pairs.value, _STEP.micro_batches.value
    if pairs % micro_batches:
        raise app.UsageError(f"--pairs={pairs} is not divisible by --micro_batches={micro_batches}")
    total_steps = _STEP.warmup.value + _STEP.steps.value
    cuda = torch.cuda.is_available()
    if _THREADS.value > 0:
        torch.set_num_threads(_THREADS.value)
    setup_start = time.perf_counter()
    config = models.ModelConfig.preset(_STEP.preset.value)
    work = tempfile.TemporaryDirectory()
    model_dir = os.path.join(work.name, "model")
    models.save_hf(config, common.random_params(config, _STEP.seed.value), model_dir)
    load = lambda: transformers.AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model = load()
    ref_model = load() if _STEP.online_ref.value else None
    # One optimizer step's pairs for every step: distinct rows, identical shapes.
    dataset, tokenizer = text_dataset(config, pairs * total_steps)

    trl_loss = common.TRL_LOSS_TYPES.get(_STEP.loss.value, "sigmoid")
    hyperparams = losses.validate_hyperparams(
        _STEP.loss.value, common.LOSS_HYPERPARAMS.get(_STEP.loss.value, {})
    )
    args = trl.DPOConfig(
        output_dir=os.path.join(work.name, "out"),
        per_device_train_batch_size=pairs // micro_batches,
        gradient_accumulation_steps=micro_batches,
        max_steps=total_steps,
        learning_rate=_STEP.learning_rate.value,
        lr_scheduler_type="constant",
        warmup_steps=0,
        weight_decay=0.0,
        max_grad_norm=1.0,
        beta=hyperparams["beta"],
        loss_type=[trl_loss],
        label_smoothing=hyperparams.get("flip_rate", 0.0) if trl_loss == "robust" else 0.0,
        bf16=_STEP.dtype.value == "bfloat16",
        fp16=False,
        gradient_checkpointing=gradient_checkpointing(),
        precompute_ref_log_probs=not _STEP.online_ref.value,
        precompute_ref_batch_size=pairs // micro_batches,
        max_length=None,
        use_cpu=not cuda,
        report_to="none",
        save_strategy="no",
        logging_strategy="no",
        disable_tqdm=True,
        dataloader_num_workers=0,
        seed=_STEP.seed.value,
    )

    class StepTimer(transformers.TrainerCallback):
        """Wall time of each optimizer step (on_step_begin → on_step_end)."""

        def __init__(self):
            self.times, self.rss_reset, self._start = [], False, None

        def on_train_begin(self, args, state, control, **kwargs):
            self.rss_reset = common.reset_host_peak_rss()

        def on_step_begin(self, args, state, control, **kwargs):
            if cuda:
                torch.cuda.synchronize()
            self._start = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            if cuda:
                torch.cuda.synchronize()
            self.times.append(time.perf_counter() - self._start)

    timer = StepTimer()
    trainer = trl.DPOTrainer(
        model=model,
        ref_model=ref_model,
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        callbacks=[timer],
    )
    # TRL's own tokenization must give the requested lengths, or the comparison is off.
    prepared = trainer.train_dataset
    for key, want in (
        ("prompt_ids", _STEP.prompt_len.value),
        ("chosen_ids", _STEP.response_len.value),
        ("rejected_ids", _STEP.response_len.value),
    ):
        got = {len(ids) for ids in prepared[key]}
        if got != {want}:
            raise RuntimeError(f"TRL tokenized {key} to lengths {sorted(got)}, expected {want}")
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    setup_s = time.perf_counter() - setup_start
    train_start = time.perf_counter()
    result = trainer.train()
    train_s = time.perf_counter() - train_start
    if len(timer.times) != total_steps:
        raise RuntimeError(f"timed {len(timer.times)} steps, expected {total_steps}")
    times = timer.times[_STEP.warmup.value :]

    if cuda:
        device_name = torch.cuda.get_device_name()
        memory = (torch.cuda.max_memory_allocated(), "torch_cuda_max_memory_allocated")
    else:
        device_name = common.cpu_device_name()
        source = "host_max_rss_during_steps" if timer.rss_reset else "host_max_rss"
        memory = (common.host_max_rss_bytes(), source)
    row = common.step_row(
        "trl",
        device_name,
        _STEP,
        config,
        times,
        common.peak_flops_by_name(device_name) if cuda else None,
        trl_loss_type=trl_loss,
        gradient_checkpointing=args.gradient_checkpointing,
    )
    row.update(
        {
            "peak_memory_bytes": memory[0],
            "peak_memory_source": memory[1],
            "compile_time_s": None,  # eager PyTorch: nothing compiled
            "first_step_time_s": timer.times[0],
            "setup_time_s": setup_s,
            "train_wall_s": train_s,
            "train_loss": result.training_loss,
            "optim": str(args.optim),
            "attn_implementation": model.config._attn_implementation,
            "torch_threads": torch.get_num_threads(),
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
            "trl_version": trl.__version__,
            "transformers_version": transformers.__version__,
            "torch_version": torch.__version__,
        }
    )
    work.cleanup()
    common.print_json(row)


if __name__ == "__main__":
    app.run(main)
