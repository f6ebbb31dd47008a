"""Reports from hostile inputs (issue 27, items 21-23): non-finite values, runs of other
protocols or seeds, torn rows and broken manifests. Each starts from a small real run on the
``blobs`` task, edited the way a user or a broken disk would, and ends in a report whose numbers
are true (with a visible note), or in exit 2 with a message naming the file and the fix."""

from __future__ import annotations

import json
import logging
import math
import shutil
from pathlib import Path

import pandas as pd
import pytest

from bench.cli.main import main
from bench.testing import Blobs, registered

RUN = ["run", "--task", "blobs", "--repeats", "3", "--rounds", "3", "--quiet", "--threads", "1"]


@pytest.fixture(scope="module")
def real_run(tmp_path_factory) -> Path:
    """random and coreset, 3 repeats of 3 rounds on blobs (seconds); tests edit copies of it."""
    out = tmp_path_factory.mktemp("runs") / "run"
    with registered(Blobs):
        assert main([*RUN, "--strategy", "random,coreset", "--out", str(out)]) == 0
    return out


def copy(folder: Path, to: Path, strategy: str | None = None) -> Path:
    """A copy of the run folder's rounds.csv and manifest.json (only ``strategy``'s rows if given)."""
    to.mkdir(parents=True)
    shutil.copy(folder / "manifest.json", to / "manifest.json")
    rows = pd.read_csv(folder / "rounds.csv")
    (rows if strategy is None else rows[rows["strategy"] == strategy]).to_csv(to / "rounds.csv", index=False)
    return to


def edit_rows(folder: Path, where: dict, **values) -> None:
    rows = pd.read_csv(folder / "rounds.csv")
    match = pd.Series(True, index=rows.index)
    for column, value in where.items():
        match &= rows[column] == value
    for column, value in values.items():
        rows.loc[match, column] = value
    rows.to_csv(folder / "rounds.csv", index=False)


def edit_manifest(folder: Path, section: str, **values) -> None:
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest[section].update(values)
    (folder / "manifest.json").write_text(json.dumps(manifest))


def report(*args: str) -> int:
    try:
        return main(["report", *map(str, args)])
    except SystemExit as exit:
        return exit.code


# item 21: NaN and infinite values


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_a_non_finite_value_is_left_out_with_a_note_and_the_true_repeat_count(real_run, tmp_path, caplog, bad):
    folder = copy(real_run, tmp_path / "run")
    edit_rows(folder, dict(strategy="coreset", repeat=1, round=2), value=bad)
    with caplog.at_level(logging.INFO):
        assert report(folder) == 0
    text = (folder / "table.md").read_text()
    note = f"coreset repeat 1 (seed {pd.read_csv(folder / 'rounds.csv')['seed'].unique()[1]}) t=2: {bad}"
    assert "is not a finite number and is left out" in text and note in text, text
    assert "not a finite number" in caplog.text
    coreset_row = next(line for line in text.splitlines() if line.startswith("| coreset |"))
    assert "(n=2)" in coreset_row.split("|")[3] and "(n=2)" not in coreset_row.split("|")[2]
    assert "inf ±" not in text and "+nan" not in text and "+inf" not in text
    diffs = pd.read_csv(folder / "differences.csv").set_index(["strategy", "round"])
    assert diffs.loc[("coreset", 2), "repeats"] == 2 and math.isfinite(diffs.loc[("coreset", 2), "mean"])
    assert diffs.loc[("coreset", 3), "repeats"] == 3
    summary = pd.read_csv(folder / "summary.csv").set_index("strategy")
    assert summary.loc["coreset", "repeats"] == 2 and math.isfinite(summary.loc["coreset", "aubc_mean"])
    assert summary.loc["random", "repeats"] == 3
    assert summary["saving_pct"].isna().all() or summary["saving_pct"].abs().max() < 100


def test_a_report_of_nothing_but_non_finite_values_is_refused(real_run, tmp_path, capsys):
    folder = copy(real_run, tmp_path / "run")
    edit_rows(folder, {}, value=math.nan)
    assert report(folder) == 2
    err = capsys.readouterr().err
    assert "no finite metric value" in err and "rounds.csv" in err


# item 22: runs of other protocols or seeds


