"""Model configuration: a frozen (hashable, jit-static) dataclass, presets, and the mapping to
and from Hugging Face ``config.json`` (both the transformers 4.x and 5.x spellings)."""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

from ropo_jax.errors import UserError

SUPPORTED_ARCHITECTURES = {"LlamaForCausalLM": "llama", "MistralForCausalLM": "mistral"}
# Named in ropo_jax.models.remat (what each keeps for the backward pass).
REMAT_POLICIES = (
    "none",
    "dots",
    "dots_no_batch",
    "qkv_attention",
    "attention_out",
    "offload_dots",
    "full",
)
# remat_policy="auto" picks by parameter count, from the per-device memory plans of the presets
# at their target batch (scripts/memory_plan.py; docs/PERFORMANCE.md "Memory plan of the
# defaults"): the CPU presets need no remat; tinyllama_1b at 8 pairs × 1024 tokens on one 80 GB
# GPU needs 185 GiB without remat and 37 GiB saving only q/k/v and the attention output; the
# 7B/8B presets train fully sharded with full remat.
AUTO_REMAT = ((1e8, "none"), (3e9, "qkv_attention"), (float("inf"), "full"))
REMAT_CHOICES = (*REMAT_POLICIES, "auto")
# Attention kernels (ropo_jax.models.attention): "auto" picks per backend at trace time.
ATTENTION_IMPLS = ("auto", "xla", "blocked", "cudnn", "splash")


# Projections LoRA can adapt (ropo_jax.models.lora.TARGETS; docs/lora.md).
LORA_TARGETS = ("q", "k", "v", "o", "gate", "up", "down")


class ConfigError(UserError, ValueError):
    """A config.json (or preset) this project cannot run, with the key and the fix."""


@dataclasses.dataclass(frozen=True)
class RopeScaling:
    """Llama-3 style frequency scaling (``rope_type: llama3``) or plain ``linear`` scaling."""

    rope_type: str = "llama3"
    factor: float = 8.0
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    original_max_position_embeddings: int = 8192


