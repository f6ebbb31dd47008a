"""``run --track mlflow``: a run mirrored into a real local MLflow store and read back through
``MlflowClient``: one parent run, a nested run per unit, each metric once per round of rounds.csv."""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from bench.cli.main import main
from bench.cli.runner import execute, resume
from bench.run.config import ConfigError, Execution, RunConfig
from bench.run.tracking_records import IDENTITY, recorded_uri, redacted
from bench.testing import registered
from strategies.random import RandomSampling
from tests.bench.test_executors import Raises
from tests.bench.test_resume import BLOBS_CLI, ROOT, round_written, same_results

if os.environ.get("CI"):  # CI installs the extra: a missing or broken MLflow fails there, never skips
    import mlflow
else:
    mlflow = pytest.importorskip("mlflow", reason='MLflow is not installed: pip install -e ".[track]"')
from mlflow.tracking import MlflowClient  # noqa: E402

BLOBS = ["--task", "blobs", "--threads", "1", "--quiet"]


@pytest.fixture(autouse=True)
def file_store(monkeypatch):
    """MLflow 3 opens a file store only with MLFLOW_ALLOW_FILE_STORE (the tracker sets it; so does
    this test's client), and the test's stores are the ones it names."""
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME"):
        monkeypatch.delenv(name, raising=False)


def mirrored(out: Path, uri: str) -> tuple[str, dict[str, str]]:
    """Check that the store at ``uri`` mirrors the run in ``out``: one parent run with the run's
    parameters and report files, one nested run per unit that reported, and each metric of a
    unit once per round of rounds.csv (step: n_labeled; the value rounds.csv holds). Returns the
    parent's run id and the units' run ids."""
    manifest = json.loads((out / "manifest.json").read_text())
    tracking = manifest["tracking"]
    client = MlflowClient(uri)
    parent = client.get_run(tracking["run_id"])
    assert parent.info.run_name == out.name and parent.data.tags["task"] == "blobs"
    assert parent.data.tags["status"] == manifest["status"]
    assert parent.data.params["config.task"] == "blobs" and parent.data.params["protocol.rounds"] == str(
        manifest["protocol"]["rounds"]
    )
    assert json.loads(parent.data.params["repeat_seeds"]) == manifest["repeat_seeds"]
    assert parent.data.params["version.torch"] == manifest["versions"]["torch"]
    if manifest["git"]:
        assert parent.data.tags["git_commit"] == manifest["git"]["commit"]
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"rounds.csv", "manifest.json", "table.csv", "table.md", "summary.csv"} <= artifacts
    children = client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'"
    )
    rows = pd.read_csv(out / "rounds.csv")
    units = {f"{s}-r{r}" for s, r in zip(rows["strategy"], rows["repeat"])}
    assert sorted(run.info.run_name for run in children) == sorted(units)  # one run per unit, none twice
    assert {run.info.run_name: run.info.run_id for run in children} == tracking["units"]
    columns = [c for c in rows.columns if c not in IDENTITY and pd.api.types.is_numeric_dtype(rows[c])]
    for run in children:
        tags, params = run.data.tags, run.data.params
        unit = rows[(rows["strategy"] == tags["strategy"]) & (rows["repeat"] == int(tags["repeat"]))]
        assert tags["task"] == "blobs" and tags["unit"] == run.info.run_name
        assert params["seed"] == str(manifest["repeat_seeds"][int(tags["repeat"])])
        assert run.info.status == {"complete": "FINISHED", "failed": "FAILED"}.get(
            manifest["units"][run.info.run_name]["status"], "KILLED"
        )
        for column in columns:
            measured = unit[unit[column].map(math.isfinite)]
            history = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, column))
            assert history == sorted(zip(measured["n_labeled"], measured[column])), (run.info.run_name, column)
        assert len(client.get_metric_history(run.info.run_id, "value")) == len(unit)
    return parent.info.run_id, tracking["units"]


