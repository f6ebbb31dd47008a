"""The README and docs/ stay true: CI runs the README's set-up commands, the plug-in guide's
examples work as written, every relative link lands on a file (and heading) that exists, and the
README stays short."""

from __future__ import annotations

import re
import sys
import types
import unicodedata
from pathlib import Path

import numpy as np
import pytest

from bench.cli.latent import latent_report
from bench.run.config import RunConfig
from bench.testing import STRATEGY_CHECKS, Blobs, check_strategy, check_task, registered, trained_context
from strategies import STRATEGIES
from tasks import TASKS

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PLUGINS = ROOT / "docs" / "plugins.md"
PAGES = [README, ROOT / "CHANGELOG.md", *sorted((ROOT / "docs").glob("*.md"))]
MAX_README_LINES = 200


def code_blocks(path: Path, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", path.read_text(), flags=re.S)


def example(marker: str) -> str:
    (block,) = [block for block in code_blocks(PLUGINS, "python") if marker in block]
    return block


def run_as_module(source: str, module: str) -> dict:
    """Execute a plug-in guide block as the module its first line names (as an in-tree file would be)."""
    made = types.ModuleType(module)
    sys.modules[module] = made  # while it runs, as during an import (dataclasses look their module up)
    try:
        exec(compile(source, f"docs/plugins.md: {module}", "exec"), made.__dict__)
    finally:
        del sys.modules[module]
    return made.__dict__


def test_readme_opens_with_install_and_test_commands_that_ci_runs():
    install, test = code_blocks(README, "bash")[0].strip().splitlines()
    assert "pip install" in install and "pytest" in test
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert install in ci and test in ci


def test_readme_is_short():
    lines = len(README.read_text().splitlines())
    assert lines <= MAX_README_LINES, f"README.md has {lines} lines; move detail into docs/"


# --- links -------------------------------------------------------------------------------------

FENCE = re.compile(r"^```.*?^```", flags=re.S | re.M)
INLINE_CODE = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")


def prose(text: str) -> str:
    """``text`` without fenced code blocks and inline code spans (a ``](`` there is no link)."""
    return INLINE_CODE.sub("", FENCE.sub("", text))


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a heading: its text lowercased, with every character that is not a
    letter, mark, number, connector (``_``), space or hyphen dropped, spaces turned into hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading).strip().lower()
    kept = "".join(c for c in text if c in " -" or unicodedata.category(c)[0] in "LMN" or c == "_")
    return kept.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading anchor of a Markdown file, with GitHub's -1, -2, ... for repeated headings."""
    seen: dict[str, int] = {}
    found = set()
    for line in FENCE.sub("", path.read_text()).splitlines():
        match = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not match:
            continue
        anchor = github_anchor(match.group(1))
        found.add(anchor if anchor not in seen else f"{anchor}-{seen[anchor]}")
        seen[anchor] = seen.get(anchor, 0) + 1
    return found


def test_github_anchor_matches_github():
    assert github_anchor("Running a grid: resume, workers, Ray") == "running-a-grid-resume-workers-ray"
    assert github_anchor("CIFAR-10: VGG-16 and the alpha-GAN") == "cifar-10-vgg-16-and-the-alpha-gan"
    assert github_anchor("Do SNN and SI pick harder samples?") == "do-snn-and-si-pick-harder-samples"
    assert github_anchor("`bench.testing` and [docs](x.md)") == "benchtesting-and-docs"


def relative_links(path: Path) -> list[str]:
    """The link targets of ``path`` that are not URLs (http:, https:, mailto:)."""
    targets = LINK.findall(prose(path.read_text()))
    return [target for target in targets if not re.match(r"[a-z][a-z0-9+.-]*:", target, flags=re.I)]


@pytest.mark.parametrize("page", [p.relative_to(ROOT).as_posix() for p in PAGES])
def test_every_relative_link_lands_on_a_file_and_heading_that_exist(page):
    path = ROOT / page
    links = relative_links(path)
    broken = []
    for link in links:
        file, _, anchor = link.partition("#")
        target = (path.parent / file).resolve() if file else path
        if not target.exists():
            broken.append(f"{link}: no file {target.relative_to(ROOT) if target.is_relative_to(ROOT) else target}")
        elif anchor and target.suffix == ".md" and anchor not in anchors(target):
            broken.append(f"{link}: no heading with anchor #{anchor} in {target.relative_to(ROOT)}")
    assert not broken, f"{page}: broken links:\n" + "\n".join(broken)


