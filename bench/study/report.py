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
  to its run's ``table.md`` or saying it was not run or is unfinished.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pandas as pd
from scipy import stats

from bench.report.stats import aubc
from bench.report.tables import ReportError, finite_values, metric_info, read_rounds, unfinished, write_report
from bench.run.folder import lock_holder
from bench.run.results import MetricInfo
from bench.study.spec import Cell, format_value

log = logging.getLogger(__name__)

#: The level of the paired t-test behind a win.
ALPHA = 0.05
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
#: The fixed columns of ``ranks.csv``; an axis with one of these names is written as ``axis <name>``.
RANK_COLUMNS = ["cell", "task", "strategy", "aubc_mean", "aubc_std", "repeats", "rank", "metric", "direction"]


@dataclass
class CellResult:
    """One cell as the report found it: its rounds (finite values, strategies by their plain
    names) and metric when it has rows, else why not (``missing``); ``note``: unfinished()'s."""

    cell: Cell
    folder: Path
    rounds: pd.DataFrame | None = None
    metric: MetricInfo | None = None
    missing: str | None = None
    note: str | None = None
    planned: int | None = None  # the rounds in the run's plan (its manifest's protocol); None: not recorded

    @property
    def weight(self) -> float:
        """What one compared round of the cell weighs in the penalty matrix: 1 over the rounds a
        finished run compares (those after the first of its planned rounds), so that a finished
        cell weighs 1 and an unfinished one less."""
        planned = self.planned or int(self.rows["round"].max())
        return 1.0 / max(planned - 1, 1)

    @property
    def reported(self) -> bool:
        return self.rounds is not None and self.metric is not None

    @property
    def rows(self) -> pd.DataFrame:
        """The rounds of a reported cell."""
        assert self.rounds is not None, f"cell {self.cell.name} has no rows"
        return self.rounds

    @property
    def info(self) -> MetricInfo:
        """The metric of a reported cell."""
        assert self.metric is not None, f"cell {self.cell.name} has no metric"
        return self.metric

    @property
    def strategies(self) -> set[str]:
        return set(self.rows["strategy"])


def compared(rounds: pd.DataFrame) -> pd.DataFrame:
    """The rounds a cell's strategies are compared in: those after the first, when there are more
    (in round 1 every strategy trains on the same initial set, so none can beat another)."""
    first = rounds["round"].min()
    return rounds[rounds["round"] > first] if rounds["round"].nunique() > 1 else rounds


def total_rounds(results: Sequence[CellResult]) -> int:
    """The (cell, round) comparisons of the reported cells: the sum of their compared rounds."""
    return sum(int(compared(r.rows)["round"].nunique()) for r in results)


def cells_of(strategy: str, results: Sequence[CellResult]) -> int:
    """How many of the reported cells ``strategy`` ran in."""
    return sum(strategy in r.strategies for r in results)


