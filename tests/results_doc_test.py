"""docs/RESULTS.md's generated tables agree with the committed run records under results/: every
block marked ``<!-- results_table ARGS -->`` re-renders to exactly what the page shows."""

import os
import re

import pytest
from script_runner import ROOT, run_script


@pytest.mark.e2e
def test_results_md_tables_match_the_records():
    with open(os.path.join(ROOT, "docs", "RESULTS.md"), encoding="utf-8") as f:
        blocks = len(re.findall(r"^<!-- results_table ", f.read(), re.M))
    out = run_script("scripts/results_table.py", "--check=docs/RESULTS.md")
    assert f"{blocks} generated blocks match their records" in out.stdout
