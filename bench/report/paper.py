"""The paper's Table 1 (Mo et al., "Efficient Deep Representation Learning by Adaptive Latent
Space Sampling", Table 1: performance over train-set sizes t = 1..10), for ``report --paper``.

The paper's rows come from its own implementation; its IVUS rows from its own (private) images,
labeling tool and units, so they are not comparable in value with this project's IVUS task.

The paper does not state how many labeled samples each round t had. ``PaperRows.n_labeled`` records
this project's reading of them, the built-in task's default protocol (``initial`` plus ``increment``
per round; see docs/reference-results.md), and a report shows the paper's values only beside the
rounds of a run with the same labeled-set size.
"""

from __future__ import annotations

from dataclasses import dataclass

CITATION = 'Mo et al., "Efficient Deep Representation Learning by Adaptive Latent Space Sampling", Table 1'


@dataclass(frozen=True)
class PaperRows:
    """The paper's Rand and Ours rows for one task, in the paper's units, per round t = 1..10."""

    metric: str  # as the paper states it
    rand: tuple[float, ...]
    ours: tuple[float, ...]
    ours_is: str  # which of this project's strategies "Ours" is
    n_labeled: tuple[int, ...]  # labeled samples at each t, as this project reads them (the paper states none)
    note: str = ""


TABLE_1 = {
    "mnist": PaperRows(
        "accuracy (%)",
        (91.0, 94.1, 95.6, 96.4, 96.9, 97.1, 97.2, 97.4, 97.7, 97.8),
        (91.2, 95.1, 96.2, 96.7, 97.2, 97.5, 97.6, 97.7, 97.8, 97.8),
        "snn",
        (500, 800, 1100, 1400, 1700, 2000, 2300, 2600, 2900, 3200),
    ),
    "cifar10": PaperRows(
        "accuracy (%)",
        (35.6, 40.4, 44.6, 51.4, 54.9, 54.3, 56.3, 56.5, 60.6, 60.5),
        (37.0, 50.0, 56.7, 58.0, 62.7, 64.2, 65.3, 66.5, 66.9, 66.9),
        "snn",
        (1000, 2000, 3000, 4000, 5000, 6000, 7000, 8000, 9000, 10000),
    ),
    "ivus": PaperRows(
        "MSE",
        (12.4, 12.1, 11.8, 11.3, 9.7, 7.5, 6.4, 6.2, 5.5, 5.6),
        (12.2, 11.7, 10.7, 9.4, 7.5, 6.7, 5.9, 5.8, 5.5, 5.2),
        "si",
        (50, 100, 150, 200, 250, 300, 350, 400, 450, 500),
        note="different data and units: the paper's private IVUS images and labeling tool",
    ),
}
