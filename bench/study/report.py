"""The study report: who beats whom how often over a study's cells, each strategy's AUBC rank per
cell and over the cells, and a paragraph read off those numbers.

Every cell is an ordinary run folder under the study folder (:attr:`~bench.study.spec.Cell.name`);
its own report (``table.md``, ...) is the one ``python -m bench report RUN`` writes. The study
report adds, in the study folder:

- ``penalty.csv``, ``penalty.png`` / ``.svg``: the pairwise penalty matrix of Ash et al. (ICLR 2020,
  "Deep Batch Active Learning by Diverse, Uncertain Gradient Lower Bounds", Fig. 3). Entry (i, j)
  counts the (cell, round) pairs where strategy i beats strategy j by a paired two-sided t-test
  at 0.05 over the repeats both ran with the same (seed, repeat). The rounds compared are those
  after the first (in round 1 every strategy trains on the same initial set); each weighs 1/(R - 1)
  in a cell of R rounds, so that every cell weighs 1 and an entry is at most the number of cells
  where both ran;
- ``ranks.csv`` and ``mean_ranks.csv``: each strategy's AUBC rank per cell (1 = best by the
  metric's direction, ties share the average rank) and its mean over the cells it ran in;
- ``study.md``: a paragraph generated from those numbers, the tables, and a line per cell linking
  to its run's ``table.md`` or saying it was not run or is unfinished;
- ``report.html``: all of it on one self-contained page, each cell linking to its own
  ``report.html`` (:mod:`bench.study.page`).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from bench.report.tables import (
    ReportError,
    finite_values,
    metric_info,
    read_rounds,
    report_sources,
    unfinished,
    write_report,
)
from bench.run.folder import lock_holder
from bench.study.numbers import ALPHA, CellResult, cells_of, mean_ranks, penalty_matrix, rank_table, total_rounds
from bench.study.page import write_study_page
from bench.study.reading import study_markdown
from bench.study.spec import Cell, format_value

log = logging.getLogger(__name__)

PENALTY_DESCRIPTION = (
    "row strategy i, column strategy j: the number of (cell, round) pairs in which i beats j by a paired two-sided "
    f"t-test at p < {ALPHA} over the repeats both ran with the same (seed, repeat), the mean difference in i's favour "
    "by the metric's direction; each round after the first (round 1 trains every strategy on the same initial set) "
    "of a cell of R rounds counts 1/(R - 1), so each cell weighs 1 and an entry is "
    "at most the number of cells where both ran (Ash et al. 2020, Fig. 3). wins: the row's total (how much i beats "
    "the others); beaten: the column total of i (how much the others beat i); cells: the cells i ran in"
)
RANKS_DESCRIPTION = (
    "per cell, each strategy's AUBC (the area under each repeat's learning curve divided by the budget span, in the "
    "units of rounds.csv; mean and sample std over the repeats that ran every round) and its rank among the cell's "
    "strategies, 1 = best by the metric's direction, ties sharing the average rank"
)
MEAN_RANKS_DESCRIPTION = (
    "a strategy's AUBC rank (ranks.csv) averaged over the cells it ran in; cells: how many; with several tasks, "
    "mean_rank <task> and cells <task>: the same over that task's cells alone"
)


def write_study_report(folder: Path, cells: Sequence[Cell]) -> list[Path]:
    """Write the study report of the study in ``folder`` over ``cells`` (in study order): a cell's
    own run report where its run has rows but no ``table.md`` or ``report.html``; ``penalty.csv``, ``penalty.png`` and
    ``penalty.svg``; ``ranks.csv`` and ``mean_ranks.csv``; ``study.md``. Cells without a run folder
    or rows are listed in ``study.md`` as not run and left out of the numbers. Returns the files
    written."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    results = []
    for cell in cells:
        result, paths = _read_cell(folder, cell)
        results.append(result)
        written += paths
    reported = [r for r in results if r.reported]
    strategies = list(dict.fromkeys(s for r in reported for s in r.rows["strategy"]))
    penalty = penalty_matrix(reported, strategies)
    ranks = rank_table(reported)
    means = mean_ranks(ranks, strategies)
    if strategies:
        penalty_frame(penalty, strategies, reported).to_csv(folder / "penalty.csv", index=False)
        ranks.assign(description=RANKS_DESCRIPTION).to_csv(folder / "ranks.csv", index=False)
        means.assign(description=MEAN_RANKS_DESCRIPTION).to_csv(folder / "mean_ranks.csv", index=False)
        written += [folder / "penalty.csv", folder / "ranks.csv", folder / "mean_ranks.csv"]
        written += plot_penalty(penalty, strategies, len(reported), total_rounds(reported), folder / "penalty")
    text = study_markdown(folder, results, penalty, strategies, ranks, means)
    (folder / "study.md").write_text(text)
    page = write_study_page(folder, results, penalty, strategies, ranks, means)
    return [*written, folder / "study.md", page]


