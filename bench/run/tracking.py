"""Mirroring a run into an experiment tracker (``run --track mlflow``).

A run becomes one MLflow run (the parent: the run's settings as parameters, its report files as
artifacts) with a nested run per unit (one strategy in one repeat: its strategy, repeat, seed and
options as parameters, and per round the numeric columns of its ``rounds.csv`` row as metrics
with step = the labeled samples, ``n_labeled``). Only the driver logs, from the events it writes
into the run folder, so every executor works unchanged.

The run folder stays the record: tracking never stops or changes a run. A store that cannot be
reached, or an error while logging, is one warning, and tracking stops for the rest of the run;
a resume (or ``python -m bench track DIR``) logs what the tracker missed, from ``rounds.csv``.
The manifest's ``tracking`` entry names the store and the runs, so that a resume goes on with the
same MLflow runs and never logs a step twice (it asks the store which steps it has).

MLflow is imported only when tracking is asked for (``pip install "latent-bench[track]"``); the
client's calls are made through :class:`mlflow.tracking.MlflowClient`, never the fluent API's
global state.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bench.run.config import TRACKERS, ConfigError
from bench.run.folder import REPORT_FILES
from bench.run.manifest import now
from bench.run.results import read_rounds_csv
from bench.run.tracking_records import (
    commit_tags,
    flatten,
    is_local,
    metric_key,
    recorded_uri,
    redacted,
    round_metrics,
    run_params,
    shown,
)
from bench.run.units import Event, Failed, Finished, RoundFinished, Unit

log = logging.getLogger(__name__)

INSTALL = 'needs MLflow: pip install "latent-bench[track]" (or mlflow, or mlflow-skinny)'
#: The store used when neither --track-uri nor $MLFLOW_TRACKING_URI names one: a file store here.
DEFAULT_URI = "mlruns"
#: What the parent run gets as artifacts, those of them the run folder holds.
ARTIFACTS = (
    *sorted(REPORT_FILES),  # report.html among them
    "generative-samples.png",
    "manifest.json",
    "rounds.csv",
)
#: The HTTP client's retries while tracking (unless set in the environment): MLflow's defaults
#: retry with back-off for minutes, and a tracking server that is down must cost seconds.
HTTP_LIMITS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
}
#: MLflow run statuses of a run folder's final status.
FINAL = {"complete": "FINISHED", "complete with failures": "FINISHED", "failed": "FAILED"}


def require(backend: str) -> None:
    """Refuse (ConfigError) tracking with ``backend`` when its package is not installed."""
    if backend not in TRACKERS:
        raise ConfigError(f"unknown --track {backend!r}; use {' or '.join(TRACKERS)}")
    try:
        import mlflow.tracking  # noqa: F401
    except ImportError:
        raise ConfigError(f"--track {backend} {INSTALL}") from None
    except Exception as err:  # an install that is there but broken (a dependency's version clash)
        raise ConfigError(
            f"--track {backend}: MLflow does not import ({type(err).__name__}: {err}); repair it"
        ) from None


@contextmanager
def http_limits() -> Iterator[None]:
    """Within the block, MLflow's HTTP client gives up after :data:`HTTP_LIMITS` (a setting in
    the environment wins), and urllib3 says nothing of its retries (the tracker's warning says
    what failed); the environment and urllib3's logging are restored after."""
    added = {name: value for name, value in HTTP_LIMITS.items() if name not in os.environ}
    os.environ.update(added)
    retries = logging.getLogger("urllib3.connectionpool")
    level = retries.level
    retries.setLevel(logging.ERROR)
    try:
        yield
    finally:
        retries.setLevel(level)
        for name in added:
            os.environ.pop(name, None)


class TrackingLost(Exception):
    """A call to the tracker failed: tracking stops for the rest of the run (never the run)."""


