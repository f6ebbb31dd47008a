"""The contract kit itself (:mod:`bench.testing`)."""

from __future__ import annotations

from bench.testing import Blobs, registered
from strategies import STRATEGIES
from strategies.base import Selection, Strategy
from tasks import TASKS


class Offset(Strategy):
    name = "offset"
    description = "the unlabeled pool from an offset (a test strategy)"

    def select(self, context, k):
        return Selection(indices=context.unlabeled[:k])


def test_registered_registers_classes_for_the_block_only():
    assert "blobs" not in TASKS and "offset" not in STRATEGIES
    with registered(Blobs, Offset):
        assert TASKS.get("blobs") is Blobs and STRATEGIES.get("offset") is Offset
        with registered(Blobs):  # already registered: nothing changes
            assert TASKS.get("blobs") is Blobs
    assert "blobs" not in TASKS and "offset" not in STRATEGIES


def test_the_blobs_fixture_registers_blobs_one_way(blobs_task):
    assert isinstance(blobs_task, Blobs) and TASKS.get("blobs") is Blobs
