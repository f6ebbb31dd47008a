"""Executors run units of work and hand their events to the driver, in the driver's process.

- :class:`InProcess` (``--jobs 1``): one unit after another, in the driver's process.
- :class:`LocalProcesses` (``--jobs N``): N worker processes on this machine run units side by
  side (on a GPU, all of them share it).
- :class:`bench.run.ray_executor.RayExecutor` (``--executor ray``): units as Ray tasks on a cluster.

Workers rebuild the plan from a :class:`WorkerSpec` and load the data themselves; the trained
generative model travels with the spec, so they need no shared cache or file system. A worker
that dies (killed, out of memory, a lost node) has its unit retried from its last checkpoint; a
local worker whose driver dies exits within moments, wherever it is in its unit.
"""

from __future__ import annotations

import ctypes
import dataclasses
import logging
import multiprocessing as mp
import os
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing import connection
from multiprocessing.connection import Connection
from typing import Any

from bench.run.assembly import Assembly, assemble, generative_weights
from bench.run.config import RunConfig
from bench.run.plan import Plan
from bench.run.units import Event, Failed, Finished, Job, Started, Unit, run_job

log = logging.getLogger(__name__)

#: How often a unit is started again after its worker died, before it is marked failed.
MAX_RETRIES = 2

#: The exit code of a local worker that ends because its driver is gone (no one is left to read it).
DRIVER_GONE = 3

#: Linux's ``prctl`` option: the signal a process gets when its parent dies (``<linux/prctl.h>``).
_PR_SET_PDEATHSIG = 1

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

    @classmethod
    def of(cls, run_id: str, plan: Plan, generative: Any) -> WorkerSpec:
        """The spec of ``plan``'s units; what the driver resolved (device, precisions) is fixed,
        so a worker on other hardware refuses to run rather than compute something else."""
        config = dataclasses.replace(
            plan.config,
            device=str(plan.device),
            score_dtype=str(plan.score_dtype).removeprefix("torch."),
            train_dtype=str(plan.train_dtype).removeprefix("torch."),
        )
        return cls(
            run_id,
            config,
            type(plan.task),
            list(plan.strategies),
            None if generative is None else generative_weights(generative),
        )


_WORKER_STATE: dict[str, Assembly] = {}  # run_id -> what its units run on, per process


def worker_state(spec: WorkerSpec) -> Assembly:
    """The plan, data and generative model of ``spec``'s run in this worker process (built once)."""
    if spec.run_id not in _WORKER_STATE:
        from strategies import STRATEGIES
        from tasks import TASKS

        logging.getLogger().setLevel(logging.WARNING)  # the driver reports progress; workers only warn
        _register(TASKS, spec.config.task, spec.task_cls)
        for strategy in spec.strategy_classes:
            _register(STRATEGIES, strategy.name, strategy)
        assembly = assemble(spec.config, weights=spec.generative)
        _ = assembly.data, assembly.generative  # now, once per worker (the model from the weights the driver sent)
        _WORKER_STATE.clear()
        _WORKER_STATE[spec.run_id] = assembly
    return _WORKER_STATE[spec.run_id]


def _register(registry, name: str, cls: type) -> None:
    if name not in registry.names():
        registry.add(name, cls)


class UnitTimedOut(Exception):
    """A unit ran past ``--unit-timeout``: it is failed and recorded, and the run goes on."""

    def __init__(self, timeout: float) -> None:
        super().__init__(f"the unit ran past --unit-timeout {timeout:g} s and was stopped")


def timed_out(unit: Unit, timeout: float) -> Failed:
    """The failure event of ``unit`` stopped after ``timeout`` seconds (not retried)."""
    return Failed(unit, f"UnitTimedOut: {UnitTimedOut(timeout)}", "", selection=False)


@dataclass
class InProcess:
    """Runs units one after another in the driver's process, on what it assembled. With
    ``unit_timeout`` (seconds), a unit still running after it is stopped by a timer signal
    (POSIX, main thread), never while the driver writes what the unit reported."""

    assembly: Assembly
    unit_timeout: float | None = None

    def run(self, jobs: list[Job], on_event: OnEvent, latest: LatestCheckpoint) -> None:
        for job in jobs:
            with _deadline(self.unit_timeout) as guarded:
                run_job(self.assembly.plan, self.assembly.data, self.assembly.generative, job, guarded(on_event))


