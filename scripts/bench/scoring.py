"""Forward-only scoring throughput: sequence log-probs of every pair of a data set with
``ropo_jax.inference.scoring`` (what the reference cache and ROPO's per-example scores run),
optionally against a transformers forward on the same weights and tokens.

    python scripts/bench/scoring.py --preset=tiny --examples=64 --batch_size=8 \\
        --prompt_len=32 --response_len=32 [--skip_transformers]

Data: ``--examples`` random pairs (scripts/bench/common.py; every sequence exactly
prompt_len + response_len tokens, so no padding anywhere) as an in-memory ``PreferenceData``.
Weights: ``common.random_params(--seed)`` (the train-step benchmarks' weights).

ropo_jax, two numbers:

- ``pipeline``: ``scoring.sequence_logps_over`` end to end — the grain loader, collation,
  host→device transfer, the jitted forward and the per-batch fetch of the log-probs — over the
  whole data set; median over ``--repeats`` passes after one warm-up pass (compilation);
- ``core``: its jitted function (``scoring._slot_logps``: ``train.sequence_logps``, hidden
  states and chunked log-probs) on one device batch, ``block_until_ready`` per call; median.

transformers (``AutoModelForCausalLM``, eager PyTorch, same device kind): per batch the usual
scoring forward — logits [2B, T, V], ``log_softmax``, gather the next tokens, sum over response
positions — on pre-built tensors under ``torch.no_grad``; median per batch (the ``core``
counterpart). bfloat16 runs under ``torch.autocast`` with float32 weights (ropo_jax: bf16
compute, float32 params). With float32 both sides' log-probs are compared
(``max_abs_logp_diff``): a check that the two do the same work.

Prints one JSON line per implementation, then one with the ratio of the core throughputs.
"""

import os
import statistics
import sys
import tempfile
import time

# Two frameworks may share one accelerator here: JAX must not reserve most of its memory.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common

from ropo_jax import models
from ropo_jax.data import batching
from ropo_jax.data.prepared import PreferenceData
from ropo_jax.inference import scoring
from ropo_jax.training import metrics

_PRESET = flags.DEFINE_string("preset", "tiny", "Model preset (random weights).")
_EXAMPLES = flags.DEFINE_integer("examples", 64, "Pairs in the scored data set.")
_BATCH = flags.DEFINE_integer("batch_size", 8, "Pairs per forward batch (2× sequences).")
_PROMPT = flags.DEFINE_integer("prompt_len", 32, "Prompt tokens of every pair.")
_RESPONSE = flags.DEFINE_integer("response_len", 32, "Tokens of every response (EOS included).")
_DTYPE = flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "Compute dtype.")
_CHUNK = flags.DEFINE_integer("chunk_size", 256, "Vocabulary chunk of the log-probs.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed passes over the data set.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the weights and tokens.")
_SKIP_TORCH = flags.DEFINE_bool("skip_transformers", False, "Time ropo_jax only.")
_THREADS = flags.DEFINE_integer("torch_threads", 0, "torch.set_num_threads (0: default).")
_OMP_WAIT = flags.DEFINE_enum(
    "omp_wait_policy", None, ["ACTIVE", "PASSIVE"], "OMP_WAIT_POLICY for PyTorch (see trl_dpo.py)."
)


def make_data(config):
    prompts, chosen, rejected = common.random_pairs(
        config, _EXAMPLES.value, _PROMPT.value, _RESPONSE.value, seed=_SEED.value
    )
    manifest = {
        "pad_id": 0,
        "bos_id": config.bos_token_id,
        "eos_id": config.eos_token_id,
        "vocab_size": config.vocab_size,
        "max_length": _PROMPT.value + _RESPONSE.value,
    }
    ids = [f"pair{i}" for i in range(_EXAMPLES.value)]
    data = PreferenceData.from_token_lists(
        ids, list(prompts), list(chosen), list(rejected), manifest=manifest
    )
    return data, (prompts, chosen, rejected)


def throughput(row: dict, seconds: float, pairs: int, prefix: str = "") -> None:
    tokens = 2 * pairs * (_PROMPT.value + _RESPONSE.value)
    row[f"{prefix}pairs_per_s"] = pairs / seconds
    row[f"{prefix}tokens_per_s"] = tokens / seconds


def common_fields(impl: str, device: str, config) -> dict:
    return {
        "impl": impl,
        "device": device,
        "preset": _PRESET.value,
        "examples": _EXAMPLES.value,
        "batch_size": _BATCH.value,
        "prompt_len": _PROMPT.value,
        "response_len": _RESPONSE.value,
        "seq_len": _PROMPT.value + _RESPONSE.value,
        "dtype": _DTYPE.value,
        "num_params": config.num_params(),
    }


