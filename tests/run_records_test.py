"""``scripts/run_sweep.py --records``: each finished run's record (results, config, provenance)
kept under ``results/SWEEP/RUN/``, and a sweep resumed from records alone. The runs here are
stand-in commands that write what a run writes, so the test checks the bookkeeping only."""

import importlib.util
import json
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SWEEP = """
def get_sweep(arg=None):
    return [
        {"name": f"dpo_seed{s}", "config": "experiments/smoke.py", "overrides": {"seed": s}}
        for s in (1, 2, 3)
    ]
"""

# What a finished run leaves in its directory; run 3 fails.
FAKE_RUN = """
import json, os, sys
workdir = sys.argv[1]
if workdir.endswith("seed3"):
    sys.exit(7)
json.dump({"seed": 1}, open(os.path.join(workdir, "config.json"), "w"))
json.dump({"stage_seconds": {"data": 1.5}, "devices": {"platform": "cpu"}},
          open(os.path.join(workdir, "stage_times.json"), "w"))
json.dump({"eval": {"gold_win_rate_vs_sft": 0.6}}, open(os.path.join(workdir, "results.json"), "w"))
"""


def _sweep_module():
    path = os.path.join(ROOT, "scripts", "run_sweep.py")
    spec = importlib.util.spec_from_file_location("run_sweep", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _main(module, monkeypatch, *args):
    monkeypatch.setattr(sys, "argv", ["run_sweep.py", *args])
    module.main()


@pytest.fixture
def sweep(tmp_path, monkeypatch):
    module = _sweep_module()
    calls = []

    def fake_command(run, root, python=sys.executable):
        calls.append(run["name"])
        return [python, "-c", FAKE_RUN, os.path.join(root, run["name"])]

    monkeypatch.setattr(module, "command_for", fake_command)
    path = tmp_path / "sweep.py"
    path.write_text(SWEEP)
    return module, str(path), calls


def test_records_are_written_as_runs_finish_and_a_failed_run_has_none(
    sweep, tmp_path, monkeypatch, capsys
):
    module, path, calls = sweep
    records = tmp_path / "results" / "toy"
    args = (f"--sweep={path}", f"--root={tmp_path / 'runs'}", f"--records={records}")
    with pytest.raises(SystemExit, match="1 of 3 runs failed"):
        _main(module, monkeypatch, *args)
    assert sorted(calls) == ["dpo_seed1", "dpo_seed2", "dpo_seed3"]
    assert sorted(os.listdir(records)) == ["dpo_seed1", "dpo_seed2"]
    record = records / "dpo_seed1"
    assert sorted(os.listdir(record)) == ["config.json", "provenance.json", "results.json"]
    provenance = json.loads((record / "provenance.json").read_text())
    assert provenance["command"].startswith("python -c ")
    assert len(provenance["git"]["commit"]) == 40 and isinstance(provenance["git"]["dirty"], bool)
    assert provenance["packages"]["jax"] and provenance["machine"]["cpu_count"] >= 1
    assert provenance["wall_seconds"] > 0 and provenance["stage_seconds"] == {"data": 1.5}
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 and any("FAILED (exit 7" in line for line in lines)
    assert any("ETA" in line for line in lines[:2])


def test_a_sweep_resumes_from_records_alone(sweep, tmp_path, monkeypatch, capsys):
    module, path, calls = sweep
    records = tmp_path / "results" / "toy"
    first_root, fresh_root = tmp_path / "runs", tmp_path / "fresh_clone_runs"
    with pytest.raises(SystemExit):
        _main(
            module, monkeypatch, f"--sweep={path}", f"--root={first_root}", f"--records={records}"
        )
    calls.clear()
    capsys.readouterr()
    # No run directories at all (a fresh clone): only the run without a record runs again.
    with pytest.raises(SystemExit, match="1 of 3 runs failed"):
        _main(
            module, monkeypatch, f"--sweep={path}", f"--root={fresh_root}", f"--records={records}"
        )
    assert calls == ["dpo_seed3"]
    assert sum("done before" in line for line in capsys.readouterr().out.splitlines()) == 2
    # A run finished before records were asked for gets its record from its run directory.
    other = tmp_path / "results" / "other"
    calls.clear()
    with pytest.raises(SystemExit):
        _main(module, monkeypatch, f"--sweep={path}", f"--root={first_root}", f"--records={other}")
    assert sorted(os.listdir(other)) == ["dpo_seed1", "dpo_seed2"]  # (commands named, not run)
    assert "done before" in capsys.readouterr().out
    assert json.loads((other / "dpo_seed1" / "provenance.json").read_text())["wall_seconds"] is None
