"""Executors: worker processes and Ray give the numbers of one unit after another."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import signal
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from bench.cli.runner import execute
from bench.run.config import ConfigError, Execution, RunConfig
from bench.testing import Blobs, registered
from strategies import STRATEGIES
from strategies.random import RandomSampling
from tasks import TASKS
from tests.bench.blobs_cli import Sleeps
from tests.bench.test_resume import blobs_cli, same_results


@pytest.fixture
def threads():
    """Tests here run units with one torch thread; the session's count comes back afterwards."""
    before = torch.get_num_threads()
    yield 1
    torch.set_num_threads(before)


def config(out, **overrides) -> RunConfig:
    values = dict(
        task="blobs",
        strategies=["random", "si", "uncertainty", "coreset"],
        repeats=2,
        seed=11,
        threads=1,
        out=out,
        quiet=True,
    )
    values.update(overrides)
    return RunConfig(**values)


class Raises(RandomSampling):
    """A strategy with a bug: it raises when it selects after round 2."""

    name = "raises"

    def select(self, context, k):
        if context.round == 2:
            raise ZeroDivisionError("a bug in the strategy")
        return super().select(context, k)


class DiesOnce(RandomSampling):
    """Kills its worker process the first time it selects in round 2 (a lost worker)."""

    name = "dies-once"

    def select(self, context, k):
        marker = os.environ["DIES_ONCE_MARKER"]
        if context.round == 2 and not os.path.exists(marker):
            open(marker, "w").close()
            os._exit(9)
        return super().select(context, k)


@pytest.fixture
def test_strategies():
    for cls in (Raises, DiesOnce):
        STRATEGIES.add(cls.name, cls)
    yield
    for cls in (Raises, DiesOnce):
        STRATEGIES.remove(cls.name)


def test_two_worker_processes_give_the_numbers_of_one(tmp_path, blobs_task, threads):
    execute(config(tmp_path / "one"))
    out = execute(config(tmp_path / "two"), Execution(jobs=2))
    same_results(tmp_path / "one", out)
    keys = ["strategy", "repeat", "round"]  # rows come in any order; the finished file is in plan order
    assert pd.read_csv(out / "rounds.csv")[keys].equals(pd.read_csv(tmp_path / "one" / "rounds.csv")[keys])
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["execution"]["jobs"] == 2 and manifest["config"]["threads"] == 1
    assert {u["worker"] for u in manifest["units"].values()} <= {"worker-1", "worker-2"}


def test_a_unit_that_raises_fails_alone_with_its_traceback(tmp_path, blobs_task, threads, test_strategies):
    out = execute(config(tmp_path / "run", strategies=["raises", "random"], rounds=3), Execution(jobs=2))
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "complete with failures"
    failed = {(f["strategy"], f["repeat"]) for f in manifest["failures"]}
    assert failed == {("raises", 0), ("raises", 1)}
    assert all("ZeroDivisionError: a bug in the strategy" in f["traceback"] for f in manifest["failures"])
    rounds = pd.read_csv(out / "rounds.csv")
    assert (rounds["strategy"] == "random").sum() == 6 and (rounds["strategy"] == "raises").sum() == 4


def test_a_lost_worker_s_unit_goes_on_from_its_last_checkpoint(
    tmp_path, blobs_task, threads, test_strategies, monkeypatch
):
    monkeypatch.setenv("DIES_ONCE_MARKER", str(tmp_path / "died"))
    (tmp_path / "died").touch()  # the reference run never dies
    execute(config(tmp_path / "reference", strategies=["dies-once"], repeats=1, rounds=4))
    (tmp_path / "died").unlink()
    out = execute(config(tmp_path / "run", strategies=["dies-once"], repeats=1, rounds=4), Execution(jobs=2))
    assert (tmp_path / "died").exists()  # a worker did die
    same_results(tmp_path / "reference", out)
    assert json.loads((out / "manifest.json").read_text())["status"] == "complete"


def worker_pids(driver: int) -> set[int]:
    """The live worker processes (multiprocessing's spawned children) of process ``driver``."""
    pids = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and alive(int(entry.name)):
            try:
                ppid = int((entry / "stat").read_text().rpartition(")")[2].split()[1])
                command = (entry / "cmdline").read_bytes()
            except (OSError, IndexError, ValueError):  # it exited while we looked
                continue
            if ppid == driver and b"spawn_main" in command:
                pids.add(int(entry.name))
    return pids


def alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie, dead but not yet reaped by its new parent, does not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except (OSError, IndexError):
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds the workers in /proc")
def test_workers_exit_within_seconds_of_a_killed_driver(tmp_path):
    out = tmp_path / "run"
    # rounds of thousands of epochs: a worker that only notices at the end of its round outlives the test
    args = ["run", "--task", "blobs", "--strategy", "random", "--repeats", "2", "--epochs", "100000"]
    driver = blobs_cli(*args, "--threads", "1", "--jobs", "2", "--quiet", "--out", str(out), wait=False)
    workers: set[int] = set()
    try:
        deadline = time.monotonic() + 120
        while True:  # until both workers are training a unit
            assert time.monotonic() < deadline and driver.poll() is None, driver.stderr.read()
            units = json.loads((out / "manifest.json").read_text())["units"] if (out / "manifest.json").exists() else {}
            workers |= worker_pids(driver.pid)
            if sum(unit["status"] == "running" for unit in units.values()) == 2 and len(workers) == 2:
                break
            time.sleep(0.2)
        time.sleep(1)  # well into the unit
        driver.kill()
        driver.wait()
        killed = time.monotonic()
        while any(alive(pid) for pid in workers) and time.monotonic() < killed + 3:
            time.sleep(0.1)
        assert not any(alive(pid) for pid in workers), "workers still run 3 s after the driver was killed"
    finally:
        driver.kill()
        for pid in workers:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_execution_flags_are_checked(tmp_path):
    with pytest.raises(ConfigError, match="--executor ray"):
        execute(config(tmp_path / "a"), Execution(gpus_per_job=0.5))
    with pytest.raises(ConfigError, match="--jobs is for the local executor"):
        execute(config(tmp_path / "b"), Execution(executor="ray", jobs=2))


@pytest.mark.slow
def test_a_local_ray_cluster_gives_the_numbers_of_one_process_and_survives_a_lost_worker(
    tmp_path, blobs_task, threads, test_strategies
):
    ray = pytest.importorskip("ray", reason="Ray is the optional extra latent-bench[ray] (in [dev])")
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    marker = tmp_path / "died"
    marker.touch()  # the references never die
    os.environ["DIES_ONCE_MARKER"] = str(marker)
    try:
        execute(config(tmp_path / "one"))
        execute(config(tmp_path / "dies-reference", strategies=["dies-once"], repeats=1, rounds=4))
        marker.unlink()
        ray.init(
            num_cpus=2,
            include_dashboard=False,
            runtime_env={"env_vars": {"PYTHONPATH": root, "DIES_ONCE_MARKER": str(marker)}},
        )
        try:
            out = execute(config(tmp_path / "ray"), Execution(executor="ray"))
            lost = execute(
                config(tmp_path / "dies", strategies=["dies-once"], repeats=1, rounds=4), Execution(executor="ray")
            )
            with registered(Sleeps):
                hung = execute(
                    config(tmp_path / "hung", strategies=["sleeps", "random"], repeats=1, rounds=2),
                    Execution(executor="ray", unit_timeout=4),
                )
        finally:
            ray.shutdown()
    finally:
        os.environ.pop("DIES_ONCE_MARKER")
    same_results(tmp_path / "one", out)
    assert json.loads((out / "manifest.json").read_text())["execution"]["executor"] == "ray"
    assert marker.exists()  # a Ray worker did die, and its unit went on from its checkpoint
    same_results(tmp_path / "dies-reference", lost)
    failures = json.loads((hung / "manifest.json").read_text())["failures"]
    assert [(f["strategy"], f["error"]) for f in failures] == [
        ("sleeps", "UnitTimedOut: the unit ran past --unit-timeout 4 s and was stopped")
    ]


class BlobsWithoutDataInWorkers(Blobs):
    """Blobs whose data a worker process cannot load (e.g. a node without the data root)."""

    name = "blobs-no-worker-data"

    def load(self, data_root, download=True):
        if mp.parent_process() is not None:
            raise RuntimeError("no data on this worker")
        return super().load(data_root, download)


@pytest.mark.slow
def test_workers_that_cannot_start_stop_the_run_with_a_message(tmp_path, threads):
    TASKS.add("blobs-no-worker-data", BlobsWithoutDataInWorkers)
    try:
        with pytest.raises(RuntimeError, match="keep exiting before they run a unit"):
            execute(config(tmp_path / "run", task="blobs-no-worker-data", strategies=["random"]), Execution(jobs=2))
    finally:
        TASKS.remove("blobs-no-worker-data")