class FailsInRound2(Raises):
    """test_executors' strategy whose selection for round 2 raises (its unit fails), by another name."""

    name = "fails-in-round-2"


class StopsOnce(RandomSampling):
    """Random sampling that stops the whole run (Ctrl-C) at its ``STOP_AT``-th selection."""

    name = "stops-once"
    calls = 0
    STOP_AT = 4

    def select(self, context, k):
        StopsOnce.calls += 1
        if StopsOnce.calls == self.STOP_AT:
            raise KeyboardInterrupt("simulated Ctrl-C")
        return super().select(context, k)


@pytest.fixture
def test_strategies():
    with registered(FailsInRound2, StopsOnce):
        yield


def test_a_tracked_run_is_one_mlflow_run_with_a_nested_run_per_unit(tmp_path, blobs_task, test_strategies):
    uri, out = str(tmp_path / "mlruns"), tmp_path / "run"
    argv = ["run", *BLOBS, "--strategy", "random,fails-in-round-2", "--repeats", "2", "--rounds", "3"]
    assert main([*argv, "--out", str(out), "--track", "mlflow", "--track-uri", uri]) == 1  # a unit failed
    parent, units = mirrored(out, uri)
    client = MlflowClient(uri)
    assert client.get_run(parent).info.status == "FINISHED"
    failed = client.get_run(units["fails-in-round-2-r0"])
    assert failed.info.status == "FAILED" and "a bug in the strategy" in failed.data.tags["error"]
    assert client.get_run(units["random-r1"]).data.params == {
        "strategy": "random",
        "repeat": "1",
        "seed": str(json.loads((out / "manifest.json").read_text())["repeat_seeds"][1]),
    }
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["tracking"]["uri"] is None  # an absolute folder of the machine is not recorded
    assert manifest["tracking"]["experiment"] == "latent-bench/blobs" and "track_uri" not in manifest["execution"]
    assert manifest["execution"]["track"] == "mlflow"

    # another store: `track` logs the whole run there, as a new MLflow run, and says which it replaces
    other = str(tmp_path / "other")
    assert main(["track", str(out), "--track-uri", other]) == 0
    new_parent, _ = mirrored(out, other)
    replaced = json.loads((out / "manifest.json").read_text())["tracking"]["replaces"]
    assert replaced == {"uri": None, "run_id": parent} and new_parent != parent
    assert main(["track", str(out), "--track-uri", other]) == 0  # again: nothing is logged twice
    assert mirrored(out, other)[0] == new_parent


@pytest.mark.slow
def test_two_worker_processes_are_tracked_by_the_driver(tmp_path, blobs_task):
    uri = str(tmp_path / "mlruns")
    config = RunConfig(
        task="blobs",
        strategies=["random", "uncertainty"],
        repeats=2,
        rounds=3,
        threads=1,
        quiet=True,
        out=tmp_path / "run",
    )
    out = execute(config, Execution(jobs=2, track="mlflow", track_uri=uri))
    mirrored(out, uri)


def test_an_interrupted_run_resumes_into_the_same_mlflow_runs(tmp_path, blobs_task, test_strategies):
    uri, out = str(tmp_path / "mlruns"), tmp_path / "run"
    config = RunConfig(
        task="blobs", strategies=["stops-once", "random"], repeats=2, rounds=3, threads=1, quiet=True, out=out
    )
    StopsOnce.calls = 0  # stops in repeat 1 (repeat 0 selects 3 times: twice in round 2, the probe, then round 3)
    with pytest.raises(KeyboardInterrupt):
        execute(config, Execution(track="mlflow", track_uri=uri))
    client = MlflowClient(uri)
    before = json.loads((out / "manifest.json").read_text())["tracking"]
    assert client.get_run(before["run_id"]).info.status == "KILLED"
    assert client.get_run(before["units"]["stops-once-r0"]).info.status == "FINISHED"
    resume(out, Execution(track_uri=uri))  # no --track: the manifest says the run is tracked
    parent, units = mirrored(out, uri)
    assert parent == before["run_id"] and units.items() >= before["units"].items()
    assert client.get_run(parent).info.status == "FINISHED"


