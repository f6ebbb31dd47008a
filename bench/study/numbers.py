"""The numbers of a study report: each cell's results as read, who beats whom in it (the paired
t-tests behind the pairwise penalty matrix of Ash et al. 2020) and each strategy's AUBC rank."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from bench.report.stats import aubc
from bench.run.results import MetricInfo
from bench.study.spec import Cell, format_value

#: The level of the paired t-test behind a win.
ALPHA = 0.05
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
            table.insert(2 + k, axis_column(axis), "" if value is None else format_value(value))
        table["metric"] = metric.name
        table["direction"] = metric.direction
        frames.append(table)
    columns = RANK_COLUMNS[:2] + [axis_column(a) for a in axes] + RANK_COLUMNS[2:]
    return pd.concat(frames, ignore_index=True)[columns] if frames else pd.DataFrame(columns=columns)


def axis_column(axis: str) -> str:
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