@contextmanager
def _deadline(timeout: float | None) -> Iterator[Callable[[OnEvent], OnEvent]]:
    """Within the block, :class:`UnitTimedOut` is raised where the process is once ``timeout``
    seconds have passed; the wrapper it yields defers that while an event is being written."""
    if timeout is None:
        yield lambda on_event: on_event
        return
    if not hasattr(signal, "setitimer") or threading.current_thread() is not threading.main_thread():
        raise RuntimeError("--unit-timeout with --jobs 1 needs POSIX timers on the main thread; use --jobs 2")
    writing, expired = [False], [False]

    def expire(signum, frame) -> None:
        expired[0] = True
        if not writing[0]:
            raise UnitTimedOut(timeout)

    def guarded(on_event: OnEvent) -> OnEvent:
        def write(event: Event) -> None:
            writing[0] = True
            ended = isinstance(event, (Finished, Failed))  # the unit's last event: nothing left to stop
            try:
                on_event(event)
            finally:
                writing[0] = ended
            if expired[0] and not ended:
                raise UnitTimedOut(timeout)

        return write

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, timeout)
    try:
        yield guarded
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _exit_with_driver() -> None:
    """End this worker process within moments of its driver's death, wherever it is (loading
    data, training, selecting). Without this it notices only when it next talks to the driver,
    at the end of its round: minutes on CIFAR-10, computing what no one will read.

    A daemon thread waits on the driver's end of the pipe multiprocessing spawned this process
    through (the driver holds it open while it lives; only its exit closes it) and ends the
    process with :data:`DRIVER_GONE`. On Linux the kernel also sends SIGKILL when the driver
    dies, in case the thread cannot run (a long call that holds the GIL). Ending abruptly loses
    nothing: a worker writes no file (the driver alone writes the run folder, checkpoints
    included), and a resume runs the unfinished round again from the unit's last checkpoint.
    Neither fires while the driver lives: a graceful shutdown stops its workers first."""
    driver = mp.parent_process()
    if driver is None:  # not a spawned worker: nothing to watch
        return
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        except (OSError, AttributeError):  # no usable prctl: the thread alone watches
            pass

    def watch() -> None:
        driver.join()  # returns once the driver has exited (at once if it did before prctl above)
        os._exit(DRIVER_GONE)

    threading.Thread(target=watch, name="driver-watch", daemon=True).start()


def _worker_main(spec: WorkerSpec, conn: Connection, name: str) -> None:
    """A worker process: take the generative model's weights (the spec came without them), then
    run the jobs the driver sends over ``conn`` until a ``None``, sending each unit's events back;
    it exits within moments of the driver's death (:func:`_exit_with_driver`)."""
    _exit_with_driver()
    try:
        weights = conn.recv()
    except EOFError:
        return
    state = worker_state(dataclasses.replace(spec, generative=weights))
    while True:
        try:
            job = conn.recv()
        except EOFError:
            return
        if job is None:
            return
        run_job(state.plan, state.data, state.generative, job, conn.send, worker=name)


@dataclass
class _Worker:
    process: mp.Process
    conn: Connection  # the driver's end of this worker's own pipe
    unit: Unit | None = None  # the unit it runs
    since: float | None = None  # when it started that unit (time.monotonic(); its Started event)
    heard: bool = False  # whether it has sent anything (it got through its set-up)