def test_a_relative_store_is_not_looked_for_from_another_folder(
    tmp_path, blobs_task, test_strategies, monkeypatch, caplog
):
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    monkeypatch.chdir(tmp_path / "a")
    out = tmp_path / "run"
    config = RunConfig(task="blobs", strategies=["stops-once"], repeats=2, rounds=3, threads=1, quiet=True, out=out)
    StopsOnce.calls = 0
    with pytest.raises(KeyboardInterrupt):
        execute(config, Execution(track="mlflow", track_uri="mlruns"))  # recorded as typed: relative
    monkeypatch.chdir(tmp_path / "b")
    caplog.set_level(logging.WARNING)
    resume(out)  # goes on untracked: no second store is started here
    assert not (tmp_path / "b" / "mlruns").exists()
    assert any("relative to the folder it was started from" in r.getMessage() for r in caplog.records)
    monkeypatch.chdir(tmp_path / "a")
    assert main(["track", str(out)]) == 0  # from where it started, the rounds it missed are logged
    mirrored(out, "mlruns")


def test_an_unreachable_server_is_one_warning_and_the_run_goes_on(tmp_path, blobs_task, caplog, monkeypatch):
    argv = ["run", *BLOBS, "--strategy", "random,uncertainty", "--repeats", "2", "--rounds", "3"]
    assert main([*argv, "--out", str(tmp_path / "untracked")]) == 0
    caplog.set_level(logging.WARNING)
    out = tmp_path / "run"
    argv += ["--out", str(out), "--track", "mlflow", "--track-uri", "http://user:secret@127.0.0.1:9"]
    monkeypatch.setattr(sys, "argv", ["__main__.py", *argv])  # what the manifest records as the command
    assert main(argv) == 0
    same_results(tmp_path / "untracked", out)
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING and "MLflow" in r.getMessage()]
    assert len(warnings) == 1 and "http://127.0.0.1:9" in warnings[0] and "Connection refused" in warnings[0]
    assert "secret" not in warnings[0] and f"python -m bench track {out}" in warnings[0]
    tracking = json.loads((out / "manifest.json").read_text())["tracking"]
    assert tracking["uri"] == "http://127.0.0.1:9" and "secret" not in json.dumps(tracking)
    for name in ("manifest.json", "report.html"):  # the command line is recorded without it too
        assert "secret" not in (out / name).read_text() and "--track-uri http://127.0.0.1:9" in (out / name).read_text()
    assert tracking["stopped"]["while"] == "connecting"
    # nothing is lost: `track` logs the whole run into a store that is up
    uri = str(tmp_path / "mlruns")
    assert main(["track", str(out), "--track-uri", uri]) == 0
    mirrored(out, uri)
    assert "stopped" not in json.loads((out / "manifest.json").read_text())["tracking"]