@pytest.mark.parametrize(
    "section, setting, value",
    [
        ("protocol", "lr", 0.05),
        ("protocol", "batch_size", 8),
        ("protocol", "augment", True),
        ("protocol", "optimizer", "SGD"),
        ("device", "train_dtype", "bfloat16"),
        ("data", "test", 100),
        ("config", "some_future_setting", 1),  # a setting this version does not know still has to agree
    ],
)
def test_runs_that_trained_differently_are_not_merged(real_run, tmp_path, capsys, section, setting, value):
    random = copy(real_run, tmp_path / "random", "random")
    coreset = copy(real_run, tmp_path / "coreset", "coreset")
    if setting == "some_future_setting":  # (compared where both manifests record it)
        edit_manifest(random, section, **{setting: 0})
    edit_manifest(coreset, section, **{setting: value})
    assert report(random, coreset, "--out", tmp_path / "both") == 2
    err = capsys.readouterr().err
    assert f"different protocols: {setting}" in err and str(coreset) in err, err


def test_a_run_on_a_subset_is_not_merged_with_one_on_the_whole_pool(real_run, tmp_path, capsys, blobs_task):
    # the hostile case: the same seed, so the same repeats, but another pool and test set: a -4.4
    # difference at t=1 came out "significant" although both started from "the same" set
    subset = tmp_path / "subset"
    assert main([*RUN, "--strategy", "coreset", "--subset", "300", "--out", str(subset)]) == 0
    capsys.readouterr()
    assert report(copy(real_run, tmp_path / "random", "random"), subset, "--out", tmp_path / "both") == 2
    assert "different protocols: subset is None in" in capsys.readouterr().err


def test_runs_of_one_protocol_still_merge(real_run, tmp_path):
    random = copy(real_run, tmp_path / "random", "random")
    coreset = copy(real_run, tmp_path / "coreset", "coreset")
    edit_manifest(coreset, "config", threads=4, device="cpu", repeats=3, diagnostics=False)  # how, not what
    assert report(random, coreset, "--out", tmp_path / "both") == 0
    assert len(pd.read_csv(tmp_path / "both" / "differences.csv")) == 3


def test_repeats_of_other_seeds_are_not_paired_and_a_note_says_so(real_run, tmp_path, caplog):
    folder = copy(real_run, tmp_path / "run")
    edit_rows(folder, dict(strategy="coreset", repeat=2), seed=7)
    with caplog.at_level(logging.INFO):
        assert report(folder) == 0
    text = (folder / "table.md").read_text()
    assert "coreset: 1 of its 3 repeats (seed 7) has no random repeat of the same seed" in text, text
    assert "coreset: 1 of its 3 repeats" in caplog.text
    assert (pd.read_csv(folder / "differences.csv")["repeats"] == 2).all()
    edit_rows(folder, dict(strategy="coreset"), seed=7)  # every repeat: no paired difference at all
    assert report(folder) == 0
    text = (folder / "table.md").read_text()
    assert "coreset: 3 of its 3 repeats" in text and "difference to random" not in text


# item 23: torn rows and broken manifests


def test_a_torn_middle_row_is_refused_naming_its_line(real_run, tmp_path, capsys):
    folder = copy(real_run, tmp_path / "run")
    lines = (folder / "rounds.csv").read_text().splitlines(keepends=True)
    lines[3] = lines[3][:35] + "\n"  # row 3 cut short (the last row torn by a kill is fine)
    (folder / "rounds.csv").write_text("".join(lines))
    assert report(folder) == 2
    err = capsys.readouterr().err
    assert f"{folder / 'rounds.csv'} line 4:" in err and "fields" in err and "several metrics" not in err, err


@pytest.mark.parametrize(
    "content, says",
    [
        (b'{"status": "complete", "metric": ', "not readable JSON"),
        (b"\xff\xfe\x00garbage", "not readable JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b'{"protocol": 5}', "'protocol' is int"),
        (b'{"metric": {"name": "accuracy"}}', "'metric'"),
        (b'{"metric": {"name": "accuracy", "higher_is_better": "yes", "label": "x"}}', "higher_is_better"),
    ],
)
def test_a_broken_manifest_is_refused_naming_the_file(real_run, tmp_path, capsys, content, says):
    folder = copy(real_run, tmp_path / "run")
    (folder / "manifest.json").write_bytes(content)
    assert report(folder) == 2
    err = capsys.readouterr().err
    assert f"{folder / 'manifest.json'}" in err and says in err, err
    assert "Traceback" not in err
