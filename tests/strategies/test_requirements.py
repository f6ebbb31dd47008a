"""A strategy's needs may depend on its options (``Strategy.requirements``): the harness refuses,
plans and builds the generative model by what the chosen options need, never more."""

from __future__ import annotations

import pytest

from bench.run.config import ConfigError, RunConfig
from bench.run.plan import plan_run
from bench.testing import Blobs, registered, requires_is_honest
from strategies import STRATEGIES
from tasks.base import Capability


class NoEmbeddings(Blobs):
    name = "blobs-no-embeddings"
    capabilities = Blobs.capabilities - {Capability.EMBEDDINGS}


class NoGenerative(Blobs):
    name = "blobs-no-generative"
    capabilities = Blobs.capabilities - {Capability.GENERATIVE}


def config(task: str, strategy: str, **options) -> RunConfig:
    return RunConfig(task=task, strategies=[strategy], strategy_options=options, device="cpu")


def test_by_default_a_strategy_needs_what_it_requires():
    assert STRATEGIES.get("coreset").requirements({}) == {Capability.EMBEDDINGS}


@pytest.mark.parametrize(
    ("strategy", "options", "needs"),
    [
        ("typiclust", {}, {Capability.GENERATIVE}),
        ("typiclust", {"space": "model"}, {Capability.EMBEDDINGS}),
        ("asal", {}, {Capability.PROBABILITIES, Capability.GENERATIVE, Capability.EMBEDDINGS}),
        ("asal", {"space": "latent"}, {Capability.PROBABILITIES, Capability.GENERATIVE}),
    ],
)
def test_options_choose_what_is_needed(strategy, options, needs):
    assert STRATEGIES.get(strategy).requirements(options) == needs


def test_a_task_lacking_only_what_an_option_does_not_use_is_accepted():
    with registered(NoEmbeddings, NoGenerative):
        plan_run(config("blobs-no-embeddings", "asal", **{"asal.space": "latent"}))
        plan_run(config("blobs-no-generative", "typiclust", space="model"))
        with pytest.raises(ConfigError, match="'asal' does not apply to task 'blobs-no-embeddings'.*embeddings"):
            plan_run(config("blobs-no-embeddings", "asal"))
        with pytest.raises(ConfigError, match="'typiclust' does not apply to task 'blobs-no-generative'.*generative"):
            plan_run(config("blobs-no-generative", "typiclust"))


def test_the_generative_model_is_built_only_where_the_options_need_it():
    with registered(Blobs):
        assert plan_run(config("blobs", "typiclust", space="model")).generative is None
        assert plan_run(config("blobs", "typiclust")).generative is not None


@pytest.mark.parametrize(("strategy", "options"), [("typiclust", {"space": "model"}), ("asal", {"space": "latent"})])
def test_the_contract_check_holds_a_strategy_to_what_its_options_need(strategy, options):
    requires_is_honest(strategy, options=options)
