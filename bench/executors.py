"""Executors run units of work and hand their events to the driver, in the driver's process.

- :class:`InProcess` (``--jobs 1``): one unit after another, in the driver's process.
- :class:`LocalProcesses` (``--jobs N``): N worker processes on this machine run units side by
  side (on a GPU, all of them share it).
- :class:`bench.ray_executor.RayExecutor` (``--executor ray``): units as Ray tasks on a cluster.

Workers rebuild the plan from a :class:`WorkerSpec` and load the data themselves; the trained
generative model travels with the spec, so they need no shared cache or file system. A worker
that dies (killed, out of memory, a lost node) has its unit retried from its last checkpoint.
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing as mp
import os
import queue
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from bench.config import RunConfig
from bench.plan import Plan, generative_spec, load_data, plan_run
from bench.units import Event, Failed, Finished, Job, Started, Unit, run_job

log = logging.getLogger(__name__)

#: How often a unit is started again after its worker died, before it is marked failed.
MAX_RETRIES = 2

OnEvent = Callable[[Event], None]
LatestCheckpoint = Callable[[Unit], "bytes | None"]


@dataclass
class WorkerSpec:
    """What a worker needs to run any unit of a run: the configuration (threads resolved), the
    task and strategy classes (registered in the worker if it does not know them, e.g. a
    plug-in registered at run time) and the trained generative model's weights."""

    run_id: str
    config: RunConfig
    task_cls: type
    strategy_classes: list[type]
    generative: bytes | None = None
    quiet_logs: bool = True

    @classmethod
    def of(cls, run_id: str, plan: Plan, generative: Any) -> "WorkerSpec":
        """The spec of ``plan``'s units; what the driver resolved (device, precisions) is fixed,
        so a worker on other hardware refuses to run rather than compute something else."""
        from bench.generative import to_bytes

        config = dataclasses.replace(plan.config, device=str(plan.device),
                                     score_dtype=str(plan.score_dtype).removeprefix("torch."),
                                     train_dtype=str(plan.train_dtype).removeprefix("torch."))
        return cls(run_id, config, type(plan.task), list(plan.strategies),
                   None if generative is None else to_bytes(generative))


_WORKER_STATE: dict[str, tuple[Plan, Any, Any]] = {}  # run_id -> (plan, data, generative), per process


def worker_state(spec: WorkerSpec) -> tuple[Plan, Any, Any]:
    """The plan, data and generative model of ``spec``'s run in this worker process (built once)."""
    if spec.run_id not in _WORKER_STATE:
        from bench.generative import from_bytes
        from strategies import STRATEGIES
        from tasks import TASKS

        if spec.quiet_logs:
            logging.getLogger().setLevel(logging.WARNING)
        _register(TASKS, spec.config.task, spec.task_cls)
        for strategy in spec.strategy_classes:
            _register(STRATEGIES, strategy.name, strategy)
        plan = plan_run(spec.config)
        data = load_data(plan)
        generative = None
        if spec.generative is not None:
            generative = from_bytes(spec.generative, data.pool_x, generative_spec(plan))
        _WORKER_STATE.clear()
        _WORKER_STATE[spec.run_id] = (plan, data, generative)
    return _WORKER_STATE[spec.run_id]


def _register(registry, name: str, cls: type) -> None:
    if name not in registry.names():
        registry.add(name, cls)


@dataclass
class InProcess:
    """Runs units one after another in the driver's process, on its plan and data."""

    plan: Plan
    data: Any
    generative: Any

    def run(self, jobs: list[Job], on_event: OnEvent, latest: LatestCheckpoint) -> None:
        for job in jobs:
            run_job(self.plan, self.data, self.generative, job, on_event)


