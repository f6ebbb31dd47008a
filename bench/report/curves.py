"""Figure 3: learning curves per strategy, and beside them the paired difference to random; and
what every report figure shares: bands clipped to the metric's range, the legend outside the
axes, titles wrapped to fit."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from bench.report.stats import validation_curves

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from bench.run.results import MetricInfo

#: A metric's range (low, high), None for no bound.
Bounds = tuple[float | None, float | None]


def metric_bounds(task: str, metric: MetricInfo) -> Bounds:
    """The range of ``metric``'s values (the units of ``rounds.csv``) from the installed task's
    ``Metric.bounds``; unbounded when the task is not installed or measures another metric."""
    from tasks import TASKS

    declared = getattr(TASKS.get(task), "metric", None) if task in TASKS else None
    if declared is None or declared.name != metric.name:
        return (None, None)
    return declared.bounds


def plot_curves(
    rounds: pd.DataFrame,
    diffs: pd.DataFrame | None,
    stem: Path,
    metric: MetricInfo,
    baseline: str,
    bounds: Bounds = (None, None),
) -> list[Path]:
    """:func:`curves_figure` saved as ``stem``.png and .svg."""
    return save_figure(curves_figure(rounds, diffs, metric, baseline, bounds), stem)


def curves_figure(
    rounds: pd.DataFrame,
    diffs: pd.DataFrame | None,
    metric: MetricInfo,
    baseline: str,
    bounds: Bounds = (None, None),
) -> Figure:
    """Left: the metric against labeled samples, mean and ±1 std band (sample std over repeats)
    per strategy, the band clipped to ``bounds`` (the metric's range in ``rounds.csv`` units), and
    dashed, the mean on the validation samples of a run with ``--validation``. Right (when
    ``baseline`` ran): each strategy minus the baseline in the same repeat, mean and
    ±1 std band, which shows a small gain that overlapping curves hide. One legend, right of the
    panels."""
    import seaborn as sns

    plt = pyplot()
    scale = metric.display_scale
    panels = 2 if diffs is not None and len(diffs) else 1
    fig, axes = plt.subplots(1, panels, figsize=(6 * panels + 1.5, 4), squeeze=False, layout="constrained")
    order = list(dict.fromkeys(rounds["strategy"]))
    palette = dict(zip(order, sns.color_palette(n_colors=len(order))))
    low, high = (None if b is None else b * scale for b in bounds)
    stats = (
        rounds.assign(value=rounds["value"] * scale)
        .groupby(["strategy", "n_labeled"], sort=False)["value"]
        .agg(["mean", "std"])
        .reset_index()
    )
    ax = axes[0, 0]
    for strategy in order:
        rows = stats[stats["strategy"] == strategy].sort_values("n_labeled")
        draw_band(ax, rows["n_labeled"], rows["mean"], rows["std"], palette[strategy], strategy, low, high)
    validation = validation_curves(rounds)
    if validation is not None:  # dashed: the same metric on the run's validation samples, mean over repeats
        held = validation.assign(value=validation["value"] * scale)
        held = held.groupby(["strategy", "n_labeled"], sort=False)["value"].mean().reset_index()
        for strategy in order:
            rows = held[held["strategy"] == strategy].sort_values("n_labeled")
            ax.plot(rows["n_labeled"], rows["value"], ls="--", color=palette[strategy])
        ax.plot([], [], ls="--", color="grey", label="dashed: on the validation samples (mean)")
    ax.set_xlabel("labeled samples")
    ax.set_ylabel(f"{metric.label} ({metric.direction})")
    repeats = len(rounds[["seed", "repeat"]].drop_duplicates())
    ax.set_title(f"{rounds['task'].iloc[0]}: {repeats} repeats, mean ± 1 std")
    ax.grid(alpha=0.3)
    if diffs is not None and panels == 2:
        ax = axes[0, 1]
        for strategy, rows in diffs.groupby("strategy", sort=False):
            rows = rows.sort_values("n_labeled")
            draw_band(ax, rows["n_labeled"], rows["mean"] * scale, rows["std"] * scale, palette[strategy])
        ax.axhline(0, color="black", lw=0.8)
        ax.set_xlabel("labeled samples")
        ax.set_ylabel(f"minus {baseline}, same repeat ({'above' if metric.higher_is_better else 'below'} 0 is better)")
        ax.set_title(f"paired difference to {baseline}, mean ± 1 std")
        ax.grid(alpha=0.3)
    legend_outside(axes[0, -1], *axes[0, 0].get_legend_handles_labels())
    fit_titles(fig)
    return fig


def draw_band(
    ax: Axes,
    x: pd.Series,
    mean: pd.Series,
    std: pd.Series,
    color,
    label: str | None = None,
    low: float | None = None,
    high: float | None = None,
) -> None:
    """The mean as a line with markers and its ±1 std band, the band clipped to [``low``,
    ``high``] (None: unbounded); a NaN std (one repeat) draws no band."""
    std = std.fillna(0)
    ax.plot(x, mean, marker="o", color=color, label=label)
    ax.fill_between(x, (mean - std).clip(lower=low), (mean + std).clip(upper=high), color=color, alpha=0.2)


def legend_outside(ax: Axes, handles: list, labels: list[str]) -> None:
    """The legend right of ``ax``, outside it, so it hides no curve or band (a constrained-layout
    figure makes room for it)."""
    ax.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0)


def fit_titles(fig: Figure) -> None:
    """Wrap each axes' title onto more lines until it is no wider than its axes, so a long title
    (a plug-in's long task name) is not cut off at the figure's edge. Lays the figure out first."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    for ax in fig.axes:
        text = ax.title.get_text()
        width = ax.get_window_extent(renderer).width
        chars = len(text)
        while ax.title.get_window_extent(renderer).width > width and chars > 12:
            chars -= 4
            ax.title.set_text(textwrap.fill(text, chars))


def save_figure(fig: Figure, stem: Path) -> list[Path]:
    """Save a report figure as ``stem``.png (150 dpi) and ``stem``.svg, everything in it (titles,
    the legend outside the axes) inside the saved image; close it, return the paths. The same
    figure gives the same bytes (no date in either file; the SVG's element ids from a fixed salt)."""
    import matplotlib

    plt = pyplot()
    paths = [Path(f"{stem}.png"), Path(f"{stem}.svg")]
    with matplotlib.rc_context({"svg.hashsalt": "latent-bench"}):
        fig.savefig(paths[0], dpi=150, bbox_inches="tight", metadata={"Software": None})
        fig.savefig(paths[1], dpi=150, bbox_inches="tight", metadata={"Date": None, "Creator": None})
    plt.close(fig)
    return paths


def pyplot():
    """``matplotlib.pyplot`` on the Agg backend: report figures are files, never windows."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
