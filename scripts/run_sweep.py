"""Runs a sweep: one independent ``python -m ropo_jax.main`` process per configuration.

A sweep file (``experiments/sweeps/NAME.py``) defines ``get_sweep(arg) -> list[dict]``: each dict
holds ``config`` (``experiments/FILE.py[:ARG]``), ``name`` (the run directory's name) and
``overrides`` (``{"key.sub": value}`` → ``--config.key.sub=value``). Every run writes its own
run directory under --root, so a sweep can equally be handed to any scheduler: ``--print_only``
prints the commands, one per line. Runs whose ``results.json`` exists are skipped (re-running a
sweep resumes it); a failed run is reported and the others go on.

``--records=results/NAME`` also keeps each finished run's *record* in the repository's
``results/``: ``results.json``, ``config.json`` and ``provenance.json`` (the command, the git
commit, package versions, the machine, wall time and per-stage times) under
``results/NAME/RUN/``, written the moment the run finishes. A run whose record exists is
skipped, so a sweep resumes from committed records alone, on any machine (run directories under
``--root`` hold checkpoints and models, and are not kept). One line per run, with an ETA.

    python scripts/run_sweep.py --root=runs/sweep --parallel=2 \\
        --sweep=experiments/sweeps/regime.py:regime,0.4 --records=results/regime
"""

import argparse
import importlib.util
import json
import os
import shlex
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run_records


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


def run_one(run: dict, root: str, records: str | None = None) -> tuple[str, int, float]:
    """(name, exit status, seconds) of one run; None seconds when it was already done."""
    workdir = os.path.join(root, run["name"])
    record_dir = os.path.join(records, run["name"]) if records else None
    if record_dir and run_records.exists(record_dir):
        return run["name"], 0, None
    if os.path.exists(os.path.join(workdir, "results.json")):
        if record_dir:  # finished before records were asked for: keep its record now
            run_records.write(record_dir, workdir, command_for(run, root), wall_seconds=None)
        return run["name"], 0, None
    cmd = command_for(run, root)
    os.makedirs(workdir, exist_ok=True)
    start = time.time()
    with open(os.path.join(workdir, "stdout.log"), "a") as log:
        rc = subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT)
    seconds = time.time() - start
    if rc == 0 and record_dir:
        run_records.write(record_dir, workdir, cmd, wall_seconds=seconds)
    return run["name"], rc, seconds


class Progress:
    """One line per finished run, with an ETA from the runs this invocation ran."""

    def __init__(self, total: int, parallel: int):
        self.total, self.parallel = total, parallel
        self.done, self.ran_seconds, self.lock = 0, [], threading.Lock()

    def line(self, name: str, rc: int, seconds: float | None) -> str:
        with self.lock:
            self.done += 1
            if seconds is not None:
                self.ran_seconds.append(seconds)
            left = self.total - self.done
            status = "ok" if rc == 0 else f"FAILED (exit {rc}; see {name}/stdout.log)"
            took = "done before" if seconds is None else f"{seconds:.0f}s"
            eta = ""
            if left and self.ran_seconds:
                mean = sum(self.ran_seconds) / len(self.ran_seconds)
                eta_s = mean * left / self.parallel
                eta = f", ETA {eta_s / 60:.0f} min for {left} left"
            return f"[{self.done}/{self.total}] {name}: {status} ({took}{eta})"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sweep", required=True, help="experiments/sweeps/NAME.py[:ARG]")
    parser.add_argument("--root", required=True, help="directory holding one run directory per run")
    parser.add_argument("--parallel", type=int, default=1, help="processes at a time")
    parser.add_argument("--print_only", action="store_true", help="print the commands and exit")
    parser.add_argument(
        "--records",
        help="results/NAME: keep each finished run's record there, and skip runs that have one",
    )
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
    progress = Progress(len(runs), max(1, args.parallel))
    with ThreadPoolExecutor(max_workers=max(1, args.parallel)) as pool:
        futures = [pool.submit(run_one, r, args.root, args.records) for r in runs]
        for future in as_completed(futures):
            name, rc, seconds = future.result()
            print(progress.line(name, rc, seconds), flush=True)
            if rc != 0:
                failures.append(name)
    if failures:
        raise SystemExit(f"{len(failures)} of {len(runs)} runs failed: {failures[:10]}")


if __name__ == "__main__":
    main()
