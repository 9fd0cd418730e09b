"""Runs a sweep: one independent ``python -m ropo_jax.main`` process per configuration.

A sweep file (``experiments/sweeps/NAME.py``) defines ``get_sweep(arg) -> list[dict]``: each dict
holds ``config`` (``experiments/FILE.py[:ARG]``), ``name`` (the run directory's name) and
``overrides`` (``{"key.sub": value}`` → ``--config.key.sub=value``). Every run writes its own
run directory under --root, so a sweep can equally be handed to any scheduler: ``--print_only``
prints the commands, one per line. Runs whose ``results.json`` exists are skipped (re-running a
sweep resumes it); a failed run is reported and the others go on.

    python scripts/run_sweep.py --root=runs/sweep --parallel=2 \\
        --sweep=experiments/sweeps/regime.py:regime,0.4
"""

import argparse
import importlib.util
import json
import os
import shlex
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor


def load_sweep(spec: str) -> list[dict]:
    path, _, arg = spec.partition(":")
    if not os.path.exists(path):
        raise SystemExit(f"sweep file {path} not found")
    module_spec = importlib.util.spec_from_file_location("sweep_module", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    if not hasattr(module, "get_sweep"):
        raise SystemExit(f"{path} defines no get_sweep(arg)")
    runs = module.get_sweep(arg or None)
    names = [run["name"] for run in runs]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise SystemExit(f"{path}: run names must be unique; repeated: {duplicates[:5]}")
    return runs


def command_for(run: dict, root: str, python: str = sys.executable) -> list[str]:
    workdir = os.path.join(root, run["name"])
    cmd = [python, "-m", "ropo_jax.main", f"--config={run['config']}", f"--workdir={workdir}"]
    for key, value in sorted(run.get("overrides", {}).items()):
        cmd.append(f"--config.{key}={value}")
    return cmd


def run_one(run: dict, root: str) -> tuple[str, int, float]:
    workdir = os.path.join(root, run["name"])
    if os.path.exists(os.path.join(workdir, "results.json")):
        return run["name"], 0, 0.0
    os.makedirs(workdir, exist_ok=True)
    start = time.time()
    with open(os.path.join(workdir, "stdout.log"), "a") as log:
        rc = subprocess.call(command_for(run, root), stdout=log, stderr=subprocess.STDOUT)
    return run["name"], rc, time.time() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sweep", required=True, help="experiments/sweeps/NAME.py[:ARG]")
    parser.add_argument("--root", required=True, help="directory holding one run directory per run")
    parser.add_argument("--parallel", type=int, default=1, help="processes at a time")
    parser.add_argument("--print_only", action="store_true", help="print the commands and exit")
    args = parser.parse_args()
    runs = load_sweep(args.sweep)
    if args.print_only:
        for run in runs:
            print(shlex.join(command_for(run, args.root)))
        return
    os.makedirs(args.root, exist_ok=True)
    with open(os.path.join(args.root, "sweep.json"), "w") as f:
        json.dump({"sweep": args.sweep, "runs": runs}, f, indent=1)
    failures = []
    with ThreadPoolExecutor(max_workers=max(1, args.parallel)) as pool:
        for done, (name, rc, seconds) in enumerate(
            pool.map(lambda r: run_one(r, args.root), runs), start=1
        ):
            status = "ok" if rc == 0 else f"FAILED (exit {rc}; see {name}/stdout.log)"
            print(f"[{done}/{len(runs)}] {name}: {status} {seconds:.0f}s", flush=True)
            if rc != 0:
                failures.append(name)
    if failures:
        raise SystemExit(f"{len(failures)} of {len(runs)} runs failed: {failures[:10]}")


if __name__ == "__main__":
    main()
