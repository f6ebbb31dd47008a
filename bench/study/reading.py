"""The text of a study report: a paragraph read off its numbers (who is never beaten, the best
mean rank, which axes change the order, which cells another strategy wins), and ``study.md``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pandas as pd

from bench.study.numbers import ALPHA, CellResult, axis_column, cells_of, mean_ranks, penalty_matrix, total_rounds
from bench.study.spec import Cell


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
        column = ranks[axis_column(axis)]
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