@dataclasses.dataclass(frozen=True)
class LoraConfig:
    """Low-rank adapters on the projections ``targets`` (docs/lora.md): rank R, the scale α/R of
    their product, and the dropout on their input while training."""

    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    targets: tuple[str, ...] = LORA_TARGETS

    def __post_init__(self):
        object.__setattr__(self, "targets", tuple(self.targets))
        if not self.rank >= 1:
            raise ConfigError(f"lora.rank={self.rank!r}: must be >= 1 (0 means no LoRA)")
        if not self.alpha > 0:
            raise ConfigError(f"lora.alpha={self.alpha!r}: must be > 0")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"lora.dropout={self.dropout!r}: must be in [0, 1)")
        unknown = [t for t in self.targets if t not in LORA_TARGETS]
        if unknown or not self.targets or len(set(self.targets)) != len(self.targets):
            raise ConfigError(
                f"lora.targets={self.targets!r}: must be distinct names among {LORA_TARGETS}"
            )

    @property
    def scale(self) -> float:
        return self.alpha / self.rank


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim_override: int | None = None  # explicit head_dim (else hidden_size // num_heads)
    rope_theta: float = 10000.0
    rope_scaling: RopeScaling | None = None
    rms_norm_eps: float = 1e-5
    sliding_window: int | None = None  # Mistral: attend to the last `sliding_window` keys
    tie_word_embeddings: bool = False
    max_position_embeddings: int = 4096
    bos_token_id: int | None = 1
    eos_token_id: int | None = 2
    pad_token_id: int | None = None
    architecture: str = "llama"  # "llama" | "mistral" (HF class on export)
    dtype: str = "float32"  # compute dtype of matmuls (bfloat16 for speed)
    param_dtype: str = "float32"
    remat_policy: str = "none"  # see REMAT_POLICIES; "auto" is resolved at construction
    scan_layers: bool = True
    # One of ATTENTION_IMPLS (see ropo_jax.models.attention); None, the value before "auto"
    # existed (older checkpoint records), is read as "xla", what it ran then.
    attention_impl: str | None = "auto"
    # Low-rank adapters (docs/lora.md); None: full-weight training. Parameters that carry
    # adapters ("lora", models.lora.attach) run with them, the base alone without.
    lora: LoraConfig | None = None

    def __post_init__(self):
        if self.num_heads % self.num_kv_heads:
            raise ConfigError(
                f"num_heads={self.num_heads} must be a multiple of num_kv_heads={self.num_kv_heads}"
            )
        if self.head_dim_override is None and self.hidden_size % self.num_heads:
            raise ConfigError(
                f"hidden_size={self.hidden_size} is not divisible by num_heads={self.num_heads}; "
                "set head_dim explicitly"
            )
        if self.remat_policy == "auto":
            count = self.num_params()
            policy = next(policy for limit, policy in AUTO_REMAT if count < limit)
            object.__setattr__(self, "remat_policy", policy)
        if self.remat_policy not in REMAT_POLICIES:
            raise ConfigError(f"remat_policy={self.remat_policy!r} is not one of {REMAT_CHOICES}")
        if self.attention_impl is None:
            object.__setattr__(self, "attention_impl", "xla")
        if self.attention_impl not in ATTENTION_IMPLS:
            raise ConfigError(
                f"attention_impl={self.attention_impl!r} is not one of {ATTENTION_IMPLS}"
            )
        if self.architecture not in SUPPORTED_ARCHITECTURES.values():
            raise ConfigError(f"architecture={self.architecture!r}: use 'llama' or 'mistral'")

    @property
    def head_dim(self) -> int:
        return self.head_dim_override or self.hidden_size // self.num_heads

    def replace(self, **changes) -> ModelConfig:
        return dataclasses.replace(self, **changes)

    def num_params(self) -> int:
        """Parameter count (embeddings included; the output head once if untied)."""
        d, f, v, h = self.hidden_size, self.intermediate_size, self.vocab_size, self.head_dim
        attention = d * h * (self.num_heads * 2 + self.num_kv_heads * 2)
        per_layer = attention + 3 * d * f + 2 * d
        head = 0 if self.tie_word_embeddings else d * v
        return v * d + self.num_layers * per_layer + d + head

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> ModelConfig:
        """The config from ``dataclasses.asdict(config)`` after a JSON round trip (a checkpoint's
        record): ``rope_scaling`` comes back as a dict, tuples as lists."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(record) - names)
        if unknown:
            raise ConfigError(
                f"model config record has unknown keys {unknown}; it was written by another "
                "version of ropo_jax"
            )
        fields = {k: tuple(v) if isinstance(v, list) else v for k, v in record.items()}
        if isinstance(fields.get("rope_scaling"), dict):
            fields["rope_scaling"] = RopeScaling(**fields["rope_scaling"])
        if isinstance(fields.get("lora"), dict):
            fields["lora"] = LoraConfig(**fields["lora"])
        return cls(**fields)

    def record(self) -> dict[str, Any]:
        """The config as a checkpoint records it (``from_record`` reads it back); without
        ``lora`` when it is None, so checkpoints written before LoRA existed still match."""
        record = json.loads(json.dumps(dataclasses.asdict(self)))
        if record["lora"] is None:
            del record["lora"]
        return record

    @staticmethod
    def preset(name: str, **overrides) -> ModelConfig:
        if name not in PRESETS:
            raise ConfigError(f"unknown model preset {name!r}; choose one of {sorted(PRESETS)}")
        return PRESETS[name].replace(**overrides)


PRESETS: dict[str, ModelConfig] = {
    # For tests and the CPU benchmark: vocab ≤ 1024 keeps a CPU step fast. Their 2–4 layers are
    # unrolled: on a CPU the layer scan's loop (a dynamic slice of every weight and residual per
    # layer, no fusion across layers) cost ~25% of the tiny model's forward + backward at
    # 16 rows × 256 tokens (87 vs 114 ms); compiling 2–4 layers unrolled costs nothing.
    "tiny": ModelConfig(
        vocab_size=256,
        hidden_size=64,
        intermediate_size=128,
        num_layers=2,
        num_heads=4,
        num_kv_heads=2,
        max_position_embeddings=512,
        scan_layers=False,
    ),
    "small": ModelConfig(
        vocab_size=1024,
        hidden_size=256,
        intermediate_size=688,
        num_layers=4,
        num_heads=8,
        num_kv_heads=4,
        max_position_embeddings=1024,
        scan_layers=False,
    ),
    # SmolLM2-135M(-Instruct), the project's real checkpoint (scripts/fetch_smollm2.py): exactly
    # from_hf_config of its config.json (tests/models_test.py checks it when the checkpoint is
    # there), so the benchmarks' random-weight runs have the real model's shapes. 134.5M
    # parameters: remat "auto" resolves to qkv_attention. rms_norm_eps is 1e-5 as the
    # checkpoint's config.json spells it (the float32 nearest 1e-5, from the GGUF).
    "smollm2_135m": ModelConfig(
        vocab_size=49152,
        hidden_size=576,
        intermediate_size=1536,
        num_layers=30,
        num_heads=9,
        num_kv_heads=3,
        rope_theta=100000.0,
        rms_norm_eps=9.999999747378752e-06,
        tie_word_embeddings=True,
        max_position_embeddings=8192,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=2,
    ),
    "tinyllama_1b": ModelConfig(
        vocab_size=32000,
        hidden_size=2048,
        intermediate_size=5632,
        num_layers=22,
        num_heads=32,
        num_kv_heads=4,
        rms_norm_eps=1e-5,
        max_position_embeddings=2048,
    ),
    "llama2_7b": ModelConfig(
        vocab_size=32000,
        hidden_size=4096,
        intermediate_size=11008,
        num_layers=32,
        num_heads=32,
        num_kv_heads=32,
        rms_norm_eps=1e-5,
        max_position_embeddings=4096,
    ),
    "mistral_7b": ModelConfig(
        vocab_size=32000,
        hidden_size=4096,
        intermediate_size=14336,
        num_layers=32,
        num_heads=32,
        num_kv_heads=8,
        rms_norm_eps=1e-5,
        sliding_window=4096,
        max_position_embeddings=32768,
        architecture="mistral",
    ),
    "llama3_8b": ModelConfig(
        vocab_size=128256,
        hidden_size=4096,
        intermediate_size=14336,
        num_layers=32,
        num_heads=32,
        num_kv_heads=8,
        rope_theta=500000.0,
        rope_scaling=RopeScaling("llama3", 8.0, 1.0, 4.0, 8192),
        rms_norm_eps=1e-5,
        max_position_embeddings=131072,
        bos_token_id=128000,
        eos_token_id=128001,
    ),
}


def _rope_from_hf(hf: dict[str, Any], where: str) -> tuple[float, RopeScaling | None]:
    """(rope_theta, scaling) from 5.x ``rope_parameters`` or 4.x ``rope_theta``/``rope_scaling``."""
    params = hf.get("rope_parameters") or {}
    scaling = hf.get("rope_scaling") or (params if params.get("rope_type") != "default" else None)
    theta = float(params.get("rope_theta", hf.get("rope_theta", 10000.0)))
    if not scaling:
        return theta, None
    rope_type = scaling.get("rope_type", scaling.get("type", "default"))
    if rope_type == "default":
        return theta, None
    if rope_type == "llama3":
        return theta, RopeScaling(
            "llama3",
            float(scaling["factor"]),
            float(scaling["low_freq_factor"]),
            float(scaling["high_freq_factor"]),
            int(scaling["original_max_position_embeddings"]),
        )
    if rope_type == "linear":
        return theta, RopeScaling("linear", float(scaling["factor"]))
    raise ConfigError(
        f"{where}: rope scaling type {rope_type!r} is not supported (supported: default, "
        "linear, llama3)"
    )


def from_hf_config(hf: dict[str, Any] | str, **overrides) -> ModelConfig:
    """A ModelConfig from a HF ``config.json`` (a dict, a file, or a model directory)."""
    where = "config.json"
    if isinstance(hf, str):
        where = os.path.join(hf, "config.json") if os.path.isdir(hf) else hf
        if not os.path.exists(where):
            raise ConfigError(f"{where} not found: a model directory needs a config.json")
        with open(where) as f:
            hf = json.load(f)
    architectures = hf.get("architectures") or []
    model_type = hf.get("model_type")
    arch = next(
        (SUPPORTED_ARCHITECTURES[a] for a in architectures if a in SUPPORTED_ARCHITECTURES), None
    )
    if arch is None and not architectures and model_type in ("llama", "mistral"):
        arch = model_type
    if arch is None:
        raise ConfigError(
            f"{where}: architectures={architectures} (model_type={model_type!r}) is not supported; "
            f"supported: {sorted(SUPPORTED_ARCHITECTURES)}"
        )
    for key, bad in (("attention_bias", True), ("mlp_bias", True)):
        if hf.get(key) == bad:
            raise ConfigError(f"{where}: {key}=true is not supported by the Llama/Mistral port")
    if hf.get("hidden_act", "silu") != "silu":
        raise ConfigError(f"{where}: hidden_act={hf['hidden_act']!r} is not supported (need silu)")
    if hf.get("pretraining_tp", 1) != 1:
        raise ConfigError(
            f"{where}: pretraining_tp={hf['pretraining_tp']} is not supported (need 1)"
        )
    theta, scaling = _rope_from_hf(hf, where)
    num_heads = int(hf["num_attention_heads"])
    head_dim = hf.get("head_dim")
    if head_dim is not None and int(head_dim) == int(hf["hidden_size"]) // num_heads:
        head_dim = None
    eos = hf.get("eos_token_id")
    fields = dict(
        vocab_size=int(hf["vocab_size"]),
        hidden_size=int(hf["hidden_size"]),
        intermediate_size=int(hf["intermediate_size"]),
        num_layers=int(hf["num_hidden_layers"]),
        num_heads=num_heads,
        num_kv_heads=int(hf.get("num_key_value_heads") or num_heads),
        head_dim_override=None if head_dim is None else int(head_dim),
        rope_theta=theta,
        rope_scaling=scaling,
        rms_norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
        sliding_window=hf.get("sliding_window") if arch == "mistral" else None,
        tie_word_embeddings=bool(hf.get("tie_word_embeddings", False)),
        max_position_embeddings=int(hf.get("max_position_embeddings", 4096)),
        bos_token_id=hf.get("bos_token_id"),
        eos_token_id=eos[0] if isinstance(eos, list) else eos,
        pad_token_id=hf.get("pad_token_id"),
        architecture=arch,
    )
    fields.update(overrides)
    return ModelConfig(**fields)


def to_hf_config(config: ModelConfig, *, dtype: str = "float32") -> dict[str, Any]:
    """The ``config.json`` of ``config`` in transformers 5.x spelling (4.x keys added too, so
    either version loads it)."""
    rope_parameters: dict[str, Any] = {"rope_type": "default", "rope_theta": config.rope_theta}
    if config.rope_scaling is not None:
        s = config.rope_scaling
        rope_parameters = {
            "rope_type": s.rope_type,
            "factor": s.factor,
            "rope_theta": config.rope_theta,
        }
        if s.rope_type == "llama3":
            rope_parameters.update(
                low_freq_factor=s.low_freq_factor,
                high_freq_factor=s.high_freq_factor,
                original_max_position_embeddings=s.original_max_position_embeddings,
            )
    mistral = config.architecture == "mistral"
    hf = {
        "architectures": ["MistralForCausalLM" if mistral else "LlamaForCausalLM"],
        "model_type": "mistral" if mistral else "llama",
        "vocab_size": config.vocab_size,
        "hidden_size": config.hidden_size,
        "intermediate_size": config.intermediate_size,
        "num_hidden_layers": config.num_layers,
        "num_attention_heads": config.num_heads,
        "num_key_value_heads": config.num_kv_heads,
        "head_dim": config.head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": config.max_position_embeddings,
        "rms_norm_eps": config.rms_norm_eps,
        "rope_parameters": rope_parameters,
        "rope_theta": config.rope_theta,
        "tie_word_embeddings": config.tie_word_embeddings,
        "bos_token_id": config.bos_token_id,
        "eos_token_id": config.eos_token_id,
        "pad_token_id": config.pad_token_id,
        "attention_bias": False,
        "mlp_bias": False,
        "dtype": dtype,
        "torch_dtype": dtype,
    }
    if mistral:
        hf["sliding_window"] = config.sliding_window
    if config.rope_scaling is not None:
        hf["rope_scaling"] = {k: v for k, v in rope_parameters.items() if k != "rope_theta"}
    return hf
