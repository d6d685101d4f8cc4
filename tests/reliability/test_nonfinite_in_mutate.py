"""`make mutate` runs the non-finite guard's two-rank agreement test (as the README says).

Kept out of the files the mutation run copies and runs: it imports the benchmark itself.
"""

from __future__ import annotations

import re

from benchmarks.mutate import FAST, TARGETS
from tests.reliability import test_nonfinite_ranks


def test_make_mutate_runs_the_two_rank_test():
    """The nonfinite mutation run lists the file, and no marker of the test is one that the run leaves out."""
    test = test_nonfinite_ranks.test_two_ranks_agree_on_the_culprit
    marks = {m.name for m in getattr(test, "pytestmark", [])}
    marks |= {m.name for m in getattr(test_nonfinite_ranks, "pytestmark", [])}
    assert "tests/reliability/test_nonfinite_ranks.py" in TARGETS["nonfinite"].tests
    assert marks.isdisjoint(re.findall(r"not (\w+)", FAST))
