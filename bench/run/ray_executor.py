"""``--executor ray``: units of work as Ray tasks, on an existing cluster or a local one.

Each unit is one streaming task: it yields its events (rows, labeled sets, checkpoints as bytes)
back to the driver as they happen, so workers need no shared file system and the driver stays
the only writer of the run folder. A task lost with its worker or node is started again from
the unit's last checkpoint. Needs the optional extra: ``pip install "latent-bench[ray]"``.
"""

from __future__ import annotations

import logging
import math
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from bench.run.config import ConfigError
from bench.run.executors import MAX_RETRIES, LatestCheckpoint, OnEvent, WorkerSpec, timed_out, worker_state
from bench.run.units import Event, Failed, Job, Started, Unit, run_job

log = logging.getLogger(__name__)


def _import_ray():
    try:
        import ray
    except ImportError:
        raise ConfigError('--executor ray needs Ray: pip install "latent-bench[ray]" (or pip install ray)') from None
    return ray


@contextmanager
def ray_session(address: str | None, **init_options) -> Iterator[None]:
    """Connect to Ray for the duration: to the cluster at ``address`` (``auto``: the one this machine
    joined), or a local one started here (None), and shut it down after; a session already open (a
    study's, around its runs) is used as it is."""
    ray = _import_ray()
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address=address, include_dashboard=False, log_to_driver=True, **init_options)
    try:
        yield
    finally:
        if started_here:
            ray.shutdown()


def _unit_events(spec: WorkerSpec, job: Job) -> Iterator[Event]:
    """The body of a Ray task: run ``job`` on this worker, yielding its events as they happen."""
    import queue
    import threading

    state = worker_state(spec)
    events: queue.Queue = queue.Queue()
    done = object()

    def work() -> None:
        try:
            run_job(state.plan, state.data, state.generative, job, events.put, worker=socket.gethostname())
        finally:
            events.put(done)

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    while (event := events.get()) is not done:
        yield event
    thread.join()


@dataclass
class RayExecutor:
    """Submits every unit as a Ray task needing ``cpus_per_job`` CPUs and ``gpus_per_job`` GPUs
    (fractions share a GPU); ``address`` is a cluster's (``auto``: the one this machine joined),
    or None to start a local one."""

    spec: WorkerSpec
    address: str | None = None
    cpus_per_job: float = 1.0
    gpus_per_job: float = 0.0
    init_options: dict = field(default_factory=dict)  # passed to ray.init (e.g. num_cpus in tests)
    unit_timeout: float | None = None  # seconds a unit's task may run; past it, it is cancelled and failed

    def run(self, jobs: list[Job], on_event: OnEvent, latest: LatestCheckpoint) -> None:
        with ray_session(self.address, **self.init_options):
            self._run(_import_ray(), jobs, on_event, latest)

    def _run(self, ray, jobs: list[Job], on_event: OnEvent, latest: LatestCheckpoint) -> None:
        task = ray.remote(num_cpus=self.cpus_per_job, num_gpus=self.gpus_per_job, max_retries=0)(_unit_events)
        spec_ref = ray.put(self.spec)
        retries: dict[Unit, int] = {}
        streams = {task.remote(spec_ref, job): job.unit for job in jobs}
        try:
            self._drain(ray, task, spec_ref, streams, retries, on_event, latest)
        finally:
            for stream in streams:  # stopped early (an error, Ctrl-C): nothing keeps running on the cluster
                _cancel(ray, stream)

    def _drain(self, ray, task, spec_ref, streams, retries, on_event: OnEvent, latest: LatestCheckpoint) -> None:
        since: dict = {}  # stream -> when its unit started (its Started event)
        while streams:
            for stream, unit in list(streams.items()):
                if self.unit_timeout is not None and time.monotonic() - since.get(stream, math.inf) > self.unit_timeout:
                    del streams[stream]
                    _cancel(ray, stream)
                    on_event(timed_out(unit, self.unit_timeout))
            if not streams:
                break
            ready, _ = ray.wait(list(streams), num_returns=1, timeout=1.0)
            for stream in ready:
                unit = streams[stream]
                try:
                    event = ray.get(next(stream))
                except StopIteration:
                    del streams[stream]
                    continue
                except ray.exceptions.RayTaskError as err:  # the worker could not set up (e.g. no data)
                    del streams[stream]
                    on_event(Failed(unit, f"the Ray worker could not run it: {err.cause!r}", str(err), selection=False))
                    continue
                except ray.exceptions.RayError as err:  # the worker, its node or an object was lost
                    del streams[stream]
                    _cancel(ray, stream)  # should any of it still run, it must not run beside the retry
                    retries[unit] = retries.get(unit, 0) + 1
                    if retries[unit] > MAX_RETRIES:
                        on_event(
                            Failed(
                                unit,
                                f"Ray lost the unit ({type(err).__name__}); gave up after {MAX_RETRIES} retries",
                                str(err),
                                selection=False,
                            )
                        )
                        continue
                    log.warning(
                        "%s: Ray lost it (%s); running it again from its last checkpoint", unit.key, type(err).__name__
                    )
                    streams[task.remote(spec_ref, Job(unit, latest(unit)))] = unit
                    continue
                if isinstance(event, Started):
                    since[stream] = time.monotonic()
                on_event(event)


def _cancel(ray, stream) -> None:
    """Cancel a unit's task, if it still runs (a finished or lost one cannot be cancelled)."""
    try:
        ray.cancel(stream, force=True)
    except Exception:  # noqa: BLE001 - nothing left to cancel
        pass
