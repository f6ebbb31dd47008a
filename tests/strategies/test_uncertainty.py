"""Uncertainty sampling: modAL's measures, the ranking, and the strategy's refusals."""

from __future__ import annotations

import numpy as np
import pytest
from modAL.uncertainty import classifier_entropy, classifier_margin, classifier_uncertainty
from sklearn.linear_model import LogisticRegression

from bench.run.config import ConfigError, RunConfig
from bench.run.plan import plan_run
from bench.testing import trained_context
from strategies.uncertainty import UncertaintySampling, uncertainty_scores


@pytest.fixture(scope="module")
def fitted():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 3))
    y = (x[:, 0] + 0.5 * rng.normal(size=200) > 0).astype(int) + (x[:, 1] > 1)
    return LogisticRegression(max_iter=500).fit(x, y), x


def test_scores_agree_with_modal_on_the_same_probabilities(fitted):
    clf, x = fitted
    probs = clf.predict_proba(x)
    np.testing.assert_allclose(uncertainty_scores(probs, "entropy"), classifier_entropy(clf, x))
    np.testing.assert_allclose(uncertainty_scores(probs, "least-confidence"), classifier_uncertainty(clf, x))
    # modAL's margin is p_top1 - p_top2 (small = uncertain); our score is its negative
    np.testing.assert_allclose(uncertainty_scores(probs, "margin"), -classifier_margin(clf, x))


def test_higher_score_means_more_uncertain():
    probs = np.array([[0.98, 0.01, 0.01], [0.4, 0.35, 0.25], [0.6, 0.3, 0.1]])
    for measure in ("entropy", "least-confidence", "margin"):
        assert list(np.argsort(-uncertainty_scores(probs, measure))) == [1, 2, 0], measure


def test_unknown_measure_and_bad_shape_are_refused():
    with pytest.raises(ValueError, match="unknown uncertainty measure 'gini'"):
        uncertainty_scores(np.ones((2, 2)) / 2, "gini")
    with pytest.raises(ValueError, match="2-D array"):
        uncertainty_scores(np.ones(3), "entropy")


def test_selects_the_top_k_unlabeled_by_score_ties_to_lower_index():
    ctx = trained_context()
    picks = UncertaintySampling("margin").select(ctx, 15).indices
    unlabeled = ctx.unlabeled
    scores = uncertainty_scores(ctx.pool_probabilities[unlabeled].numpy(), "margin")
    expected = unlabeled[np.argsort(-scores, kind="stable")[:15]]
    np.testing.assert_array_equal(picks, expected)
    assert scores[np.isin(unlabeled, picks)].min() >= np.delete(scores, np.flatnonzero(np.isin(unlabeled, picks))).max()


def test_a_bad_measure_is_a_config_error_before_any_work():
    with pytest.raises(ConfigError, match="unknown uncertainty measure"):
        plan_run(RunConfig(task="mnist", strategies=["uncertainty"], strategy_options={"measure": "gini"}))