def write_study_report(folder: Path, cells: Sequence[Cell]) -> list[Path]:
    """Write the study report of the study in ``folder`` over ``cells`` (in study order): a cell's
    own run report where its run has rows but no ``table.md``; ``penalty.csv``, ``penalty.png`` and
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
    return [*written, folder / "study.md"]


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
        if (result.note is not None or not (folder / "table.md").exists()) and lock_holder(folder) is None:
            paths = write_report(labeled, folder, result.metric, [result.note] if result.note else [])
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


def penalty_matrix(results: Sequence[CellResult], strategies: list[str]) -> np.ndarray:
    """The pairwise penalty matrix over ``strategies`` (rows: winner i, columns: loser j), summed over the cells."""
    index = {s: k for k, s in enumerate(strategies)}
    total = np.zeros((len(strategies), len(strategies)))
    for result in results:
        names, wins = cell_wins(compared(result.rows), result.info.higher_is_better)
        at = [index[s] for s in names]
        total[np.ix_(at, at)] += wins.sum(axis=2) * result.weight
    return total


def cell_wins(rounds: pd.DataFrame, higher_is_better: bool) -> tuple[list[str], np.ndarray]:
    """The cell's strategies and, for each (i, j, round), whether i beats j in that round: a paired
    two-sided t-test of i - j (oriented so that positive favours i) over the (seed, repeat) pairs
    both ran, p < 0.05 and a positive mean difference. As :func:`bench.report.stats.t_test_p`, one
    pair or differences without spread (all equal) give no win. All pairs and rounds at once."""
    strategy, names = pd.factorize(rounds["strategy"])
    pair, pairs = pd.factorize(pd.MultiIndex.from_frame(rounds[["seed", "repeat"]]))
    round_, rounds_ = pd.factorize(rounds["round"], sort=True)
    values = np.full((len(names), len(pairs), len(rounds_)), np.nan)  # (S, P, R); read_rounds refuses duplicates
    values[strategy, pair, round_] = rounds["value"].to_numpy(dtype=float)
    diff = values[:, None] - values[None, :]  # (S, S, P, R): i minus j
    if not higher_is_better:
        diff = -diff
    valid = ~np.isnan(diff)
    n = valid.sum(axis=2)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(valid, diff, 0.0).sum(axis=2) / n
        var = np.where(valid, (diff - mean[:, :, None]) ** 2, 0.0).sum(axis=2) / (n - 1)
        spread = np.where(valid, diff, -np.inf).max(axis=2) > np.where(valid, diff, np.inf).min(axis=2)
        t = mean / np.sqrt(var / n)
        p = 2.0 * stats.t.sf(np.abs(t), np.maximum(n - 1, 1))
    wins = (n >= 2) & spread & (p < ALPHA) & (mean > 0)
    return [str(name) for name in names], wins


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


def rank_table(results: Sequence[CellResult]) -> pd.DataFrame:
    """``ranks.csv``: per cell and strategy its AUBC (mean, std, repeats) and rank, the cell's axis values."""
    axes = list(dict.fromkeys(a for r in results for a in r.cell.axes))
    frames = []
    for result in results:
        metric = result.info
        table = aubc(result.rows)
        if table.empty:
            continue
        table["rank"] = table["aubc_mean"].rank(method="average", ascending=not metric.higher_is_better)
        table.insert(0, "cell", result.cell.name)
        table.insert(1, "task", result.cell.task)
        for k, axis in enumerate(axes):
            value = result.cell.axes.get(axis)
            table.insert(2 + k, _axis_column(axis), "" if value is None else format_value(value))
        table["metric"] = metric.name
        table["direction"] = metric.direction
        frames.append(table)
    columns = RANK_COLUMNS[:2] + [_axis_column(a) for a in axes] + RANK_COLUMNS[2:]
    return pd.concat(frames, ignore_index=True)[columns] if frames else pd.DataFrame(columns=columns)


def _axis_column(axis: str) -> str:
    return f"axis {axis}" if axis in RANK_COLUMNS else axis


def mean_ranks(ranks: pd.DataFrame, strategies: list[str]) -> pd.DataFrame:
    """Per strategy (in ``strategies``' order), its mean AUBC rank over the cells it has a rank in,
    and how many; with several tasks, the same per task too (``mean_rank <task>``, ``cells <task>``:
    a task's cells rank only the strategies that apply to it)."""
    grouped = ranks.groupby("strategy")["rank"].agg(["mean", "size"])
    rows = [
        dict(strategy=s, mean_rank=grouped.loc[s, "mean"], cells=int(grouped.loc[s, "size"]))
        for s in strategies
        if s in grouped.index
    ]
    frame = pd.DataFrame(rows, columns=["strategy", "mean_rank", "cells"])
    tasks = list(dict.fromkeys(ranks["task"]))
    if len(tasks) > 1:
        for task in tasks:
            own = ranks[ranks["task"] == task].groupby("strategy")["rank"].agg(["mean", "size"])
            frame[f"mean_rank {task}"] = frame["strategy"].map(own["mean"])
            frame[f"cells {task}"] = frame["strategy"].map(own["size"]).fillna(0).astype(int)
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


