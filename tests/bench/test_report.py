"""Tables and curves from rounds.csv: Table-1 layout, statistics, and merging runs."""

from __future__ import annotations

import pandas as pd
import pytest

from bench.cli import main
from bench.report import ReportError, markdown_table, paired_differences, read_rounds, summarize, write_report


def rounds_frame(strategy="random", values=((90.0, 95.0), (92.0, 97.0)), task="mnist", seed=0) -> pd.DataFrame:
    rows = []
    for repeat, per_round in enumerate(values):
        for t, value in enumerate(per_round, start=1):
            rows.append(dict(task=task, strategy=strategy, repeat=repeat, seed=seed + repeat, round=t,
                             n_labeled=100 * t, metric="accuracy", value=value, train_s=1.0,
                             select_s=0.0, label_s=0.0))
    return pd.DataFrame(rows)


def test_summary_is_mean_and_sample_std_per_strategy_and_round():
    table = summarize(rounds_frame())
    assert table.to_dict("records") == [
        dict(strategy="random", round=1, n_labeled=100, mean=91.0, std=pytest.approx(2 ** 0.5), repeats=2),
        dict(strategy="random", round=2, n_labeled=200, mean=96.0, std=pytest.approx(2 ** 0.5), repeats=2),
    ]


def test_single_repeat_has_no_std():
    table = summarize(rounds_frame(values=((90.0, 95.0),)))
    assert table["std"].isna().all()
    assert "90.0 ± n/a" in markdown_table(table, "mnist", "accuracy")


def test_markdown_has_a_row_per_strategy_and_a_column_per_round():
    rounds = pd.concat([rounds_frame("random"), rounds_frame("snn", values=((91.0, 96.0), (93.0, 98.0)))])
    text = markdown_table(summarize(rounds), "mnist", "test accuracy (%)")
    lines = text.splitlines()
    assert lines[2] == "| strategy | t=1 | t=2 |"
    assert lines[4] == "| n_labeled | 100 | 200 |"
    assert lines[5] == "| random | 91.0 ± 1.4 | 96.0 ± 1.4 |"
    assert lines[6] == "| snn | 92.0 ± 1.4 | 97.0 ± 1.4 |"


def test_runs_of_different_strategies_are_merged(tmp_path):
    for name in ("random", "snn"):
        (tmp_path / name).mkdir()
        rounds_frame(name).to_csv(tmp_path / name / "rounds.csv", index=False)
    code = main(["report", str(tmp_path / "random"), str(tmp_path / "snn"), "--out", str(tmp_path / "both")])
    assert code == 0
    table = pd.read_csv(tmp_path / "both" / "table.csv")
    assert table["strategy"].unique().tolist() == ["random", "snn"]
    assert (tmp_path / "both" / "curves.png").stat().st_size > 0


def test_overlapping_runs_are_refused(tmp_path):
    rounds_frame().to_csv(tmp_path / "a.csv", index=False)
    rounds_frame().to_csv(tmp_path / "b.csv", index=False)
    with pytest.raises(ReportError, match="duplicate rows"):
        read_rounds([tmp_path / "a.csv", tmp_path / "b.csv"])


def test_runs_with_other_seeds_add_repeats(tmp_path):
    rounds_frame(seed=0).to_csv(tmp_path / "a.csv", index=False)
    rounds_frame(values=((94.0, 99.0), (96.0, 93.0)), seed=100).to_csv(tmp_path / "b.csv", index=False)
    table = summarize(read_rounds([tmp_path / "a.csv", tmp_path / "b.csv"]))
    assert table["repeats"].tolist() == [4, 4]
    assert table["mean"].tolist() == [93.0, 96.0]


def test_mixed_tasks_are_refused(tmp_path):
    rounds_frame(task="mnist").to_csv(tmp_path / "a.csv", index=False)
    rounds_frame(strategy="x", task="ivus").to_csv(tmp_path / "b.csv", index=False)
    with pytest.raises(ReportError, match="several tasks"):
        read_rounds([tmp_path / "a.csv", tmp_path / "b.csv"])


def test_a_file_that_is_not_rounds_csv_is_refused(tmp_path):
    (tmp_path / "rounds.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ReportError, match="lacks the columns"):
        read_rounds([tmp_path])


def test_report_rebuilds_the_same_table(tmp_path):
    rounds_frame().to_csv(tmp_path / "rounds.csv", index=False)
    write_report(read_rounds([tmp_path]), tmp_path / "first")
    assert main(["report", str(tmp_path)]) == 0
    assert (tmp_path / "table.csv").read_text() == (tmp_path / "first" / "table.csv").read_text()
    assert (tmp_path / "table.md").read_text() == (tmp_path / "first" / "table.md").read_text()


def test_paired_differences_compare_each_repeat_with_its_own_baseline():
    rounds = pd.concat([rounds_frame("random"), rounds_frame("snn", values=((91.0, 94.0), (92.5, 98.0)))])
    diffs = paired_differences(rounds, "random", higher_is_better=True)
    assert diffs["strategy"].unique().tolist() == ["snn"]
    first, second = diffs.to_dict("records")
    assert first["mean"] == pytest.approx(0.75) and first["better"] == 2  # +1.0 and +0.5
    assert second["mean"] == pytest.approx(0.0) and second["better"] == 1  # -1.0 and +1.0
    lower = paired_differences(rounds, "random", higher_is_better=False)
    assert lower["better"].tolist() == [0, 1]
    assert paired_differences(rounds_frame("snn"), "random") is None


def test_paired_differences_never_pair_repeats_of_different_seeds():
    rounds = pd.concat([rounds_frame("random", seed=0), rounds_frame("snn", seed=100)])
    assert paired_differences(rounds, "random").empty


def test_table_md_adds_the_paired_differences_when_random_ran(tmp_path):
    rounds = pd.concat([rounds_frame("random"), rounds_frame("snn", values=((91.0, 94.0), (92.5, 98.0)))])
    write_report(rounds, tmp_path)
    text = (tmp_path / "table.md").read_text()
    assert "difference to random in the same repeat" in text
    assert "| snn | +0.8 ± 0.4 (2/2) | +0.0 ± 1.4 (1/2) |" in text
