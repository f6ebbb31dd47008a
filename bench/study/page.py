"""A study's ``report.html``: the reading, the penalty matrix (as a figure and a sortable table), the
mean AUBC ranks, the rank of every strategy in every cell with a link to the cell's own
``report.html``, the cells not run, and ``study.json`` in a collapsible block: the numbers of
``penalty.csv``, ``mean_ranks.csv`` and ``ranks.csv`` on one self-contained page."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pandas as pd

from bench.report.html import Cell, details, esc, figure_file, image, page, pre, table
from bench.study.numbers import ALPHA, CellResult, cells_of, total_rounds
from bench.study.reading import reading, task_readings


def _paragraph(markdown: str) -> str:
    """A reading paragraph (markdown with ``**bold**`` only) as HTML."""
    return "<p>" + re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", esc(markdown)) + "</p>"


def _href(folder: Path, cell_name: str) -> str:
    """The link to a cell's ``report.html``, or to its ``table.md`` when it has no page (a run
    folder kept without one)."""
    page_name = "report.html" if (folder / cell_name / "report.html").is_file() else "table.md"
    return quote(f"{cell_name}/{page_name}", safe="/=,+()")


def write_study_page(
    folder: Path,
    results: Sequence[CellResult],
    penalty: np.ndarray,
    strategies: list[str],
    ranks: pd.DataFrame,
    means: pd.DataFrame,
) -> Path:
    """Write ``folder/report.html`` from the study report's numbers and return its path."""
    folder = Path(folder)
    reported = [r for r in results if r.reported]
    title = f"Study {folder.name}: {len(results)} cells, {len(reported)} reported"
    body = [f"<h1>{esc(title)}</h1>"]
    by_task = task_readings(results, ranks)
    body.append(_paragraph(reading(results, penalty, strategies, ranks, means, detail=not by_task)))
    body += [_paragraph(text) for text in by_task]
    if strategies:
        body += [
            _penalty(folder, penalty, strategies, reported),
            _means(means),
            _cells(folder, results, strategies, ranks),
        ]
    missing = [r for r in results if r.missing]
    if missing:
        body.append("<h2>Not reported</h2><ul>")
        body += [f"<li>{esc(r.cell.name)}: {esc(r.missing)}; left out of the numbers above</li>" for r in missing]
        body.append("</ul>")
    record = folder / "study.json"
    if record.is_file():
        body.append("<h2>Settings</h2>" + details("study.json", pre(record.read_text())))
    path = folder / "report.html"
    path.write_text(page(f"{title} (latent-bench study)", "\n".join(body)))
    return path


def _penalty(folder: Path, penalty: np.ndarray, strategies: list[str], reported: Sequence[CellResult]) -> str:
    beaten = penalty.sum(axis=0)
    rows = []
    for i, s in enumerate(strategies):
        row: list = [Cell(s)]
        row += [
            Cell("", "") if i == j else Cell(f"{penalty[i, j]:.2f}", float(penalty[i, j]))
            for j in range(len(strategies))
        ]
        row += [Cell(f"{penalty[i].sum():.2f}", float(penalty[i].sum())), Cell(f"{beaten[i]:.2f}", float(beaten[i]))]
        row.append(cells_of(s, reported))
        rows.append(row)
    caption = (
        f"row i, column j: the (cell, round) pairs in which i beats j by a paired two-sided t-test at p < {ALPHA} "
        f"over the repeats both ran with the same (seed, repeat), by each cell's metric direction; each round after "
        f"the first of a cell of R rounds counts 1/(R - 1), so each cell weighs 1 (Ash et al. 2020, Fig. 3). Over "
        f"{len(reported)} cells and {total_rounds(reported)} (cell, round) comparisons. wins: the row total; beaten: "
        f"the column total; cells: the cells the strategy ran in"
    )
    shown = image(figure_file(folder / "penalty"), "pairwise penalty matrix")
    header = ["i beats j →", *strategies, "wins", "beaten", "cells"]
    return "<h2>Pairwise penalty matrix</h2>" + shown + table(header, rows, caption, name="penalty")


def _means(means: pd.DataFrame) -> str:
    per_task = [c.removeprefix("mean_rank ") for c in means.columns if c.startswith("mean_rank ")]
    header = ["strategy", "mean rank", "cells", *(f"{task}: mean rank" for task in per_task)]
    rows = []
    for row in means.sort_values("mean_rank", kind="stable").to_dict("records"):
        shown: list = [
            Cell(row["strategy"]),
            Cell(f"{row['mean_rank']:.2f}", float(row["mean_rank"])),
            int(row["cells"]),
        ]
        for task in per_task:
            rank = row[f"mean_rank {task}"]
            shown.append(
                Cell("", "") if pd.isna(rank) else Cell(f"{rank:.2f} ({int(row[f'cells {task}'])})", float(rank))
            )
        rows.append(shown)
    caption = (
        "each cell ranks its strategies by AUBC (the area under the learning curve over the budget span), 1 = best "
        "by the metric's direction, ties sharing the average rank; the mean is over the cells a strategy ran in"
    )
    return "<h2>Mean AUBC rank</h2>" + table(header, rows, caption, name="mean-ranks")


def _cells(folder: Path, results: Sequence[CellResult], strategies: list[str], ranks: pd.DataFrame) -> str:
    ranked = {(r.cell, r.strategy): (r.rank, r.aubc_mean) for r in ranks.itertuples()}
    rows = []
    for result in results:
        if not result.reported:
            continue
        metric, name = result.info, result.cell.name
        scale, d = metric.display_scale, metric.decimals
        link = Cell(f'<a href="{esc(_href(folder, name))}">{esc(name)}</a>', name, markup=True)
        row: list = [link]
        first = min(rank for (cell, _), (rank, _) in ranked.items() if cell == name)  # ties share the average rank
        for s in strategies:
            if (name, s) in ranked:
                rank, aubc = ranked[name, s]
                row.append(Cell(f"{rank:g} ({aubc * scale:.{d}f})", float(rank), "best" if rank == first else ""))
            else:
                row.append(Cell("", ""))
        row.append(Cell(f"{metric.name} ({metric.direction})" + (" unfinished" if result.note else "")))
        rows.append(row)
    caption = "rank (AUBC mean, as the cell's own report shows it); empty: did not run; each cell links to its report"
    return "<h2>AUBC rank per cell</h2>" + table(["cell", *strategies, "metric"], rows, caption, name="cells")
