"""The run engine against hostile strategies and signals (issue 27, "the run engine" and
"plug-ins"): a strategy that exits, one that changes F, a storm of SIGTERMs."""

from __future__ import annotations

import json
import os
import signal
import sys
import time

import pytest
import torch

from bench.cli.main import main
from bench.testing import Blobs, registered
from strategies.base import Strategy
from strategies.random import RandomSampling
from tests.bench.blobs_cli import Sleeps
from tests.bench.test_executors import worker_pids
from tests.bench.test_resume import blobs_cli


class Exits(RandomSampling):
    name = "exits"
    description = "calls sys.exit(3) when asked to select (tests only)"

    def select(self, context, k):
        sys.exit(3)


class Trains(RandomSampling):
    name = "trains"
    description = "nudges F's last layer while selecting (tests only)"

    def select(self, context, k):
        with torch.no_grad():
            context.model.head.bias += 0.1
        return super().select(context, k)


def run(tmp_path, *strategies: type[Strategy], names: str) -> tuple[int, dict]:
    out = tmp_path / "o"
    with registered(Blobs, *strategies):
        code = main(
            ["run", "--task", "blobs", "--strategy", names, "--rounds", "3", "--repeats", "2"]
            + ["--quiet", "--threads", "1", "--out", str(out)]
        )
    return code, json.loads((out / "manifest.json").read_text())


def test_sys_exit_in_a_strategy_fails_its_units_and_the_run_goes_on(tmp_path):
    code, manifest = run(tmp_path, Exits, names="exits,random")
    assert code == 1 and manifest["status"] == "complete with failures"
    assert [(f["strategy"], f["repeat"]) for f in manifest["failures"]] == [("exits", 0), ("exits", 1)]
    assert manifest["failures"][0]["error"] == "SystemExit: the unit called sys.exit(3)"
    assert manifest["units"]["random-r1"] == {**manifest["units"]["random-r1"], "status": "complete", "rounds_done": 3}


def test_a_strategy_that_changes_f_while_selecting_fails_its_unit_naming_the_weights(tmp_path):
    code, manifest = run(tmp_path, Trains, names="trains")
    assert code == 1
    error = manifest["failures"][0]["error"]
    assert "strategy 'trains' on task 'blobs' (round 1) changed F's head.bias while selecting" in error
    assert "copy.deepcopy(context.model)" in error


@pytest.mark.slow
def test_a_storm_of_sigterms_ends_with_one_line_and_exit_130(tmp_path):
    out = tmp_path / "o"
    process = blobs_cli(
        "run",
        "--task",
        "blobs",
        "--strategy",
        "slow",
        "--quiet",
        "--threads",
        "1",
        "--rounds",
        "8",
        "--out",
        str(out),
        wait=False,
    )
    deadline = time.monotonic() + 60
    while not (out / "rounds.csv").exists() or not (out / "rounds.csv").stat().st_size:
        assert time.monotonic() < deadline and process.poll() is None, process.stderr.read()
        time.sleep(0.05)
    for _ in range(300):  # 1 ms apart, through the cleanup and the exit
        if process.poll() is not None:
            break
        process.send_signal(signal.SIGTERM)
        time.sleep(0.001)
    assert process.wait(timeout=60) == 130
    err = process.stderr.read()
    assert "Traceback" not in err and err.strip().splitlines()[-1] == "interrupted (SIGTERM)"
    assert json.loads((out / "manifest.json").read_text())["status"] == "interrupted"


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_a_unit_past_the_unit_timeout_is_failed_and_the_run_goes_on(tmp_path, jobs):
    out = tmp_path / "o"
    started = time.monotonic()
    with registered(Blobs, Sleeps):
        code = main(
            ["run", "--task", "blobs", "--strategy", "sleeps,random", "--rounds", "2", "--quiet", "--threads", "1"]
            + ["--jobs", jobs, "--unit-timeout", "4", "--out", str(out)]
        )
    assert time.monotonic() - started < 120  # not the ten minutes the strategy sleeps
    manifest = json.loads((out / "manifest.json").read_text())
    assert code == 1 and manifest["status"] == "complete with failures"
    assert [f["strategy"] for f in manifest["failures"]] == ["sleeps"]
    assert manifest["failures"][0]["error"] == "UnitTimedOut: the unit ran past --unit-timeout 4 s and was stopped"
    assert manifest["units"]["random-r0"]["status"] == "complete"
    assert manifest["execution"]["unit_timeout"] == 4


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds the workers in /proc")
def test_a_worker_killed_while_it_starts_up_is_replaced_and_the_run_completes(tmp_path):
    """A generative model of ~8 MB travels to each worker; killing one while it starts up used to
    leave the driver blocked for good in multiprocessing's write of the start payload."""
    out = tmp_path / "o"
    process = blobs_cli(
        *["run", "--task", "blobs", "--strategy", "snn", "--generative-option", "hidden=1000"],
        *["--generative-option", "epochs=1", "--jobs", "2", "--threads", "1", "--rounds", "2", "--quiet"],
        *["--out", str(out)],
        wait=False,
    )
    try:
        deadline = time.monotonic() + 120
        while not (workers := worker_pids(process.pid)):
            assert time.monotonic() < deadline and process.poll() is None, process.stderr.read()
            time.sleep(0.02)
        time.sleep(0.3)
        os.kill(min(workers), signal.SIGKILL)
        assert process.wait(timeout=180) == 0, process.stderr.read()
    finally:
        if process.poll() is None:
            process.kill()
    assert json.loads((out / "manifest.json").read_text())["status"] == "complete"