def _fmt(value: float) -> str:
    return f"{value:.2f}"


def _names(names: Sequence[str]) -> str:
    names = list(names)
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def _best(means: pd.Series) -> list[str]:
    """The strategies with the lowest mean rank (ties: all of them)."""
    return [str(s) for s in means.index[np.isclose(means.to_numpy(dtype=float), means.min(), rtol=0, atol=1e-12)]]


def _plural(n: int, one: str, several: str | None = None) -> str:
    return f"{n} {one if n == 1 else (several or one + 's')}"


def reading(
    results: Sequence[CellResult],
    penalty: np.ndarray,
    strategies: list[str],
    ranks: pd.DataFrame,
    means: pd.DataFrame,
    detail: bool = True,
) -> str:
    """One paragraph read off the numbers: the never (or least) beaten strategy, the best mean
    rank and (with ``detail``) the axes whose values change the leader by mean rank and the cells
    whose winner is not the overall best."""
    reported = [r for r in results if r.reported]
    left = len(results) - len(reported)
    if not strategies:
        return f"No cell of the {_plural(len(results), 'cell')} has rows to report yet."
    rounds_total = total_rounds(reported)
    ran_in = {s: cells_of(s, reported) for s in strategies}
    words = [
        f"Over {_plural(len(reported), 'reported cell')} ({rounds_total} (cell, round) comparisons"
        + (f"; {left} of the {len(results)} cells not run or not reported" if left else "")
        + f") and {_plural(len(strategies), 'strategy', 'strategies')},"
    ]
    beaten = penalty.sum(axis=0)
    never = [s for s, b in zip(strategies, beaten) if b == 0]
    if never:
        ran = "; ".join(f"{s} ran in {ran_in[s]}" for s in never)
        words.append(
            f"{_names(never)} {'is' if len(never) == 1 else 'are'} never beaten: no strategy beats "
            f"{'it' if len(never) == 1 else 'them'} by a paired t-test at p < {ALPHA} in any round ({ran} of the "
            f"{len(reported)} cells)."
        )
    else:
        least = [s for s, b in zip(strategies, beaten) if np.isclose(b, beaten.min())]
        words.append(
            f"every strategy is beaten somewhere; the least beaten {'is' if len(least) == 1 else 'are'} "
            + _names(
                [f"{s} ({_fmt(beaten[strategies.index(s)])}, over the {ran_in[s]} cells it ran in)" for s in least]
            )
            + " (beaten: rounds lost, each cell weighing 1)."
        )
    if means.empty:
        return " ".join(words)
    by_strategy = means.set_index("strategy")
    best = _best(by_strategy["mean_rank"])
    shown = [
        f"{s} ({_fmt(by_strategy.loc[s, 'mean_rank'])} over {_plural(int(by_strategy.loc[s, 'cells']), 'cell')})"
        for s in best
    ]
    words.append(
        f"Of the {_plural(len(strategies), 'strategy', 'strategies')}, {_names(shown)} "
        f"{'has' if len(best) == 1 else 'share'} the best mean AUBC rank (1 = best in a cell)."
    )
    if detail:
        words += _axis_sentences(ranks, [r.cell for r in reported])
        words.append(_winner_sentence(ranks, best))
    return " ".join(w for w in words if w)


def task_readings(results: Sequence[CellResult], ranks: pd.DataFrame) -> list[str]:
    """For a study of several tasks, a paragraph per task read off its own cells (its penalty
    matrix and ranks: a task's cells rank only the strategies that apply to it); none for one task."""
    tasks = list(dict.fromkeys(r.cell.task for r in results if r.reported))
    if len(tasks) < 2:
        return []
    paragraphs = []
    for task in tasks:
        own = [r for r in results if r.cell.task == task]
        reported = [r for r in own if r.reported]
        strategies = list(dict.fromkeys(s for r in reported for s in r.rows["strategy"]))
        within = ranks[ranks["task"] == task]
        text = reading(own, penalty_matrix(reported, strategies), strategies, within, mean_ranks(within, strategies))
        paragraphs.append(f"**{task}.** {text}")
    return paragraphs