def time_ropo_jax(config, params, data) -> tuple[dict, np.ndarray]:
    def score():
        return scoring.sequence_logps_over(
            config, params, data, batch_size=_BATCH.value, mode="padded", chunk_size=_CHUNK.value
        )

    start = time.perf_counter()
    chosen_N, rejected_N = score()  # compiles
    first_pass_s = time.perf_counter() - start
    passes = []
    for _ in range(_REPEATS.value):
        start = time.perf_counter()
        score()
        passes.append(time.perf_counter() - start)

    # The core: the same jitted function on one resident batch.
    rows = [(i, *data.pair(i), False) for i in range(_BATCH.value)]
    host = batching.collate(
        rows,
        num_pairs=_BATCH.value,
        seq_len=_PROMPT.value + _RESPONSE.value,
        pad_id=0,
        completion_len=_RESPONSE.value,
    )
    batch = jax.tree.map(jnp.asarray, host)
    jax.block_until_ready(scoring._slot_logps(config, _CHUNK.value, False, params, batch))
    calls = []
    for _ in range(max(_REPEATS.value * (_EXAMPLES.value // _BATCH.value), 3)):
        start = time.perf_counter()
        jax.block_until_ready(scoring._slot_logps(config, _CHUNK.value, False, params, batch))
        calls.append(time.perf_counter() - start)

    device = jax.devices()[0]
    name = common.cpu_device_name() if device.platform == "cpu" else device.device_kind
    row = common_fields("ropo_jax", name, config)
    row["batch_time_s_median"] = statistics.median(calls)
    row["batch_time_s_min"] = min(calls)
    row["batch_time_s_max"] = max(calls)
    throughput(row, row["batch_time_s_median"], _BATCH.value)
    row["pipeline_pass_s_median"] = statistics.median(passes)
    throughput(row, row["pipeline_pass_s_median"], _EXAMPLES.value, prefix="pipeline_")
    row["first_pass_s"] = first_pass_s  # compilation included
    flops = metrics.flops_per_token(config, row["seq_len"], backward=False)
    peak = metrics.device_peak_flops(device)
    row["mfu"] = flops * row["tokens_per_s"] / peak if peak else None
    return row, np.concatenate([chosen_N, rejected_N])


def time_transformers(config, params, pairs) -> tuple[dict, np.ndarray]:
    import contextlib

    common.set_omp_wait_policy(_OMP_WAIT.value)
    import torch

    if _THREADS.value > 0:
        torch.set_num_threads(_THREADS.value)
    from transformers import AutoModelForCausalLM

    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    with tempfile.TemporaryDirectory() as directory:
        models.save_hf(config, params, directory)
        model = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32)
    model = model.to(device).eval()
    prompts, chosen, rejected = pairs
    p = _PROMPT.value
    batches = []
    for start in range(0, _EXAMPLES.value, _BATCH.value):
        part = slice(start, start + _BATCH.value)
        rows = np.concatenate(
            [
                np.concatenate([prompts[part], chosen[part]], 1),
                np.concatenate([prompts[part], rejected[part]], 1),
            ]
        )
        batches.append(torch.tensor(rows, dtype=torch.long, device=device))
    autocast = (
        torch.autocast(device, dtype=torch.bfloat16)
        if _DTYPE.value == "bfloat16"
        else contextlib.nullcontext()
    )

    def score(tokens_RT):
        with torch.no_grad(), autocast:
            logits_RTV = model(input_ids=tokens_RT).logits.float()
            logps_RTV = torch.log_softmax(logits_RTV[:, :-1], dim=-1)
            token_logps_RT = logps_RTV.gather(-1, tokens_RT[:, 1:, None])[..., 0]
            # Targets from position p on are the response tokens.
            out = token_logps_RT[:, p - 1 :].sum(-1)
        if cuda:
            torch.cuda.synchronize()
        return out

    score(batches[0])  # warm-up
    calls, logps = [], None
    for _ in range(_REPEATS.value):
        outs = []
        for tokens_RT in batches:
            start = time.perf_counter()
            outs.append(score(tokens_RT))
            calls.append(time.perf_counter() - start)
        logps = outs
    # Batch rows are [chosen of the batch, rejected of the batch]: back to (chosen_N, rejected_N).
    halves = [o.float().cpu().numpy().reshape(2, -1) for o in logps]
    logps_S = np.concatenate([h[0] for h in halves] + [h[1] for h in halves])
    name = torch.cuda.get_device_name() if cuda else common.cpu_device_name()
    row = common_fields("transformers", name, config)
    row["batch_time_s_median"] = statistics.median(calls)
    row["batch_time_s_min"] = min(calls)
    row["batch_time_s_max"] = max(calls)
    throughput(row, row["batch_time_s_median"], _BATCH.value)
    row["torch_threads"] = torch.get_num_threads()
    row["omp_wait_policy"] = os.environ.get("OMP_WAIT_POLICY")
    return row, logps_S


def main(argv):
    del argv
    if _EXAMPLES.value % _BATCH.value:
        raise app.UsageError("--examples must be a multiple of --batch_size")
    config = models.ModelConfig.preset(_PRESET.value, dtype=_DTYPE.value)
    host_params = common.random_params(config, _SEED.value)
    params = jax.tree.map(jnp.asarray, host_params)
    data, pairs = make_data(config)
    ours, our_logps = time_ropo_jax(config, params, data)
    common.print_json(ours)
    if _SKIP_TORCH.value:
        return
    theirs, their_logps = time_transformers(config, host_params, pairs)
    common.print_json(theirs)
    common.print_json(
        {
            "ratio_pairs_per_s": ours["pairs_per_s"] / theirs["pairs_per_s"],
            "max_abs_logp_diff": float(np.max(np.abs(our_logps - their_logps)))
            if _DTYPE.value == "float32"
            else None,
        }
    )


if __name__ == "__main__":
    app.run(main)
