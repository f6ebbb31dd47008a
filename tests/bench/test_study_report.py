"""The study report: the pairwise penalty matrix against hand-computed counts, AUBC ranks with the
metric's direction and ties, the generated reading, cells not run, and the heatmap files."""

from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ET

import numpy as np
import pandas as pd
import pytest

from bench.report.stats import t_test_p
from bench.study.numbers import cell_wins
from bench.study.report import plain_name, write_study_report
from bench.study.spec import Cell

ACCURACY = {"name": "accuracy", "higher_is_better": True, "label": "accuracy (%)", "display_scale": 100.0}
MSE = {"name": "mse", "higher_is_better": False, "label": "MSE", "display_scale": 1.0, "decimals": 4}
REPEATS = 4


def write_run(folder, task, metric, curves, status="complete", units=None, table=True):
    """A run folder: ``curves`` maps a strategy to its values, shape (repeats, rounds); a minimal manifest."""
    folder.mkdir(parents=True)
    rows = [
        dict(
            task=task,
            strategy=strategy,
            repeat=r,
            seed=r,
            round=t + 1,
            n_labeled=100 * (t + 1),
            metric=metric["name"],
            value=float(values[r, t]),
            train_s=0.0,
            select_s=0.0,
            label_s=0.0,
        )
        for strategy, values in curves.items()
        for r in range(values.shape[0])
        for t in range(values.shape[1])
    ]
    columns = ["task", "strategy", "repeat", "seed", "round", "n_labeled", "metric", "value", "train_s", "select_s"]
    pd.DataFrame(rows, columns=[*columns, "label_s"]).to_csv(folder / "rounds.csv", index=False)
    rounds = next(iter(curves.values())).shape[1]
    manifest = {"status": status, "task": task, "metric": metric, "protocol": {"rounds": rounds}, "config": {}}
    if units is not None:
        manifest["units"] = units
    (folder / "manifest.json").write_text(json.dumps(manifest))
    if table:
        (folder / "table.md").write_text("the run's own report\n")


CELL_A = Cell("mnist", {"imbalance": 1}, {"imbalance": 1})
CELL_B = Cell("mnist", {"imbalance": 10}, {"imbalance": 10})
CELL_C = Cell("ivus")
NOT_RUN = Cell("mnist", {"imbalance": 100}, {"imbalance": 100})


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """Three cells and one not run.

    A (mnist, imbalance=1, 3 rounds): badge > uncertainty > random by 0.01 in every round.
    B (mnist, imbalance=10, 2 rounds): uncertainty > badge in both rounds, uncertainty > random in
    both, badge > random only in round 2 (equal values in round 1).
    C (ivus, MSE, lower is better, 4 rounds): si lower than random and snn in rounds 2-4 (equal in
    round 1); snn equal to random everywhere (their AUBC ranks tie).
    """
    rng = np.random.default_rng(0)
    folder = tmp_path_factory.mktemp("study")

    def noise(rounds):
        return rng.normal(0.0, 0.001, (REPEATS, rounds))

    base = 0.8 + noise(3)
    write_run(
        folder / CELL_A.name,
        "mnist",
        ACCURACY,
        {"badge": base + 0.02 + noise(3), "uncertainty": base + 0.01 + noise(3), "random": base},
    )
    base = 0.7 + noise(2)
    badge = base + noise(2) + 0.01
    badge[:, 0] = base[:, 0]
    write_run(
        folder / CELL_B.name,
        "mnist",
        ACCURACY,
        {"badge": badge, "uncertainty": base + 0.03 + noise(2), "random": base},
    )
    base = 0.05 + noise(4)
    si = base - 0.01 + noise(4)
    si[:, 0] = base[:, 0]
    write_run(folder / CELL_C.name, "ivus", MSE, {"random": base, "si": si, "snn": base.copy()})
    paths = write_study_report(folder, [CELL_A, CELL_B, CELL_C, NOT_RUN])
    return folder, paths


def test_penalty_matrix_equals_hand_counts_each_round_after_the_first_weighing_one_over_their_number(study):
    folder, _ = study
    penalty = pd.read_csv(folder / "penalty.csv").set_index("strategy")
    order = ["badge", "uncertainty", "random", "si", "snn"]
    assert penalty.index.tolist() == order
    expected = {
        # round 1 is never compared (real runs share the initial set there); a cell's other rounds weigh 1/(R - 1)
        ("badge", "uncertainty"): 1.0,  # A: rounds 2 and 3 of 2 compared
        ("badge", "random"): 1.0 + 1.0,  # A: 2/2; B: round 2, the one compared
        ("uncertainty", "badge"): 1.0,  # B: 1/1
        ("uncertainty", "random"): 1.0 + 1.0,
        ("si", "random"): 1.0,  # C: rounds 2-4 of 3 compared, lower MSE wins
        ("si", "snn"): 1.0,
    }
    for i in order:
        for j in order:
            if i == j:
                assert math.isnan(penalty.loc[i, j])
            else:
                assert penalty.loc[i, j] == pytest.approx(expected.get((i, j), 0.0)), (i, j)
    assert penalty["wins"].to_dict() == pytest.approx(
        {"badge": 3.0, "uncertainty": 3.0, "random": 0, "si": 2.0, "snn": 0}
    )
    assert penalty["beaten"].to_dict() == pytest.approx(
        {"badge": 1.0, "uncertainty": 1.0, "random": 5.0, "si": 0.0, "snn": 1.0}
    )
    assert penalty["cells"].to_dict() == {"badge": 2, "uncertainty": 2, "random": 3, "si": 1, "snn": 1}
    assert "paired two-sided t-test" in penalty["description"].iloc[0]