def _read_cell(study: Path, cell: Cell) -> tuple[CellResult, list[Path]]:
    """A cell's rounds and metric, read once; its run's own report written (as ``python -m bench
    report RUN`` would) when the run has rows and no ``table.md`` yet or has not finished, unless a
    live run holds its folder (the run writes its own report when it ends). A cell whose rows cannot be
    reported is kept with the reason (``missing``), never fatal to the study report."""
    folder = study / cell.name
    result = CellResult(cell, folder)
    if not (folder / "rounds.csv").is_file():
        result.missing = "not run (no run folder)" if not folder.is_dir() else "not run (no rounds.csv)"
        return result, []
    paths: list[Path] = []
    try:
        result.note = unfinished(folder)
        result.planned = planned_rounds(folder)
        labeled = read_rounds([folder])
        result.metric = metric_info([folder], labeled)
        # an unfinished run's tables are written again (it may have gone on since), a live run's never
        written = all((folder / name).exists() for name in ("table.md", "report.html"))
        if (result.note is not None or not written) and lock_holder(folder) is None:
            notes = [result.note] if result.note else []
            paths = write_report(labeled, folder, result.metric, notes, sources=report_sources([folder]))
        rounds, _ = finite_values(labeled)
    except ReportError as err:
        result.metric = None
        result.missing = "not run (no rows in rounds.csv)" if "no rows yet" in str(err) else f"not reported: {err}"
        if not result.missing.startswith("not run"):
            log.warning("study report: cell %s left out: %s", cell.name, err)
        return result, paths
    rounds = rounds.assign(strategy=[plain_name(s, cell) for s in rounds["strategy"]])
    result.rounds = rounds[["strategy", "seed", "repeat", "round", "n_labeled", "value"]].reset_index(drop=True)
    return result, paths


