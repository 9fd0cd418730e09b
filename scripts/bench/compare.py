"""ropo_jax's train step vs TRL's DPOTrainer, side by side in one invocation.

    python scripts/bench/compare.py --configs=tiny:8:32:32,tiny:16:64:64 --steps=10 \\
        [--rounds=2] [--online_ref] [--loss=dpo] [--dtype=float32] \\
        [--trl_omp_wait_policy=PASSIVE] [--remat=none] [--trl_gradient_checkpointing=true]

Each configuration ``preset:pairs:prompt_len:response_len`` runs scripts/bench/train_step.py
and scripts/bench/trl_dpo.py as subprocesses, one after the other (never concurrently: they
would share the cores), with the same flags. ``--rounds=R`` repeats the pair R times,
alternating which goes first, so slow drift of a shared machine's load hits both alike.

Per configuration: each side's median step time over all its timed steps (all rounds pooled),
tokens/s at that median (the same 2·pairs·seq_len tokens on both sides), and
``speedup`` = TRL median step time ÷ ropo_jax median step time (= ropo_jax tokens/s ÷ TRL
tokens/s); ``speedup_per_round`` are the ratios of the medians measured in the same round.
Prints a Markdown table and one JSON line (also written to ``--json_out`` when given).
"""

import json
import os
import statistics
import subprocess
import sys
import time

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common

from ropo_jax.models.config import ATTENTION_IMPLS

_CONFIGS = flags.DEFINE_list(
    "configs", ["tiny:8:32:32"], "preset:pairs:prompt_len:response_len, comma-separated."
)
_STEPS = flags.DEFINE_integer("steps", 10, "Timed steps per run.")
_WARMUP = flags.DEFINE_integer("warmup", 2, "Untimed steps per run.")
_ROUNDS = flags.DEFINE_integer("rounds", 1, "Runs of each side per configuration (alternating).")
_LOSS = flags.DEFINE_string("loss", "dpo", "Loss (a ropo_jax.losses.LOSSES name).")
_DTYPE = flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "Compute dtype.")
_REMAT = flags.DEFINE_string(
    "remat", "auto", "Remat policy (auto: by model size; TRL: checkpointing unless none)."
)
_ONLINE = flags.DEFINE_bool("online_ref", False, "Reference forward inside the step.")
_MICRO = flags.DEFINE_integer("micro_batches", 1, "Gradient accumulation micro-batches.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the weights and tokens.")
_ATTENTION = flags.DEFINE_enum(
    "ropo_attention_impl", "auto", list(ATTENTION_IMPLS), "train_step.py --attention_impl."
)
_TRL_CHECKPOINTING = flags.DEFINE_enum(
    "trl_gradient_checkpointing",
    "auto",
    ["auto", "true", "false"],
    "trl_dpo.py --gradient_checkpointing (auto: on unless --remat resolves to none).",
)
_TORCH_THREADS = flags.DEFINE_integer("trl_torch_threads", 0, "trl_dpo.py --torch_threads.")
_OMP_WAIT = flags.DEFINE_enum(
    "trl_omp_wait_policy", None, ["ACTIVE", "PASSIVE"], "trl_dpo.py --omp_wait_policy."
)
_TIMEOUT = flags.DEFINE_integer("timeout_s", 3600, "Limit per benchmark subprocess.")
_JSON_OUT = flags.DEFINE_string("json_out", None, "Also write the JSON summary here.")

SCRIPTS = {"ropo_jax": "train_step.py", "trl": "trl_dpo.py"}


def parse_config(spec: str) -> dict:
    try:
        preset, pairs, prompt_len, response_len = spec.split(":")
        return {
            "preset": preset,
            "pairs": int(pairs),
            "prompt_len": int(prompt_len),
            "response_len": int(response_len),
        }
    except ValueError:
        raise app.UsageError(
            f"--configs entry {spec!r} is not preset:pairs:prompt_len:response_len"
        ) from None


