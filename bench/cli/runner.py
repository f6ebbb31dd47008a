"""The driver: plans a run (or reopens one to resume), hands its units to an executor, and writes
what they report into the run folder, then the tables and figure."""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from bench.generative.base import sample_grid
from bench.generative.quality import cached_quality
from bench.report.run_page import Source
from bench.report.tables import label_variants, write_report
from bench.run.assembly import Assembly, assemble
from bench.run.config import ConfigError, Execution, RunConfig
from bench.run.executors import InProcess, LocalProcesses, WorkerSpec, available_cores, default_threads
from bench.run.folder import (
    LOCK,
    RUN_FILES,
    FolderLock,
    FolderWriteError,
    RunFolder,
    lock_holder,
    lock_problem,
    not_our_lock,
    writing,
)
from bench.run.imbalance import class_counts
from bench.run.loop import repeat_seed
from bench.run.manifest import (
    NOT_PLANNED,
    command_line,
    generative_file_entry,
    manifest_problem,
    now,
    plan_changes,
    start_manifest,
)
from bench.run.plan import Plan
from bench.run.results import MetricInfo, read_rounds_csv, sort_rows, write_json
from bench.run.tracking import Tracker, require
from bench.run.units import Event, Failed, Finished, Job, RoundFinished, Started, plan_units
from tasks.base import TaskData, optimizer_name

log = logging.getLogger(__name__)


