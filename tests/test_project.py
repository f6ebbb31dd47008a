"""The project's own facts stay in one place: the version is written once and read everywhere."""

from __future__ import annotations

import re
from importlib.metadata import version
from pathlib import Path

import bench

ROOT = Path(__file__).resolve().parents[1]


def test_the_version_has_one_source():
    assert version("latent-bench") == bench.__version__  # pyproject reads it from bench/__init__.py
    assert "version =" not in (ROOT / "pyproject.toml").read_text().split("[project]")[1].split("[")[0]
    cited = re.search(r"^version: ['\"]?([^'\"\n]+)", (ROOT / "CITATION.cff").read_text(), flags=re.M)
    assert cited and cited.group(1) == bench.__version__, "CITATION.cff cites another version"
    assert f"## [{bench.__version__}]" in (ROOT / "CHANGELOG.md").read_text()
