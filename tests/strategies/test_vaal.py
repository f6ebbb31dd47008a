"""VAAL: its discriminator learns to tell the labeled pool from the unlabeled one, its picks are
the unlabeled samples least like the labeled ones, a killed unit resumes to the uninterrupted
run's picks, and it meets the shipped contract on Blobs, MNIST and IVUS.

The contract checks on the real tasks (and on Blobs, in tests/strategies/test_contract.py) run
with a small training budget (a few iterations per round: the checks select some twenty times);
the default budget is checked on Blobs, by the reproducibility check (two first selections at
300 iterations each), in a slow test. The code paths are the same at any budget.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from bench.cli.runner import execute, resume
from bench.run.config import RunConfig
from bench.run.results import load_labeled
from bench.testing import Blobs, check_strategy, is_reproducible_from_its_seed
from strategies import STRATEGIES
from strategies.base import SelectionContext
from strategies.vaal import VAAL
from tests.bench.test_resume import round_written, same_results

ROOT = Path(__file__).resolve().parents[2]
FAST = {"steps": 3, "first_steps": 10}  # a small budget for the contract checks


def test_meets_the_contract_with_other_options():
    check_strategy(
        "vaal",
        options={**FAST, "latent_dim": 4, "beta": 0.5, "adversary_weight": 2.0, "hidden": 16, "batch_size": 8},
    )


@pytest.mark.slow
def test_meets_the_contract_at_its_default_budget():
    is_reproducible_from_its_seed("vaal")


def test_meets_the_contract_on_mnist(shared_data, mnist_root):
    check_strategy("vaal", task="mnist", options=FAST)


@pytest.mark.slow
def test_meets_the_contract_on_ivus(shared_data):
    check_strategy("vaal", task="ivus", options=FAST)


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("latent_dim", 0),
        ("latent_dim", 2.5),
        ("beta", -0.1),
        ("adversary_weight", float("nan")),
        ("lr", 0),
        ("hidden", True),
        ("batch_size", "64"),
        ("steps", -1),
        ("first_steps", 1.0),
    ],
)
def test_refuses_a_bad_option_naming_it(option, value):
    with pytest.raises(ValueError, match=f"vaal option {option} must be"):
        VAAL(**{option: value})


def toy_context(seed: int) -> tuple[SelectionContext, np.ndarray]:
    """A pool of 400 16x16 "images" in [0, 1]: 100 labeled from blob A; 300 unlabeled, 150 from A
    and 150 from blob B (which nothing labeled resembles). Returns the context and whether each
    pool point is from B. (Image-sized: on inputs of a few values, such as Blobs' 8, the codes
    collapse onto the prior and the discriminator barely separates anything.)"""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(2, 1, 16, 16, generator=g) * 2

    def blob(i: int, n: int) -> torch.Tensor:
        return torch.sigmoid(centres[i] + torch.randn(n, 1, 16, 16, generator=g))

    pool_x = torch.cat([blob(0, 100), blob(0, 150), blob(1, 150)])
    labeled = np.arange(100)
    context = SelectionContext(
        task=Blobs(),
        model=nn.Flatten(),
        pool_x=pool_x,
        labeled=labeled,
        train_x=pool_x[labeled],
        train_y=torch.zeros(100, dtype=torch.long),
        rng=np.random.default_rng(seed),
        round=1,
        batch_size=256,
        infer=lambda fn, x, dropout=False: fn(x),
    )
    return context, np.arange(400) >= 250


@pytest.mark.parametrize("seed", [0, 1])
def test_the_discriminator_separates_labeled_from_unlabeled_and_picks_the_unrepresented(seed):
    context, from_b = toy_context(seed)
    vaal = VAAL(first_steps=60)
    selection = vaal.select(context, 150)
    unlabeled = context.unlabeled
    p_labeled = vaal.labeled_probability(context.pool_x, context.labeled, 256).numpy()
    p_unlabeled = vaal.labeled_probability(context.pool_x, unlabeled, 256).numpy()
    # AUC of "labeled" against the unlabeled pool: 0.5 is chance; 0.75 is perfect here, as half
    # the unlabeled pool (blob A) is drawn as the labeled set is
    auc = (p_labeled[:, None] > p_unlabeled[None, :]).mean() + 0.5 * (p_labeled[:, None] == p_unlabeled[None, :]).mean()
    assert auc > 0.65, auc
    b = from_b[unlabeled]
    auc_b = (p_unlabeled[~b][:, None] > p_unlabeled[b][None, :]).mean()  # unlabeled A above unlabeled B
    assert auc_b > 0.9, auc_b
    assert from_b[selection.indices].mean() > 0.9  # the picks: blob B, which nothing labeled resembles
    assert np.array_equal(selection.scores, np.sort(selection.scores))  # least likely labeled first
    np.testing.assert_allclose(selection.scores, p_unlabeled[np.searchsorted(unlabeled, selection.indices)])


def test_state_is_empty_before_the_first_selection_and_carries_the_nets_after():
    context, _ = toy_context(0)
    vaal = VAAL(steps=2, first_steps=3)
    assert vaal.state_dict() == {}
    vaal.select(context, 5)
    state = vaal.state_dict()
    assert state["iterations"] == 3 and state["features"] == 256
    assert {"vae.mean.weight", "discriminator.0.weight", "vae_optimizer", "discriminator_optimizer"} <= set(state)
    state["vae.mean.weight"].add_(1.0)  # a copy: changing it changes nothing in the strategy
    assert not torch.equal(state["vae.mean.weight"], vaal.state_dict()["vae.mean.weight"])
    vaal.select(context, 5)
    assert vaal.iterations == 5  # warm-started: the second round adds `steps`
    vaal.load_state_dict({})
    assert vaal.vae is None and vaal.state_dict() == {}


def test_selecting_leaves_torch_global_stream_alone():
    context, _ = toy_context(0)
    before = torch.get_rng_state()
    vaal = VAAL(steps=2, first_steps=3)
    vaal.select(context, 5)
    vaal.load_state_dict(vaal.state_dict())
    assert torch.equal(torch.get_rng_state(), before)


class CrashingVAAL(VAAL):
    """VAAL that takes the run down (Ctrl-C, as a kill would) at its ``CRASH_AT``-th selection.
    A plug-in's first selection is made twice (the reproducibility probe), so the 4th call is the
    selection after round 3, and the checkpoint after round 2 holds VAAL's nets trained twice."""

    name = "vaal-crash-once"
    calls = 0
    CRASH_AT = 4

    def select(self, context, k):
        CrashingVAAL.calls += 1
        if CrashingVAAL.calls == self.CRASH_AT:
            raise KeyboardInterrupt("simulated kill")
        return super().select(context, k)


