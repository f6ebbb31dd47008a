"""Figure 3: learning curves per strategy, and beside them the paired difference to random."""

from __future__ import annotations

from pathlib import Path

import pandas as pd


def plot_curves(rounds: pd.DataFrame, diffs: pd.DataFrame | None, stem: Path, metric, baseline: str) -> list[Path]:
    """Left: the metric against labeled samples, mean and ±1 std band per strategy. Right (when
    ``baseline`` ran): each strategy minus the baseline in the same repeat, mean and ±1 std band,
    which shows a small gain that overlapping curves hide. Saved as ``stem``.png and .svg."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    scale = metric.display_scale
    panels = 2 if diffs is not None and len(diffs) else 1
    fig, axes = plt.subplots(1, panels, figsize=(6 * panels, 4), squeeze=False)
    shown = rounds.assign(value=rounds["value"] * scale)
    order = list(dict.fromkeys(rounds["strategy"]))
    palette = dict(zip(order, sns.color_palette(n_colors=len(order))))
    ax = axes[0, 0]
    sns.lineplot(
        data=shown,
        x="n_labeled",
        y="value",
        hue="strategy",
        hue_order=order,
        palette=palette,
        errorbar=("sd", 1),
        marker="o",
        ax=ax,
    )
    ax.set_xlabel("labeled samples")
    ax.set_ylabel(f"{metric.label} ({metric.direction})")
    repeats = len(rounds[["seed", "repeat"]].drop_duplicates())
    ax.set_title(f"{rounds['task'].iloc[0]}: {repeats} repeats, mean ± 1 std")
    ax.grid(alpha=0.3)
    if panels == 2:
        ax = axes[0, 1]
        for strategy, rows in diffs.groupby("strategy", sort=False):
            rows = rows.sort_values("n_labeled")
            mean, std = rows["mean"] * scale, rows["std"].fillna(0) * scale
            ax.plot(rows["n_labeled"], mean, marker="o", color=palette[strategy], label=strategy)
            ax.fill_between(rows["n_labeled"], mean - std, mean + std, color=palette[strategy], alpha=0.2)
        ax.axhline(0, color="black", lw=0.8)
        ax.set_xlabel("labeled samples")
        ax.set_ylabel(f"minus {baseline}, same repeat ({'above' if metric.higher_is_better else 'below'} 0 is better)")
        ax.set_title(f"paired difference to {baseline}, mean ± 1 std")
        ax.legend()
        ax.grid(alpha=0.3)
    return save_figure(fig, stem)


def save_figure(fig, stem: Path) -> list[Path]:
    """Save a report figure as ``stem``.png (150 dpi) and ``stem``.svg, close it, return the paths."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    paths = [Path(f"{stem}.png"), Path(f"{stem}.svg")]
    for path in paths:
        fig.savefig(path, dpi=150)
    plt.close(fig)
    return paths