@dataclass
class LocalProcesses:
    """Runs units in ``jobs`` worker processes on this machine (spawned: safe with CUDA and
    threads). Each worker loads the data once and runs the units the driver hands it, one at a
    time, over a pipe of its own: a worker killed mid-message breaks only its own pipe."""

    spec: WorkerSpec
    jobs: int
    unit_timeout: float | None = None  # seconds a worker may run one unit; past it, it is killed

    def run(self, jobs: list[Job], on_event: OnEvent, latest: LatestCheckpoint) -> None:
        ctx = mp.get_context("spawn")
        pending = deque(jobs)
        unfinished = {job.unit for job in jobs}
        workers: dict[str, _Worker] = {}
        retries: dict[Unit, int] = {}
        serial, silent_deaths = 0, 0

        def start_workers(n: int) -> None:
            """Start ``n`` workers, then send each the generative model's weights: a send waits
            until its worker has started up and reads, so all start up side by side first."""
            started = [start_worker() for _ in range(n)]
            for worker in started:
                try:
                    worker.conn.send(self.spec.generative)
                except OSError:  # it died: its sentinel says so
                    pass

        def start_worker() -> _Worker:
            nonlocal serial
            serial += 1
            name = f"worker-{serial}"
            driver_end, worker_end = ctx.Pipe()
            # the start payload stays small: a process killed while it reads a large one leaves
            # multiprocessing's writer blocked for good (it holds the pipe's read end until done)
            light = dataclasses.replace(self.spec, generative=None)
            process = ctx.Process(target=_worker_main, args=(light, worker_end, name), name=name)
            process.start()
            worker_end.close()  # the worker's end lives in the worker only: its death closes the pipe
            workers[name] = _Worker(process, driver_end)
            return workers[name]

        def hand_out() -> None:
            for worker in workers.values():
                if worker.unit is None and pending:
                    job = pending.popleft()
                    try:
                        worker.conn.send(job)
                    except OSError:  # it died: its sentinel says so, the job waits for another
                        pending.appendleft(job)
                        continue
                    worker.unit, worker.since = job.unit, None

        def handle(worker: _Worker, event: Event) -> None:
            worker.heard = True
            if isinstance(event, Started):
                worker.since = time.monotonic()
            if isinstance(event, (Finished, Failed)):
                unfinished.discard(event.unit)
                worker.unit = None
            on_event(event)

        def bury(name: str) -> None:
            """A worker died: keep what it sent, run its unit again from the last checkpoint."""
            nonlocal silent_deaths
            worker = workers.pop(name)
            try:
                while worker.conn.poll():
                    handle(worker, worker.conn.recv())
            except (EOFError, OSError):
                pass
            worker.conn.close()
            worker.process.join(timeout=5)
            code = worker.process.exitcode
            if not worker.heard:
                silent_deaths += 1
                if silent_deaths > MAX_RETRIES:
                    raise RuntimeError(
                        f"worker processes keep exiting before they run a unit (the last, "
                        f"{name}, with code {code}); their error is printed above"
                    )
            unit = worker.unit
            if unit is not None and unit in unfinished:
                retries[unit] = retries.get(unit, 0) + 1
                if retries[unit] > MAX_RETRIES:
                    unfinished.discard(unit)
                    on_event(
                        Failed(
                            unit,
                            f"its worker {name} died (exit code {code}) {retries[unit]} times",
                            "",
                            selection=False,
                        )
                    )
                else:
                    log.warning(
                        "%s: worker %s exited with code %s; running it again from its last checkpoint",
                        unit.key,
                        name,
                        code,
                    )
                    pending.appendleft(Job(unit, latest(unit)))
            if unfinished and len(workers) < self.jobs:
                start_workers(1)

        def stop_overdue() -> None:
            """Kill each worker whose unit ran past the timeout; the unit fails, is not retried."""
            if self.unit_timeout is None:
                return
            now = time.monotonic()
            for name, worker in list(workers.items()):
                if worker.unit is not None and worker.since is not None and now - worker.since > self.unit_timeout:
                    workers.pop(name)
                    worker.process.kill()
                    worker.process.join(timeout=5)
                    worker.conn.close()
                    unfinished.discard(worker.unit)
                    on_event(timed_out(worker.unit, self.unit_timeout))
                    if unfinished and len(workers) < self.jobs:
                        start_workers(1)

        start_workers(min(self.jobs, len(jobs)))
        try:
            while unfinished:
                hand_out()
                by_conn = {w.conn: n for n, w in workers.items()}
                by_sentinel = {w.process.sentinel: n for n, w in workers.items()}
                dead: set[str] = set()
                for ready in connection.wait([*by_conn, *by_sentinel], timeout=1.0):
                    if ready in by_sentinel:
                        dead.add(by_sentinel[ready])
                        continue
                    name = by_conn[ready]
                    try:
                        handle(workers[name], ready.recv())
                    except (EOFError, OSError):  # a half-sent message: the worker died sending it
                        dead.add(name)
                for name in dead:
                    bury(name)
                stop_overdue()
        finally:
            for worker in workers.values():
                try:
                    worker.conn.send(None)
                except OSError:
                    pass
            for worker in workers.values():
                worker.process.join(timeout=10)
                if worker.process.is_alive():
                    worker.process.kill()


def available_cores() -> int:
    """CPU cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def default_threads(jobs: int) -> int:
    """Torch threads per unit when ``jobs`` units run side by side on this machine."""
    return max(1, available_cores() // jobs)
