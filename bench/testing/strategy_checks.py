"""The strategy checks: each takes a strategy (a registered name or a class), a task (default
:class:`~bench.testing.Blobs`) and the strategy's options, and runs it through the harness."""

from __future__ import annotations

import copy
import dataclasses
import inspect
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor

from bench.run.checkpoint import to_bytes
from bench.run.config import ConfigError
from bench.run.loop import StrategyError, UnitState
from bench.run.plan import create_task, plan_run, strategy_options
from bench.testing.harness import Options, StrategyLike, TaskLike, _checking, _loaded, registered
from strategies.base import RNG_ADVICE, CapabilityError, Selection, SelectionContext
from tasks import TASKS
from tasks.base import Capability, Labels, Task


def returns_k_samples_the_harness_accepts(
    strategy: StrategyLike, task: TaskLike = None, options: Options = None
) -> None:
    """For k = 1, 7, 25: exactly k new, distinct, unlabeled pool indices (int64), or k finite
    synthesized inputs with one target each, shaped like the pool's."""
    with _checking(strategy, task, options) as it:
        for k in (1, 7, 25):
            unit = it.round_one().unit()  # a selection is always followed by its labeling: a fresh unit per k
            ctx = unit.context(1)
            selection = unit.strategy.select(ctx, k)
            assert isinstance(selection, Selection), f"{it}, k={k}: select() returned a {type(selection).__name__}"
            try:
                unit.training.check(selection, k, str(it))  # the harness's own contract check
            except StrategyError as err:
                raise AssertionError(str(err)) from None
            if selection.indices is not None:
                assert selection.indices.dtype == np.int64, f"{it}, k={k}: indices are {selection.indices.dtype}"
                continue
            shapes = f"inputs {tuple(selection.inputs.shape)} and targets {tuple(selection.targets.shape)}"
            assert selection.inputs.shape == (k, *ctx.pool_x.shape[1:]), (
                f"{it}, k={k}: synthesized {shapes}, unlike the pool's inputs {tuple(ctx.pool_x.shape)}"
            )
            assert selection.targets.shape == (k, *ctx.train_y.shape[1:]), (
                f"{it}, k={k}: synthesized {shapes}, unlike the training set's targets {tuple(ctx.train_y.shape)}"
            )
            bad = int((~torch.isfinite(selection.inputs.float())).sum())
            assert bad == 0, f"{it}, k={k}: {bad} non-finite values in the synthesized inputs"


def is_reproducible_from_its_seed(strategy: StrategyLike, task: TaskLike = None, options: Options = None) -> None:
    """Two units built from the same seed (the second trains round 1 anew) select the same."""
    with _checking(strategy, task, options) as it:
        first, again = it.round_one().unit(), it.round_one().trained()
        a, b = (unit.strategy.select(unit.context(1), 10) for unit in (first, again))
        assert a.same_as(b), (
            f"{it}, k=10: two runs with the same seed selected {a.summary()} and {b.summary()}; {RNG_ADVICE}"
        )


def leaves_the_target_model_unchanged(strategy: StrategyLike, task: TaskLike = None, options: Options = None) -> None:
    """Selecting changes neither F's parameters and buffers nor its train/eval mode."""
    with _checking(strategy, task, options) as it:
        unit = it.round_one().unit()
        before = {k: v.clone() for k, v in unit.model.state_dict().items()}
        mode = unit.model.training
        unit.strategy.select(unit.context(1), 10)
        for key, value in unit.model.state_dict().items():
            assert torch.equal(value, before[key]), (
                f"{it}, k=10: selecting changed F's {key} (by up to {float((value - before[key]).abs().max()):g})"
            )
        assert unit.model.training == mode, f"{it}, k=10: F was in training={mode}, selecting left it in {not mode}"


def can_take_the_whole_remaining_pool(strategy: StrategyLike, task: TaskLike = None, options: Options = None) -> None:
    """A pool strategy asked for every unlabeled sample returns exactly those (synthesizing
    strategies pass: they have no pool to exhaust)."""
    with _checking(strategy, task, options) as it:
        probe = it.round_one().unit()
        if probe.strategy.select(probe.context(1), 1).indices is None:
            return
        unit = it.round_one().unit()
        ctx = unit.context(1)
        k = len(ctx.unlabeled)
        picks = unit.strategy.select(ctx, k).indices
        missing, extra = np.setdiff1d(ctx.unlabeled, picks), np.setdiff1d(picks, ctx.unlabeled)
        assert np.array_equal(np.sort(picks), ctx.unlabeled), (
            f"{it}, k={k} (the whole remaining pool): {len(picks)} indices, missing {missing[:8].tolist()}, "
            f"not unlabeled {extra[:8].tolist()}"
        )


