"""docs/RESULTS.md's and README.md's generated tables agree with the committed run records under
results/: every block marked ``<!-- results_table ARGS -->`` re-renders to exactly what the page
shows."""

import os
import re

import pytest
from script_runner import ROOT, run_script


@pytest.mark.e2e
@pytest.mark.parametrize("page", ["docs/RESULTS.md", "README.md"])
def test_generated_tables_match_the_records(page):
    with open(os.path.join(ROOT, page), encoding="utf-8") as f:
        blocks = len(re.findall(r"^<!-- results_table ", f.read(), re.M))
    assert blocks > 0
    out = run_script("scripts/results_table.py", f"--check={page}")
    assert f"{blocks} generated blocks match their records" in out.stdout