class Tracker:
    """Mirrors one run folder's run into MLflow (see the module's doc). Every method swallows
    the tracker's errors: the first one is a warning, and tracking stops for the rest of the run.

    ``backend`` and ``uri``: the backend, and the store, as given (None: the one the manifest
    records, else $MLFLOW_TRACKING_URI, else :data:`DEFAULT_URI`)."""

    def __init__(self, backend: str, uri: str | None = None) -> None:
        self.backend = backend
        self.given_uri = uri
        self.uri: str | None = None
        self.client: Any = None
        self.manifest: dict[str, Any] = {}
        self.columns: list[str] = []
        self.active = False
        self.run_id: str | None = None
        self.experiment_id: str | None = None
        self.out = Path(".")
        self.children: dict[str, str] = {}  # unit key -> MLflow run id
        self.status: dict[str, str] = {}  # unit key -> the MLflow status of its run as last seen or set
        self.steps: dict[str, set[int]] = {}  # unit key -> the steps whose metrics are logged
        self.opened: set[str] = set()  # units whose run this session set running

    @classmethod
    def of(cls, track: str | None, track_uri: str | None, manifest: dict[str, Any]) -> Tracker | None:
        """The tracker of a run: the backend given, else the one its manifest records (a resumed
        run goes on being tracked); None when the run is not tracked. A recorded backend whose
        package is missing is a warning (the run goes on untracked), a given one a ConfigError."""
        record = manifest.get("tracking")
        backend = track or (record.get("backend") if isinstance(record, dict) else None)
        if backend is None:
            return None
        if track is None:
            try:
                require(backend)
            except ConfigError as err:
                log.warning(
                    "the run was tracked with %s, which is not installed here (%s); this part of it is not "
                    "tracked: python -m bench track <run folder> logs it once it is",
                    backend,
                    err,
                )
                return None
        return cls(backend, track_uri)

    # -- the run's lifetime -----------------------------------------------------------------

    def start(self, manifest: dict[str, Any], out: Path) -> None:
        """Open the run's MLflow runs (the ones the manifest records, when the store holds them;
        else new ones) and log every round of ``rounds.csv`` the store lacks. The manifest gets
        the ``tracking`` entry a resume reads (the driver saves it with the next event)."""
        self.manifest, self.out = manifest, Path(out)
        record = manifest.get("tracking") if isinstance(manifest.get("tracking"), dict) else {}
        uri = self.given_uri
        if uri is None and record:
            if record.get("uri") is None:
                log.warning(
                    "the run was tracked in a local store whose absolute path its manifest does not record; this "
                    "part of it is not tracked: resume it (or python -m bench track %s) with --track-uri naming "
                    "that store",
                    out,
                )
                return
            uri = record["uri"]
            if is_local(uri) and not Path(urlsplit(uri).path if uri.startswith("file:") else uri).exists():
                log.warning(
                    "the run was tracked in %s, relative to the folder it was started from, which is not here; "
                    "this part of it is not tracked: resume it from that folder, or with --track-uri naming "
                    "that store (python -m bench track %s does the same afterwards)",
                    uri,
                    out,
                )
                return
        self.uri = uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI
        entry = {k: v for k, v in record.items() if k != "stopped"}  # a store that is down keeps the record
        entry.update(backend=self.backend, uri=recorded_uri(self.uri))
        self.children = dict(entry.get("units") or {})
        manifest["tracking"] = entry
        rounds = self.out / "rounds.csv"
        rows = read_rounds_csv(rounds) if rounds.exists() and rounds.stat().st_size else None
        if rows is not None:
            self.columns = list(rows.columns)
        self.active = True
        try:
            with http_limits():
                self._open(entry)
                if rows is not None:
                    self._catch_up(rows)
                self._end_ended_units()
        except TrackingLost:
            pass

    def _open(self, entry: dict[str, Any]) -> None:
        """Reach the store, and reopen the recorded parent run and its units' runs, or create a
        parent run (with its parameters) when there is none to go on with."""
        from mlflow.entities import Param

        if is_local(self.uri or ""):
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 refuses file stores without it
        self.client = self._call("connecting", self._client)
        previous = entry.get("run_id")
        parent = self._call("reading the recorded run", self._find, previous) if previous else None
        if previous and parent is None:
            log.warning(
                "the run's MLflow run %s is not in %s: tracking the run as a new MLflow run there, with every "
                "round logged so far",
                previous,
                shown(self.uri or ""),
            )
            replaced = {"uri": entry.get("uri"), "run_id": previous}
            entry.clear()
            entry.update(backend=self.backend, uri=recorded_uri(self.uri or ""), replaces=replaced)
            self.children = {}
        if parent is not None:
            self.run_id = parent.info.run_id
            self.experiment_id = parent.info.experiment_id
            self._call("reopening the run", self.client.update_run, self.run_id, status="RUNNING")
            found = self._call(
                "reading the units' runs",
                self.client.search_runs,
                [self.experiment_id],
                filter_string=f"tags.`mlflow.parentRunId` = '{self.run_id}'",
                max_results=1000,
            )
            recorded, self.children = self.children, {}
            for run in found:  # a unit's recorded run, else the one the store has (created, then killed unrecorded)
                key = run.data.tags.get("unit") or run.info.run_name
                if key not in self.children or recorded.get(key) == run.info.run_id:
                    self.children[key] = run.info.run_id
                    self.status[key] = run.info.status
        else:
            name = os.environ.get("MLFLOW_EXPERIMENT_NAME") or f"latent-bench/{self.manifest.get('task')}"
            self.experiment_id = self._call("opening the experiment", self._experiment, name)
            tags = {"task": str(self.manifest.get("task")), "folder": self.out.name, **commit_tags(self.manifest)}
            tags["strategies"] = ",".join(self.manifest.get("strategies") or {})
            run = self._call(
                "creating the run",
                self.client.create_run,
                self.experiment_id,
                tags=tags,
                run_name=self.out.name,
            )
            self.run_id = run.info.run_id
            params = [Param(k, str(v)[:6000]) for k, v in run_params(self.manifest).items()]
            for i in range(0, len(params), 100):
                batch = params[i : i + 100]
                self._call("logging the parameters", self.client.log_batch, self.run_id, params=batch)
        experiment = self._call("reading the experiment", self.client.get_experiment, self.experiment_id)
        entry.update(experiment=experiment.name, experiment_id=self.experiment_id, run_id=self.run_id)
        entry["units"] = self.children  # the same dict: units' runs created later are recorded as they come

    def _client(self) -> Any:
        from mlflow.tracking import MlflowClient

        client = MlflowClient(self.uri)
        client.search_experiments(max_results=1)  # reach the store now: one warning at the start, not mid-run
        return client

    def _find(self, run_id: str) -> Any:
        from mlflow.exceptions import MlflowException

        try:
            run = self.client.get_run(run_id)
        except MlflowException as err:
            if getattr(err, "error_code", "") == "RESOURCE_DOES_NOT_EXIST":
                return None
            raise
        return None if run.info.lifecycle_stage == "deleted" else run

    def _experiment(self, name: str) -> str:
        from mlflow.exceptions import MlflowException

        found = self.client.get_experiment_by_name(name)
        if found is not None:
            if found.lifecycle_stage == "deleted":
                self.client.restore_experiment(found.experiment_id)
            return found.experiment_id
        try:
            return self.client.create_experiment(name)
        except MlflowException:  # another run created it meanwhile
            found = self.client.get_experiment_by_name(name)
            if found is None:
                raise
            return found.experiment_id

    def _catch_up(self, rows: Any) -> None:
        """Log the rounds of ``rows`` (``rounds.csv``) whose metrics the store lacks."""
        from mlflow.entities import Metric

        for (strategy, repeat), unit_rows in rows.groupby(["strategy", "repeat"], sort=False):
            unit = Unit(str(strategy), int(repeat))
            records = unit_rows.to_dict("records")
            wanted = {int(r["n_labeled"]): round_metrics(r, self.columns) for r in records}
            logged = self._logged(unit, wanted)
            stamp = int(time.time() * 1000)
            metrics = [
                Metric(key, value, stamp, step)
                for step, values in wanted.items()
                for key, value in values.items()
                if step not in logged.get(key, ())
            ]
            if metrics:
                run_id = self._child(unit, records[0]["seed"])
                for i in range(0, len(metrics), 1000):
                    self._call(
                        f"logging the rounds of {unit.key}",
                        self.client.log_batch,
                        run_id,
                        metrics=metrics[i : i + 1000],
                    )
            self.steps[unit.key] = set(wanted)

    def _logged(self, unit: Unit, wanted: dict[int, dict[str, float]]) -> dict[str, set[int]]:
        """The steps of each metric key the unit's run holds: those of ``value`` (logged last of a
        round) when they cover every round with a value; else every key's, read one by one (a
        round cut short by a kill, or a round without a value)."""
        run_id = self.children.get(unit.key)
        if run_id is None:
            return {}

        def steps(key: str) -> set[int]:
            history = self._call(f"reading {unit.key}'s metrics", self.client.get_metric_history, run_id, key)
            return {m.step for m in history}

        done = steps("value")
        if all(step in done for step, values in wanted.items() if "value" in values) and all(
            "value" in values for values in wanted.values()
        ):
            return {key: done for values in wanted.values() for key in values}
        keys = {key for values in wanted.values() for key in values}
        return {key: steps(key) for key in keys}

    def _end_ended_units(self) -> None:
        """End the runs of units the manifest lists as ended, left running by a kill."""
        for key, unit in self.manifest.get("units", {}).items():
            status = {"complete": "FINISHED", "failed": "FAILED"}.get(unit.get("status"))
            if status is not None and key in self.children and self.status.get(key) == "RUNNING":
                self._end(key, status)

    def on_event(self, event: Event) -> None:
        """Log what ``event`` reports: a round's metrics on its unit's run (created when the unit
        first reports), the end of a unit."""
        if not self.active or not isinstance(event, (RoundFinished, Finished, Failed)):
            return
        try:
            with http_limits():
                if isinstance(event, RoundFinished):
                    self._round(event)
                elif isinstance(event, Finished):
                    self._child(event.unit)
                    self._end(event.unit.key, "FINISHED")
                elif isinstance(event, Failed):
                    run_id = self._child(event.unit)
                    error = event.error[:5000]
                    self._call("recording a failure", self.client.set_tag, run_id, "error", error)
                    self._end(event.unit.key, "FAILED")
        except TrackingLost:
            pass

    def _round(self, event: RoundFinished) -> None:
        from mlflow.entities import Metric

        record, key = event.record, event.unit.key
        done = self.steps.setdefault(key, set())
        if record.n_labeled in done:  # a round a unit recomputed from an earlier checkpoint
            return
        run_id = self._child(event.unit, record.seed)
        stamp = int(time.time() * 1000)
        metrics = [Metric(k, v, stamp, record.n_labeled) for k, v in round_metrics(record.row(), self.columns).items()]
        self._call(f"logging round {record.round} of {key}", self.client.log_batch, run_id, metrics=metrics)
        done.add(record.n_labeled)

    def _child(self, unit: Unit, seed: Any = None) -> str:
        """The unit's run, created with its parameters and tags when it has none, set running
        when a run of an earlier session ended."""
        from mlflow.entities import Param

        key = unit.key
        if key in self.children:
            if key not in self.opened and self.status.get(key) != "RUNNING":
                self._call(f"reopening {key}", self.client.update_run, self.children[key], status="RUNNING")
                self.status[key] = "RUNNING"
            self.opened.add(key)
            return self.children[key]
        seeds = self.manifest.get("repeat_seeds") or []
        if seed is None and unit.repeat < len(seeds):
            seed = seeds[unit.repeat]
        tags = {
            "mlflow.parentRunId": self.run_id,
            "task": str(self.manifest.get("task")),
            "strategy": unit.strategy,
            "repeat": str(unit.repeat),
            "unit": key,
            **commit_tags(self.manifest),
        }
        run = self._call(f"creating {key}'s run", self.client.create_run, self.experiment_id, tags=tags, run_name=key)
        self.children[key] = run.info.run_id
        self.status[key] = "RUNNING"
        self.opened.add(key)
        options = (self.manifest.get("strategies") or {}).get(unit.strategy) or {}
        values = {"strategy": unit.strategy, "repeat": unit.repeat, "seed": seed}
        values.update({metric_key(k): v for k, v in flatten("option", options)})
        params = [Param(k, str(v)[:6000]) for k, v in values.items() if v is not None]
        self._call(f"logging {key}'s parameters", self.client.log_batch, run.info.run_id, params=params[:100])
        return run.info.run_id

    def _end(self, key: str, status: str) -> None:
        run_id = self.children[key]
        self._call(f"ending {key}'s run", self.client.set_terminated, run_id, status)
        self.status[key] = status

    def finish(self) -> None:
        """Once the run folder is final (its manifest's status written): end the units' runs
        this session left running (KILLED), log the report files on the parent as artifacts and
        end it (FINISHED, FAILED or KILLED, as the run ended)."""
        if not self.active or self.run_id is None:
            return
        status = str(self.manifest.get("status"))
        try:
            with http_limits():
                for key in sorted(self.opened):
                    if self.status.get(key) == "RUNNING":
                        self._end(key, "KILLED")
                for name in ARTIFACTS:
                    if (self.out / name).is_file():
                        path = str(self.out / name)
                        self._call(f"logging {name}", self.client.log_artifact, self.run_id, path)
                self._call("tagging the run", self.client.set_tag, self.run_id, "status", status)
                self._call("ending the run", self.client.set_terminated, self.run_id, FINAL.get(status, "KILLED"))
        except TrackingLost:
            pass

    # -- errors ------------------------------------------------------------------------------

    def _call(self, doing: str, call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``call(*args, **kwargs)``; an error stops tracking with one warning (:class:`TrackingLost`)."""
        try:
            return call(*args, **kwargs)
        except Exception as err:  # noqa: BLE001 - whatever the tracker raises must not cost the run
            self._lost(doing, err)
            raise TrackingLost(str(err)) from err

    def _lost(self, doing: str, err: Exception) -> None:
        self.active = False
        text = redacted(" ".join(str(err).split()), self.uri or "")
        text = text if len(text) <= 400 else f"{text[:240]} ... {text[-150:]}"  # the cause is at the end
        log.warning(
            "MLflow tracking at %s stopped while %s (%s: %s); the run goes on untracked and rounds.csv keeps "
            "every round: python -m bench track %s logs what MLflow missed (a resume does too)",
            shown(self.uri or ""),
            doing,
            type(err).__name__,
            text,
            self.out if recorded_uri(self.uri or "") is not None else f"{self.out} --track-uri {self.uri}",
        )
        entry = self.manifest.setdefault("tracking", {"backend": self.backend, "uri": recorded_uri(self.uri or "")})
        entry["stopped"] = {"at": now(), "while": doing, "error": f"{type(err).__name__}: {text}"}
