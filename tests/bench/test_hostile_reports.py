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
