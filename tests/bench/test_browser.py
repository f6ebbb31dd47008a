"""The HTML pages in a real browser: Chromium driven by Selenium opens a real MNIST run's
``report.html``, a study's and the results' ``index.html`` from ``file://`` and checks that every
image decodes, the tables hold the CSVs' numbers, clicking a header sorts its column, nothing is
fetched from anywhere and the console stays free of errors; each test saves a screenshot.

Needs Debian's ``chromium`` and ``chromium-driver`` (``.ci/run`` installs them when absent). Off
CI a machine without them skips these tests, saying so; on CI (``$CI`` set) they fail instead.
``BENCH_SCREENSHOTS=DIR`` keeps the screenshots there (the README's comes from this)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest

from bench.cli.main import main

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
CHROMEDRIVER = shutil.which("chromedriver")
REFERENCE_STUDY = Path(__file__).resolve().parents[2] / "results" / "reference" / "studies" / "pitfalls-reduced"


@pytest.fixture(scope="module")
def browser():
    """A headless Chromium that records its console."""
    missing = [name for name, path in (("chromium", CHROMIUM), ("chromedriver", CHROMEDRIVER)) if path is None]
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.options import Options
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        missing.append("selenium (pip install -e '.[dev]')")
    if missing:
        reason = f"{', '.join(missing)} not found: apt-get install chromium chromium-driver (as .ci/run does)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    options = Options()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(argument)
    options.add_argument("--window-size=1280,1000")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def mnist_run(tmp_path_factory, mnist_root) -> Path:
    """A real MNIST run (random and snn, 2 repeats of 3 rounds on a 1,000-sample subset), VAE and all."""
    root = tmp_path_factory.mktemp("browser") / "results"
    out = root / "runs" / "mnist"
    args = ["run", "--task", "mnist", "--strategy", "random,snn", "--repeats", "2", "--subset", "1000"]
    args += [
        "--initial",
        "20",
        "--increment",
        "20",
        "--rounds",
        "3",
        "--epochs",
        "1",
        "--generative-option",
        "epochs=2",
    ]
    args += ["--threads", "1", "--quiet", "--device", "cpu", "--data-root", str(mnist_root), "--out", str(out)]
    assert main(args) == 0
    return out


def open_page(driver, path: Path, screenshot: str) -> None:
    """Open ``path`` from file://, wait for it, and check what every page must hold."""
    driver.get(path.resolve().as_uri())
    assert driver.execute_script("return document.readyState") == "complete"
    images = driver.execute_script(
        "return Array.from(document.images).map(i => [i.alt, i.complete, i.naturalWidth, i.src.slice(0, 15)])"
    )
    for alt, complete, width, source in images:
        assert complete and width > 0, f"image {alt!r} did not decode"
        assert source.startswith("data:image/"), f"image {alt!r} is not inline"
    fetched = driver.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert fetched == [], f"the page fetched {fetched}"
    errors = [entry for entry in driver.get_log("browser") if entry["level"] in ("SEVERE", "WARNING")]
    assert errors == [], errors
    keep = os.environ.get("BENCH_SCREENSHOTS")
    target = Path(keep) if keep else path.parent
    target.mkdir(parents=True, exist_ok=True)
    assert driver.save_screenshot(str(target / screenshot))


def column(driver, table: str, index: int) -> list[str]:
    """The ``data-v`` of column ``index`` of the table named ``table``, top to bottom."""
    return driver.execute_script(
        f"return Array.from(document.querySelectorAll('table[data-table={table}] tbody tr'))"
        f".map(r => r.cells[{index}].getAttribute('data-v'))"
    )


def click_header(driver, table: str, index: int) -> None:
    driver.find_elements("css selector", f"table[data-table={table}] thead th")[index].click()


def test_a_real_runs_report_in_chromium(browser, mnist_run):
    open_page(browser, mnist_run / "report.html", "report.png")
    images = browser.execute_script("return Array.from(document.images).map(i => i.alt)")
    assert images == ["learning curves", "hardness, balance and novelty of the picks", "generative model samples"]
    # Table 1 as the browser shows it: the text of every cell is table.csv's mean ± std
    table = pd.read_csv(mnist_run / "table.csv")
    shown = browser.execute_script(
        "return Array.from(document.querySelectorAll('table[data-table=table-1] tbody tr'))"
        ".map(r => Array.from(r.cells).map(c => c.textContent))"
    )
    expected = [
        [s, *(f"{r['mean']:.1f} ± {r['std']:.1f}" for _, r in rows.iterrows())]
        for s, rows in table.groupby("strategy", sort=False)
    ]
    assert shown == expected
    # sorting: the summary by AUBC, up then down; Table 1 by its last round
    summary = pd.read_csv(mnist_run / "summary.csv")
    click_header(browser, "summary", 1)
    assert [float(v) for v in column(browser, "summary", 1)] == sorted(summary["aubc_mean"])
    click_header(browser, "summary", 1)
    assert [float(v) for v in column(browser, "summary", 1)] == sorted(summary["aubc_mean"], reverse=True)
    last = table[table["round"] == table["round"].max()]
    click_header(browser, "table-1", 3)
    assert [float(v) for v in column(browser, "table-1", 3)] == sorted(last["mean"])
    # the manifest opens from its collapsed block
    block = browser.find_element("css selector", "details:last-of-type")
    assert not block.get_attribute("open")
    block.find_element("css selector", "summary").click()
    assert json.loads(block.find_element("css selector", "pre").text)["task"] == "mnist"


def test_the_index_and_a_study_in_chromium(browser, mnist_run, capsys):
    root = mnist_run.parents[1]
    # a study: the reduced pitfalls reference, its first two cells of each task
    study = root / "studies" / "pitfalls"
    record = json.loads((REFERENCE_STUDY / "study.json").read_text())
    record["cells"] = [c for c in record["cells"] if c["task"] == "mnist"][:2] + [
        c for c in record["cells"] if c["task"] == "ivus"
    ][:2]
    study.mkdir(parents=True)
    (study / "study.json").write_text(json.dumps(record))
    for cell in record["cells"]:
        shutil.copytree(REFERENCE_STUDY / cell["name"], study / cell["name"])
    assert main(["report", str(study)]) == 0
    open_page(browser, study / "report.html", "study.png")
    ranks = pd.read_csv(study / "mean_ranks.csv")
    shown = column(browser, "mean-ranks", 1)
    assert [float(v) for v in shown] == sorted(ranks["mean_rank"])
    browser.find_element("link text", record["cells"][0]["name"]).click()  # a cell's own page
    assert browser.current_url.endswith("/report.html") and "Table 1" in browser.page_source
    # the index of the results folder: the run and the study, sortable, linked
    assert main(["index", str(root)]) == 0
    open_page(browser, root / "index.html", "index.png")
    folders = browser.execute_script(
        "return Array.from(document.querySelectorAll('table[data-table=index] tbody tr'))"
        ".map(r => r.cells[0].textContent)"
    )
    assert folders == ["studies/pitfalls", "runs/mnist"]
    click_header(browser, "index", 0)
    assert column(browser, "index", 0) == ["runs/mnist", "studies/pitfalls"]
    browser.find_element("link text", "runs/mnist").click()
    assert browser.current_url == (mnist_run / "report.html").resolve().as_uri()
