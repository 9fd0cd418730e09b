"""The base experiment config every ``experiments/*.py`` starts from (ml_collections), and
``to_dataclass``, the one conversion from a config block to the frozen dataclass a module takes.

Who reads the ConfigDict: ``main.py`` parses it from the command line, has ``config_validation``
check it, writes it to ``config.json`` and hands it to ``pipeline.run``; ``pipeline.py`` is the
only module below ``main`` that reads it, and it hands every module below it a frozen dataclass
(built with ``to_dataclass``) or plain values. Keys therefore mirror those dataclasses' fields
(``training.loop.StageConfig``, ``training.step.StepConfig``, ``ropo.options.RopoConfig``,
``data.noise.NoiseConfig``, ``evaluation.generations.GenerationEval``, ...) and the loss
hyper-parameters (``losses.hyperparams_from``).
"""

from __future__ import annotations

import dataclasses
import numbers
import types
import typing
from collections.abc import Collection
from typing import Any

import ml_collections
from ml_collections import config_dict

from ropo_jax.data.noise import DEFAULT_SOURCE_STRENGTHS
from ropo_jax.errors import ConfigValueError


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
    # Any loss of ropo_jax.losses.LOSSES, or a framework method: "ropo_full" or "holder_full"
    # (docs/method.md §3.6; ropo_jax.ropo.options.FRAMEWORK_METHODS).
    c.method = "dpo"
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
    # source_strengths: (generator name, strength) pairs for source_biased noise, higher is
    # stronger (data/noise.py); the defaults cover Alpaca Comparison's and the synthetic task's
    # generators, e.g. --config.noise.source_strengths='(("ppo_xl",2),("sup2",1))' for others.
    c.noise = ml_collections.ConfigDict(
        dict(
            kind="none",
            rate=0.0,
            seed=0,
            temperature=1.0,
            # True: flip exactly round(rate · N) pairs (the smallest per-example uniforms), so
            # the realised rate is the nominal one; False: an independent draw per pair.
            exact=False,
            source_strengths=DEFAULT_SOURCE_STRENGTHS,
        )
    )
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
    # LoRA (docs/lora.md): rank 0 trains every weight; rank R > 0 freezes the base (stored in
    # model.dtype) and trains rank-R adapters on the projections of `targets` (q, k, v, o,
    # gate, up, down), scaled by alpha / rank, with dropout on their input.
    c.model.lora = ml_collections.ConfigDict(
        dict(rank=0, alpha=16.0, dropout=0.0, targets=("q", "k", "v", "o", "gate", "up", "down"))
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
            gamma=0.5,  # simpo's target margin γ
            # holder_dpo's Hölder exponent γ (> 0; docs/method.md §2.7): a knob of its own, so
            # simpo's gamma above cannot silently set it.
            holder_gamma=2.0,
            beta_prime=1.0,
            eta=0.1,
            base="dpo",  # lcpo_em's base loss: dpo, ropo, hinge or noise_aware
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
            # ρ, or "auto": estimated from the margins early in round 1
            # (ropo_jax/ropo/noise_rate.py), or "holder": Hölder-DPO's ε̂ at the end of round 1
            # (method holder_full requires it).
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
    # Training dynamics at every epoch boundary (ropo_jax/evaluation/dynamics.py): fit rates of
    # flipped and clean pairs, noise AUROC of -h, held-out accuracy (a forward pass over the
    # training and test pairs each time), and gold reward + KL of samples for the first
    # dynamics_prompts evaluation prompts (synthetic task; 0: none).
    c.eval.dynamics = True
    c.eval.dynamics_prompts = 32
    # Real data sets (task="prepared" with data.eval_prompts set): the policy's and the SFT
    # model's responses in AlpacaEval's format for an external judge
    # (ropo_jax/evaluation/generations.py) and, with eval.reward_model, reward-model scores of both.
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
    # What runs sharing a starting model and data compute alike: the reference log-probs (keyed
    # by the data's fingerprint and the reference parameters' hash) and the starting model's
    # evaluation responses (keyed by those parameters, the prompts, sampling settings and seed).
    # "" = WORKDIR/cache, this run's own; a directory shared by a sweep's runs computes each once.
    c.cache_dir = ""
    return c


# --- the conversion ---------------------------------------------------------------------------


def to_dataclass(
    cls,
    block,
    key: str,
    /,
    *,
    optional: Collection[str] | bool = (),
    none_when_unset: Collection[str] = (),
    **overrides,
):
    """``cls`` with every field taken from ``overrides``, else from ``block`` (the config block
    at ``config.<key>``; ``key`` names it in errors), converted to the field's type.

    - A field ``<sub>_<name>`` that the block lacks is read from its sub-block ``<sub>``
      (``ropo.rs.enabled`` → ``RopoConfig.rs_enabled``).
    - ``optional``: the fields the block may leave out (they keep the dataclass's default);
      ``True``: every field that has a default (blocks that set only what they change, such as
      ``synthetic.task``). Any other field the block lacks is an error.
    - ``none_when_unset``: fields whose config value 0 or "" means None (a ConfigDict key cannot
      hold None and keep its type).
    - Keys of the block that are no field are left alone: one block may feed several dataclasses.

    Conversion: int fields take integers (not bools), float fields any real number, bool fields
    True/False, str fields strings; ``X | Y`` the first that fits; ``tuple[...]`` a tuple or list
    of such values. A missing key or a value of the wrong type raises ConfigValueError naming the
    key.
    """
    hints = typing.get_type_hints(cls)
    fields = [f for f in dataclasses.fields(cls) if f.init]
    unknown = sorted(set(overrides) - {f.name for f in fields})
    if unknown:
        raise TypeError(f"{cls.__name__} has no field(s) {unknown}")
    values = {}
    for field in fields:
        if field.name in overrides:
            where = f"{cls.__name__}.{field.name}"
            values[field.name] = _convert(overrides[field.name], hints[field.name], where)
            continue
        where, found, value = _lookup(block, key, field.name)
        if not found:
            if _has_default(field) and (optional is True or field.name in optional):
                continue
            raise ConfigValueError(
                f"config.{where} is missing ({cls.__name__}.{field.name}): add it; experiment "
                "configs start from ropo_jax.config.defaults.base_config()"
            )
        if field.name in none_when_unset and _is_unset(value):
            value = None
        values[field.name] = _convert(value, hints[field.name], f"config.{where}")
    return cls(**values)


def _lookup(block, key: str, name: str) -> tuple[str, bool, Any]:
    """(the key's dotted name, whether the block has it, its value) for the field ``name``."""
    if name in block:
        return f"{key}.{name}", True, block[name]
    sub, _, rest = name.partition("_")
    if rest and sub in block and hasattr(block[sub], "keys"):
        return f"{key}.{sub}.{rest}", rest in block[sub], block[sub].get(rest)
    return f"{key}.{name}", False, None


def _has_default(field: dataclasses.Field) -> bool:
    return (
        field.default is not dataclasses.MISSING or field.default_factory is not dataclasses.MISSING
    )


def _is_unset(value) -> bool:
    return isinstance(value, int | str) and not isinstance(value, bool) and not value


def _convert(value, hint, where: str):
    fits, converted = _fit(value, hint)
    if not fits:
        raise ConfigValueError(f"{where}={value!r}: must be {_describe(hint)}")
    return converted


def _fit(value, hint) -> tuple[bool, Any]:
    """(whether ``value`` is of type ``hint``, the value converted to it)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any or hint is object:
        return True, value
    if hint is type(None) or hint is None:
        return value is None, value
    if origin in (typing.Union, types.UnionType):
        for member in args:
            fits, converted = _fit(value, member)
            if fits:
                return True, converted
        return False, None
    if origin is tuple:
        return _fit_tuple(value, args)
    if hint is bool:
        return isinstance(value, bool), value
    if hint is int:
        fits = isinstance(value, numbers.Integral) and not isinstance(value, bool)
        return fits, int(value) if fits else None
    if hint is float:
        fits = isinstance(value, numbers.Real) and not isinstance(value, bool)
        return fits, float(value) if fits else None
    if isinstance(hint, type):
        return isinstance(value, hint), value
    return True, value  # a type this conversion does not model (e.g. a Callable): as given


def _fit_tuple(value, args) -> tuple[bool, Any]:
    if not isinstance(value, tuple | list):
        return False, None
    if len(args) == 2 and args[1] is Ellipsis:
        members = [args[0]] * len(value)
    elif len(args) != len(value):
        return False, None
    else:
        members = list(args)
    converted = [_fit(v, member) for v, member in zip(value, members, strict=True)]
    if not all(fits for fits, _ in converted):
        return False, None
    return True, tuple(v for _, v in converted)


def _describe(hint) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(member) for member in args)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a tuple of {_describe(args[0])}"
        return "(" + ", ".join(_describe(a) for a in args) + ")"
    names = {
        bool: "True or False",
        int: "an integer",
        float: "a number",
        str: "a string",
        type(None): "None",
    }
    return names.get(hint, getattr(hint, "__name__", str(hint)))
