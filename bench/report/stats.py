"""The numbers a comparison needs: paired tests against a baseline, the area under the learning
curve (AUBC), and the labels a strategy needs to reach a target.

All work on a ``rounds.csv`` frame (one row per strategy, repeat and round). Repeats are paired
across strategies by (seed, repeat): the same initial set, weights and batch order.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats

PAIR_KEYS = ["seed", "repeat", "round"]


def paired_differences(
    rounds: pd.DataFrame, baseline: str = "random", higher_is_better: bool = True
) -> pd.DataFrame | None:
    """Each strategy minus ``baseline`` in the same repeat and round: mean and sample std of the
    difference over repeats, in how many repeats it is strictly better, and two-sided p-values
    of a paired t-test and of a Wilcoxon signed-rank test (exact for small samples). None when
    the baseline did not run."""
    if baseline not in set(rounds["strategy"]):
        return None
    base = rounds.loc[rounds["strategy"] == baseline, PAIR_KEYS + ["value"]]
    others = rounds[rounds["strategy"] != baseline].merge(base.rename(columns={"value": "baseline"}), on=PAIR_KEYS)
    others = others.assign(delta=others["value"] - others["baseline"])
    rows = []
    for (strategy, round_), group in others.groupby(["strategy", "round"], sort=False):
        delta = group["delta"].to_numpy(dtype=float)
        better = int((delta > 0).sum() if higher_is_better else (delta < 0).sum())
        rows.append(
            dict(
                strategy=strategy,
                round=round_,
                n_labeled=int(round(group["n_labeled"].mean())),
                mean=delta.mean(),
                std=delta.std(ddof=1) if len(delta) > 1 else math.nan,
                better=better,
                repeats=len(delta),
                t_p=t_test_p(delta),
                wilcoxon_p=wilcoxon_p(delta),
            )
        )
    return pd.DataFrame(rows)


def unpaired_repeats(rounds: pd.DataFrame, baseline: str = "random") -> list[str]:
    """A note per strategy with repeats that have no ``baseline`` repeat of the same seed (runs
    merged from other ``--seed`` values, or a baseline unit that failed): such repeats started
    from another initial set and weights, so :func:`paired_differences` leaves them out; the
    note says which, so that fewer paired repeats (or none) never go unexplained. No notes
    when the baseline did not run."""
    if baseline not in set(rounds["strategy"]):
        return []
    repeats = rounds[["strategy", "seed", "repeat"]].drop_duplicates()
    paired = set(map(tuple, repeats.loc[repeats["strategy"] == baseline, ["seed", "repeat"]].to_numpy().tolist()))
    notes = []
    for strategy, own in repeats[repeats["strategy"] != baseline].groupby("strategy", sort=False):
        alone = [(s, r) for s, r in own[["seed", "repeat"]].to_numpy().tolist() if (s, r) not in paired]
        if not alone:
            continue
        seeds = sorted({int(s) for s, _ in alone})
        left = len(own) - len(alone)
        notes.append(
            f"{strategy}: {len(alone)} of its {len(own)} repeats ({'seed' if len(seeds) == 1 else 'seeds'} "
            f"{', '.join(map(str, seeds))}) {'has' if len(alone) == 1 else 'have'} no {baseline} repeat of the "
            f"same seed, so {'it is' if len(alone) == 1 else 'they are'} not paired with {baseline} "
            + (f"(its paired differences are over the other {left})" if left else "(no paired difference)")
            + "; run both with the same --seed and --repeats to pair them"
        )
    return notes


def t_test_p(delta: np.ndarray) -> float:
    """Two-sided p of a one-sample t-test of the paired differences against 0 (NaN for one
    repeat, and where every difference is the same non-zero value: no spread, no t; 1 when
    every difference is 0)."""
    if len(delta) < 2:
        return math.nan
    if np.all(delta == delta[0]):
        return 1.0 if delta[0] == 0 else math.nan
    return float(stats.ttest_1samp(delta, 0.0).pvalue)


def wilcoxon_p(delta: np.ndarray) -> float:
    """Two-sided p of the Wilcoxon signed-rank test of the paired differences (zeros dropped;
    1 when every difference is 0; NaN for one repeat). With n repeats it cannot go below
    2 / 2**n: 0.0625 for 5."""
    if len(delta) < 2:
        return math.nan
    if np.all(delta == 0):
        return 1.0
    return float(stats.wilcoxon(delta, zero_method="wilcox", alternative="two-sided").pvalue)


def wilcoxon_floor(repeats: int) -> float:
    """The smallest two-sided p the exact Wilcoxon test can give for ``repeats`` pairs."""
    return 2.0 / 2.0**repeats


#: What identifies a round in ``rounds.csv``; with :data:`VALIDATION_COLUMNS` all a validation curve holds.
ROUND_KEYS = ["task", "strategy", "seed", "repeat", "round", "n_labeled", "metric"]


def validation_curves(rounds: pd.DataFrame) -> pd.DataFrame | None:
    """The rounds' validation curves (``--validation``) as rounds of their own: the keys of each
    round, ``n_validation``, and ``value`` = its ``val_value``; no test value is carried over
    (what a choice made on validation reads). None when the rounds have no validation values."""
    if "val_value" not in rounds or not rounds["val_value"].notna().any():
        return None
    curves = rounds[[*ROUND_KEYS, "n_validation"]].copy()
    curves["value"] = pd.to_numeric(rounds["val_value"], errors="coerce")
    return curves[curves["value"].notna()].reset_index(drop=True)


def balanced_curves(rounds: pd.DataFrame) -> pd.DataFrame | None:
    """The rounds' balanced-accuracy curves (a classification task whose metric is accuracy) as
    rounds of their own: the keys of each round, ``min_class_labeled`` and ``value`` = its
    ``balanced_accuracy``; rows without one (a run from before the column) are left out. None
    when no round has a balanced accuracy."""
    if "balanced_accuracy" not in rounds:
        return None
    values = pd.to_numeric(rounds["balanced_accuracy"], errors="coerce")
    if not values.notna().any():
        return None
    curves = rounds[ROUND_KEYS].copy()
    counts = rounds["min_class_labeled"] if "min_class_labeled" in rounds else np.nan
    curves["min_class_labeled"] = pd.to_numeric(counts, errors="coerce")
    curves["value"] = values
    return curves[curves["value"].notna()].reset_index(drop=True)


def aubc(rounds: pd.DataFrame) -> pd.DataFrame:
    """Area under each repeat's learning curve (trapezoid over n_labeled) divided by the budget
    span, i.e. the curve's mean value over the budget, in the metric's units; mean and sample
    std over repeats per strategy. One round gives that round's value. Only repeats with every
    round count (a unit that failed part-way would average over a shorter budget)."""
    rows = []
    full = rounds.groupby(["strategy", "seed", "repeat"])["round"].transform("size") == rounds["round"].nunique()
    for (strategy, _seed, _repeat), curve in rounds[full].groupby(["strategy", "seed", "repeat"], sort=False):
        curve = curve.sort_values("n_labeled")
        n, v = curve["n_labeled"].to_numpy(dtype=float), curve["value"].to_numpy(dtype=float)
        area = v[0] if len(v) == 1 or n[-1] == n[0] else ((v[1:] + v[:-1]) / 2 * np.diff(n)).sum() / (n[-1] - n[0])
        rows.append(dict(strategy=strategy, aubc=float(area)))
    per_repeat = pd.DataFrame(rows)
    return (
        per_repeat.groupby("strategy", sort=False)["aubc"]
        .agg(aubc_mean="mean", aubc_std=lambda a: a.std(ddof=1) if len(a) > 1 else math.nan, repeats="size")
        .reset_index()
    )


def labels_to_reach(n_labeled: np.ndarray, values: np.ndarray, target: float, higher_is_better: bool) -> float:
    """The labels a mean learning curve needs to reach ``target``: linear between the rounds
    around the first crossing; NaN when it never does."""
    reached = values >= target if higher_is_better else values <= target
    if not reached.any():
        return math.nan
    i = int(np.argmax(reached))
    if i == 0:
        return float(n_labeled[0])
    n0, n1, v0, v1 = n_labeled[i - 1], n_labeled[i], values[i - 1], values[i]
    return float(n0 + (target - v0) / (v1 - v0) * (n1 - n0))


def label_savings(
    rounds: pd.DataFrame, target: float | None, higher_is_better: bool, baseline: str = "random"
) -> tuple[float | None, pd.DataFrame]:
    """The target (default: the baseline's final mean) and, per strategy, the labels its mean
    curve needs to reach it and the saving against the baseline in percent (NaN where either
    does not reach it). With no target and no baseline, (None, empty)."""
    means = rounds.groupby(["strategy", "round"], sort=False).agg(n=("n_labeled", "mean"), v=("value", "mean"))
    if target is None:
        if baseline not in set(rounds["strategy"]):
            return None, pd.DataFrame()
        target = float(means.loc[baseline]["v"].iloc[-1])
    needed = {
        s: labels_to_reach(m["n"].to_numpy(), m["v"].to_numpy(), target, higher_is_better)
        for s, m in means.groupby(level="strategy", sort=False)
    }
    base = needed.get(baseline, math.nan)
    table = pd.DataFrame({"strategy": list(needed), "labels_to_target": list(needed.values())})
    table["saving_pct"] = 100.0 * (base - table["labels_to_target"]) / base
    return target, table
