"""The generic labeler machinery (labelers/batch.py), through a labeler written on it in a few lines."""

from __future__ import annotations

import multiprocessing

import numpy as np
import pytest
from scipy import ndimage

from labelers import LabelError
from labelers.batch import BatchLabeler

#: Masks solved in this process by DistanceLabeler, in order.
SOLVED: list[np.ndarray] = []


class DistanceLabeler(BatchLabeler):
    """Each mask pixel's distance (px) to the nearest pixel outside the mask, holes filled first."""

    description = "distance labels"
    masks_per_worker_min = 1  # cheap to solve, but the tests want worker processes

    def __init__(self, metric: str = "euclidean", cache=None) -> None:
        super().__init__(cache)
        self.metric = metric

    def settings(self) -> dict:
        return {"labeler": "distance", "metric": self.metric}

    def prepare(self, mask: np.ndarray) -> np.ndarray:
        mask = super().prepare(mask)
        if not mask.any():
            raise LabelError("empty mask")
        return ndimage.binary_fill_holes(mask)

    def solve(self, mask: np.ndarray) -> np.ndarray:
        SOLVED.append(mask)
        if mask.all():
            raise LabelError("no pixel outside the mask")
        if self.metric == "taxicab":
            return ndimage.distance_transform_cdt(mask, metric="taxicab").astype(np.float32)
        return ndimage.distance_transform_edt(mask).astype(np.float32)


def disk(radius: float, size: int = 16) -> np.ndarray:
    rows, cols = np.mgrid[:size, :size] + 0.5
    return np.hypot(rows - size / 2, cols - size / 2) <= radius


@pytest.fixture(autouse=True)
def solved():
    SOLVED.clear()
    yield SOLVED
    SOLVED.clear()


def batch() -> np.ndarray:
    holed = disk(6)
    holed[8, 8] = False
    full = np.ones((16, 16), bool)
    return np.stack([disk(5), np.zeros((16, 16)), disk(5).astype(np.uint8) * 7, full, holed])


def test_label_batch_cleans_dedups_and_reports_errors(solved):
    masks = batch()
    result = DistanceLabeler().label_batch(masks, workers=1, progress=False)
    assert result.labels.shape == masks.shape and result.labels.dtype == np.float32
    assert result.ok.tolist() == [True, False, True, False, True]
    assert result.errors == {1: "empty mask", 3: "no pixel outside the mask"}
    assert len(solved) == 3  # the copy of mask 0 is not solved again, the empty mask never reaches solve
    assert np.array_equal(result.labels[0], ndimage.distance_transform_edt(disk(5)).astype(np.float32))
    assert np.array_equal(result.labels[2], result.labels[0])
    assert np.array_equal(result.labels[4], ndimage.distance_transform_edt(disk(6)).astype(np.float32))
    assert (result.labels[~result.ok] == 0).all()
    # The masks labeled: cleaned where cleaning worked (the hole is filled), raw where it failed.
    assert np.array_equal(result.masks[4], disk(6)) and np.array_equal(result.masks[3], masks[3])
    assert not result.masks[1].any()


def test_cache_hits_make_no_solves(tmp_path, solved):
    path = tmp_path / "labels.sqlite"
    masks = batch()
    first = DistanceLabeler(cache=path).label_batch(masks, workers=1, progress=False)
    assert len(solved) == 3 and len(DistanceLabeler(cache=path).cache) == 4  # errors are cached too
    second = DistanceLabeler(cache=path).label_batch(masks, workers=1, progress=False)
    assert len(solved) == 3
    assert np.array_equal(first.labels, second.labels) and first.errors == second.errors
    assert np.array_equal(first.masks, second.masks)
    assert np.array_equal(DistanceLabeler(cache=path).label(masks[4]), first.labels[4])
    with pytest.raises(LabelError, match="no pixel outside"):
        DistanceLabeler(cache=path).label(masks[3])
    assert len(solved) == 3
    # Other settings, other keys.
    taxicab = DistanceLabeler("taxicab", cache=path).label(masks[0])
    assert len(solved) == 4 and not np.array_equal(taxicab, first.labels[0])


def test_worker_processes_give_the_in_process_result():
    masks = np.concatenate([batch(), np.stack([disk(r) for r in (3, 4, 6, 7)])])
    serial = DistanceLabeler().label_batch(masks, workers=1, progress=False)
    parallel = DistanceLabeler().label_batch(masks, workers=2, progress=False)
    assert np.array_equal(serial.labels, parallel.labels) and np.array_equal(serial.ok, parallel.ok)
    assert serial.errors == parallel.errors and np.array_equal(serial.masks, parallel.masks)
    assert multiprocessing.active_children() == []


def test_inputs_are_validated():
    with pytest.raises(ValueError, match=r"\[N, H, W\]"):
        DistanceLabeler().label_batch(disk(5))
    with pytest.raises(LabelError, match="2-D"):
        DistanceLabeler().label(batch())
