"""The advisor's quality study (bench/advise_quality.py), smoke-sized: the CPU-bound workload
with a 3 s trace and a three-pool grid runs to the end against real servers, and the advised
pool's planned and measured memory stay within the budget. Timing is the study's business
(`python -m bench.advise_quality`), never asserted here."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/ lives beside src/

from bench.advise_quality import WORKLOADS, markdown, study

pytestmark = pytest.mark.slow


@pytest.mark.timeout(300)
def test_quick_cpu_bound_study_completes_within_the_memory_budget():
    result = study(WORKLOADS["cpu"], 3.0, True, lambda _: None)
    roles = [run.pool.role for run in result.runs]
    assert roles[0] == "default" and roles[-1] == "advised"
    assert {"apache2buddy", "gunicorn"} <= set(roles)
    assert all(run.requests > 100 for run in result.runs)  # the same trace for every pool
    assert result.advice["fits"]
    assert result.planned_kib() <= result.budget_kib
    assert result.advised().peak_pss_kib <= result.budget_kib
    assert result.verdict()[1]
    table = markdown(result)
    assert "**advised**" in table and "**best**" in table
