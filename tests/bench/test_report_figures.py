"""The report's figures (curves.png, hardness.png): what they draw, not their pixels. Bands stay
inside the metric's range, titles inside the figure, legends off the data."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import bench.report.curves
import bench.report.hardness
from bench.report.tables import write_report
from bench.run.diagnostics import COLUMNS
from bench.run.results import MetricInfo
from tasks.base import Metric
from tests.bench.test_report import rounds_frame

ACCURACY = MetricInfo("accuracy", True, "test accuracy (%)")


@pytest.fixture
def figures(monkeypatch) -> dict:
    """The figures ``write_report`` saves, by file stem (``curves``, ``hardness``), kept open and
    drawn by an Agg canvas of their own so their artists can be measured."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    saved: dict = {}
    save = bench.report.curves.save_figure

    def keep(fig, stem):
        paths = save(fig, stem)
        FigureCanvasAgg(fig).draw()  # a closed figure's canvas cannot draw
        saved[stem.name] = fig
        return paths

    monkeypatch.setattr(bench.report.curves, "save_figure", keep)
    monkeypatch.setattr(bench.report.hardness, "save_figure", keep)
    return saved


def _bands(ax) -> list[np.ndarray]:
    """The vertices of every ±1 std band (fill_between) drawn on ``ax``."""
    from matplotlib.collections import PolyCollection

    return [path.vertices for c in ax.collections if isinstance(c, PolyCollection) for path in c.get_paths()]


def _with_diagnostics(rounds: pd.DataFrame, ratios: list[float]) -> pd.DataFrame:
    """``rounds`` with selection diagnostics: ratio ``ratios[i]`` (pick_loss / pool_loss) in row i
    from round 2 on, as a regression task measures them (no class balance)."""
    later = rounds["round"] > 1
    rounds = rounds.assign(pick_loss=np.nan, pool_loss=np.nan, pick_balance=np.nan, pick_novelty=np.nan)
    rounds.loc[later, "pick_loss"] = ratios[: int(later.sum())]
    rounds.loc[later, "pool_loss"] = 1.0
    rounds.loc[later, "pick_novelty"] = 1.0
    assert all(c in rounds.columns for c in COLUMNS)
    return rounds


def test_accuracy_bands_stop_at_100_percent(tmp_path, figures):
    # 100 and 96 in round 2: mean 98 ± 2.8 would reach 100.8%
    rounds = pd.concat([rounds_frame("random", ((90.0, 96.0), (94.0, 100.0))), rounds_frame("snn")])
    write_report(rounds, tmp_path, ACCURACY)  # task mnist: Metric.bounds (0, 100)
    learning = figures["curves"].axes[0]
    tops = [band[:, 1].max() for band in _bands(learning)]
    assert tops and max(tops) <= 100.0, f"a band reaches {max(tops):.1f}% accuracy"
    assert max(tops) == pytest.approx(100.0)  # clipped, not dropped


def test_a_regression_error_and_the_hardness_ratio_have_no_band_below_zero(tmp_path, figures):
    mse = MetricInfo("mse", False, "test MSE x 1e4", display_scale=1e4, decimals=2)
    rounds = rounds_frame("random", ((1e-4, 1e-5), (9e-4, 5e-5)), task="ivus").assign(metric="mse")
    rounds = _with_diagnostics(rounds, [0.1, 2.0])  # hardness 1.05 ± 1.34 in round 2
    write_report(rounds, tmp_path, mse)  # task ivus: Metric.bounds (0, None)
    for stem in ("curves", "hardness"):
        lows = [band[:, 1].min() for band in _bands(figures[stem].axes[0])]
        assert lows and min(lows) >= 0.0, f"{stem}: a band reaches {min(lows):.3g}"
    assert max(band[:, 1].max() for band in _bands(figures["curves"].axes[0])) > 5.0  # no upper bound


def _long_named_regression(tmp_path, figures) -> dict:
    """The figures of a report of a regression plug-in with a long name, two strategies, diagnostics."""
    rounds = rounds_frame("random", task="vessel-wall-stress-regression").assign(metric="mse")
    rounds = _with_diagnostics(pd.concat([rounds, rounds.assign(strategy="coreset")]), [1.0, 1.2, 0.9, 1.1])
    write_report(rounds, tmp_path, MetricInfo("mse", False, "test MSE"))
    return figures


def test_titles_fit_in_the_figure(tmp_path, figures):
    # the hardness title of a regression plug-in with a long name ran past both edges of the figure
    for stem, fig in _long_named_regression(tmp_path, figures).items():
        renderer, page = fig.canvas.get_renderer(), fig.bbox
        for ax in fig.axes:
            title = ax.title.get_window_extent(renderer)
            assert page.x0 <= title.x0 and title.x1 <= page.x1 and title.y1 <= page.y1, (stem, ax.title.get_text())
    assert "\n" in figures["hardness"].axes[0].get_title()  # wrapped, not shrunk away


def test_one_legend_per_figure_outside_the_axes(tmp_path, figures):
    for stem, fig in _long_named_regression(tmp_path, figures).items():
        renderer, page = fig.canvas.get_renderer(), fig.bbox
        legends = [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None]
        assert len(legends) == 1, f"{stem}: {len(legends)} legends"
        box = legends[0].get_window_extent(renderer)
        assert page.x0 <= box.x0 and box.x1 <= page.x1 and page.y0 <= box.y0 and box.y1 <= page.y1, stem
        for ax in fig.axes:
            assert not box.overlaps(ax.get_window_extent(renderer)), f"{stem}: the legend lies over the data"
        assert [t.get_text() for t in legends[0].get_texts()] == ["random", "coreset"]


def test_a_plug_in_metric_without_bounds_is_unbounded(tmp_path, figures):
    metric = Metric("score", higher_is_better=True, label="score")
    assert metric.bounds == (None, None)
    rounds = rounds_frame("random", ((90.0, 96.0), (94.0, 104.0)), task="not-installed").assign(metric="score")
    write_report(rounds, tmp_path, MetricInfo.of(metric))
    assert max(band[:, 1].max() for band in _bands(figures["curves"].axes[0])) > 100.0


def test_a_run_with_validation_draws_its_validation_means_dashed(tmp_path, figures):
    rounds = pd.concat([rounds_frame("random"), rounds_frame("snn", ((80.0, 85.0), (82.0, 87.0)))])
    rounds = rounds.assign(n_validation=50, val_value=rounds["value"] - 10.0)
    write_report(rounds, tmp_path, ACCURACY)
    learning = figures["curves"].axes[0]
    dashed = [line for line in learning.get_lines() if line.get_linestyle() == "--" and len(line.get_xdata())]
    assert [list(line.get_ydata()) for line in dashed] == [[81.0, 86.0], [71.0, 76.0]]  # mean val per strategy
    assert "validation" in " ".join(learning.get_legend_handles_labels()[1])
    text = (tmp_path / "table.md").read_text()
    assert "validation" in text and "| labels spent | 150 | 250 |" in text
    summary = pd.read_csv(tmp_path / "summary.csv")
    assert summary["val_aubc_mean"].tolist() == [pytest.approx(83.5), pytest.approx(73.5)]


def test_a_run_without_validation_draws_no_dashed_line(tmp_path, figures):
    write_report(rounds_frame("random"), tmp_path, ACCURACY)
    assert not [line for line in figures["curves"].axes[0].get_lines() if line.get_linestyle() == "--"]
    assert "val_aubc_mean" not in pd.read_csv(tmp_path / "summary.csv")
