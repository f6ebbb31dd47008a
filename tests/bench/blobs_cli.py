"""The command line with the test-only ``blobs`` task and the ``slow`` and ``sleeps`` strategies registered, for
tests that run the harness in a subprocess: ``python -c "from tests.bench.blobs_cli import
main; main()" run ...``. Defined in an importable module so worker processes find them too."""

from __future__ import annotations

import sys
import time

from bench.cli import main as cli
from bench.testing import Blobs, registered
from strategies.random import RandomSampling


class SlowRandom(RandomSampling):
    """Random sampling that takes 0.3 s to select, so that a test can kill a run mid-way."""

    name = "slow"

    def select(self, context, k):
        time.sleep(0.3)
        return super().select(context, k)


class Sleeps(RandomSampling):
    """A hung strategy: it sleeps ten minutes whenever it selects (for ``--unit-timeout``)."""

    name = "sleeps"

    def select(self, context, k):
        time.sleep(600)
        return super().select(context, k)


def main() -> None:
    with registered(Blobs, SlowRandom, Sleeps):
        code = cli.main(sys.argv[1:])
    sys.exit(code)