def test_lower_is_better_is_respected(study):
    folder, _ = study
    penalty = pd.read_csv(folder / "penalty.csv").set_index("strategy")
    assert penalty.loc["random", "si"] == 0 and penalty.loc["si", "random"] == pytest.approx(1.0)
    ranks = pd.read_csv(folder / "ranks.csv")
    ivus = ranks[ranks["cell"] == "ivus"].set_index("strategy")
    assert ivus.loc["si", "rank"] == 1 and (ivus["direction"] == "lower is better").all()


def test_ranks_per_cell_with_ties_and_mean_ranks(study):
    folder, _ = study
    ranks = pd.read_csv(folder / "ranks.csv", keep_default_na=False)
    assert ranks.columns.tolist()[:3] == ["cell", "task", "imbalance"]
    assert ranks.columns.tolist()[3:] == [
        "strategy",
        "aubc_mean",
        "aubc_std",
        "repeats",
        "rank",
        "metric",
        "direction",
        "description",
    ]
    by = {(r.cell, r.strategy): r.rank for r in ranks.itertuples()}
    assert by[("mnist/imbalance=1", "badge")] == 1 and by[("mnist/imbalance=1", "random")] == 3
    assert by[("mnist/imbalance=10", "uncertainty")] == 1 and by[("mnist/imbalance=10", "badge")] == 2
    assert by[("ivus", "snn")] == by[("ivus", "random")] == 2.5  # equal curves share the average rank
    assert set(ranks.loc[ranks["cell"] == "ivus", "imbalance"]) == {""}
    assert (ranks["repeats"] == REPEATS).all()
    means = pd.read_csv(folder / "mean_ranks.csv").set_index("strategy")
    assert means["mean_rank"].to_dict() == pytest.approx(
        {"badge": 1.5, "uncertainty": 1.5, "random": (3 + 3 + 2.5) / 3, "si": 1.0, "snn": 2.5}
    )
    assert means["cells"].to_dict() == {"badge": 2, "uncertainty": 2, "random": 3, "si": 1, "snn": 1}


def test_the_reading_names_the_never_beaten_strategy_and_the_axis_that_changes_the_order(study):
    folder, _ = study
    text = (folder / "study.md").read_text()
    paragraphs = text.split("\n\n")
    overall = paragraphs[1]  # over every cell: who is never beaten, the best mean rank
    assert "si is never beaten" in overall
    assert "Of the 5 strategies, si (1.00 over 1 cell) has the best mean AUBC rank" in overall
    assert "1 of the 4 cells not run or not reported" in overall
    # then each task on its own: its axes and its cells' winners, among the strategies that apply to it
    mnist = next(p for p in paragraphs if p.startswith("**mnist.**"))
    assert "The axis imbalance changes the order" in mnist
    assert "with imbalance=1, badge leads (mean rank 1.00 over 1 cell)" in mnist
    assert "with imbalance=10, uncertainty leads (mean rank 1.00 over 1 cell)" in mnist
    assert "badge (1.50 over 2 cells) and uncertainty (1.50 over 2 cells) share the best mean AUBC rank" in mnist
    assert "the largest move: badge, mean rank 1.00 with imbalance=1 and 2.00 with imbalance=10" in mnist
    ivus = next(p for p in paragraphs if p.startswith("**ivus.**"))
    assert "si is never beaten" in ivus and "si wins (AUBC rank 1) in every one of the 1 cells" in ivus
    means = pd.read_csv(folder / "mean_ranks.csv").set_index("strategy")
    assert means.loc["random", "mean_rank mnist"] == 3 and means.loc["random", "cells ivus"] == 1
    assert "| random | 2.83 | 3 | 3.00 (2) | 2.50 (1) |" in text


def test_a_cell_not_run_is_listed_and_left_out(study):
    folder, _ = study
    text = (folder / "study.md").read_text()
    assert "- mnist/imbalance=100: not run (no run folder); left out of the numbers above" in text
    assert "- [mnist/imbalance=1](mnist/imbalance=1/table.md): 3 strategies, 4 repeats, 3 rounds" in text
    assert "mnist/imbalance=100" not in set(pd.read_csv(folder / "ranks.csv")["cell"])
    assert "| **beaten** | 1.00 | 1.00 | 5.00 | 0.00 | 1.00 |  |  |" in text
    assert "![penalty matrix](penalty.png)" in text