def resumes_from_a_checkpoint(strategy: StrategyLike, task: TaskLike = None, options: Options = None) -> None:
    """A unit stopped after round 1 and restored from its checkpoint (through the bytes the
    harness writes) trains and selects exactly as one that never stopped: the strategy's
    ``state_dict`` holds everything it carries between rounds."""
    with _checking(strategy, task, options) as it:
        start = it.round_one()
        straight = start.trained()  # trained anew: it has what the strategy leaves out of its state_dict
        straight.propose(1, 5, initial=False)
        saved = to_bytes(straight.state_dict(1))

        def round_two(u: UnitState) -> tuple[float, Selection]:  # torch's global stream is part of the state
            return u.train_and_evaluate(2)[0].value, u.strategy.select(u.context(2), 5)

        value, a = round_two(straight)
        value_again, b = round_two(start.restored(saved))
        assert value == value_again, f"{it}: round 2 scores {value} straight through, {value_again} after a resume"
        if a.same_as(b):
            return
        c, d = (round_two(start.restored(saved))[1] for _ in range(2))
        assert c.same_as(d), (
            f"{it}, k=5: two units restored from one checkpoint selected {c.summary()} and {d.summary()}; {RNG_ADVICE}"
        )
        raise AssertionError(
            f"{it}, k=5: selected {a.summary()} straight through, {b.summary()} after a resume; what it carries "
            f"from round to round belongs in its state_dict (and load_state_dict)"
        )


def _bad_values(default: Any) -> list[Any]:
    """Values ``--option`` can give that an option with this default likely refuses."""
    if isinstance(default, bool) or not isinstance(default, (int, float, str)):
        return []
    return ["no-such-value", 1] if isinstance(default, str) else [-1, "not-a-number"]


def refuses_bad_options(strategy: StrategyLike, task: TaskLike = None, options: Options = None) -> None:
    """The harness's planning refuses (ConfigError, before any work) an option no constructor
    parameter takes and a value the constructor rejects; a wrong-typed or negative value the
    constructor accepts must then select (validate options in ``__init__``, not in ``select``)."""
    with _checking(strategy, task, options) as it:
        cls = it.strategy
        plan_run(it.config())  # the options as given are accepted

        def refused(extra: dict[str, Any], what: str) -> None:
            try:
                plan_run(it.config(options={**it.options, **extra}))
            except ConfigError:
                return
            raise AssertionError(f"{it}: the harness's planning accepted {what}")

        for key in ("no_such_option", f"{cls.name}.no_such_option"):
            refused({key: 1}, f"the unknown option {key}=1")
        given = strategy_options(cls, it.options)
        for name, param in inspect.signature(cls).parameters.items():
            for bad in _bad_values(param.default):
                try:
                    cls(**{**given, name: bad})
                except (TypeError, ValueError):
                    refused({f"{cls.name}.{name}": bad}, f"{name}={bad!r}, which its constructor rejects")
                    continue
                unit = it.round_one().unit()
                odd = cls(**{**given, name: bad})
                odd.load_state_dict(unit.strategy.state_dict())  # what it carries from round 1
                try:
                    odd.select(unit.context(1), 5)
                except Exception as err:
                    raise AssertionError(
                        f"{it}: its constructor accepts {name}={bad!r}, but select (k=5) then fails "
                        f"({type(err).__name__}: {err}); refuse the value in __init__"
                    ) from err


def _declared_only(unit: UnitState, declared: frozenset[str]) -> SelectionContext:
    """The unit's context after round 1 offering only the built-in capabilities in ``declared``:
    the task lists no others (so the context's scoring that needs them raises
    :class:`CapabilityError`), and the generative model and the labeler are absent unless
    declared (as in a run without a strategy that declares them)."""
    ctx = unit.context(1)
    task = copy.copy(ctx.task)
    task.capabilities = frozenset(ctx.task.capabilities) & declared
    changes: dict[str, Any] = {"task": task}
    if Capability.GENERATIVE not in declared:
        changes["generative"] = None
    if Capability.SYNTHETIC_LABELS not in declared:

        def label_inputs(x: Tensor) -> Labels:
            raise CapabilityError(Capability.SYNTHETIC_LABELS, "context.label_inputs", task.name)

        changes["label_inputs"] = label_inputs
    return dataclasses.replace(ctx, **changes)


