"""``python -m bench study FILE``: run every cell of a study (:mod:`bench.study.spec`) as an ordinary
run, then write the study report (:mod:`bench.study.report`).

The study folder holds ``study.json`` (the study as parsed, with ``"all"`` resolved to the
strategies chosen; the file's name and SHA-256; how it runs; the cells; status and failures), one
run folder per cell (``<task>/<settings>``, named from its settings) and the report. Every cell is
planned before any work, so a study that cannot run is refused whole. Cells run one after
another through the ordinary driver (:func:`bench.cli.runner.execute`), each with the study's
``--jobs`` or ``--executor ray``; ``study --resume DIR`` skips finished cells, resumes unfinished
ones from their checkpoints and starts the rest, so a killed study loses no finished round.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
from pathlib import Path
from typing import Any

from bench.cli.runner import finish, new_folder, prepare_out, run_status, with_threads
from bench.run.config import ConfigError, Execution, RunConfig, check_protocol
from bench.run.folder import FolderLock
from bench.run.manifest import command_line, now, recorded_config
from bench.run.plan import Plan, load_data, pool_description
from bench.run.ray_executor import ray_session
from bench.study.spec import Cell, Study, digest, parse_study, read_study

log = logging.getLogger(__name__)

#: The file in a study folder that records its plan and progress.
STUDY_FILE = "study.json"


def start(source: str | Path, out: Path | None, base: RunConfig, execution: Execution) -> tuple[Path, list[str]]:
    """Read and plan the study ``source`` (a file, or a shipped study's name), claim a new study
    folder and run it; returns the folder and the failed units (``<cell>/<unit>``). ``base``
    holds how to run (device, threads, data root, quiet); the study sets the rest."""
    execution.check()
    study, raw = read_study(source)
    base = with_threads(base, execution)  # the same threads for every cell
    plans = study.plans(base)
    check_pools(study, plans)
    study = study.resolved(plans)
    if out is not None and (Path(out) / STUDY_FILE).exists():
        raise ConfigError(f"--out {out} already holds a study; choose a new folder, or go on with study --resume {out}")
    folder, lock = prepare_out(out or new_folder("studies", study.name), study.name)
    try:
        record = {
            "study": study.name,
            "file": Path(source).name if Path(source).is_file() else f"{source} (shipped)",
            "sha256": digest(raw),
            "command": command_line(),
            "started": now(),
            "status": "running",
            "run_with": recorded_config(base),
            "spec": study.record(),
            "cells": [cell.record() for cell in study.cells()],
        }
        write_record(folder, record)
        return folder, run_cells(study, plans, folder, execution, {}, record)
    finally:
        lock.release()


def check_pools(study: Study, plans: list[Plan]) -> None:
    """Check each cell's budget against its pool where planning cannot: a pool that ``--imbalance``
    shrinks is known only once its labels are read. Each such pool is loaded once, before any work
    (ConfigError naming the study and the cell)."""
    sizes: dict[tuple, int] = {}
    for cell, plan in zip(study.cells(), plans):
        config = plan.config
        if config.imbalance is None:
            continue
        key = (config.task, config.subset, config.imbalance, config.seed, str(config.data_root))
        try:
            if key not in sizes:
                sizes[key] = len(load_data(plan).pool_x)  # checks this cell's budget too
            else:
                check_protocol(plan.protocol, sizes[key], pool_description(plan), config.validation)
        except ConfigError as err:
            raise ConfigError(f"study {study.name}, cell {cell.name}: {err}; fix the study file") from None


def go_on(folder: Path, execution: Execution, given: dict[str, Any]) -> tuple[Path, list[str]]:
    """Go on with the study in ``folder``: finished cells are skipped, unfinished ones resumed, the
    others started. ``given``: the run settings a resume may change (data root, download, quiet)."""
    execution.check()
    folder = Path(folder)
    record = read_record(folder)
    try:
        study = parse_study(record["spec"], record["study"], f"{folder / STUDY_FILE} spec")
        base = dataclasses.replace(RunConfig.from_manifest(record["run_with"]), **given)
    except (KeyError, TypeError) as err:
        why = f"{STUDY_FILE} is not a study's record ({err})"
        raise ConfigError(f"--resume {folder}: {why}; pass a study folder") from None
    if [cell.record() for cell in study.cells()] != record.get("cells"):
        raise ConfigError(
            f"--resume {folder}: the cells in {STUDY_FILE} do not follow from its spec (was it edited?); "
            "restore it, or start the study again in a new folder"
        )
    plans = study.plans(base)
    lock = FolderLock(folder)
    try:
        record.setdefault("resumes", []).append({"started": now(), "command": command_line()})
        record["status"] = "running"
        write_record(folder, record)
        return folder, run_cells(study, plans, folder, execution, given, record)
    finally:
        lock.release()


def run_cells(
    study: Study, plans: list[Plan], folder: Path, execution: Execution, given: dict[str, Any], record: dict
) -> list[str]:
    """Run each cell not yet finished in its folder, then write the study report; returns the
    failed units. The study's status in ``study.json``: complete, or complete with failures."""
    from bench.study.report import write_study_report

    cells = study.cells()
    failures = []
    with contextlib.ExitStack() as stack:
        if execution.executor == "ray":  # one Ray session for every cell, not one each
            stack.enter_context(ray_session(execution.ray_address))
        for i, (cell, plan) in enumerate(zip(cells, plans), start=1):
            run = folder / cell.name
            log.info("study %d/%d: %s (%s)", i, len(cells), cell.name, run_status(run) or "new")
            try:
                failed = finish(run, plan.config, execution, given)
            except ConfigError as err:  # what planning could not see (the data's own sizes): name the cell
                raise ConfigError(f"study {study.name}, cell {cell.name}: {err}") from None
            failures += [f"{cell.name}/{f['strategy']}-r{f['repeat']}" for f in failed]
    record.update(status="complete with failures" if failures else "complete", finished=now(), failures=failures)
    write_record(folder, record)
    write_study_report(folder, cells)
    return failures


def write_record(folder: Path, record: dict) -> None:
    """Replace ``folder/study.json`` with ``record`` atomically (a kill leaves the old or the new one)."""
    path = Path(folder) / STUDY_FILE
    part = path.with_suffix(".json.part")
    part.write_text(json.dumps(record, indent=2, default=str) + "\n")
    os.replace(part, path)


def read_record(folder: Path) -> dict:
    """The record in ``folder/study.json`` (ConfigError naming the folder and the fix when absent or unreadable)."""
    path = Path(folder) / STUDY_FILE
    try:
        record = json.loads(path.read_text())
    except OSError as err:
        raise ConfigError(f"{folder}: cannot read {path} ({err.strerror or err}); pass a study folder") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(f"{folder}: {path} is not a study's record ({err}); pass a study folder") from None
    if not isinstance(record, dict):
        raise ConfigError(f"{folder}: {path} is not a study's record; pass a study folder")
    return record


def recorded_cells(folder: Path) -> list[Cell]:
    """The cells a study folder's ``study.json`` lists, in study order (what the report reads)."""
    record = read_record(folder)
    try:
        return [Cell(c["task"], dict(c["axes"]), dict(c["settings"])) for c in record["cells"]]
    except (KeyError, TypeError, ValueError) as err:
        raise ConfigError(f"{folder}: {STUDY_FILE} lists no cells ({err}); pass a study folder") from None