def _axis_sentences(ranks: pd.DataFrame, cells: Sequence[Cell]) -> list[str]:
    """Per axis with two values or more: the leader by mean rank within the cells of each value,
    whether it changes with the value, and the strategy whose mean rank moves most between values."""
    sentences = []
    for axis in dict.fromkeys(a for c in cells for a in c.axes):
        column = ranks[_axis_column(axis)]
        values = [v for v in dict.fromkeys(column) if v != ""]
        if len(values) < 2:
            continue
        leaders, by_value = {}, {}
        for value in values:
            within = ranks[column == value]
            means = within.groupby("strategy", sort=False)["rank"].mean()
            best = _best(means)
            cells_with = int(within["cell"].nunique())
            leaders[value] = (best, _fmt(means[best[0]]), cells_with)
            by_value[value] = means
        parts = [
            f"with {axis}={value}, {_names(best)} {'leads' if len(best) == 1 else 'lead'} (mean rank {rank} over "
            f"{_plural(n, 'cell')})"
            for value, (best, rank, n) in leaders.items()
        ]
        if len({tuple(b) for b, _, _ in leaders.values()}) > 1:
            sentence = f"The axis {axis} changes the order: " + "; ".join(parts)
        else:
            sentence = f"The axis {axis} does not change the leader: " + "; ".join(parts)
        sentences.append(sentence + _largest_move(axis, pd.DataFrame(by_value)) + ".")
    return sentences


def _largest_move(axis: str, means: pd.DataFrame) -> str:
    """The strategy whose mean rank differs most between two values of ``axis`` (``means``: a row
    per strategy, a column per value; strategies that ran at every value), as a clause; none
    when no strategy moves by a whole rank."""
    means = means.dropna()
    if means.empty:
        return ""
    spread = means.max(axis=1) - means.min(axis=1)
    strategy = spread.idxmax()
    if spread[strategy] < 1:
        return ""
    low, high = means.loc[strategy].idxmin(), means.loc[strategy].idxmax()
    return (
        f"; the largest move: {strategy}, mean rank {_fmt(means.loc[strategy, low])} with {axis}={low} and "
        f"{_fmt(means.loc[strategy, high])} with {axis}={high}"
    )


def _winner_sentence(ranks: pd.DataFrame, best: list[str]) -> str:
    """The cells whose winner (rank 1, or the lowest rank where tied) is none of the overall best."""
    differ = []
    cells = list(dict.fromkeys(ranks["cell"]))
    for cell, rows in ranks.groupby("cell", sort=False):
        winners = rows.loc[np.isclose(rows["rank"], rows["rank"].min()), "strategy"].tolist()
        if not set(winners) & set(best):
            absent = "" if set(best) & set(rows["strategy"]) else f"; {_names(best)} did not run there"
            differ.append(f"{cell} ({_names(winners)}{absent})")
    if not differ:
        verb = "wins" if len(best) == 1 else "win"
        return f"{_names(best)} {verb} (AUBC rank 1) in every one of the {len(cells)} cells."
    return (
        f"The winner by AUBC differs from {_names(best)} in {len(differ)} of the {len(cells)} cells: "
        + "; ".join(differ)
        + "."
    )


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _link(cell: Cell) -> str:
    return f"[{cell.name}]({quote(cell.name + '/table.md', safe='/=,+()')})"


