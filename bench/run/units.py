"""Units of work: one (strategy, repeat) of a run, and the events a running unit reports.

A unit is fully determined by the run's plan and its (strategy, repeat): the repeat's seed,
shared initial set and initial weights, and the cached generative model. It needs nothing from
another unit, so executors may run units in any order, side by side, or on other machines. A
running unit never writes the run folder: it reports events to the driver, which alone writes.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from bench.run.checkpoint import from_bytes, to_bytes
from bench.run.loop import run_progressive
from bench.run.plan import Plan
from bench.run.probes import Probe
from bench.run.results import RoundRecord
from strategies.base import SelectionError
from tasks.base import TaskData


@dataclass(frozen=True)
class Unit:
    """One progressive run: strategy ``strategy`` in repeat ``repeat``."""

    strategy: str
    repeat: int

    @property
    def key(self) -> str:
        """The unit's name in file names and the manifest, e.g. ``snn-r2``."""
        return f"{self.strategy}-r{self.repeat}"


def plan_units(plan: Plan) -> list[Unit]:
    """Every unit of the plan, repeat by repeat, strategies in the order given."""
    return [Unit(cls.name, r) for r in range(plan.config.repeats) for cls in plan.strategies]


@dataclass
class Job:
    """A unit to run, from the beginning or from a checkpoint (bytes of :mod:`bench.run.checkpoint`)."""

    unit: Unit
    checkpoint: bytes | None = None


@dataclass
class Started:
    unit: Unit
    worker: str  # who runs it (a process or Ray node), for progress and diagnostics


@dataclass
class RoundFinished:
    unit: Unit
    record: RoundRecord
    sources: np.ndarray  # pool index of every training sample, -1 if synthesized
    latents: np.ndarray | None  # latent codes of the synthesized samples
    scores: np.ndarray | None = None  # what each sample's strategy ranked it by (NaN: none), when any


@dataclass
class Checkpointed:
    unit: Unit
    round: int
    payload: bytes


@dataclass
class Probed:
    """A plug-in strategy's first selection, made twice from the same state (:class:`Probe`)."""

    unit: Unit
    probe: Probe


@dataclass
class Finished:
    unit: Unit


@dataclass
class Failed:
    """The unit raised: ``selection`` is True when its strategy could not fill a round
    (a SelectionError), False for any other error (a bug, usually)."""

    unit: Unit
    error: str
    traceback: str
    selection: bool


Event = Started | RoundFinished | Checkpointed | Probed | Finished | Failed


def run_job(
    plan: Plan, data: TaskData, generative: Any, job: Job, emit: Callable[[Event], None], worker: str = "main"
) -> None:
    """Run ``job`` to its end, reporting every event through ``emit``; an error in the unit (a
    ``sys.exit`` too) becomes a :class:`Failed` event (with its traceback), never an exception.
    Ctrl-C and SIGTERM (KeyboardInterrupt) still stop the run."""
    unit = job.unit
    emit(Started(unit, worker))
    strategy_cls = next(cls for cls in plan.strategies if cls.name == unit.strategy)
    try:
        resume = from_bytes(job.checkpoint) if job.checkpoint is not None else None
        run_progressive(
            plan,
            data,
            strategy_cls,
            unit.repeat,
            on_round=lambda record, sources, latents, scores: emit(
                RoundFinished(unit, record, sources, latents, scores)
            ),
            generative=generative,
            on_checkpoint=lambda t, state: emit(Checkpointed(unit, t, to_bytes(state))),
            resume=resume,
            on_probe=lambda probe: emit(Probed(unit, probe)),
        )
    except (Exception, SystemExit) as err:  # noqa: BLE001 - one unit's failure must not stop the others
        # a strategy calling sys.exit() fails its unit, in this process as in a worker
        error = f"SystemExit: the unit called sys.exit({err.code!r})" if isinstance(err, SystemExit) else None
        emit(
            Failed(
                unit,
                error or f"{type(err).__name__}: {err}",
                traceback.format_exc(),
                isinstance(err, SelectionError),
            )
        )
        return
    emit(Finished(unit))