def _worker_main(spec: WorkerSpec, jobs: "mp.Queue", events: "mp.Queue", name: str) -> None:
    """A worker process: take jobs until a ``None``, report each unit's events; exit as soon as
    the driver is gone (killed), so no orphan keeps computing."""
    driver = mp.parent_process()

    def emit(event) -> None:
        if driver is not None and not driver.is_alive():
            os._exit(1)
        events.put(event)

    plan, data, generative = worker_state(spec)
    while True:
        try:
            job = jobs.get(timeout=1.0)
        except queue.Empty:
            if driver is not None and not driver.is_alive():
                return
            continue
        if job is None:
            return
        run_job(plan, data, generative, job, emit, worker=name)


@dataclass
class LocalProcesses:
    """Runs units in ``jobs`` worker processes on this machine (spawned: safe with CUDA and
    threads). Each worker loads the data once and runs units until none is left."""

    spec: WorkerSpec
    jobs: int
    _retries: dict[Unit, int] = field(default_factory=dict)

    def run(self, jobs: list[Job], on_event: OnEvent, latest: LatestCheckpoint) -> None:
        ctx = mp.get_context("spawn")
        todo, events = ctx.Queue(), ctx.Queue()
        for job in jobs:
            todo.put(job)
        workers: dict[str, mp.Process] = {}
        running: dict[str, Unit] = {}  # worker -> the unit it runs
        unfinished = {job.unit for job in jobs}
        serial, idle_deaths = 0, 0

        def start_worker() -> None:
            nonlocal serial
            serial += 1
            name = f"worker-{serial}"
            workers[name] = ctx.Process(target=_worker_main, args=(self.spec, todo, events, name),
                                        name=name)  # not a daemon: it may start its own pool (FEM labels)
            workers[name].start()

        def handle(event: Event) -> None:
            if isinstance(event, Started):
                running[event.worker] = event.unit
            elif isinstance(event, (Finished, Failed)):
                unfinished.discard(event.unit)
                for worker in [w for w, u in running.items() if u == event.unit]:
                    del running[worker]
            on_event(event)

        def check_workers() -> None:
            """Retry the unit of a worker that died; replace the worker."""
            nonlocal idle_deaths
            dead = {name: p.exitcode for name, p in workers.items() if p.exitcode is not None}
            if not dead:
                return
            while True:  # what a dead worker sent before it died comes first
                try:
                    handle(events.get_nowait())
                except queue.Empty:
                    break
            for name, code in dead.items():
                del workers[name]
                lost = running.pop(name, None)
                if lost is None:
                    idle_deaths += 1
                    if idle_deaths > MAX_RETRIES:
                        raise RuntimeError(f"worker processes keep exiting before they run a unit (the last, "
                                           f"{name}, with code {code}); their error is printed above")
                elif lost in unfinished:
                    self._retry(lost, f"worker {name} exited with code {code}", todo, on_event, latest, unfinished)
                if unfinished:
                    start_worker()

        for _ in range(min(self.jobs, len(jobs))):
            start_worker()
        checked = time.monotonic()
        try:
            while unfinished:
                try:
                    handle(events.get(timeout=1.0))
                except queue.Empty:
                    pass
                if time.monotonic() - checked > 1.0:
                    check_workers()
                    checked = time.monotonic()
        finally:
            for _ in workers:
                todo.put(None)
            for process in workers.values():
                process.join(timeout=10)
                if process.is_alive():
                    process.kill()

    def _retry(self, unit: Unit, why: str, todo, on_event: OnEvent, latest: LatestCheckpoint,
               unfinished: set[Unit]) -> None:
        """Start ``unit`` again from its last checkpoint, or fail it after MAX_RETRIES."""
        self._retries[unit] = self._retries.get(unit, 0) + 1
        if self._retries[unit] > MAX_RETRIES:
            unfinished.discard(unit)
            on_event(Failed(unit, f"{why}; gave up after {MAX_RETRIES} retries", "", selection=False))
            return
        log.warning("%s: %s; running it again from its last checkpoint", unit.key, why)
        todo.put(Job(unit, latest(unit)))


def available_cores() -> int:
    """CPU cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def default_threads(jobs: int) -> int:
    """Torch threads per unit when ``jobs`` units run side by side on this machine."""
    return max(1, available_cores() // jobs)