def study_markdown(
    folder: Path,
    results: Sequence[CellResult],
    penalty: np.ndarray,
    strategies: list[str],
    ranks: pd.DataFrame,
    means: pd.DataFrame,
) -> str:
    """``study.md``: the title, the reading, the penalty matrix, the mean ranks, the ranks per cell and the cells."""
    reported = [r for r in results if r.reported]
    text = [f"# Study {folder.name}: {_plural(len(results), 'cell')}, {len(reported)} reported", ""]
    by_task = task_readings(results, ranks)
    text += [reading(results, penalty, strategies, ranks, means, detail=not by_task), ""]
    if by_task:
        text += ["Each task on its own (its cells rank only the strategies that apply to it):", ""]
        text += [paragraph + "\n" for paragraph in by_task]
    if strategies:
        rounds_total = total_rounds(reported)
        text += [
            "## Pairwise penalty matrix",
            "",
            f"Row i, column j: the (cell, round) pairs in which i beats j by a paired two-sided t-test at p < {ALPHA} "
            f"over the repeats both ran with the same (seed, repeat), by each cell's metric direction; each round "
            f"after the first (round 1 trains every strategy on the same initial set) of a cell of R rounds counts "
            f"1/(R - 1), so each cell weighs 1 and an entry is at most the number of cells where "
            f"both ran (Ash et al. 2020, Fig. 3). Over {_plural(len(reported), 'cell')} and {rounds_total} "
            f"(cell, round) comparisons. wins: the row total; beaten: the column total; cells: the cells the "
            f"strategy ran in ([penalty.csv](penalty.csv)).",
            "",
        ]
        rows = [
            [f"**{s}**"]
            + ["" if i == j else _fmt(penalty[i, j]) for j in range(len(strategies))]
            + [_fmt(penalty[i].sum()), str(cells_of(s, reported))]
            for i, s in enumerate(strategies)
        ]
        rows.append(["**beaten**"] + [_fmt(v) for v in penalty.sum(axis=0)] + ["", ""])
        text += [_table(["i beats j →", *strategies, "wins", "cells"], rows), "![penalty matrix](penalty.png)", ""]
        text += [
            "## Mean AUBC rank",
            "",
            "Each cell ranks its strategies by AUBC (the area under the learning curve over the budget span), 1 = best "
            "by the metric's direction, ties sharing the average rank; the mean is over the cells a strategy ran in "
            "([ranks.csv](ranks.csv), [mean_ranks.csv](mean_ranks.csv)).",
            "",
        ]
        ordered = means.sort_values("mean_rank", kind="stable")
        per_task = [c.removeprefix("mean_rank ") for c in means.columns if c.startswith("mean_rank ")]
        header = ["strategy", "mean rank", "cells", *(f"{task}: mean rank (cells)" for task in per_task)]

        def on(row: dict, task: str) -> str:
            rank = row[f"mean_rank {task}"]
            return "" if pd.isna(rank) else f"{_fmt(rank)} ({row[f'cells {task}']})"

        rows = [
            [row["strategy"], _fmt(row["mean_rank"]), str(row["cells"]), *(on(row, task) for task in per_task)]
            for row in ordered.to_dict("records")
        ]
        text += [_table(header, rows), ""]
        text += ["## AUBC rank per cell", "", "rank (AUBC mean, as the cell's tables show it); empty: did not run", ""]
        rows = []
        ranked = {(r.cell, r.strategy): (r.rank, r.aubc_mean) for r in ranks.itertuples()}
        for result in reported:
            metric, name = result.info, result.cell.name
            scale, d = metric.display_scale, metric.decimals
            shown = [
                f"{ranked[name, s][0]:g} ({ranked[name, s][1] * scale:.{d}f})" if (name, s) in ranked else ""
                for s in strategies
            ]
            rows.append([name, *shown, f"{metric.name} ({metric.direction})"])
        text += [_table(["cell", *strategies, "metric"], rows), ""]
    text += ["## Cells", ""]
    for result in results:
        if result.missing:
            text.append(f"- {result.cell.name}: {result.missing}; left out of the numbers above")
        elif result.note:
            text.append(f"- {_link(result.cell)}: unfinished, reported with the rounds it has: {result.note}")
        else:
            rounds = result.rows
            repeats = len(rounds[["seed", "repeat"]].drop_duplicates())
            text.append(
                f"- {_link(result.cell)}: {_plural(rounds['strategy'].nunique(), 'strategy', 'strategies')}, "
                f"{_plural(repeats, 'repeat')}, {_plural(int(rounds['round'].nunique()), 'round')}"
            )
    return "\n".join(text) + "\n"