@pytest.fixture
def crashing_vaal():
    CrashingVAAL.calls = 0
    STRATEGIES.add(CrashingVAAL.name, CrashingVAAL)
    yield
    STRATEGIES.remove(CrashingVAAL.name)


def test_a_crashed_unit_resumes_to_the_uninterrupted_runs_picks(tmp_path, blobs_task, crashing_vaal):
    def config(out: Path) -> RunConfig:
        return RunConfig(
            task="blobs",
            strategies=["vaal-crash-once"],
            rounds=4,
            seed=7,
            out=out,
            quiet=True,
            threads=1,
            strategy_options={"steps": 5, "first_steps": 20},
        )

    CrashingVAAL.calls = -100  # the reference never reaches the crash
    execute(config(tmp_path / "reference"))
    CrashingVAAL.calls = 0
    out = tmp_path / "crashed"
    with pytest.raises(KeyboardInterrupt):
        execute(config(out))
    assert (out / "checkpoints" / "vaal-crash-once-r0.pt").exists()
    resume(out)
    same_results(tmp_path / "reference", out)  # the metric values and the picks, with their scores
    picks = load_labeled(out / "labeled.npz")
    assert any(key.endswith("scores") for key in picks)


def vaal_cli(*args: str, wait: bool = True) -> subprocess.Popen | subprocess.CompletedProcess:
    """``python -m bench`` with blobs and vaal registered, in a subprocess of its own."""
    code = "from tests.bench.blobs_cli import main; main()"
    command = [sys.executable, "-c", code, *args]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    if wait:
        return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


RUN = [
    "run",
    "--task",
    "blobs",
    "--strategy",
    "vaal",
    "--rounds",
    "5",
    "--seed",
    "3",
    "--threads",
    "1",
    "--quiet",
    "--option",
    "steps=40",
    "--option",
    "first_steps=60",
]


@pytest.mark.slow
def test_a_unit_killed_with_sigkill_resumes_to_the_uninterrupted_runs_picks(tmp_path):
    reference = vaal_cli(*RUN, "--out", str(tmp_path / "reference"))
    assert reference.returncode == 0, reference.stderr
    killed = tmp_path / "killed"
    process = vaal_cli(*RUN, "--out", str(killed), wait=False)
    deadline = time.monotonic() + 120
    try:  # kill -9 once round 2 is written, i.e. mid-way through the unit
        while not round_written(killed / "rounds.csv", "vaal", 0, 2):
            assert process.poll() is None, f"the run ended before it could be killed: {process.stderr.read()}"
            assert time.monotonic() < deadline, "round 2 never came"
            time.sleep(0.02)
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.wait(timeout=60)
    assert (killed / "checkpoints" / "vaal-r0.pt").exists()
    assert not round_written(killed / "rounds.csv", "vaal", 0, 5)
    resumed = vaal_cli("run", "--resume", str(killed), "--quiet")
    assert resumed.returncode == 0, resumed.stderr
    same_results(tmp_path / "reference", killed)
