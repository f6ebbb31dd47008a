"""report.html and index.html, read as HTML (the browser tests, tests/bench/test_browser.py, open them
in Chromium): self-contained, the numbers of the CSVs, the headline, failures and unfinished runs."""

from __future__ import annotations

import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest

from bench.cli.main import main
from bench.report.tables import write_report
from bench.run.results import MetricInfo
from bench.testing import Blobs, registered
from tests.bench.test_executors import Raises  # fails when it selects after round 2


class Tables(HTMLParser):
    """Every ``<table data-table=NAME>`` of a page: its header and rows of (text, data-v) cells;
    every ``<img>`` source and every ``href``."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, dict] = {}
        self.images: list[str] = []
        self.links: list[str] = []
        self._table: dict | None = None
        self._cell: list | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "table" and "data-table" in a:
            self._table = self.tables.setdefault(a["data-table"], {"header": [], "rows": []})
        elif tag == "tr" and self._table is not None:
            self._table["rows"].append([])
        elif tag in ("td", "th") and self._table is not None:
            self._cell = [tag, "", a.get("data-v")]
        elif tag == "img":
            self.images.append(a.get("src", ""))
        if "href" in a:
            self.links.append(a["href"])

    def handle_data(self, data):
        if self._cell is not None:
            self._cell[1] += data

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None and self._table is not None:
            kind, text, value = self._cell
            if kind == "th":
                self._table["header"].append(text.strip())
            else:
                self._table["rows"][-1].append((text.strip(), value))
            self._cell = None
        elif tag == "table":
            self._table = None


def parse(path: Path) -> Tables:
    parser = Tables()
    parser.feed(path.read_text())
    for table in parser.tables.values():
        table["rows"] = [row for row in table["rows"] if row]  # the header's row
    return parser


def cli(capsys, *args: str) -> tuple[int, str, str]:
    with registered(Blobs, Raises):
        code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def blobs_run(tmp_path_factory) -> Path:
    """A blobs run of random, snn and a strategy that fails in round 2, 2 repeats of 3 rounds."""
    out = tmp_path_factory.mktemp("html") / "run"
    with registered(Blobs, Raises):
        code = main(
            ["run", "--task", "blobs", "--strategy", "random,snn,raises", "--repeats", "2", "--epochs", "1"]
            + ["--threads", "1", "--quiet", "--device", "cpu", "--out", str(out)]
        )
    assert code == 1  # a unit failed
    return out


def test_a_run_writes_a_self_contained_page_with_the_numbers_of_its_csvs(blobs_run):
    page = parse(blobs_run / "report.html")
    text = (blobs_run / "report.html").read_text()
    assert page.images and all(src.startswith("data:image/") for src in page.images)
    assert not re.search(r'(src|href)="(https?:)?//', text), "the page fetches nothing"
    # Table 1: a row per strategy, a column per round, mean ± std as table.csv holds them
    table = pd.read_csv(blobs_run / "table.csv")
    shown = page.tables["table-1"]
    assert shown["header"][0] == "strategy" and len(shown["header"]) == 1 + table["round"].nunique()
    for row in shown["rows"]:
        strategy = row[0][0]
        for (cell, value), (_, expected) in zip(row[1:], table[table["strategy"] == strategy].iterrows()):
            assert float(value) == pytest.approx(expected["mean"], rel=1e-12)
            assert cell.startswith(f"{expected['mean']:.1f} ± ")
    assert sorted(r[0][0] for r in shown["rows"]) == sorted(table["strategy"].unique())
    # the summary and the paired differences: summary.csv and differences.csv
    summary = pd.read_csv(blobs_run / "summary.csv").set_index("strategy")
    for row in page.tables["summary"]["rows"]:
        assert float(row[1][1]) == pytest.approx(summary.loc[row[0][0], "aubc_mean"], rel=1e-12)
    diffs = pd.read_csv(blobs_run / "differences.csv")
    rows = page.tables["differences"]["rows"]
    assert len(rows) == len(diffs)
    for row, (_, expected) in zip(rows, diffs.iterrows()):
        assert row[0][0] == expected["strategy"] and float(row[5][1]) == pytest.approx(expected["t_p"], rel=1e-12)
    # the hardness table holds hardness.csv's means
    hardness = pd.read_csv(blobs_run / "hardness.csv")
    assert [float(r[3][1]) for r in page.tables["hardness"]["rows"]] == pytest.approx(list(hardness["hardness_mean"]))


def test_the_headline_says_what_ran_how_it_ended_and_why_a_unit_failed(blobs_run):
    text = (blobs_run / "report.html").read_text()
    assert "accuracy (%), <b>higher is better</b>" in text
    assert "complete with failures</span>: 4 of 6 units complete, 2 failed" in text
    assert "raises-r0</b> failed after 2 rounds: ZeroDivisionError: a bug in the strategy" in text
    assert "Latent quality of the blobs generative model: VAE" in text  # snn's model, described
    manifest = json.loads((blobs_run / "manifest.json").read_text())
    assert f"commit {manifest['git']['commit'][:10]}" in text
    assert "<summary>manifest.json of run</summary>" in text


def test_a_merged_report_names_each_run_and_an_unfinished_one_says_so(blobs_run, tmp_path, capsys):
    other = tmp_path / "other"
    shutil.copytree(blobs_run, other)
    manifest = json.loads((other / "manifest.json").read_text())
    manifest["units"]["snn-r1"]["status"] = "interrupted"
    manifest["status"] = "interrupted"
    (other / "manifest.json").write_text(json.dumps(manifest))
    rows = pd.read_csv(other / "rounds.csv")
    rows = rows[rows["strategy"] == "snn"].assign(strategy="snn", seed=rows["seed"] + 100)
    rows.to_csv(other / "rounds.csv", index=False)
    merged = tmp_path / "merged"
    code, _, err = cli(capsys, "report", str(blobs_run), str(other), "--out", str(merged))
    assert code == 0, err
    text = (merged / "report.html").read_text()
    assert "<dt>run run</dt>" in text and "<dt>run other</dt>" in text
    assert "unfinished</span>: 3 of 6 units complete, 2 failed (the manifest says interrupted)" in text
    assert text.count("<summary>manifest.json of") == 2
    assert text.count("Latent quality of the blobs") == 1  # one model, shown once
    assert parse(merged / "report.html").tables["table-1"]["rows"]
    code, _, err = cli(capsys, "report", str(blobs_run), str(other), "--out", str(merged))  # rebuilt in place
    assert code == 0, err


def test_the_index_lists_every_run_and_study_with_its_state_and_links_to_its_report(blobs_run, tmp_path, capsys):
    root = tmp_path / "results"
    shutil.copytree(blobs_run, root / "runs" / "done")
    shutil.copytree(blobs_run, root / "runs" / "stopped")
    manifest = json.loads((root / "runs" / "stopped" / "manifest.json").read_text())
    manifest["units"]["random-r1"]["status"] = "running"
    manifest["status"] = "running"
    (root / "runs" / "stopped" / "manifest.json").write_text(json.dumps(manifest))
    (root / "runs" / "stopped" / "report.html").unlink()
    (root / "runs" / "stopped" / "table.md").unlink()
    study = root / "studies" / "s"
    shutil.copytree(blobs_run, study / "blobs")
    (study / "study.json").write_text(json.dumps({"status": "complete", "spec": {"tasks": ["blobs"], "repeats": 2}}))
    (study / "study.md").write_text("# a study\n")
    code, out, err = cli(capsys, "index", str(root))
    assert code == 0 and out.strip() == str(root / "index.html"), err
    page = parse(root / "index.html")
    rows = {row[0][0].split(" (")[0]: row for row in page.tables["index"]["rows"]}
    assert sorted(rows) == ["runs/done", "runs/stopped", "studies/s"]  # the study's cell is on its page
    assert rows["runs/done"][5][1] == "complete with failures"
    assert rows["runs/stopped"][5][1] == "unfinished" and "(no report yet)" in rows["runs/stopped"][0][0]
    assert rows["studies/s"][1][0] == "study"
    summary = pd.read_csv(blobs_run / "summary.csv")
    best = summary.loc[summary["aubc_mean"].idxmax()]
    assert f"{best['strategy']} {best['aubc_mean']:.1f}" in rows["runs/done"][7][0]
    assert sorted(page.links[1:]) == ["runs/done/report.html", "studies/s/study.md"]
    assert all((root / link).is_file() for link in page.links[1:])
    code, _, err = cli(capsys, "index", str(tmp_path / "nowhere"))
    assert code == 2 and "is not a folder" in err


def test_a_lower_is_better_metric_shows_in_display_units_with_the_lowest_in_bold(tmp_path):
    mse = MetricInfo("mse", False, "test MSE × 10⁴", display_scale=1e4, decimals=2)
    rows = []
    for strategy, level in (("random", 5e-4), ("coreset", 4e-4)):
        for repeat in range(3):
            for t in (1, 2):
                value = level / t + 1e-5 * repeat * (2 if strategy == "coreset" else 1)  # paired differences vary
                rows.append(dict(task="ivus", strategy=strategy, repeat=repeat, seed=repeat, round=t, n_labeled=20 * t))
                rows[-1].update(metric="mse", value=value, train_s=1.0, select_s=0.0, label_s=0.0)
    write_report(pd.DataFrame(rows), tmp_path, mse)
    page, table = parse(tmp_path / "report.html"), pd.read_csv(tmp_path / "table.csv")
    for row in page.tables["table-1"]["rows"]:
        expected = table[table["strategy"] == row[0][0]]
        assert [float(v) for _, v in row[1:]] == pytest.approx(list(expected["mean"] * 1e4), rel=1e-12)
        assert [text.split(" ±")[0] for text, _ in row[1:]] == [f"{m * 1e4:.2f}" for m in expected["mean"]]
    text = (tmp_path / "report.html").read_text()
    best = table.loc[table.groupby("round")["mean"].idxmin()]
    assert all(best["strategy"] == "coreset")
    assert text.count('class="num best"') == 2 + 1  # the lowest mean of each round, and the lowest AUBC
    assert "test MSE × 10⁴, <b>lower is better</b>" in text


def test_odd_files_neither_break_the_index_nor_get_into_its_markup(tmp_path, capsys):
    hostile = 'x"><img src=x onerror=alert(1)>'
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "manifest.json").write_text(json.dumps({"units": [1], "config": "x", "status": hostile}))
    (tmp_path / "study").mkdir()
    (tmp_path / "study" / "study.json").write_text(json.dumps({"spec": ["x"], "cells": "y", "status": "<script>"}))
    code, _, err = cli(capsys, "index", str(tmp_path))
    assert code == 0, err
    text = (tmp_path / "index.html").read_text()
    assert "<img src=x" not in text and text.count("<script>") == 1  # the page's own script only
    rows = parse(tmp_path / "index.html").tables["index"]["rows"]
    assert sorted(row[5][1] for row in rows) == sorted([hostile, "<script>"])  # shown as text