def planned_rounds(folder: Path) -> int | None:
    """The rounds of the run in ``folder`` as its manifest's protocol plans them; None when not recorded."""
    try:
        rounds = json.loads((folder / "manifest.json").read_text())["protocol"]["rounds"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return rounds if isinstance(rounds, int) and not isinstance(rounds, bool) and rounds > 0 else None


def plain_name(labeled: str, cell: Cell) -> str:
    """A strategy's name as the study compares it: the report labels a strategy run with other
    than its default options by them (``si (start=pool)``, :func:`~bench.report.tables.label_variants`);
    an option that is one of the cell's settings (an axis of the study: a strategy option, or a
    generative model's ``generative.<key>``) is dropped from the label,
    so that the strategy is one strategy across the cells of that axis. Others stay."""
    match = re.fullmatch(r"(.+?) \((.*)\)", labeled)
    if not match:
        return labeled
    base, options = match.group(1), match.group(2).split(", ")
    shown = {k: {str(v), format_value(v)} for k, v in cell.settings.items()}
    kept = []
    for option in options:
        key, _, value = option.partition("=")
        if not any(value in shown.get(name, ()) for name in (f"{base}.{key}", key, f"generative.{key}")):
            kept.append(option)
    return f"{base} ({', '.join(kept)})" if kept else base


def penalty_frame(penalty: np.ndarray, strategies: list[str], results: Sequence[CellResult]) -> pd.DataFrame:
    """``penalty.csv``: a row per strategy i, its entry against each j (the diagonal empty), wins,
    beaten, the cells it ran in and what an entry is."""
    entries = penalty.round(6)
    entries[np.diag_indices(len(strategies))] = np.nan
    frame = pd.DataFrame(entries, columns=strategies)
    frame.insert(0, "strategy", strategies)
    frame["wins"] = penalty.sum(axis=1).round(6)
    frame["beaten"] = penalty.sum(axis=0).round(6)
    frame["cells"] = [cells_of(s, results) for s in strategies]
    frame["description"] = PENALTY_DESCRIPTION
    return frame


def plot_penalty(penalty: np.ndarray, strategies: list[str], cells: int, rounds: int, stem: Path) -> list[Path]:
    """The penalty matrix as a heatmap, each entry written in its cell (2 decimals), rows the winner
    and columns the loser, the column totals (beaten) in a strip below and the row totals (wins)
    in a strip right of it; saved as ``stem``.png and .svg."""
    from bench.report.curves import fit_titles, pyplot, save_figure

    plt = pyplot()
    k = len(strategies)
    side = max(3.0, 0.75 * k + 1.5)
    fig = plt.figure(figsize=(side + 1.6, side + 1.0), layout="constrained")
    grid = fig.add_gridspec(2, 2, width_ratios=[k, 1.2], height_ratios=[k, 1.2])
    ax, below, right = fig.add_subplot(grid[0, 0]), fig.add_subplot(grid[1, 0]), fig.add_subplot(grid[0, 1])
    shown = penalty.copy()
    shown[np.diag_indices(k)] = np.nan
    top = max(float(np.nanmax(shown)) if k > 1 else 0.0, 1e-9)
    cmap = plt.get_cmap("Reds").with_extremes(bad="#dddddd")
    ax.imshow(np.ma.masked_invalid(shown), cmap=cmap, vmin=0, vmax=top, aspect="auto")
    for i in range(k):
        for j in range(k):
            if i != j:
                ax.text(j, i, f"{shown[i, j]:.2f}", ha="center", va="center", color=_ink(shown[i, j], top))
    ax.set_xticks(range(k), [""] * k)
    ax.set_yticks(range(k), strategies)
    ax.set_ylabel("winner i (row)")
    ax.set_title(
        f"pairwise penalty matrix: {cells} {'cell' if cells == 1 else 'cells'}, {rounds} (cell, round) comparisons;\n"
        f"entry: the rounds in which row i beats column j (paired t-test, p < {ALPHA}), each cell weighing 1"
    )
    beaten, wins = penalty.sum(axis=0), penalty.sum(axis=1)
    strip_top = max(float(beaten.max()), float(wins.max()), 1e-9)
    below.imshow(beaten[None, :], cmap="Greys", vmin=0, vmax=strip_top * 2, aspect="auto")
    for j, value in enumerate(beaten):
        below.text(j, 0, f"{value:.2f}", ha="center", va="center")
    below.set_xticks(range(k), strategies, rotation=45, ha="right")
    below.set_yticks([0], ["beaten\n(column total)"])
    below.set_xlabel("loser j (column)")
    right.imshow(wins[:, None], cmap="Greys", vmin=0, vmax=strip_top * 2, aspect="auto")
    for i, value in enumerate(wins):
        right.text(0, i, f"{value:.2f}", ha="center", va="center")
    right.set_xticks([0], ["wins\n(row total)"])
    right.set_yticks([])
    fit_titles(fig)
    return save_figure(fig, stem)


def _ink(value: float, top: float) -> str:
    return "white" if value > 0.6 * top else "black"
