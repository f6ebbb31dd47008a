"""The contract every strategy and task must meet, shipped so that a plug-in's own tests run it.

After scikit-activeml's template suites. Each check drives the harness's own code (the plan, the
unit of work, the selection context, the checkpoint), so a plug-in that passes runs in
``python -m bench run``::

    from bench.testing import STRATEGY_CHECKS, check_strategy, check_task

    @pytest.mark.parametrize("check", STRATEGY_CHECKS.values(), ids=STRATEGY_CHECKS.keys())
    def test_bald_meets_the_strategy_contract(check):
        check("bald")                        # a registered name, on the synthetic task Blobs
        check(BALD, options={"passes": 3})   # a class (registered for the check) with its options
        check("bald", task="digits")         # on your own task: a registered name or a Task class

    def test_digits_meets_the_task_contract():
        check_task("digits")                 # a registered name, a Task class or an instance

``check_strategy(strategy, task=None, options=None)`` and ``check_task(task)`` run every check
at once. ``options`` are what ``--option KEY=VALUE`` gives (``{"passes": 3}`` or
``{"bald.passes": 3}``); the harness's planning applies them, as in a run. Tasks read their data
from :func:`data_root` (``$BENCH_DATA``, as ``run`` does); missing data is an error, never a
silent skip. Without a ``task``, strategy checks run on :class:`Blobs`, a synthetic task with
every built-in capability that trains in milliseconds (``with registered(Blobs):`` registers it
for a block, as the checks do).

The plan, the data, the generative model and a unit's state after round 1 are built once per
(strategy, task, options, seed) and kept in a small cache, so the checks of one set share them;
each check starts from a fresh unit restored from that state's checkpoint, as a resumed run does.
"""

from bench.testing.blobs import Blobs, DropoutMLP
from bench.testing.harness import data_root, registered, trained_context
from bench.testing.strategy_checks import (
    STRATEGY_CHECKS,
    can_take_the_whole_remaining_pool,
    check_strategy,
    is_reproducible_from_its_seed,
    leaves_the_target_model_unchanged,
    refuses_bad_options,
    requires_is_honest,
    resumes_from_a_checkpoint,
    returns_k_samples_the_harness_accepts,
    state_dict_round_trips,
)
from bench.testing.task_checks import (
    TASK_CHECKS,
    augments_reproducibly,
    check_task,
    declares_what_the_harness_needs,
    labels_synthetic_inputs,
    loads_tensors_with_matching_targets,
    model_loss_scores_and_embeddings_fit,
)

__all__ = [
    "Blobs",
    "DropoutMLP",
    "STRATEGY_CHECKS",
    "TASK_CHECKS",
    "check_strategy",
    "check_task",
    "data_root",
    "registered",
    "trained_context",
    # the strategy checks
    "returns_k_samples_the_harness_accepts",
    "is_reproducible_from_its_seed",
    "leaves_the_target_model_unchanged",
    "can_take_the_whole_remaining_pool",
    "resumes_from_a_checkpoint",
    "refuses_bad_options",
    "requires_is_honest",
    "state_dict_round_trips",
    # the task checks
    "declares_what_the_harness_needs",
    "loads_tensors_with_matching_targets",
    "model_loss_scores_and_embeddings_fit",
    "augments_reproducibly",
    "labels_synthetic_inputs",
]
