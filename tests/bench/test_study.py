"""Studies: a TOML file's axes expanded into cells, each an ordinary run; refusals before any work;
a killed study resumed to the numbers of an uninterrupted one."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from urllib.parse import quote

import pandas as pd
import pytest

from bench.cli.main import main
from bench.run.config import ConfigError, RunConfig
from bench.study.spec import Cell, Study, parse_study, read_study, shipped_studies, tomllib
from bench.testing import registered
from tests.bench.blobs_cli import SlowRandom
from tests.bench.test_resume import blobs_cli, round_written, same_results

#: A small blobs study: 2 strategies x 2 repeats, 2 cells of 2 or 3 rounds.
STUDY = """
description = "blobs: two query sizes"
tasks = ["blobs"]
strategies = ["random", "uncertainty"]
repeats = 2
seed = 3

[settings]
epochs = 1

[axes]
query = [{ increment = 10, rounds = 3 }, { increment = 20, rounds = 2 }]
"""


def cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def study(text: str, name: str = "s") -> Study:
    """The study in TOML ``text``."""
    return parse_study(tomllib.loads(text), name, "study s.toml")


def test_axes_expand_into_cells_named_from_their_settings_in_file_order():
    s = study(
        """
        tasks = ["mnist", "ivus"]
        [settings]
        epochs = 3
        [axes]
        start = ["warm", "fresh"]
        query = [{ increment = 20, rounds = 11 }, { increment = 100, rounds = 3 }]
        [task.mnist]
        strategies = ["random", "badge"]
        axes = { imbalance = [1, 10], start = ["fresh"] }
        """
    )
    names = [cell.name for cell in s.cells()]
    assert names == [
        # mnist: its own start axis replaces the study's; the first axis varies slowest
        "mnist/start=fresh,increment=20,rounds=11,imbalance=1.0",
        "mnist/start=fresh,increment=20,rounds=11,imbalance=10.0",
        "mnist/start=fresh,increment=100,rounds=3,imbalance=1.0",
        "mnist/start=fresh,increment=100,rounds=3,imbalance=10.0",
        "ivus/start=warm,increment=20,rounds=11",
        "ivus/start=warm,increment=100,rounds=3",
        "ivus/start=fresh,increment=20,rounds=11",
        "ivus/start=fresh,increment=100,rounds=3",
    ]
    first = s.cells()[0]
    assert first.axes == {"start": "fresh", "query": "increment=20+rounds=11", "imbalance": 1.0}
    assert first.settings == {"start": "fresh", "increment": 20, "rounds": 11, "imbalance": 1.0}
    config = s.config(first, RunConfig(task="", strategies=[], threads=1))
    assert (config.task, config.strategies, config.epochs, config.increment, config.rounds) == (
        "mnist",
        ["random", "badge"],
        3,
        20,
        11,
    )
    assert (config.imbalance, config.start, config.threads) == (1.0, "fresh", 1)
    ivus = s.config(s.cells()[-1], RunConfig(task="", strategies=[]))
    assert ivus.strategies == ["all"] and ivus.imbalance is None
    # the record reads back to the same cells (what a resume re-plans from)
    assert parse_study(s.record(), "s", "record").cells() == s.cells()


def test_a_tasks_own_setting_or_axis_replaces_the_studys_for_that_key():
    s = study(
        """
        tasks = ["mnist", "ivus"]
        [settings]
        epochs = 5
        [axes]
        query = [{ increment = 20, rounds = 3 }, { increment = 40, rounds = 2 }]
        start = ["warm", "fresh"]
        [task.ivus.axes]
        epochs = [20, 40]
        rounds = [4]
        """
    )
    mnist, ivus = s.parts
    assert mnist.settings == {"epochs": 5} and list(mnist.axes) == ["query", "start"]
    # ivus: its epochs axis replaces the study's epochs setting, its rounds axis the linked query axis
    assert ivus.settings == {} and list(ivus.axes) == ["start", "epochs", "rounds"]
    assert s.cells()[-1].name == "ivus/start=fresh,epochs=40,rounds=4"


def test_a_study_without_axes_has_one_cell_per_task_named_for_it():
    s = study('tasks = ["mnist", "ivus"]\nrepeats = 5')
    assert s.cells() == [Cell("mnist"), Cell("ivus")] and [c.name for c in s.cells()] == ["mnist", "ivus"]


def test_options_reach_the_strategies_the_optimizer_and_the_generative_model():
    axes = '"si.start" = ["prior", "pool"]\n"generative.beta" = [1.0]\n"optimizer.weight_decay" = [0.001]'
    s = study(f'tasks = ["ivus"]\n[axes]\n{axes}')
    config = s.config(s.cells()[1], RunConfig(task="", strategies=[]))
    assert config.strategy_options == {"si.start": "pool"}
    assert config.generative_options == {"beta": 1.0} and config.optimizer_options == {"weight_decay": 0.001}
    assert s.cells()[1].name == "ivus/si.start=pool,generative.beta=1.0,optimizer.weight_decay=0.001"


def test_the_shipped_studies_are_installed_and_read_by_name():
    assert {"paper", "pitfalls"} <= set(shipped_studies())
    paper, _ = read_study("paper")
    assert [c.name for c in paper.cells()] == ["mnist", "cifar10", "ivus"] and paper.repeats == 5
    pitfalls, raw = read_study("pitfalls")
    assert len(pitfalls.cells()) == 16 + 8 and b"imbalance" in raw
    assert {c.axes["imbalance"] for c in pitfalls.cells() if c.task == "mnist"} == {1.0, 10.0}


@pytest.mark.parametrize(
    "text, says",
    [
        ('tasks = ["blobs"]\ncolour = 1', "unknown key 'colour'"),
        ('tasks = ["blobs"]\n[axes]\ncolour = [1]', "unknown key 'colour'"),
        ('tasks = ["blobs"]\n[axes]\ninitial = []', "axis initial is empty"),
        ('tasks = ["blobs"]\n[axes]\ninitial = 20', "is not a list"),
        ('tasks = ["blobs"]\n[axes]\ninitial = [20, 20]', "20 is listed twice"),
        ('tasks = ["blobs"]\n[axes]\ninitial = [20, "x"]', "initial = 'x' is str"),
        ('tasks = ["blobs"]\n[settings]\ninitial = 20\n[axes]\ninitial = [10]', "initial is set by settings and"),
        ('tasks = ["blobs"]\n[axes]\nq = [{ increment = 1 }, { rounds = 2 }]', "must all set the same keys"),
        ('tasks = ["blobs"]\n[task.mnist]\nrepeats = 2', "[task.mnist] is not among tasks"),
        ('tasks = ["blobs"]\n[task.blobs]\nrepeats = 2', "unknown key 'repeats'"),
        ("tasks = []", "list the tasks to run"),
        ('tasks = ["blobs"]\nrepeats = 0', "repeats = 0"),
        ('tasks = ["blobs"]\nstrategies = []', 'give "all" or a list'),
        ('tasks = ["blobs"\n', "is not TOML"),
        ('tasks = ["blobs"]\n[axes]\n"random.x" = ["1", 1]', "two cells are both named blobs/random.x=1"),
        # planned before any work: a setting that does not apply to a task, named with its cell
        ('tasks = ["ivus"]\n[axes]\nimbalance = [1, 10]', "cell ivus/imbalance=1.0: --imbalance"),
        ('tasks = ["blobs"]\nstrategies = ["random"]\n[axes]\n"si.start" = ["pool"]', "not accepted by any chosen"),
        ('tasks = ["blobs"]\n[axes]\ninitial = [20, 500]', "cell blobs/initial=500: impossible sizes"),
        # the long-tailed pool (177 of blobs' 400) is only known once its labels are read: still before any work
        ('tasks = ["blobs"]\n[settings]\ninitial = 170\n[axes]\nimbalance = [1, 10]', "blobs/imbalance=10.0: imp"),
        ('tasks = ["nope"]', "nope"),
    ],
)
def test_a_bad_study_file_is_refused_with_exit_2_before_any_work(capsys, tmp_path, blobs_task, text, says):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    out = tmp_path / "study"
    code, _, err = cli(capsys, "study", str(path), "--out", str(out), "--threads", "1")
    assert code == 2 and says in err, err
    assert not out.exists()


def test_an_unknown_study_name_lists_the_shipped_ones(capsys, tmp_path):
    code, _, err = cli(capsys, "study", "nonesuch", "--out", str(tmp_path / "s"))
    assert code == 2 and "no shipped study of that name" in err and "pitfalls" in err
    code, out, _ = cli(capsys, "study", "--list")
    assert code == 0 and out.startswith("paper: ") and "\npitfalls: " in out


def test_a_study_runs_each_cell_as_an_ordinary_run_and_writes_its_report(capsys, tmp_path, blobs_task):
    path = tmp_path / "blobs.toml"
    path.write_text(STUDY)
    out = tmp_path / "study"
    code, printed, err = cli(capsys, "study", str(path), "--out", str(out), "--threads", "1", "--quiet")
    assert code == 0, err
    record = json.loads((out / "study.json").read_text())
    assert record["status"] == "complete" and record["study"] == "blobs" and record["failures"] == []
    assert [c["name"] for c in record["cells"]] == ["blobs/increment=10,rounds=3", "blobs/increment=20,rounds=2"]
    for cell, rounds in zip(record["cells"], (3, 2)):
        run = out / cell["name"]
        manifest = json.loads((run / "manifest.json").read_text())
        assert manifest["status"] == "complete" and manifest["config"]["epochs"] == 1
        rows = pd.read_csv(run / "rounds.csv")
        assert len(rows) == 2 * 2 * rounds and (run / "table.md").exists()
    for name in ("study.md", "penalty.csv", "penalty.png", "penalty.svg", "ranks.csv", "report.html"):
        assert (out / name).exists(), name
    assert str(out / "study.md") in printed
    page = (out / "report.html").read_text()  # the study's page links to each cell's own page
    for cell in record["cells"]:
        assert f'href="{quote(cell["name"] + "/report.html", safe="/=,+()")}"' in page
        assert (out / cell["name"] / "report.html").is_file()
    # a finished study resumed does nothing more, and a flag that changes the plan is refused
    code, _, err = cli(capsys, "study", "--resume", str(out), "--threads", "2")
    assert code == 2 and "--threads with --resume: a resumed study keeps its cells" in err
    code, _, err = cli(capsys, "study", "--resume", str(out), "--out", str(tmp_path / "elsewhere"))
    assert code == 2 and "a resumed study writes into its own folder" in err
    code, _, err = cli(capsys, "study", str(path), "--resume", str(out))
    assert code == 2 and "study with --resume" in err
    code, _, err = cli(capsys, "study", "--resume", str(out), "--quiet")
    assert code == 0, err
    # the report of a study folder is the study report
    (out / "study.md").unlink()
    code, _, err = cli(capsys, "report", str(out))
    assert code == 0 and (out / "study.md").exists(), err


def test_a_resume_refuses_an_edited_record(capsys, tmp_path, blobs_task):
    path = tmp_path / "blobs.toml"
    path.write_text(STUDY)
    out = tmp_path / "study"
    assert cli(capsys, "study", str(path), "--out", str(out), "--threads", "1", "--quiet")[0] == 0
    record = json.loads((out / "study.json").read_text())
    record["cells"][0]["settings"]["rounds"] = 4
    (out / "study.json").write_text(json.dumps(record))
    code, _, err = cli(capsys, "study", "--resume", str(out))
    assert code == 2 and "do not follow from its spec" in err


def test_parse_refuses_a_folder_name_too_long():
    with pytest.raises(ConfigError, match="longer than 255 bytes"):
        study('tasks = ["blobs"]\n[axes]\noptimizer = ["' + "a" * 300 + '"]')


@pytest.mark.slow
def test_a_study_killed_with_sigkill_resumes_to_the_numbers_of_an_uninterrupted_study(capsys, tmp_path, blobs_task):
    path = tmp_path / "blobs.toml"
    path.write_text(STUDY.replace('["random", "uncertainty"]', '["slow", "uncertainty"]'))
    args = ["study", str(path), "--threads", "1", "--quiet"]
    with registered(SlowRandom):  # the uninterrupted study in this process; the killed one in a subprocess
        code, _, err = cli(capsys, *args, "--out", str(tmp_path / "reference"))
    assert code == 0, err
    killed = tmp_path / "killed"
    process = blobs_cli(*args, "--out", str(killed), wait=False)
    second = killed / "blobs" / "increment=20,rounds=2"
    deadline = time.monotonic() + 120
    try:  # kill -9 once the second cell has written a round of slow's second repeat: mid-way through it
        while not round_written(second / "rounds.csv", "slow", 1, 1):
            assert process.poll() is None, f"the study ended before it could be killed: {process.stderr.read()}"
            assert time.monotonic() < deadline, "the second cell never got going"
            time.sleep(0.02)
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.wait(timeout=60)
    assert json.loads((killed / "study.json").read_text())["status"] == "running"
    assert json.loads((second / "manifest.json").read_text())["status"] == "running"
    resumed = blobs_cli("study", "--resume", str(killed), "--quiet")
    assert resumed.returncode == 0, resumed.stderr
    for cell in ("increment=10,rounds=3", "increment=20,rounds=2"):
        same_results(tmp_path / "reference" / "blobs" / cell, killed / "blobs" / cell)
    record = json.loads((killed / "study.json").read_text())
    assert record["status"] == "complete" and len(record["resumes"]) == 1
    reference_penalty = pd.read_csv(tmp_path / "reference" / "penalty.csv")
    pd.testing.assert_frame_equal(pd.read_csv(killed / "penalty.csv"), reference_penalty)


@pytest.mark.slow
def test_a_study_on_ray_opens_one_session_for_all_cells_and_gives_the_local_numbers(capsys, tmp_path, blobs_task):
    ray = pytest.importorskip("ray", reason="Ray is the optional extra latent-bench[ray] (in [dev])")
    path = tmp_path / "blobs.toml"
    path.write_text(STUDY)
    assert cli(capsys, "study", str(path), "--out", str(tmp_path / "local"), "--threads", "1", "--quiet")[0] == 0
    sessions = []
    init = ray.init

    def counted(*args, **kwargs):
        sessions.append(kwargs)
        return init(*args, **{**kwargs, "num_cpus": 2})

    ray.init = counted
    try:
        code, _, err = cli(
            capsys, "study", str(path), "--out", str(tmp_path / "ray"), "--threads", "1", "--quiet", "--executor", "ray"
        )
    finally:
        ray.init = init
    assert code == 0, err
    assert len(sessions) == 1 and not ray.is_initialized()  # one session for both cells, closed at the end
    for cell in ("increment=10,rounds=3", "increment=20,rounds=2"):
        same_results(tmp_path / "local" / "blobs" / cell, tmp_path / "ray" / "blobs" / cell)


@pytest.mark.parametrize("name", ["paper", "pitfalls"])
def test_every_cell_of_a_shipped_study_plans(name):
    shipped, _ = read_study(name)
    plans = shipped.plans(RunConfig(task="", strategies=[], threads=1, device="cpu"))
    assert len(plans) == len(shipped.cells())
    resolved = shipped.resolved(plans)
    assert all(part.strategies != ["all"] and len(part.strategies) >= 5 for part in resolved.parts)


def test_the_reduced_pitfalls_study_of_the_reference_results_plans():
    path = Path(__file__).resolve().parents[2] / "results" / "reference" / "studies" / "pitfalls-reduced.toml"
    reduced, _ = read_study(path)
    full, _ = read_study("pitfalls")
    assert [c.axes.keys() for c in reduced.cells()] == [c.axes.keys() for c in full.cells()]  # the same axes
    assert len(reduced.plans(RunConfig(task="", strategies=[], threads=1, device="cpu"))) == 24
