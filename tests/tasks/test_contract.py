"""Every registered task meets the shipped contract (:mod:`bench.testing`) on its real data.

The data come from ``$BENCH_DATA`` (CI: ``../shared/data``); a task whose data are absent is
skipped with the reason, never silently. IVUS needs no data (its cohort is generated).
"""

from __future__ import annotations

import pytest

from bench.testing import TASK_CHECKS, returns_k_samples_the_harness_accepts
from tasks import list_tasks
from tasks.base import DataNotFoundError


def run_or_skip(check, name: str) -> None:
    try:
        check(name)
    except DataNotFoundError as err:
        pytest.skip(f"{name} data not found, so its contract is not checked here: {err}")


@pytest.mark.parametrize("check", TASK_CHECKS.values(), ids=TASK_CHECKS.keys())
@pytest.mark.parametrize("name", list_tasks())
def test_task_meets_the_contract(name, check, shared_data):
    run_or_skip(check, name)


@pytest.mark.parametrize("name", list_tasks())
def test_task_runs_two_rounds_in_the_harness(name, shared_data):
    run_or_skip(lambda task: returns_k_samples_the_harness_accepts("random", task), name)