def test_a_tracker_that_fails_mid_run_stops_tracking_and_track_catches_up(tmp_path, blobs_task, monkeypatch, caplog):
    calls, log_batch = [], MlflowClient.log_batch

    def dies_at_round_2(self, run_id, *args, **kwargs):  # the parameters, round 1, then the server is gone
        calls.append(run_id)
        if len(calls) == 4:
            raise mlflow.exceptions.MlflowException("the tracking server went away")
        return log_batch(self, run_id, *args, **kwargs)

    monkeypatch.setattr(MlflowClient, "log_batch", dies_at_round_2)
    caplog.set_level(logging.WARNING)
    uri, out = str(tmp_path / "mlruns"), tmp_path / "run"
    argv = ["run", *BLOBS, "--strategy", "random", "--rounds", "3", "--out", str(out)]
    assert main([*argv, "--track", "mlflow", "--track-uri", uri]) == 0
    warnings = [r.getMessage() for r in caplog.records if "MLflow" in r.getMessage()]
    assert len(warnings) == 1 and "while logging round 2 of random-r0" in warnings[0]
    assert f"python -m bench track {out} --track-uri {uri} logs what MLflow missed" in warnings[0]
    assert len(calls) == 4  # nothing more was tried
    assert len(pd.read_csv(out / "rounds.csv")) == 3
    tracking = json.loads((out / "manifest.json").read_text())["tracking"]
    assert "the tracking server went away" in tracking["stopped"]["error"]
    monkeypatch.setattr(MlflowClient, "log_batch", log_batch)
    assert main(["track", str(out)]) == 2  # an absolute store is not recorded: name it again
    assert main(["track", str(out), "--track-uri", uri]) == 0
    assert mirrored(out, uri)[0] == tracking["run_id"]


def test_without_mlflow_track_is_refused_with_how_to_install_it(tmp_path, blobs_task, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "mlflow", None)
    monkeypatch.setitem(sys.modules, "mlflow.tracking", None)
    out = tmp_path / "run"
    assert main(["run", *BLOBS, "--strategy", "random", "--out", str(out), "--track", "mlflow"]) == 2
    assert 'pip install "latent-bench[track]"' in capsys.readouterr().err
    assert not out.exists()  # refused before any work
    assert main(["run", *BLOBS, "--strategy", "random", "--out", str(out), "--track-uri", "mlruns"]) == 2
    assert "add --track mlflow" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="use mlflow"):
        Execution(track="wandb").check()


def test_a_recorded_uri_names_no_folder_of_the_machine_and_holds_no_secret():
    assert recorded_uri("mlruns") == "mlruns" and recorded_uri("runs/mlruns") == "runs/mlruns"
    assert recorded_uri("/home/me/mlruns") is None and recorded_uri("file:///home/me/mlruns") is None
    assert recorded_uri("sqlite:///mlflow.db") == "sqlite:///mlflow.db" and recorded_uri("sqlite:////x/m.db") is None
    assert recorded_uri("https://me:token@mlflow.example.org:5000/p?key=1") == "https://mlflow.example.org:5000/p"
    assert recorded_uri("http://me:token@[::1]:5000/p") == "http://[::1]:5000/p"
    assert redacted("failed: https://me:token@host/api", "https://me:token@host") == "failed: https://host/api"


@pytest.mark.slow
def test_a_run_killed_with_sigkill_resumes_into_the_same_mlflow_runs(tmp_path):
    """In a folder of its own, with the default store (mlruns/ there), resumed without --track."""
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"} | {"PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-c", BLOBS_CLI, "run", *BLOBS, "--strategy", "slow,random", "--rounds", "3"]
    command += ["--out", "run", "--track", "mlflow"]
    process = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    out, deadline = tmp_path / "run", time.monotonic() + 120
    try:  # kill -9 mid-way through slow-r0: in its 0.3 s selection after round 2 (not while MLflow writes
        # a file of the store: a file store's file torn by a kill is one MLflow cannot read again)
        while not round_written(out / "rounds.csv", "slow", 0, 2):
            assert process.poll() is None, f"the run ended before it could be killed: {process.stderr.read()}"
            assert time.monotonic() < deadline, "round 2 of slow-r0 never came"
            time.sleep(0.02)
        time.sleep(0.1)
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.wait(timeout=60)
    before = json.loads((out / "manifest.json").read_text())["tracking"]
    assert before["uri"] == "mlruns"
    resumed = subprocess.run(
        [sys.executable, "-c", BLOBS_CLI, "run", "--resume", "run", "--quiet"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr
    parent, units = mirrored(out, str(tmp_path / "mlruns"))
    assert parent == before["run_id"] and units.items() >= before["units"].items()
