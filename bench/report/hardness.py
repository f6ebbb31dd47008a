"""Do the strategies pick harder samples? The report of the selection diagnostics.

From the ``pick_loss``, ``pool_loss``, ``pick_balance`` and ``pick_novelty`` columns of
``rounds.csv`` (:mod:`bench.run.diagnostics`): per strategy and round, the hardness ratio
``pick_loss / pool_loss`` of each repeat (above 1: the picks were harder for F than the unlabeled
pool on average), the balance and the novelty, as mean ± std over repeats, in a table and a figure.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from bench.report.curves import draw_band, fit_titles, legend_outside, pyplot, save_figure
from bench.run.diagnostics import COLUMNS, POOL_SAMPLE

if TYPE_CHECKING:
    from matplotlib.figure import Figure

#: What each column of ``hardness.csv`` is (written into the file's ``description`` column).
DESCRIPTION = (
    "per strategy and round t: the samples that joined the training set for round t, measured under F "
    "of round t - 1 when they were chosen; hardness = pick_loss / pool_loss of each repeat (above 1: "
    f"harder than the unlabeled pool: its part in a fixed seeded sample of {POOL_SAMPLE} pool samples, "
    "or all of a smaller pool), balance = entropy of the picks' classes / log C, novelty = "
    "mean distance to the nearest training sample in F's embedding / the same for the unlabeled pool; "
    "mean and sample std over repeats"
)
MEASURES = {"hardness": "pick_loss / pool_loss", "balance": "pick_balance", "novelty": "pick_novelty"}


def has_diagnostics(rounds: pd.DataFrame) -> bool:
    """Whether ``rounds`` holds any measured diagnostics (runs before them, or with
    ``--no-diagnostics``, have empty or no columns)."""
    return all(c in rounds.columns for c in COLUMNS) and rounds["pick_loss"].notna().any()


def hardness_table(rounds: pd.DataFrame) -> pd.DataFrame:
    """Per (strategy, round) with diagnostics: n_labeled, repeats, and mean and std over repeats
    of hardness, balance and novelty (see :data:`DESCRIPTION`)."""
    rows = rounds[rounds["pick_loss"].notna()]
    rows = rows.assign(
        hardness=rows["pick_loss"] / rows["pool_loss"], balance=rows["pick_balance"], novelty=rows["pick_novelty"]
    )
    table = (
        rows.groupby(["strategy", "round"], sort=False)
        .agg(
            n_labeled=("n_labeled", "mean"),
            repeats=("hardness", "size"),
            **{f"{m}_{s}": (m, s) for m in MEASURES for s in ("mean", "std")},
        )
        .reset_index()
    )
    table["n_labeled"] = table["n_labeled"].round().astype(int)
    return table


def markdown_hardness(table: pd.DataFrame) -> str:
    """The hardness ratio per strategy (rows) and round (columns), mean ± std, then the mean over
    rounds of each measure per strategy."""
    rounds = sorted(table["round"].unique())
    sizes = table.groupby("round")["n_labeled"].first()
    lines = [
        "hardness of the picks: pick_loss / pool_loss, the mean task loss of the samples that joined the training "
        "set for round t over that of the unlabeled pool (its part in a fixed seeded sample of "
        f"{POOL_SAMPLE} pool samples, or all of a smaller pool), both under F as it was when they were chosen (after "
        "round t - 1), mean ± std over repeats; above 1 the strategy picked samples harder than a random pick.",
        "",
        "| strategy | " + " | ".join(f"t={t}" for t in rounds) + " |",
        "|" + "---|" * (len(rounds) + 1),
        "| n_labeled | " + " | ".join(str(sizes[t]) for t in rounds) + " |",
    ]
    for strategy, rows in table.groupby("strategy", sort=False):
        cells = {r["round"]: _cell(r["hardness_mean"], r["hardness_std"]) for _, r in rows.iterrows()}
        lines.append(f"| {strategy} | " + " | ".join(cells.get(t, "") for t in rounds) + " |")
    lines += [
        "",
        "mean over rounds t >= 2 per strategy: hardness as above; balance, the entropy of the picks' class histogram "
        "over log C (1: every class equally often; classification only); novelty, the picks' mean distance to their "
        "nearest training sample in F's embedding over the same for the unlabeled pool (above 1: farther from what F "
        "has seen than a random pick).",
        "",
        "| strategy | hardness | balance | novelty |",
        "|---|---|---|---|",
    ]
    for strategy, rows in table.groupby("strategy", sort=False):
        lines.append(f"| {strategy} | " + " | ".join(_number(rows[f"{m}_mean"].mean()) for m in MEASURES) + " |")
    return "\n".join(lines) + "\n"


def plot_hardness(table: pd.DataFrame, stem: Path, task: str) -> list[Path]:
    """:func:`hardness_figure` saved as ``stem``.png and .svg."""
    return save_figure(hardness_figure(table, task), stem)


def hardness_figure(table: pd.DataFrame, task: str) -> Figure:
    """The hardness ratio against labeled samples, mean ± 1 std band per strategy, with the line
    at 1 (a random pick). A ratio of non-negative losses is non-negative, so the bands stop at 0
    (unless a plug-in's loss made a mean ratio negative); the legend is right of the axes."""
    import seaborn as sns

    fig, ax = pyplot().subplots(figsize=(7.5, 4), layout="constrained")
    order = list(dict.fromkeys(table["strategy"]))
    low = 0.0 if (table["hardness_mean"] >= 0).all() else None
    for strategy, color in zip(order, sns.color_palette(n_colors=len(order))):
        rows = table[table["strategy"] == strategy].sort_values("n_labeled")
        draw_band(ax, rows["n_labeled"], rows["hardness_mean"], rows["hardness_std"], color, strategy, low)
    ax.axhline(1, color="black", lw=0.8)
    ax.set_xlabel("labeled samples (after the picks joined)")
    ax.set_ylabel("pick_loss / pool_loss (above 1: harder)")
    ax.set_title(f"{task}: hardness of the picks under F when chosen, mean ± 1 std")
    ax.grid(alpha=0.3)
    legend_outside(ax, *ax.get_legend_handles_labels())
    fit_titles(fig)
    return fig


def _cell(mean: float, std: float) -> str:
    return f"{mean:.2f} ± " + ("n/a" if pd.isna(std) else f"{std:.2f}")


def _number(value: float) -> str:
    return "n/a" if pd.isna(value) else f"{value:.2f}"
