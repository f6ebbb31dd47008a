"""Class-imbalanced pools (``--imbalance R``): a seeded long-tailed subset of a classification pool.

The profile is that of the long-tailed CIFAR of Cao et al. 2019 ("Learning Imbalanced Datasets with
Label-Distribution-Aware Margin Loss", NeurIPS 2019, LDAM): the C classes present in the pool, put in
a seeded random order, the class at position c (c = 0..C-1) keeps

    n_c = max(1, floor(n_max * R ** (-c / (C - 1))))

samples, so the head class keeps n_max, the tail class n_max / R, and the counts fall geometrically
between them. Here n_max is the *smallest* class count in the pool, so that every class can fill its
quota and the profile is exact whatever the pool's own balance (MNIST's classes hold 5,421 to 6,742
samples: n_max is 5,421). R = 1 keeps n_max of every class: a balanced pool.

The order of the classes and the samples each class keeps are drawn from a random stream of their
own (:data:`IMBALANCE_STREAM`, seeded by the run's seed), so every strategy and every repeat of a
run sees the same pool, as with ``--subset``; the test set is not touched (balanced and whole).
"""

from __future__ import annotations

import numpy as np
from torch import Tensor

#: Tells the long-tailed draw's random stream from the run's others (seeded by the run's seed alone).
IMBALANCE_STREAM = 0x696D62  # "imb"

#: Added before rounding down, so that a quota the formula makes whole (100 * 8 ** (-1/3) = 50) is not
#: lost to floating point (49.99999999999999).
TOLERANCE = 1e-9


def long_tailed_counts(n_max: int, ratio: float, classes: int) -> np.ndarray:
    """The samples kept by the class at each position c = 0..``classes``-1 (int64 [classes]):
    ``max(1, floor(n_max * ratio ** (-c / (classes - 1))))``; one class keeps ``n_max``."""
    if classes == 1:
        return np.array([n_max], dtype=np.int64)
    exponents = -np.arange(classes) / (classes - 1)
    counts = np.floor(n_max * np.power(float(ratio), exponents) + TOLERANCE).astype(np.int64)
    return np.maximum(counts, 1)


def long_tailed_indices(labels: Tensor | np.ndarray, ratio: float, seed: int) -> np.ndarray:
    """The pool indices a pool with class labels ``labels`` [N] keeps under ``--imbalance ratio``
    with run seed ``seed``: ascending, int64. The classes present are put in a seeded random
    order and the class at position c keeps :func:`long_tailed_counts`' c-th count of its
    samples, chosen at random (the same stream), n_max being the smallest class count."""
    y = labels.detach().cpu().numpy() if isinstance(labels, Tensor) else np.asarray(labels)
    classes, of_class, counts = np.unique(y, return_inverse=True, return_counts=True)
    rng = np.random.default_rng([seed, IMBALANCE_STREAM])
    order = rng.permutation(len(classes))  # order[c]: the class (index into classes) at position c
    quota = np.empty(len(classes), dtype=np.int64)
    quota[order] = long_tailed_counts(int(counts.min()), ratio, len(classes))
    # a random rank of each sample within its class: sort by (class, random key)
    by_class = np.lexsort((rng.random(len(y)), of_class))
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    rank = np.arange(len(y)) - starts[of_class[by_class]]
    kept = by_class[rank < quota[of_class[by_class]]]
    return np.sort(kept).astype(np.int64)


def class_counts(labels: Tensor | np.ndarray) -> dict[str, int]:
    """Samples per class of ``labels``, as the manifest records them (``{"0": 5421, ...}``)."""
    y = labels.detach().cpu().numpy() if isinstance(labels, Tensor) else np.asarray(labels)
    classes, counts = np.unique(y, return_counts=True)
    return {str(int(c)): int(n) for c, n in zip(classes, counts)}
