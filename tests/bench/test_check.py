"""``bench check``: a grid's values against its committed reference."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from bench.cli.check import GRID, Grid, check, machine
from bench.cli.main import main
from tasks import TASKS


def small_grid(tmp_path: Path) -> Path:
    grid = {
        "threads": 1,
        "jobs": 1,
        "runs": [
            {
                "task": "blobs",
                "strategies": ["random", "si"],
                "settings": {"seed": 2, "rounds": 2},
                "tolerance": {"same_machine": 0.0, "other_machine": 5.0, "why": "tests"},
            }
        ],
    }
    path = tmp_path / "grid.json"
    path.write_text(json.dumps(grid))
    return path


def test_check_passes_on_its_reference_fails_on_an_altered_value_and_passes_after_update(tmp_path, blobs_task):
    grid = small_grid(tmp_path)
    lines: list[str] = []
    assert check(grid, update=True, log=lines.append) == 0
    assert json.loads((tmp_path / "machine.json").read_text()) == machine()
    assert check(grid, log=lines.append) == 0
    reference = pd.read_csv(tmp_path / "reference.csv")
    assert len(reference) == 4 and set(reference["strategy"]) == {"random", "si"}
    reference.loc[1, "value"] += 0.5  # a value that drifted by half a point
    reference.to_csv(tmp_path / "reference.csv", index=False)
    lines.clear()
    assert check(grid, log=lines.append) == 1
    report = "\n".join(lines)
    assert "check FAILED: 1 of 4 values drifted" in report
    header = next(line for line in report.splitlines() if line.lstrip().startswith("task"))
    assert header.split() == ["task", "strategy", "seed", "round", "reference", "now", "tolerance"]
    assert "--update" in report
    assert check(grid, update=True, log=lines.append) == 0
    assert check(grid, log=lines.append) == 0


def test_on_another_machine_the_stated_tolerance_applies(tmp_path, blobs_task):
    grid = small_grid(tmp_path)
    assert check(grid, update=True, log=lambda _: None) == 0
    (tmp_path / "machine.json").write_text(json.dumps({**machine(), "cpu_capability": "OTHER"}))
    reference = pd.read_csv(tmp_path / "reference.csv")
    reference.loc[0, "value"] += 4.0  # within the other-machine tolerance of 5
    reference.to_csv(tmp_path / "reference.csv", index=False)
    lines: list[str] = []
    assert check(grid, log=lines.append) == 0
    assert "other-machine tolerances" in lines[-1]


def test_the_committed_grid_covers_every_task_and_applicable_strategy():
    from bench.run.plan import applicable_strategies

    grid = Grid.load(GRID)
    assert {r.task for r in grid.runs} == {"mnist", "cifar10", "ivus"}
    for run in grid.runs:
        assert sorted(run.strategies) == sorted(applicable_strategies(TASKS.create(run.task)))
        assert run.settings["score_dtype"] == "float32"  # bfloat16 scoring would depend on the CPU
    reference = pd.read_csv(GRID.with_name("reference.csv"))
    assert set(reference["task"]) == {"mnist", "cifar10", "ivus"}


def test_a_broken_grid_file_is_refused(tmp_path, capsys):
    (tmp_path / "grid.json").write_text("{not json")
    assert main(["check", "--grid", str(tmp_path / "grid.json")]) == 2
    assert "cannot read the check grid" in capsys.readouterr().err


def test_a_value_that_became_nan_is_drift():
    from bench.cli.check import GridRun, compare

    grid = Grid(Path("grid.json"), [GridRun("blobs", ["random"], {}, 0.0, 5.0)])
    reference = pd.DataFrame(
        [dict(task="blobs", strategy="random", seed=1, repeat=0, round=1, n_labeled=20, metric="accuracy", value=50.0)]
    )
    now = reference.assign(value=float("nan"))
    assert len(compare(grid, now, reference, same_machine=False)) == 1
    assert compare(grid, reference, reference, same_machine=True).empty
