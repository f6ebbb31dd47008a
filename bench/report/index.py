"""``index.html``: every run and study under a results folder on one self-contained page, a row each
with its task, strategies, repeats, status, start date, headline numbers (each strategy's AUBC;
for a study, its best mean ranks) and a link to its report. Unfinished and failed runs are marked.

A run is a folder with a ``manifest.json``; a study, a folder with a ``study.json`` (its cells are
runs too, listed on the study's own page rather than here)."""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pandas as pd

from bench.report.html import Cell, esc, page, plural, status_class, table
from bench.report.run_page import run_state

#: Folders never searched: a run's checkpoints, an MLflow store, virtual environments, caches.
SKIPPED = frozenset({"checkpoints", "mlruns", "node_modules", "__pycache__"})


@dataclass
class Entry:
    """One row of the index."""

    kind: str  # "run" or "study"
    folder: Path  # relative to the indexed folder
    task: str
    strategies: str
    repeats: str
    status: str
    detail: str  # the status in words (units complete, cells reported)
    started: str
    headline: str  # markup: the best numbers
    report: str | None  # the report's path relative to the indexed folder (None: no report yet)
    merged: str | None = None  # without a report of its own: the report above it that merges its rows


def find(root: Path) -> tuple[list[Path], list[Path]]:
    """The run folders and study folders under ``root`` (``root`` itself included), in path order."""
    runs, studies = [], []
    for here, folders, files in os.walk(root):
        folders[:] = sorted(f for f in folders if not f.startswith(".") and f not in SKIPPED)
        if "study.json" in files:
            studies.append(Path(here))
        if "manifest.json" in files:
            runs.append(Path(here))
    return runs, studies


def _read_json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _entry(record: dict, key: str, kind: type) -> Any:
    """``record[key]`` when it is of ``kind``, else an empty one (a hand-edited file shows what it can)."""
    value = record.get(key)
    return value if isinstance(value, kind) else kind()


def _report(folder: Path, root: Path) -> str | None:
    for name in ("report.html", "table.md", "study.md"):
        if (folder / name).is_file():
            return (folder / name).relative_to(root).as_posix()
    return None


def _merged_into(folder: Path, root: Path) -> str | None:
    """The report of the nearest folder above ``folder`` (under ``root``) that has one: where the
    rows of a run kept inside a merged report's folder are reported."""
    for above in folder.parents:  # up to root, which holds folder
        found = _report(above, root)
        if found is not None or above == root:
            return found
    return None


def _aubc_headline(folder: Path) -> str:
    """Each strategy's AUBC mean from ``summary.csv`` in the tables' units, the best in bold."""
    try:
        summary = pd.read_csv(folder / "summary.csv")
    except (OSError, ValueError):
        return ""
    if summary.empty or "aubc_mean" not in summary:
        return ""
    higher = bool(summary.get("metric_higher_is_better", pd.Series([True])).iloc[0])
    scale = float(summary.get("metric_display_scale", pd.Series([1.0])).iloc[0])
    decimals = int(summary.get("metric_decimals", pd.Series([1])).iloc[0])
    values = summary["aubc_mean"].astype(float)
    best = values.max() if higher else values.min()
    parts = []
    for strategy, value in zip(summary["strategy"], values):
        text = esc(f"{strategy} {value * scale:.{decimals}f}")
        parts.append(f"<b>{text}</b>" if value == best and not math.isnan(value) else text)
    direction = "higher" if higher else "lower"
    return " · ".join(parts) + f' <span class="muted">(AUBC, {direction} is better)</span>'


def run_entry(folder: Path, root: Path) -> Entry:
    """The index row of the run in ``folder``."""
    manifest = _read_json(folder / "manifest.json")
    status, detail = run_state(manifest) if manifest else ("unreadable", "manifest.json is not readable JSON")
    config, strategies = _entry(manifest, "config", dict), _entry(manifest, "strategies", dict)
    return Entry(
        kind="run",
        folder=folder.relative_to(root),
        task=str(manifest.get("task", config.get("task", ""))),
        strategies=", ".join(map(str, strategies)),
        repeats=str(config.get("repeats", "")),
        status=status,
        detail=detail,
        started=str(manifest.get("started", "")),
        headline=_aubc_headline(folder),
        report=_report(folder, root),
        merged=_merged_into(folder, root),
    )


