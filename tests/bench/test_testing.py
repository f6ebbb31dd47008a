"""The contract kit itself (:mod:`bench.testing`): what it accepts, that it builds the round-1
state once per check set, and that each check catches the strategy it is there to catch, with a
message naming the strategy, the task, k and the offending values."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bench.run.config import ConfigError
from bench.run.loop import UnitState
from bench.testing import (
    STRATEGY_CHECKS,
    TASK_CHECKS,
    Blobs,
    check_strategy,
    check_task,
    harness,
    registered,
    trained_context,
)
from strategies import STRATEGIES
from strategies.base import Selection, Strategy
from strategies.uncertainty import UncertaintySampling
from tasks import TASKS
from tasks.base import Capability


class Offset(Strategy):
    """The unlabeled pool from ``offset`` on, in order; records the offsets it was built with."""

    name = "offset"
    description = "the unlabeled pool from an offset (a test strategy)"
    built: list = []

    def __init__(self, offset: int = 0) -> None:
        if not isinstance(offset, int) or offset < 0:
            raise ValueError(f"offset must be a non-negative integer (got {offset!r})")
        Offset.built.append(offset)
        self.offset = offset

    def select(self, context, k):
        unlabeled = context.unlabeled
        return Selection(indices=np.roll(unlabeled, -self.offset)[:k])


def test_registered_registers_classes_for_the_block_only():
    assert "blobs" not in TASKS and "offset" not in STRATEGIES
    with registered(Blobs, Offset):
        assert TASKS.get("blobs") is Blobs and STRATEGIES.get("offset") is Offset
        with registered(Blobs):  # already registered: nothing changes
            assert TASKS.get("blobs") is Blobs
    assert "blobs" not in TASKS and "offset" not in STRATEGIES


def test_the_blobs_fixture_registers_blobs_one_way(blobs_task):
    assert isinstance(blobs_task, Blobs) and TASKS.get("blobs") is Blobs


def test_a_strategy_class_with_its_options_meets_the_contract():
    Offset.built.clear()
    check_strategy(Offset, options={"offset": 3})
    assert 3 in Offset.built and 0 not in Offset.built  # the options reached every instance the checks built
    check_strategy(Offset, options={"offset.offset": 5})  # scoped, as --option offset.offset=5 gives it
    assert "offset" not in STRATEGIES  # registered for the checks only


def test_options_go_through_the_harness_planning():
    with pytest.raises(ConfigError, match="'nonsense' is not accepted"):
        STRATEGY_CHECKS["returns_k_samples_the_harness_accepts"](Offset, options={"nonsense": 1})
    with pytest.raises(ConfigError, match="offset must be a non-negative integer"):
        check_strategy(Offset, options={"offset": -2})


def test_the_round_one_state_is_built_once_per_check_set(monkeypatch):
    assembled, trained = [], []
    real_assemble, real_train = harness.assemble, UnitState.train_and_evaluate
    monkeypatch.setattr(harness, "assemble", lambda config: assembled.append(config) or real_assemble(config))
    monkeypatch.setattr(UnitState, "train_and_evaluate", lambda unit, t: trained.append(t) or real_train(unit, t))
    harness._CACHE.clear()
    check_strategy("coreset")
    assert len(assembled) == 1  # plan, data and generative model: once for the set (9 times for 5 checks before)
    assert trained.count(1) == 3  # round 1: the cached state, and trained anew for reproducibility and resume
    check_strategy("coreset")
    assert len(assembled) == 1 and trained.count(1) == 5  # the next set finds the state cached


def test_a_check_run_alone_starts_from_an_untouched_round_one_state():
    first = trained_context().unlabeled
    ctx = trained_context()
    STRATEGIES.create("random").select(ctx, 5)  # draws from the context's rng
    again = trained_context()
    assert np.array_equal(again.unlabeled, first)
    picks = [STRATEGIES.create("random").select(trained_context(), 5).indices for _ in range(2)]
    assert np.array_equal(*picks)


def test_a_task_check_takes_a_name_a_class_or_an_instance():
    check_task(Blobs)  # by class: registered for its two rounds through the harness
    assert "blobs" not in TASKS
    for check in TASK_CHECKS.values():
        check(Blobs())


# --- strategies each check is there to catch -----------------------------------------------------


class ValidatesLate(Strategy):
    """Accepts any ``stride`` and fails only when selecting with a bad one."""

    name = "validates-late"
    description = "a test strategy"

    def __init__(self, stride: int = 1) -> None:
        self.stride = stride

    def select(self, context, k):
        return Selection(indices=context.unlabeled[:: self.stride][:k])


class UsesEmbeddings(Strategy):
    """Declares nothing, yet reads F's embeddings."""

    name = "uses-embeddings"
    description = "a test strategy"

    def select(self, context, k):
        norms = context.pool_embeddings[torch.as_tensor(context.unlabeled)].norm(dim=1)
        return Selection(indices=context.unlabeled[torch.argsort(norms, descending=True)[:k].numpy()])


class UsesTheGenerativeModel(Strategy):
    name = "uses-generative"
    description = "a test strategy"
    requires = frozenset({Capability.PROBABILITIES})

    def select(self, context, k):
        codes = context.generative.encode(context.pool_x[torch.as_tensor(context.unlabeled)])
        return Selection(indices=context.unlabeled[torch.argsort(codes[:, 0])[:k].numpy()])


