"""``bench check``: a grid's values against its committed reference."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

import bench.cli.check
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


# issue 27, item 24: both files are validated before anything runs


@pytest.fixture
def nothing_runs(monkeypatch):
    """Fails a test whose check starts running its grid (every refusal here comes before)."""

    def run_grid(*args, **kwargs):
        raise AssertionError("the grid ran before its files were validated")

    monkeypatch.setattr(bench.cli.check, "run_grid", run_grid)


def refused(path: Path, capsys, *args: str) -> str:
    """``bench check --grid path``'s message; it must exit 2 with no traceback."""
    assert main(["check", "--grid", str(path), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err, err
    return err


@pytest.mark.parametrize("tolerance", ["NaN", "Infinity", "-1", '"5"', "true", "null"])
def test_a_tolerance_that_is_not_a_finite_non_negative_number_is_refused(
    tmp_path, capsys, blobs_task, nothing_runs, tolerance
):
    path = small_grid(tmp_path)
    path.write_text(path.read_text().replace('"other_machine": 5.0', f'"other_machine": {tolerance}'))
    err = refused(path, capsys, "--update")
    assert str(path) in err and "other_machine" in err and "finite" in err, err


@pytest.mark.parametrize(
    "change, says",
    [
        ({"settings": {"seed": 2, "rounds": 2, "sed": 3}}, "unknown setting 'sed'"),
        ({"settings": {"rounds": "2"}}, "setting 'rounds' is '2'"),
        ({"settings": {"rounds": 2.5}}, "setting 'rounds' is 2.5"),
        ({"settings": {"lr": float("nan")}}, "setting 'lr' is nan"),
        ({"settings": {"threads": 2}}, "setting 'threads' is set by the grid"),
        ({"settings": {"generative_options": {"epochs": float("inf")}}}, "generative_options"),
        ({"settings": []}, "'settings' is list"),
        ({"strategies": "random"}, "'strategies' is str"),
        ({"strategies": []}, "'strategies'"),
        ({"task": "no-such-task"}, "no-such-task"),
        ({"strategies": ["random", "no-such-strategy"]}, "no-such-strategy"),
        ({"tolerance": {"same_machine": 0.0}}, "'other_machine'"),
        ({"colour": "red"}, "unknown key 'colour'"),
    ],
)
def test_a_wrong_grid_run_is_refused_naming_it(tmp_path, capsys, blobs_task, nothing_runs, change, says):
    path = small_grid(tmp_path)
    grid = json.loads(path.read_text())
    grid["runs"][0].update(change)
    path.write_text(json.dumps(grid))
    err = refused(path, capsys, "--update")
    assert str(path) in err and says in err, err


@pytest.mark.parametrize(
    "change, says",
    [
        ({"runs": []}, "no runs"),
        ({"runs": {}}, "'runs' is dict"),
        ({"threads": "1"}, "'threads'"),
        ({"jobs": 0}, "'jobs'"),
        ({"speed": 2}, "unknown key 'speed'"),
    ],
)
def test_a_wrong_grid_is_refused(tmp_path, capsys, blobs_task, nothing_runs, change, says):
    path = small_grid(tmp_path)
    path.write_text(json.dumps({**json.loads(path.read_text()), **change}))
    assert says in refused(path, capsys, "--update")
    path.write_text("[1, 2]")
    assert "not a JSON object" in refused(path, capsys)


def reference_rows() -> pd.DataFrame:
    return pd.DataFrame(
        [
            dict(task="blobs", strategy=s, seed=1, repeat=0, round=t, n_labeled=10 * t + 10, metric="accuracy", value=v)
            for s in ("random", "si")
            for t, v in ((1, 50.0), (2, 60.0))
        ]
    )


@pytest.mark.parametrize(
    "content, says",
    [
        (b"", "not a readable reference"),
        (b"\x00\xff\x13garbage\n\x01", "not a readable reference"),
        ("without value", "lacks the columns value"),
        ("header only", "no rows"),
        ("no values", "line 2: value"),
        ("a word", "line 3: value 'high'"),
        ("infinite", "line 2: value"),
        ("duplicated", "line 6 repeats line 2"),
    ],
)
def test_a_broken_reference_is_refused_before_the_grid_runs(tmp_path, capsys, blobs_task, nothing_runs, content, says):
    path = small_grid(tmp_path)
    reference, rows = tmp_path / "reference.csv", reference_rows()
    if isinstance(content, bytes):
        reference.write_bytes(content)
    else:
        rows = {
            "without value": rows.drop(columns="value"),
            "header only": rows.iloc[:0],
            "no values": rows.assign(value=float("nan")),
            "a word": rows.astype({"value": object}).assign(value=[50.0, "high", 60.0, 61.0]),
            "infinite": rows.assign(value=float("inf")),
            "duplicated": pd.concat([rows, rows.iloc[:1]]),
        }[content]
        rows.to_csv(reference, index=False)
    err = refused(path, capsys)
    assert str(reference) in err and says in err, err
    assert "--update" in err


def test_an_unreadable_machine_file_is_refused_before_the_grid_runs(tmp_path, capsys, blobs_task, nothing_runs):
    path = small_grid(tmp_path)
    reference_rows().to_csv(tmp_path / "reference.csv", index=False)
    (tmp_path / "machine.json").write_text("{torch")
    assert "machine.json" in refused(path, capsys)


def test_update_refuses_non_finite_values(tmp_path, capsys, blobs_task, monkeypatch):
    path = small_grid(tmp_path)
    monkeypatch.setattr(bench.cli.check, "run_grid", lambda *args: reference_rows().assign(value=float("nan")))
    assert "not finite" in refused(path, capsys, "--update")
    assert not (tmp_path / "reference.csv").exists()
