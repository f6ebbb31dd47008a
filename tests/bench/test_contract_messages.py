"""What a plug-in author reads when a strategy breaks the contract: in a run's failures and in the
contract checks, every message names the strategy, the task, k and the offending values, and
says what to do instead."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest

from bench.cli.listing import listing
from bench.cli.runner import execute
from bench.run.config import RunConfig
from bench.run.probes import verdict
from bench.testing import (
    Blobs,
    is_reproducible_from_its_seed,
    registered,
    resumes_from_a_checkpoint,
    returns_k_samples_the_harness_accepts,
)
from strategies.base import Selection, Strategy
from tasks.base import Capability


class Duplicates(Strategy):
    name = "duplicates"
    description = "picks its first unlabeled sample twice (tests only)"

    def select(self, context, k):
        return Selection(indices=np.r_[context.unlabeled[:1], context.unlabeled[: k - 1]])


class ShortChanges(Strategy):
    name = "short-changes"
    description = "returns one sample fewer than asked (tests only)"

    def select(self, context, k):
        return Selection(indices=context.unlabeled[: k - 1])


class FloatIndices(Strategy):
    name = "float-indices"
    description = "returns float positions (tests only)"

    def select(self, context, k):
        return Selection(indices=context.unlabeled[:k] + 0.9)


class GlobalNumpy(Strategy):
    name = "global-numpy"
    description = "draws from numpy's global random state (tests only)"

    def select(self, context, k):
        return Selection(indices=np.random.choice(context.unlabeled, size=k, replace=False))


class MonteCarlo(Strategy):
    """BALD-like scores from Monte Carlo dropout, declaring only class probabilities."""

    name = "monte-carlo"
    description = "spread of Monte Carlo dropout passes (tests only)"
    requires = frozenset({Capability.PROBABILITIES})

    def select(self, context, k):
        spread = context.mc_probabilities(4)[:, context.unlabeled].std(0).sum(1)
        return Selection(indices=context.unlabeled[spread.argsort(descending=True)[:k].numpy()])


class BlobsWithoutDropout(Blobs):
    """Blobs whose F has no dropout (and says so)."""

    name = "blobs-no-dropout"
    capabilities = Blobs.capabilities - {Capability.DROPOUT}

    def make_model(self):
        model = super().make_model()
        model.body = model.body[:2]  # Linear, ReLU: the dropout layer gone
        return model


def failures(tmp_path, task, strategy) -> list[dict]:
    config = RunConfig(task=task, strategies=[strategy], rounds=2, out=tmp_path / "o", quiet=True, threads=1)
    manifest = json.loads((execute(config) / "manifest.json").read_text())
    return manifest.get("failures", [])


@pytest.mark.parametrize(
    "strategy, message",
    [
        (
            Duplicates,
            r"strategy 'duplicates' on task 'blobs' \(round 1\) returned duplicate pool indices for k=10: \[\d+\] "
            r"\(each \[2\] times\)",
        ),
        (ShortChanges, r"strategy 'short-changes' on task 'blobs' \(round 1\) returned 9 samples for k=10"),
        (FloatIndices, r"pool indices must be integers, not float64 \(e.g. \[\d+\.9, "),
    ],
)
def test_a_run_names_the_strategy_task_k_and_the_offending_values(tmp_path, strategy, message):
    with registered(Blobs, strategy):
        (failure,) = failures(tmp_path, "blobs", strategy.name)
    assert failure["strategy"] == strategy.name
    assert re.search(message, failure["error"]), failure["error"]


def test_monte_carlo_dropout_on_a_task_without_dropout_fails_the_unit_saying_why(tmp_path):
    with registered(BlobsWithoutDropout, MonteCarlo):
        (failure,) = failures(tmp_path, "blobs-no-dropout", "monte-carlo")
    assert failure["error"].startswith("CapabilityError: context.mc_probabilities needs dropout layers")
    assert "declares 'dropout' in its `requires`" in failure["error"]


def test_the_contract_checks_name_k_and_the_values(blobs_task):
    with pytest.raises(AssertionError, match=r"'duplicates' on task 'blobs' .*duplicate pool indices for k=7: \[\d+\]"):
        returns_k_samples_the_harness_accepts(Duplicates)
    with pytest.raises(AssertionError, match=r"'short-changes' on task 'blobs' returned 0 samples for k=1"):
        returns_k_samples_the_harness_accepts(ShortChanges)


def test_a_strategy_drawing_from_numpys_global_state_is_told_to_use_context_rng(blobs_task):
    for check in (is_reproducible_from_its_seed, resumes_from_a_checkpoint):
        with pytest.raises(AssertionError, match="draw random numbers only from context.rng") as info:
            check(GlobalNumpy)
        assert "state_dict" not in str(info.value)


class RandomPlugin(Strategy):
    """A reproducible plug-in: uniform picks from context.rng."""

    name = "random-plugin"
    description = "uniform picks from context.rng (tests only)"

    def select(self, context, k):
        return Selection(indices=context.rng.choice(context.unlabeled, size=k, replace=False))


def probe_run(tmp_path, name, strategies, **settings) -> tuple[dict, pd.DataFrame]:
    config = RunConfig(task="blobs", strategies=strategies, rounds=3, out=tmp_path / name, quiet=True, **settings)
    out = execute(config)
    return json.loads((out / "manifest.json").read_text()), pd.read_csv(out / "rounds.csv")


def test_a_run_probes_a_plug_in_strategy_and_warns_when_it_is_not_reproducible(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "cache"))
    with registered(Blobs, GlobalNumpy, RandomPlugin):
        manifest, _ = probe_run(tmp_path, "o", ["random", "global-numpy", "random-plugin"], repeats=2)
        listed = {cls.name: verdict(cls) for cls in (GlobalNumpy, RandomPlugin)}
    found = manifest["reproducibility"]
    assert set(found) == {"global-numpy", "random-plugin"}  # built-ins are checked by their contract tests
    assert found["random-plugin"]["reproducible"] is True
    assert found["global-numpy"]["reproducible"] is False
    assert "after round 1 of repeat 0 (k=10): pool indices" in found["global-numpy"]["detail"]
    assert caplog.text.count("is not reproducible") == 1 and "context.rng" in caplog.text, caplog.text
    assert listed["global-numpy"]["reproducible"] is False and listed["random-plugin"]["reproducible"] is True
    assert listed["random-plugin"]["task"] == "blobs"


def test_the_probe_changes_no_number_of_a_reproducible_strategy(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "cache"))
    with registered(Blobs, RandomPlugin):
        probed, rows = probe_run(tmp_path, "probed", ["random-plugin"], diagnostics=True)
        monkeypatch.setattr("bench.run.loop.is_probed", lambda cls, repeat: False)
        plain, plain_rows = probe_run(tmp_path, "plain", ["random-plugin"], diagnostics=True)
    assert "reproducibility" in probed and "reproducibility" not in plain
    timing = [c for c in rows.columns if c.endswith("_s")]
    pd.testing.assert_frame_equal(rows.drop(columns=timing), plain_rows.drop(columns=timing))


def test_list_says_whether_a_plug_in_strategy_was_found_reproducible(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "cache"))
    with registered(Blobs, GlobalNumpy, RandomPlugin):
        before = listing()
        probe_run(tmp_path, "o", ["global-numpy", "random-plugin"])
        after = listing()
    assert before.count("reproducible: not checked yet") == 2
    assert "random-plugin" in after and "reproducible: yes (in a run on blobs, 20" in after
    assert "reproducible: NO (in a run on blobs, 20" in after and "draw random numbers only from context.rng" in after
    lines = after.splitlines()
    below_random = lines[next(i for i, line in enumerate(lines) if line.startswith("  random ")) + 1]
    assert "reproducible:" not in below_random  # built-ins are checked by their contract tests