def test_the_heatmap_files_are_valid_png_and_svg(study):
    folder, paths = study
    names = {p.name for p in paths}
    assert {"penalty.csv", "penalty.png", "penalty.svg", "ranks.csv", "mean_ranks.csv", "study.md"} <= names
    assert (folder / "penalty.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert ET.parse(folder / "penalty.svg").getroot().tag.endswith("svg")
    assert "5.00" in (folder / "penalty.svg").read_text()  # the entries are written in the figure


def test_an_unfinished_cell_gets_its_own_report_and_is_reported_with_a_note(tmp_path):
    rng = np.random.default_rng(1)
    units = {"random-0": {"strategy": "random", "repeat": 0, "status": "running"}}
    cell = Cell("mnist", {"initial": 20}, {"initial": 20})
    curves = {"random": 0.8 + rng.normal(0, 0.01, (2, 3)), "badge": 0.9 + rng.normal(0, 0.01, (2, 3))}
    write_run(tmp_path / cell.name, "mnist", ACCURACY, curves, status="interrupted", units=units, table=False)
    paths = write_study_report(tmp_path, [cell])
    assert tmp_path / cell.name / "table.md" in paths and (tmp_path / cell.name / "curves.png").exists()
    assert "an unfinished run (interrupted)" in (tmp_path / cell.name / "table.md").read_text()
    text = (tmp_path / "study.md").read_text()
    assert "- [mnist/initial=20](mnist/initial=20/table.md): unfinished, reported with the rounds it has" in text


def test_an_unfinished_cell_weighs_its_compared_rounds_over_the_planned_ones(tmp_path):
    rng = np.random.default_rng(2)
    cell = Cell("mnist", {"initial": 20}, {"initial": 20})
    base = 0.8 + rng.normal(0, 0.001, (REPEATS, 3))
    badge = base + 0.05 + rng.normal(0, 0.001, (REPEATS, 3))
    badge[:, 0] = base[:, 0]
    write_run(tmp_path / cell.name, "mnist", ACCURACY, {"random": base, "badge": badge}, status="interrupted")
    manifest = json.loads((tmp_path / cell.name / "manifest.json").read_text())
    manifest["protocol"]["rounds"] = 5  # planned 5, stopped after 3: rounds 2 and 3 of the 4 compared
    (tmp_path / cell.name / "manifest.json").write_text(json.dumps(manifest))
    write_study_report(tmp_path, [cell])
    penalty = pd.read_csv(tmp_path / "penalty.csv").set_index("strategy")
    assert penalty.loc["badge", "random"] == pytest.approx(0.5)


def test_a_study_without_rows_writes_only_study_md_and_its_page(tmp_path):
    empty = Cell("mnist", {"initial": 20}, {"initial": 20})
    write_run(tmp_path / empty.name, "mnist", ACCURACY, {"random": np.zeros((0, 2))})  # a header, no rows
    paths = write_study_report(tmp_path, [NOT_RUN, empty])
    assert paths == [tmp_path / "study.md", tmp_path / "report.html"]
    for name in ("study.md", "report.html"):
        text = (tmp_path / name).read_text()
        assert "No cell of the 2 cells has rows to report yet." in text
        assert "mnist/initial=20: not run (no rows in rounds.csv); left out of the numbers above" in text


def test_vectorized_wins_follow_t_test_p():
    rng = np.random.default_rng(2)
    values = rng.normal(0.0, 1.0, (3, 5, 6))  # strategies, repeats, rounds
    values[1, :, 0] = values[0, :, 0]  # no difference: p = 1
    values[0, :, 1], values[1, :, 1] = 1.0, 0.5  # one non-zero difference without spread: no t, no win
    values[2, :, 2] = values[0, :, 2] + 3.0 + rng.normal(0, 0.01, 5)  # a clear win of 2 over 0
    values[2, 1:, 3] = np.nan  # one repeat: no test
    rows = [
        dict(strategy=f"s{s}", seed=r, repeat=r, round=t, value=values[s, r, t])
        for s in range(3)
        for r in range(5)
        for t in range(6)
        if not np.isnan(values[s, r, t])
    ]
    names, wins = cell_wins(pd.DataFrame(rows), higher_is_better=True)
    assert names == ["s0", "s1", "s2"]
    for i in range(3):
        for j in range(3):
            for t in range(6):
                delta = values[i, :, t] - values[j, :, t]
                p = t_test_p(delta[~np.isnan(delta)])
                assert wins[i, j, t] == (p < 0.05 and np.nanmean(delta) > 0), (i, j, t)
    assert wins[2, 0, 2] and not wins[0, 2, 2] and not wins[0, 1, 1] and not wins[:, :, 3].any()


def test_an_option_that_is_an_axis_leaves_the_strategy_name():
    cell = Cell("ivus", {"start": "pool"}, {"si.start": "pool"})
    assert plain_name("si (start=pool)", cell) == "si"
    assert plain_name("si (prior=aggregate, start=pool)", cell) == "si (prior=aggregate)"
    assert plain_name("si (start=prior)", cell) == "si (start=prior)"
    assert plain_name("random", cell) == "random"
    generative = Cell("ivus", {"generative.latent_dim": 8}, {"generative.latent_dim": 8})
    assert plain_name("si (latent_dim=8)", generative) == "si"