def _without(base: type[Task], capability: str) -> type[Task]:
    """A variant of task class ``base`` that lacks ``capability`` (under a name of its own)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        base.__init__(self, *args, **kwargs)
        self.capabilities = frozenset(self.capabilities) - {capability}

    return type(
        f"{base.__name__}Without",
        (base,),
        {"name": f"{base.name}-without-{capability}", "__init__": __init__, "__module__": __name__},
    )


def requires_is_honest(strategy: StrategyLike, task: TaskLike = None, options: Options = None) -> None:
    """For each capability the strategy needs with its options (``requirements``, a part of
    ``requires``), the task without it is refused by the strategy (``refuses``) and by the
    harness's planning (ConfigError); and the strategy selects with only those (the other
    built-in capabilities withheld: F's embeddings, its class probabilities, dropout, the
    generative model, the labeler of synthetic inputs)."""
    with _checking(strategy, task, options) as it:
        cls = it.strategy
        plan_run(it.config())
        given = strategy_options(cls, it.options)
        needed = frozenset(cls.requirements(given))
        extra = sorted(needed - set(cls.requires))
        assert not extra, f"{it}: requirements() names {extra}, which its requires does not declare"
        for capability in sorted(needed):
            variant = _without(TASKS.get(it.task), capability)
            with registered(variant):
                assert cls.refuses(create_task(variant.name), given) is not None, (
                    f"{it}: requires {capability!r}, yet its refuses() accepts {variant.name!r}, which lacks it"
                )
                try:
                    plan_run(it.config(task=variant.name))
                except ConfigError:
                    continue
                raise AssertionError(
                    f"{it}: requires {capability!r}, yet the harness's planning accepts "
                    f"task {variant.name!r}, which lacks it"
                )
        unit = it.round_one().unit()
        try:
            unit.strategy.select(_declared_only(unit, needed), 5)
        except CapabilityError as err:
            raise AssertionError(
                f"{it}, k=5: with only the capabilities it declares ({sorted(needed)}; "
                f"the others withheld) it failed: {err}"
            ) from None
        except Exception as err:
            raise AssertionError(
                f"{it}, k=5: selecting with only the declared capabilities {sorted(needed)} "
                f"failed ({type(err).__name__}: {err}); does it use one it does not declare?"
            ) from err


def state_dict_round_trips(strategy: StrategyLike, task: TaskLike = None, options: Options = None) -> None:
    """After a round with a selection, a fresh instance given ``load_state_dict(state_dict())``,
    directly and through a checkpoint's bytes (``torch.load(weights_only=True)``), selects as the
    original does."""
    with _checking(strategy, task, options) as it:
        start = it.round_one()
        unit = start.unit()
        unit.propose(1, 5, initial=False)
        unit.train_and_evaluate(2)
        state = unit.strategy.state_dict()
        through_bytes = _loaded(to_bytes(state), str(it))
        copies = {
            "load_state_dict(state_dict())": copy.deepcopy(state),
            "it through to_bytes/from_bytes": through_bytes,
        }
        rng, torch_rng = unit.rng.bit_generator.state, torch.get_rng_state()
        a = unit.strategy.select(unit.context(2), 7)
        for how, saved in copies.items():
            fresh = start.run.plan.make_strategy(it.strategy)
            fresh.load_state_dict({k: v.to(unit.plan.device) if isinstance(v, Tensor) else v for k, v in saved.items()})
            unit.rng.bit_generator.state = rng
            torch.set_rng_state(torch_rng)
            b = fresh.select(unit.context(2), 7)
            assert a.same_as(b), (
                f"{it}, k=7: the original selected {a.summary()}, a fresh instance given {how} "
                f"{b.summary()} (its state_dict has {sorted(state) or 'nothing'})"
            )


StrategyCheck = Callable[..., None]
#: Every strategy check by name: ``check(strategy, task=None, options=None)``; parametrize a test over them.
STRATEGY_CHECKS: dict[str, StrategyCheck] = {
    check.__name__: check
    for check in (
        returns_k_samples_the_harness_accepts,
        is_reproducible_from_its_seed,
        leaves_the_target_model_unchanged,
        can_take_the_whole_remaining_pool,
        resumes_from_a_checkpoint,
        refuses_bad_options,
        requires_is_honest,
        state_dict_round_trips,
    )
}


def check_strategy(strategy: StrategyLike, task: TaskLike = None, options: Options = None) -> None:
    """Run every strategy check on ``strategy`` (a registered name or a Strategy class) with
    ``options``, on ``task`` (a registered name or a Task class; default :class:`Blobs`), all from
    one round-1 state. An AssertionError names the strategy, the task and what broke."""
    for check in STRATEGY_CHECKS.values():
        check(strategy, task, options)