def run_one(impl: str, config: dict) -> dict:
    """Runs one benchmark script and returns its JSON line."""
    args = [
        sys.executable,
        os.path.join(common.BENCH_DIR, SCRIPTS[impl]),
        *(f"--{key}={value}" for key, value in config.items()),
        f"--steps={_STEPS.value}",
        f"--warmup={_WARMUP.value}",
        f"--loss={_LOSS.value}",
        f"--dtype={_DTYPE.value}",
        f"--remat={_REMAT.value}",
        f"--micro_batches={_MICRO.value}",
        f"--seed={_SEED.value}",
        "--online_ref" if _ONLINE.value else "--noonline_ref",
    ]
    if impl == "ropo_jax" and _ATTENTION.value:
        args.append(f"--attention_impl={_ATTENTION.value}")
    if impl == "trl":
        args.append(f"--torch_threads={_TORCH_THREADS.value}")
        args.append(f"--gradient_checkpointing={_TRL_CHECKPOINTING.value}")
        if _OMP_WAIT.value:
            args.append(f"--omp_wait_policy={_OMP_WAIT.value}")
    proc = subprocess.run(args, capture_output=True, text=True, timeout=_TIMEOUT.value)
    rows = [r for r in common.parse_json_lines(proc.stdout) if r.get("impl") == impl]
    if proc.returncode != 0 or not rows:
        sys.stderr.write(proc.stderr[-5000:])
        raise RuntimeError(f"{' '.join(args)} failed (exit {proc.returncode})")
    return rows[-1]


def summarise(config: dict, runs: dict[str, list[dict]]) -> dict:
    out = dict(config, seq_len=config["prompt_len"] + config["response_len"])
    tokens = 2 * config["pairs"] * out["seq_len"]
    for impl, rows in runs.items():
        times = [t for row in rows for t in row["step_times_s"]]
        median = statistics.median(times)
        out[impl] = {
            "step_time_s_median": median,
            "step_time_s_min": min(times),
            "step_time_s_max": max(times),
            "tokens_per_s": tokens / median,
            "pairs_per_s": config["pairs"] / median,
            "runs": rows,
        }
    ours, theirs = out["ropo_jax"], out["trl"]
    out["speedup"] = theirs["step_time_s_median"] / ours["step_time_s_median"]
    out["speedup_per_round"] = [
        t["step_time_s_median"] / o["step_time_s_median"]
        for o, t in zip(runs["ropo_jax"], runs["trl"], strict=True)
    ]
    return out


def main(argv):
    del argv
    configs = [parse_config(spec) for spec in _CONFIGS.value]
    results = []
    for config in configs:
        runs = {"ropo_jax": [], "trl": []}
        for r in range(_ROUNDS.value):
            order = ["ropo_jax", "trl"] if r % 2 == 0 else ["trl", "ropo_jax"]
            for impl in order:
                start = time.perf_counter()
                runs[impl].append(run_one(impl, config))
                print(
                    f"# {impl} {config} round {r + 1}: "
                    f"{runs[impl][-1]['step_time_s_median'] * 1e3:.1f} ms/step "
                    f"({time.perf_counter() - start:.0f} s)",
                    file=sys.stderr,
                    flush=True,
                )
        results.append(summarise(config, runs))

    first = results[0]
    device = first["ropo_jax"]["runs"][0]["device"]
    print(
        f"\n{device}; loss={_LOSS.value} dtype={_DTYPE.value} remat={_REMAT.value} "
        f"online_ref={_ONLINE.value} micro_batches={_MICRO.value} TRL gradient_checkpointing="
        f"{first['trl']['runs'][0]['gradient_checkpointing']}; medians over "
        f"{_ROUNDS.value}×{_STEPS.value} steps\n"
    )
    print(
        "| preset | pairs | seq | ropo_jax ms/step | TRL ms/step | ropo_jax tok/s | TRL tok/s "
        "| speedup (TRL time ÷ ropo_jax time) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        o, t = r["ropo_jax"], r["trl"]
        rounds = ", ".join(f"{x:.2f}" for x in r["speedup_per_round"])
        print(
            f"| {r['preset']} | {r['pairs']} | {r['seq_len']} | "
            f"{o['step_time_s_median'] * 1e3:.1f} | {t['step_time_s_median'] * 1e3:.1f} | "
            f"{o['tokens_per_s']:.0f} | {t['tokens_per_s']:.0f} | "
            f"{r['speedup']:.2f}× (rounds: {rounds}) |"
        )
    summary = {
        "device": device,
        "loss": _LOSS.value,
        "dtype": _DTYPE.value,
        "remat": _REMAT.value,
        "online_ref": _ONLINE.value,
        "micro_batches": _MICRO.value,
        "steps": _STEPS.value,
        "warmup": _WARMUP.value,
        "rounds": _ROUNDS.value,
        "ropo_attention_impl": _ATTENTION.value,
        "trl_gradient_checkpointing": _TRL_CHECKPOINTING.value,
        "trl_torch_threads": _TORCH_THREADS.value,
        "trl_omp_wait_policy": _OMP_WAIT.value,
        "configs": results,
    }
    line = json.dumps(summary)
    print(line, flush=True)
    if _JSON_OUT.value:
        with open(_JSON_OUT.value, "w") as f:
            f.write(line + "\n")


if __name__ == "__main__":
    app.run(main)