class UsesDropout(Strategy):
    """Declares class probabilities, yet scores with Monte Carlo dropout."""

    name = "uses-dropout"
    description = "a test strategy"
    requires = frozenset({Capability.PROBABILITIES})

    def select(self, context, k):
        spread = context.mc_probabilities(3, context.pool_x[torch.as_tensor(context.unlabeled)]).std(0).sum(1)
        return Selection(indices=context.unlabeled[torch.argsort(spread, descending=True)[:k].numpy()])


class RefusesNothing(UncertaintySampling):
    """Declares class probabilities, but accepts every task."""

    name = "refuses-nothing"

    @classmethod
    def refuses(cls, task, options=None):
        return None


class Forgetful(Strategy):
    """Walks the pool round by round, but keeps its position out of its state_dict."""

    name = "forgetful"
    description = "a test strategy"

    def __init__(self) -> None:
        self.rounds = 0

    def select(self, context, k):
        self.rounds += 1
        return Selection(indices=np.roll(context.unlabeled, -7 * self.rounds)[:k])


class UnsafeState(Forgetful):
    """Keeps its position, but as an object torch.load(weights_only=True) refuses."""

    name = "unsafe-state"

    def state_dict(self):
        return {"rounds": np.random.default_rng(self.rounds)}

    def load_state_dict(self, state):
        self.rounds = int(state["rounds"].integers(1))


@pytest.mark.parametrize(
    "cls, check, message",
    [
        (
            ValidatesLate,
            "refuses_bad_options",
            r"strategy 'validates-late' on task 'blobs': its constructor accepts "
            r"stride='not-a-number', but select \(k=5\) then fails \(TypeError",
        ),
        (
            UsesEmbeddings,
            "requires_is_honest",
            r"strategy 'uses-embeddings' on task 'blobs', k=5: with only the capabilities it declares "
            r"\(\[\]; the others withheld\) it failed: context.embed \(or context.pool_embeddings\) needs "
            r"embeddings from the target model .* declares 'embeddings' in its `requires`",
        ),
        (
            UsesDropout,
            "requires_is_honest",
            "'uses-dropout' on task 'blobs', k=5: .* it failed: context.mc_probabilities needs dropout layers",
        ),
        (
            UsesTheGenerativeModel,
            "requires_is_honest",
            r"'uses-generative' on task 'blobs', k=5: selecting with only "
            r"the declared capabilities \['probabilities'\] failed",
        ),
        (
            RefusesNothing,
            "requires_is_honest",
            "'refuses-nothing' on task 'blobs': requires 'probabilities', yet its "
            "refuses.. accepts 'blobs-without-probabilities'",
        ),
        (
            Forgetful,
            "state_dict_round_trips",
            r"'forgetful' on task 'blobs', k=7: the original selected pool indices "
            r"\[\d+, .* a fresh instance given load_state_dict",
        ),
        (
            Forgetful,
            "resumes_from_a_checkpoint",
            "'forgetful' on task 'blobs', k=5: selected pool indices .* after a resume",
        ),
        (
            UnsafeState,
            "state_dict_round_trips",
            "'unsafe-state' on task 'blobs': its state_dict.. does not survive a checkpoint",
        ),
    ],
)
def test_a_check_catches_what_it_is_for(cls, check, message):
    with pytest.raises(AssertionError, match=message):
        STRATEGY_CHECKS[check](cls)


def test_the_catching_strategies_pass_the_other_checks():
    for check in (
        "returns_k_samples_the_harness_accepts",
        "leaves_the_target_model_unchanged",
        "can_take_the_whole_remaining_pool",
    ):
        for cls in (ValidatesLate, UsesEmbeddings, Forgetful):
            STRATEGY_CHECKS[check](cls)


class EmbedsInForward(Blobs):
    """Blobs whose F computes its logits through its own ``embed`` (as DeepAL's nets do)."""

    name = "blobs-embed-in-forward"

    def make_model(self):
        model = super().make_model()
        model.forward = lambda x: model.head(model.embed(x))
        return model


def test_F_using_its_own_embed_is_no_use_of_embeddings_by_the_strategy():
    STRATEGY_CHECKS["requires_is_honest"]("uncertainty", task=EmbedsInForward)
    assert EmbedsInForward.name not in TASKS


def test_a_synthesizing_strategy_is_checked_on_its_declared_capabilities_only():
    for check in ("requires_is_honest", "state_dict_round_trips", "refuses_bad_options"):
        STRATEGY_CHECKS[check]("si", options={"start": "pool"})


class WrongHeadline(Blobs):
    name = "blobs-wrong-headline"

    def scores(self, output, target):
        return {"error": 0.0, **super().scores(output, target)}


def test_a_task_check_failure_names_the_task_and_the_values():
    with pytest.raises(
        AssertionError, match=r"task 'blobs-wrong-headline': scores\(\) returned \['error', 'accuracy'\]"
    ):
        TASK_CHECKS["model_loss_scores_and_embeddings_fit"](WrongHeadline())