def test_the_link_check_sees_the_links():
    links = relative_links(README)
    assert "docs/plugins.md" in links and "docs/images/report.png" in links  # a page and an image


# --- the plug-in guide's examples ----------------------------------------------------------------


@pytest.fixture
def guide_plugins():
    """The guide's strategy and task registered as the in-tree modules it names, for one test."""
    with STRATEGIES.scoped(), TASKS.scoped():
        run_as_module(example("@register_strategy"), "strategies.smallest_margin")
        run_as_module(example("class Digits(Task)"), "tasks.digits")
        yield


def test_the_strategy_example_selects_and_meets_the_contract(guide_plugins):
    ctx = trained_context()
    picks = STRATEGIES.create("smallest-margin").select(ctx, 5).indices
    assert len(set(picks)) == 5 and not np.isin(picks, ctx.labeled).any()
    # the in-tree file imported once, then the guide's block run again: the same definition, no clash
    run_as_module(example("@register_strategy"), "strategies.smallest_margin")


def test_the_task_example_meets_the_contract_with_its_own_recipe(guide_plugins):
    check_task("digits")
    protocol = TASKS.get("digits").protocol
    assert (protocol.optimizer, protocol.start) == ("sgd", "fresh")


def test_the_contract_test_example_runs_as_written(guide_plugins):
    tests = run_as_module(example("from bench.testing import"), "test_contract")
    for check in STRATEGY_CHECKS.values():
        tests["test_smallest_margin"](check)
    tests["test_digits"]()


def test_the_generative_model_example_serves_the_latent_strategies_and_the_latent_report():
    spec = run_as_module(example("class LinearSpec"), "my_package.linear_latent")["LinearSpec"]

    class LinearBlobs(Blobs):
        name = "blobs-linear"
        generative = spec()

    check_strategy("snn", task=LinearBlobs)
    check_strategy("si", task=LinearBlobs)
    with registered(LinearBlobs):
        report = latent_report(RunConfig(task="blobs-linear", strategies=[], quiet=True))
    assert "linear autoencoder (latent_dim 2, epochs 50, lr 0.01)" in report
    assert "squared error per value" in report


def test_the_regression_task_example_meets_the_contract_and_refuses_what_needs_class_probabilities():
    with TASKS.scoped():
        run_as_module(example("class Sine(Task)"), "tasks.sine")
        check_task("sine")
        sine = TASKS.create("sine")
        assert STRATEGIES.get("uncertainty").refuses(sine) and not STRATEGIES.get("coreset").refuses(sine)


def strategy_rows() -> dict[str, dict[str, str]]:
    """The README's strategy table: each row (keyed by the strategy's name) as {column: cell}."""
    lines = [line for line in README.read_text().splitlines() if line.startswith("| strategy |")]
    assert len(lines) == 1, "README.md has no strategy table (a header row starting '| strategy |')"
    text = README.read_text().splitlines()
    start = text.index(lines[0])
    header = [cell.strip() for cell in text[start].strip("|").split("|")]
    rows = {}
    for line in text[start + 2 :]:
        if not line.startswith("|"):
            break
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        rows[re.match(r"`([\w-]+)`", cells[0]).group(1)] = dict(zip(header, cells, strict=True))
    return rows


def test_the_readme_strategy_table_says_what_the_registry_says():
    """Every built-in strategy has a row; its needs are what its default options need, its ✓ and refused are the
    harness's, and its cost is a figure (or `refused` where MNIST refuses it)."""
    rows = strategy_rows()
    built_in = {name for name in STRATEGIES.names() if STRATEGIES.get(name).__module__.startswith("strategies.")}
    assert set(rows) == built_in
    for name, row in rows.items():
        cls = STRATEGIES.get(name)
        assert set(re.findall(r"`([\w-]+)`", row["needs"])) == set(cls.requirements({})), name  # default options
        for task in ("mnist", "cifar10", "ivus"):
            refused = cls.refuses(TASKS.get(task)()) is not None
            assert row[f"`{task}`"] == ("refused" if refused else "✓"), f"{name} on {task}"
        cost = row["select s/round, MNIST"]
        assert cost == "refused" if cls.refuses(TASKS.get("mnist")()) else re.fullmatch(r"\d+(\.\d+)?", cost), name
