"""Wall-clock seconds of each stage of a run, in ``WORKDIR/stage_times.json``.

The file is rewritten when each stage ends, so a run that stops part-way still says where its
time went; a resumed run records the times of its own attempt (a stage resumed from a
checkpoint is cheaper than a fresh one). It also names the devices the run used, which the run
records of ``scripts/run_sweep.py --records`` carry as their provenance.
"""

from __future__ import annotations

import contextlib
import json
import os
import time

import jax


class StageTimes:
    def __init__(self, workdir: str, *, write: bool):
        self.path = os.path.join(workdir, "stage_times.json")
        self.write = write
        self.seconds: dict[str, float] = {}
        self.start = time.perf_counter()

    @contextlib.contextmanager
    def stage(self, name: str):
        start = time.perf_counter()
        yield
        self.seconds[name] = round(time.perf_counter() - start, 2)
        self._write()

    def _write(self) -> None:
        if not self.write:
            return
        devices = jax.devices()
        record = {
            "stage_seconds": self.seconds,
            "total_seconds": round(time.perf_counter() - self.start, 2),
            "devices": {
                "platform": devices[0].platform,
                "kind": devices[0].device_kind,
                "count": len(devices),
                "processes": jax.process_count(),
            },
        }
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(record, f, indent=1)
        os.replace(tmp, self.path)
