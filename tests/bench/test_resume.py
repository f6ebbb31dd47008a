"""Checkpoints and ``--resume``: a killed run, resumed, gives what an uninterrupted run gives."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from bench.cli.main import main
from bench.cli.runner import execute, resume
from bench.run.config import RunConfig
from bench.run.diagnostics import COLUMNS as DIAGNOSTIC_COLUMNS
from bench.run.results import load_labeled
from strategies import STRATEGIES
from strategies.random import RandomSampling

ROOT = Path(__file__).resolve().parents[2]
BLOBS_CLI = "from tests.bench.blobs_cli import main; main()"


def blobs_cli(*args: str, wait: bool = True) -> subprocess.Popen | subprocess.CompletedProcess:
    """``python -m bench`` with the blobs task registered, in a subprocess of its own."""
    command = [sys.executable, "-c", BLOBS_CLI, *args]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if wait:
        return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def same_results(a: Path, b: Path) -> None:
    """Equal metric values (bit for bit) and equal labeled sets in two run folders."""
    keys = ["strategy", "repeat", "round"]
    ra = pd.read_csv(a / "rounds.csv").sort_values(keys).reset_index(drop=True)
    rb = pd.read_csv(b / "rounds.csv").sort_values(keys).reset_index(drop=True)
    columns = keys + ["n_labeled", "value", "n_synthetic", *DIAGNOSTIC_COLUMNS]
    pd.testing.assert_frame_equal(ra[columns], rb[columns], check_exact=True)
    la, lb = load_labeled(a / "labeled.npz"), load_labeled(b / "labeled.npz")
    assert sorted(la) == sorted(lb)
    for key in la:
        np.testing.assert_array_equal(la[key], lb[key], err_msg=key)


def round_written(path: Path, strategy: str, repeat: int, round: int) -> bool:
    if not path.exists() or not path.stat().st_size:
        return False
    rows = pd.read_csv(path)
    return bool(((rows["strategy"] == strategy) & (rows["repeat"] == repeat) & (rows["round"] == round)).any())


RUN = [
    "run",
    "--task",
    "blobs",
    "--strategy",
    "slow,si,uncertainty",
    "--repeats",
    "2",
    "--rounds",
    "4",
    "--seed",
    "3",
    "--threads",
    "1",
    "--quiet",
]


@pytest.mark.slow
def test_a_run_killed_with_sigkill_resumes_to_the_numbers_of_an_uninterrupted_run(tmp_path):
    reference = blobs_cli(*RUN, "--out", str(tmp_path / "reference"))
    assert reference.returncode == 0, reference.stderr
    killed = tmp_path / "killed"
    process = blobs_cli(*RUN, "--out", str(killed), wait=False)
    deadline = time.monotonic() + 120
    try:  # kill -9 once round 2 of slow-r0 is written, i.e. mid-way through that unit
        while not round_written(killed / "rounds.csv", "slow", 0, 2):
            assert process.poll() is None, f"the run ended before it could be killed: {process.stderr.read()}"
            assert time.monotonic() < deadline, "round 2 of slow-r0 never came"
            time.sleep(0.02)
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.wait(timeout=60)
    manifest = json.loads((killed / "manifest.json").read_text())
    assert manifest["status"] == "running"  # as a kill leaves it
    assert len(pd.read_csv(killed / "rounds.csv")) < 2 * 3 * 4
    assert (killed / "checkpoints" / "slow-r0.pt").exists()  # slow-r0 goes on from a checkpoint

    resumed = blobs_cli("run", "--resume", str(killed), "--quiet")
    assert resumed.returncode == 0, resumed.stderr
    same_results(tmp_path / "reference", killed)
    manifest = json.loads((killed / "manifest.json").read_text())
    assert manifest["status"] == "complete" and len(manifest["interruptions"]) == 1
    assert all(u["status"] == "complete" for u in manifest["units"].values())
    assert not (killed / "checkpoints").exists()  # finished units' checkpoints are removed


class CrashOnce(RandomSampling):
    """Random sampling that takes the whole run down (Ctrl-C, as a kill would) at its
    ``CRASH_AT``-th selection: with 4 rounds, after round 2 of repeat 1 (repeat 0 selects four
    times: a plug-in strategy's first selection is made twice, the reproducibility probe)."""

    name = "crash-once"
    calls = 0
    CRASH_AT = 6

    def select(self, context, k):
        CrashOnce.calls += 1
        if CrashOnce.calls == self.CRASH_AT:
            raise KeyboardInterrupt("simulated kill")
        return super().select(context, k)


@pytest.fixture
def crash_once():
    CrashOnce.calls = 0
    STRATEGIES.add(CrashOnce.name, CrashOnce)
    yield
    STRATEGIES.remove(CrashOnce.name)


def blobs_config(out: Path, **overrides) -> RunConfig:
    values = dict(task="blobs", strategies=["crash-once", "si"], repeats=2, seed=5, rounds=4, out=out, quiet=True)
    values.update(overrides)
    return RunConfig(**values)


def test_a_torn_last_row_is_dropped_and_the_resumed_run_matches(tmp_path, blobs_task, crash_once, capsys):
    CrashOnce.calls = -100  # the reference never reaches the crash
    execute(blobs_config(tmp_path / "reference"))
    CrashOnce.calls = 0
    out = tmp_path / "crashed"
    with pytest.raises(KeyboardInterrupt):
        execute(blobs_config(out))
    rows = (out / "rounds.csv").read_text()
    with open(out / "rounds.csv", "a") as f:
        f.write("blobs,crash-once,0,1234,4,50,accur")  # a row cut short by a kill
    assert list((out / "checkpoints").glob("*.pt"))  # the crashed unit left its checkpoint
    assert main(["report", str(out)]) == 0  # the torn row is not read as data
    assert "2 of 4 units unfinished, 6 rounds missing" in capsys.readouterr().err
    assert "unfinished run (interrupted)" in (out / "table.md").read_text()
    resume(out)
    same_results(tmp_path / "reference", out)
    assert (out / "rounds.csv").read_text().startswith(rows)  # rows already written are kept as they were
    assert "accur\n" not in (out / "rounds.csv").read_text()


def test_checkpoints_hold_plain_state_and_are_kept_when_asked(tmp_path, blobs_task):
    from bench.run.config import Execution

    out = execute(
        RunConfig(task="blobs", strategies=["si"], rounds=3, out=tmp_path / "run", quiet=True),
        Execution(keep_checkpoints=True),
    )
    path = out / "checkpoints" / "si-r0.pt"
    state = torch.load(path, weights_only=True)  # tensors and plain values only
    assert state["round"] == 2
    assert set(state) >= {"model", "optimizer", "training", "shuffle", "strategy_rng", "torch_rng", "strategy"}
    assert state["strategy"]["latents"].shape == (40, 2)  # SI's latent points: 20 + 10 + 10 samples
    assert [len(c.get("indices", c.get("inputs"))) for c in state["training"]["chunks"]] == [20, 10, 10]


def test_resume_refuses_flags_that_contradict_the_manifest(tmp_path, blobs_task, capsys):
    out = tmp_path / "run"
    execute(RunConfig(task="blobs", strategies=["random"], rounds=3, seed=3, out=out, quiet=True))
    assert main(["run", "--resume", str(out)]) == 2
    assert "already complete; nothing to do" in capsys.readouterr().err
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["status"] = "running"  # as a killed run leaves it
    (out / "manifest.json").write_text(json.dumps(manifest))
    assert main(["run", "--resume", str(out), "--seed", "4"]) == 2
    assert "--resume" in capsys.readouterr().err
    assert main(["run", "--resume", str(out), "--rounds", "5"]) == 2
    assert "contradicts" in capsys.readouterr().err
    assert main(["run", "--resume", str(out), "--seed", "0"]) == 2  # a falsy value contradicts too
    assert "seed 0 contradicts" in capsys.readouterr().err
    assert main(["run", "--resume", str(out), "--start", "fresh"]) == 2
    assert "start 'fresh' contradicts" in capsys.readouterr().err
    manifest["device"]["device"] = "cuda"  # the run resolved its device as cuda: a resume keeps it
    (out / "manifest.json").write_text(json.dumps(manifest))
    assert main(["run", "--resume", str(out)]) == 2
    assert "--device cuda was asked for" in capsys.readouterr().err
    assert main(["run", "--resume", str(tmp_path / "nothing")]) == 2
    assert "no manifest.json" in capsys.readouterr().err
    assert main(["run", "--task", "blobs"]) == 2
    assert "--strategy is required" in capsys.readouterr().err