def new_folder(kind: str, task: str) -> Path:
    """A folder name not yet taken under ``results/<kind>/``: ``<task>-<date>-<time>[-n]``."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    out = Path("results") / kind / f"{task}-{stamp}"
    suffix = 1
    while out.exists():
        out = out.with_name(f"{task}-{stamp}-{suffix}")
        suffix += 1
    return out


#: A run's statuses that need no more work.
FINISHED = ("complete", "complete with failures")


def run_status(folder: Path) -> str | None:
    """The status of the run in ``folder`` from its manifest; None when it has not started (no
    manifest), ``unreadable`` when the manifest is not JSON (resuming it names what is wrong)."""
    path = Path(folder) / "manifest.json"
    if not path.is_file():
        return None
    try:
        return str(json.loads(path.read_text()).get("status"))
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        return "unreadable"


def finish(folder: Path, config: RunConfig, execution: Execution, given: dict[str, Any]) -> list[dict]:
    """Bring the run in ``folder`` to its end: start it with ``config`` when it has not started,
    resume it (with the settings ``given``) when it stopped, leave it when it finished; returns
    the failures its manifest lists (a grid point of ``tune``, a cell of a study)."""
    status = run_status(folder)
    if status is None:
        execute(dataclasses.replace(config, out=folder), execution)
    elif status not in FINISHED:
        resume(folder, execution, given)
    return json.loads((Path(folder) / "manifest.json").read_text()).get("failures", [])


def prepare_out(out: Path | None, task: str) -> tuple[Path, FolderLock]:
    """Create and claim the output folder (default: a new one under ``results/runs/``): it must
    be writable, and empty or new (an earlier run is continued with --resume, anything else is
    not overwritten). It is checked before anything is created in it, and again once claimed
    (another run may have come first). The claim keeps a second run out until this one ends."""
    out = Path(out) if out is not None else new_folder("runs", task)
    if out.exists() or out.is_symlink():
        holder = lock_holder(out) if out.is_dir() else None
        if holder is not None:  # a live run's folder is refused as such, not as a folder that holds a run
            raise ConfigError(
                f"{out} is in use by another run ({holder}); wait for it to end, or choose another folder"
            )
        refuse_unless_new(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(
            f"cannot write to --out {out} ({err.strerror or err}); choose a folder you can write to"
        ) from None
    lock = FolderLock(out)
    try:
        refuse_unless_new(out)
    except ConfigError:
        lock.release()
        raise
    return out, lock


def refuse_unless_new(out: Path) -> None:
    """Refuse (ConfigError) an existing ``out`` that a new run may not write into: a file, a
    folder that holds a run or anything else but a lock file this harness left there."""
    if not out.is_dir():
        raise ConfigError(f"--out {out} is a file; choose a folder")
    names = {p.name for p in out.iterdir()}
    if names & {"rounds.csv", "manifest.json"}:
        raise ConfigError(
            f"--out {out} already holds a run; choose a new folder, or continue it with "
            f"python -m bench run --resume {out}"
        )
    if names - {LOCK}:
        raise ConfigError(
            f"--out {out} is not empty and holds no run (nothing there is overwritten); choose a new or empty folder"
        )
    problem = lock_problem(out / LOCK)
    if problem is not None:
        raise ConfigError(f"--out {out}: {not_our_lock(out / LOCK, problem)}")


def discard_new(out: Path) -> None:
    """Remove what a new run wrote into ``out`` before any unit ran (its lock, an empty rounds.csv,
    temp files), and ``out`` itself when that leaves it empty: a run that could not start leaves no
    folder behind."""
    for name in (LOCK, *RUN_FILES, *(f"{name}.tmp" for name in RUN_FILES)):
        (out / name).unlink(missing_ok=True)
    if not any(out.iterdir()):
        out.rmdir()


def with_threads(config: RunConfig, execution: Execution) -> RunConfig:
    """``config`` with its torch threads per unit settled (recorded, so a resume uses the same):
    as given, else max(1, cores // jobs) beside other local workers, the Ray CPUs per unit, or
    torch's default for one unit at a time."""
    if config.threads is not None:
        return config
    if execution.executor == "ray":
        threads = max(1, int(execution.cpus_per_job or 1))
    elif execution.jobs > 1:
        threads = default_threads(execution.jobs)
    else:
        import torch

        threads = torch.get_num_threads()
    return dataclasses.replace(config, threads=threads)


def execute(config: RunConfig, execution: Execution | None = None, recipe: dict | None = None) -> Path:
    """Validate ``config``, run all its units with ``execution``, and write every output;
    returns the run folder. ``recipe``: the manifest's record of the recipe applied to ``config``
    (``run --recipe``, :func:`bench.run.recipe.recipe_record`), if any."""
    execution = execution or Execution()
    execution.check()
    if execution.track_uri is not None and execution.track is None:
        raise ConfigError("--track-uri names where --track logs; add --track mlflow, or drop --track-uri")
    if execution.track is not None:
        require(execution.track)
    assembly = assemble(with_threads(config, execution))
    plan = assembly.plan
    out, lock = prepare_out(config.out, plan.task.name)
    try:
        try:
            data = assembly.data
        except BaseException:
            discard_new(out)
            raise
        seeds = [repeat_seed(plan.config.seed, r) for r in range(plan.config.repeats)]
        sizes = {**data_sizes(plan, data), **({"source": data.source} if data.source else {})}
        manifest = start_manifest(plan, seeds, sizes, recipe)
        try:
            folder = RunFolder.create(out, manifest, plan_units(plan), plan.extra_columns, execution.keep_checkpoints)
        except FolderWriteError as err:
            discard_new(out)
            raise ConfigError(f"{err}; free space there, or choose another --out") from None
        run_units(assembly, folder, execution)
    finally:
        lock.release()
    return out


def data_sizes(plan: Plan, data: TaskData) -> dict[str, Any]:
    """The manifest's record of the data a run computes on (its ``data`` entry, but the source):
    the pool and test sizes and, with ``--imbalance``, the pool's samples per class."""
    sizes: dict[str, Any] = {"pool": len(data.pool_x), "test": len(data.test_x)}
    if plan.config.imbalance is not None:
        sizes["class_counts"] = class_counts(data.pool_y)
    return sizes


#: Flags a resumed run may set: how it executes and where it finds its data, not what it computes.
RESUMABLE = NOT_PLANNED - {"out"}


def resume(folder: Path, execution: Execution | None = None, given: dict | None = None) -> Path:
    """Go on with the run in ``folder``: its plan comes from its manifest; finished units are
    skipped and unfinished ones continue from their last checkpoint. ``given`` holds settings
    the user passed again (RunConfig field -> value); one that differs from the manifest's is
    refused, except those in :data:`RESUMABLE`."""
    execution = execution or Execution()
    execution.check()
    if execution.track is not None:
        require(execution.track)
    folder = Path(folder)
    if not (folder / "manifest.json").is_file():
        raise ConfigError(f"--resume {folder}: no manifest.json there; pass the folder of a run")
    lock = FolderLock(folder)
    try:
        return _resume(folder, lock, execution, given)
    finally:
        lock.release()


def _resume(folder: Path, lock: FolderLock, execution: Execution, given: dict | None) -> Path:
    manifest_path = folder / "manifest.json"
    try:
        manifest = json.loads(manifest_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(f"--resume {folder}: manifest.json is not a run's manifest ({err})") from None
    if isinstance(manifest, dict) and manifest.get("status") in ("complete", "complete with failures"):
        raise ConfigError(f"--resume {folder}: the run is already {manifest['status']}; nothing to do")
    if isinstance(manifest, dict) and "config" in manifest and "units" not in manifest:
        raise ConfigError(
            f"--resume {folder}: the run predates resumable runs (no units in its manifest); start it again"
        )
    problem = manifest_problem(manifest)
    if problem is not None:
        raise ConfigError(
            f"--resume {folder}: {manifest_path}: {problem}; restore the manifest the run wrote, or start the "
            f"run again in a new folder"
        )
    if execution.track_uri is not None and execution.track is None and not isinstance(manifest.get("tracking"), dict):
        raise ConfigError(
            f"--resume {folder}: the run is not tracked, and --track-uri names where --track logs; add --track mlflow "
            f"to track it from now on (every round so far is logged too), or drop --track-uri"
        )
    changed = plan_changes(manifest)
    if changed:
        raise ConfigError(
            f"--resume {folder}: {', '.join(f'config.{name}' for name in changed)} in {manifest_path} "
            f"differs from what the run was started with (its plan checksum); a run's plan cannot change "
            f"on resume: restore the manifest, or start a new run with the settings you want"
        )
    try:
        config = RunConfig.from_manifest(manifest["config"])
    except TypeError as err:
        raise ConfigError(f"--resume {folder}: manifest.json is not a run's manifest ({err})") from None
    for name, value in (given or {}).items():
        if name == "strategy_options":
            clash = {k: v for k, v in value.items() if config.strategy_options.get(k) != v} or None
        else:
            clash = value if getattr(config, name) != value and name not in RESUMABLE else None
        if clash is not None:
            raise ConfigError(
                f"--resume {folder}: {name.replace('_', '-')} {clash!r} contradicts the run's "
                f"manifest ({name} = {getattr(config, name)!r}); drop the flag to resume the run "
                f"as it was started"
            )
    # the device and precisions the run resolved stay as they were ("auto" may resolve otherwise here)
    ran_on = manifest.get("device", {})
    pinned = {
        k: ran_on[m]
        for k, m in (("device", "device"), ("score_dtype", "score_dtype"), ("train_dtype", "train_dtype"))
        if m in ran_on
    }
    config = dataclasses.replace(
        config, out=folder, **pinned, **{k: v for k, v in (given or {}).items() if k in RESUMABLE}
    )
    assembly = assemble(config)
    plan = assembly.plan
    contradiction = plan_contradiction(folder, manifest, plan)
    if contradiction is not None:
        field, evidence = contradiction
        raise ConfigError(
            f"--resume {folder}: config.{field} in {manifest_path} does not match {evidence}; a run's plan "
            f"cannot change on resume: restore the manifest, or start a new run with the settings you want"
        )
    data = assembly.data
    sizes = data_sizes(plan, data)
    if any(manifest.get("data", {}).get(k) != v for k, v in sizes.items()):
        raise ConfigError(
            f"--resume {folder}: the data differ from the run's ({sizes} samples now, "
            f"{manifest.get('data')} then); point --data-root at the data the run started with"
        )
    run_folder = RunFolder.reopen(folder, plan.extra_columns, execution.keep_checkpoints)
    run_folder.manifest.setdefault("resumes", []).append({"started": now(), "command": command_line()})
    run_units(assembly, run_folder, execution)
    return folder


def track(folder: Path, backend: str | None = None, uri: str | None = None) -> bool:
    """``python -m bench track DIR``: log what the tracker lacks of the run in ``folder`` (every
    round of its ``rounds.csv`` it has not, the units' ends, the report files), into the MLflow
    runs its manifest records (a new one where there are none), with ``backend`` and ``uri`` as
    ``--track`` and ``--track-uri``; True when nothing failed. A live run's folder is refused."""
    folder = Path(folder)
    path = folder / "manifest.json"
    if not path.is_file():
        raise ConfigError(f"{folder}: no manifest.json there; pass the folder of a run")
    lock = FolderLock(folder)
    try:
        try:
            manifest = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ConfigError(f"{path} is not a run's manifest ({err})") from None
        problem = manifest_problem(manifest)
        if problem is not None:
            raise ConfigError(f"{path}: {problem}; restore the manifest the run wrote")
        record = manifest.get("tracking")
        backend = backend or (record.get("backend") if isinstance(record, dict) else None)
        if backend is None:
            raise ConfigError(f"{folder}: the run was not tracked; give --track mlflow to track it")
        require(backend)
        if uri is None and isinstance(record, dict) and record.get("uri") is None:
            raise ConfigError(
                f"{folder}: the run was tracked in a store whose absolute path its manifest does not record; "
                f"name it with --track-uri"
            )
        tracker = Tracker(backend, uri)
        tracker.start(manifest, folder)
        with writing(path):
            write_json(path, manifest)  # the tracking entry, before manifest.json becomes an artifact
        tracker.finish()
        with writing(path):
            write_json(path, manifest)
    finally:
        lock.release()
    return tracker.active


def plan_contradiction(folder: Path, manifest: dict, plan: Plan) -> tuple[str, str] | None:
    """Where ``plan``, rebuilt from the manifest's config, contradicts what the run in ``folder``
    did: the setting of ``config`` that must have been edited, and the evidence. The evidence is
    the units the manifest lists, the rows of ``rounds.csv`` (task, strategies, repeats, seeds,
    rounds and labeled-set sizes) and what the manifest recorded when the run started (task,
    strategies, repeat seeds, protocol). This is how an edited manifest without plan checksums
    (a run started before they were recorded) is caught; None when nothing contradicts it."""
    config, protocol = plan.config, plan.protocol
    strategies = {cls.name for cls in plan.strategies}
    seeds = [repeat_seed(config.seed, r) for r in range(config.repeats)]
    units = sorted(u.key for u in plan_units(plan))
    if sorted(manifest["units"]) != units:
        return (
            "strategies or config.repeats",
            f"its units ({', '.join(sorted(manifest['units']))}; the plan has {', '.join(units)})",
        )
    path = folder / "rounds.csv"
    rows = read_rounds_csv(path) if path.exists() and path.stat().st_size else None
    if rows is not None and len(rows):
        expected = {
            "task": lambda row: row.task == plan.task.name,
            "strategies": lambda row: row.strategy in strategies,
            "repeats": lambda row: 0 <= row.repeat < config.repeats,
            "seed": lambda row: row.seed == seeds[row.repeat],
            "rounds": lambda row: 1 <= row.round <= protocol.rounds,
            "initial or config.increment": (
                lambda row: row.n_labeled == protocol.initial + (row.round - 1) * protocol.increment
            ),
        }
        for row in rows.itertuples():
            for field, holds in expected.items():
                if not holds(row):
                    return field, (
                        f"the rows of {path} (line {row.Index + 2}: task {row.task}, strategy {row.strategy}, "
                        f"repeat {row.repeat}, seed {row.seed}, round {row.round}, n_labeled {row.n_labeled})"
                    )
    recipe = {**dataclasses.asdict(protocol), "optimizer": optimizer_name(protocol.optimizer)}
    given = {"task": plan.task.name, "repeat_seeds": seeds, "strategies": sorted(strategies)}
    given.update({f"protocol.{name}": value for name, value in recipe.items()})
    started = {key: manifest[key] for key in ("task", "repeat_seeds") if key in manifest}
    if isinstance(manifest.get("strategies"), dict):
        started["strategies"] = sorted(manifest["strategies"])
    if isinstance(manifest.get("protocol"), dict):
        started.update({f"protocol.{name}": value for name, value in manifest["protocol"].items()})
    for where, then in started.items():
        if where in given and then != given[where]:
            field = "seed" if where == "repeat_seeds" else where.removeprefix("protocol.")
            return field, f"what the run recorded when it started ({where} {then!r}; the config gives {given[where]!r})"
    return None


def executor_for(assembly: Assembly, execution: Execution):
    """The executor ``execution`` asks for, ready to run the assembled plan's units."""
    plan, generative = assembly.plan, assembly.generative
    if execution.executor == "ray":
        from bench.run.ray_executor import RayExecutor

        spec = WorkerSpec.of(uuid.uuid4().hex, plan, generative)
        gpus = execution.gpus_per_job if execution.gpus_per_job is not None else float(plan.device.type == "cuda")
        cpus = execution.cpus_per_job or float(plan.config.threads)
        return RayExecutor(spec, execution.ray_address, cpus, gpus, unit_timeout=execution.unit_timeout)
    if execution.jobs > 1:
        cores = available_cores()
        if execution.jobs * plan.config.threads > cores:
            log.warning(
                "%d workers x %d threads on %d cores: they will slow each other down (the threads "
                "per unit are the run's, so that its numbers stay the same)",
                execution.jobs,
                plan.config.threads,
                cores,
            )
        return LocalProcesses(WorkerSpec.of(uuid.uuid4().hex, plan, generative), execution.jobs, execution.unit_timeout)
    return InProcess(assembly, execution.unit_timeout)


def run_units(assembly: Assembly, folder: RunFolder, execution: Execution) -> None:
    """Run the folder's unfinished units with ``execution``, then write the tables and figure.
    However it ends (done, an error, Ctrl-C or SIGTERM), the manifest says how."""
    error = None
    tracker = Tracker.of(execution.track, execution.track_uri, folder.manifest)
    try:
        _run_units(assembly, folder, execution, tracker)
    except BaseException as err:
        error = err
        if isinstance(err, KeyboardInterrupt):
            log.warning("interrupted; go on with: python -m bench run --resume %s", folder.out)
        raise
    finally:
        try:
            folder.finish(error)
        finally:
            if tracker is not None:  # last: the report files and the final manifest are its artifacts
                tracker.finish()
                if "stopped" in (folder.manifest.get("tracking") or {}):  # a tracker that failed in finish
                    try:
                        folder.save_manifest()
                    except FolderWriteError as err:
                        log.warning("%s; the manifest does not say where tracking stopped", err)


def _run_units(assembly: Assembly, folder: RunFolder, execution: Execution, tracker: Tracker | None = None) -> None:
    plan, data = assembly.plan, assembly.data
    config, protocol = plan.config, plan.protocol
    generative, generative_file = assembly.generative, assembly.generative_file
    manifest = folder.manifest
    # (where it tracks is the manifest's tracking entry: a --track-uri may name a folder of the machine)
    manifest["execution"] = {
        k: v for k, v in dataclasses.asdict(execution).items() if v is not None and k != "track_uri"
    }
    if generative_file is not None:
        manifest["generative"].update(generative_file_entry(generative_file))
        try:
            quality = cached_quality(generative_file, generative, plan.generative, plan.task, data, config.seed)
            manifest["generative"]["quality"] = quality.as_dict()
        except Exception as err:  # a diagnostic: it must never cost the run
            log.warning(
                "could not measure the latent quality of %s (%s); the run goes on without it", generative_file.name, err
            )
            manifest["generative"]["quality"] = {"error": f"{type(err).__name__}: {err}"}
        samples = generative_file.with_suffix(".png")  # a grid of reconstructions and prior samples
        if not samples.exists() and data.pool_x.ndim == 4:  # drawn once per cached model, kept beside it
            try:
                sample_grid(generative, data.pool_x, samples, config.seed)
            except Exception as err:  # a picture: it must never cost the run
                log.warning("could not draw samples of %s (%s); the report shows none", generative_file.name, err)
        if samples.exists():
            with writing(folder.out / "generative-samples.png"):
                shutil.copyfile(samples, folder.out / "generative-samples.png")
    units = folder.unfinished()
    jobs = [Job(unit, folder.latest_checkpoint(unit)) for unit in units]
    if tracker is not None:
        tracker.start(manifest, folder.out)  # a resumed run's rounds the tracker lacks are logged first
    folder.start()
    total = len(manifest["units"]) * protocol.rounds
    bar = tqdm(
        total=total,
        initial=min(folder.rounds_written(), total),
        desc=f"{plan.task.name} rounds",
        unit="round",
        disable=config.quiet,
    )
    in_flight: dict[str, str] = {}

    def on_event(event: Event) -> None:
        folder.on_event(event)
        if tracker is not None:
            tracker.on_event(event)
        key = event.unit.key
        if isinstance(event, Started):
            in_flight[key] = "starting"
        elif isinstance(event, RoundFinished):
            record = event.record
            in_flight[key] = f"t={record.round} {record.metric}={record.value:.4g}"
            bar.n = min(folder.rounds_written(), total)
            bar.refresh()
        elif isinstance(event, (Finished, Failed)):
            in_flight.pop(key, None)
        bar.set_postfix_str(", ".join(f"{k} {v}" for k, v in in_flight.items()))

    try:
        executor_for(assembly, execution).run(jobs, on_event, folder.latest_checkpoint)
    finally:
        bar.close()
        folder.close()
    with writing(folder.out / "rounds.csv"):
        sort_rows(folder.out / "rounds.csv", [(u.strategy, u.repeat) for u in plan_units(plan)])
    rows = read_rounds_csv(folder.out / "rounds.csv")
    label_variants([rows], [manifest])
    if rows.empty:
        log.warning("no unit finished a round: no tables or figure to write")
    else:
        with writing(folder.out):  # the tables and figures
            write_report(rows, folder.out, MetricInfo.of(plan.task.metric), sources=[Source(folder.out, manifest)])