def study_entry(folder: Path, root: Path, runs: list[Path]) -> Entry:
    """The index row of the study in ``folder``: its cells' states and its three best mean ranks."""
    record = _read_json(folder / "study.json")
    spec = _entry(record, "spec", dict)
    manifests = [_read_json(r / "manifest.json") for r in runs if folder in r.parents]  # its cells'
    states = [run_state(m)[0] for m in manifests]
    planned = len(_entry(record, "cells", list))
    done = sum(s in ("complete", "complete with failures") for s in states)
    status = str(record.get("status", "unknown"))
    if status != "complete" and planned and done == planned:
        status = "complete"
    headline = ""
    try:
        means = pd.read_csv(folder / "mean_ranks.csv").sort_values("mean_rank", kind="stable")
        best = [esc(f"{s} {r:.2f}") for s, r in zip(means["strategy"], means["mean_rank"])][:3]
        headline = " · ".join(best) + ' <span class="muted">(best mean AUBC ranks, 1 = best)</span>'
    except (OSError, ValueError, KeyError):
        pass
    strategies = {str(s) for m in manifests for s in _entry(m, "strategies", dict)}
    return Entry(
        kind="study",
        folder=folder.relative_to(root),
        task=", ".join(map(str, _entry(spec, "tasks", list))),
        strategies=", ".join(sorted(strategies)),
        repeats=str(spec.get("repeats", "")),
        status=status,
        detail=f"{done} of {planned} cells complete",  # its cells: on its own page
        started=str(record.get("started", "")),
        headline=headline,
        report=_report(folder, root),
    )


def write_index(root: Path) -> Path:
    """Write ``root/index.html`` listing every run and study under ``root``; returns its path."""
    root = Path(root)
    runs, studies = find(root)
    alone = [r for r in runs if not any(s in r.parents for s in studies)]  # a study's cells: on its own page
    entries = [study_entry(s, root, runs) for s in studies] + [run_entry(r, root) for r in alone]
    header = ["folder", "kind", "task", "strategies", "repeats", "status", "started (UTC)", "headline"]
    rows = []
    for e in entries:
        name = e.folder.as_posix() if str(e.folder) != "." else root.name
        if e.report is not None:
            link = Cell(f'<a href="{esc(quote(e.report))}">{esc(name)}</a>', name, markup=True)
        elif e.merged is not None:
            where = f'<a href="{esc(quote(e.merged))}">{esc(Path(e.merged).parent.as_posix())}</a>'
            link = Cell(f"{esc(name)} <span class='muted'>(reported in {where})</span>", name, markup=True)
        else:
            link = Cell(f"{esc(name)} <span class='muted'>(no report yet)</span>", name, markup=True)
        status = Cell(
            f'<span class="{status_class(e.status)}">{esc(e.status)}</span> <span class="muted">{esc(e.detail)}</span>',
            e.status,
            markup=True,
        )
        headline = Cell(e.headline, "", markup=True)
        started = Cell(e.started[:16].replace("T", " "), e.started)  # to the minute; sorts by the full time
        rows.append([link, e.kind, e.task, e.strategies, e.repeats, status, started, headline])
    runs_and_studies = f"{plural(len(studies), 'study', 'studies')} and {plural(len(alone), 'run')}"
    count = f"{runs_and_studies} under {root.resolve().name}/ (a study's cells: on its page)"
    about = (
        f"{count}; click a folder for its report, a column's header to sort. Status: complete, complete with "
        "failures (a unit failed; its error is in the report), failed (the run stopped with an error) or "
        "unfinished (go on with python -m bench run --resume FOLDER)."
    )
    body = f"<h1>latent-bench results: {esc(root.resolve().name)}</h1>" + table(header, rows, about, name="index")
    path = root / "index.html"
    path.write_text(page(f"latent-bench results: {root.resolve().name}", body))
    return path
