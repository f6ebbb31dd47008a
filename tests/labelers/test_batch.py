"""The generic labeler machinery (labelers/batch.py), through a labeler written on it in a few lines."""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pytest
from scipy import ndimage

from labelers import LabelError
from labelers import batch as batch_module
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


def test_nan_string_and_object_masks_are_refused(tmp_path, solved):
    labeler = DistanceLabeler(cache=tmp_path / "labels.sqlite")
    good = disk(5).astype(np.float32)
    labeler.label(good)
    nan, inf = good.copy(), good.copy()
    nan[8, 8] = np.nan  # inside the disk: nonzero like the wall pixel it replaces
    inf[0, 0] = -np.inf
    result = labeler.label_batch(np.stack([good, nan, inf, good * 0.5]), workers=1, progress=False)
    assert result.ok.tolist() == [True, False, False, True]  # finite values: nonzero = in
    assert "1 NaN or infinite" in result.errors[1] and "1 NaN or infinite" in result.errors[2]
    assert (result.labels[1:3] == 0).all() and len(solved) == 1  # not served from the cache either
    assert len(labeler.cache) == 1  # and not cached
    with pytest.raises(LabelError, match="NaN or infinite"):
        labeler.label(nan)
    strings = np.where(disk(5), "wall", "").astype(str)
    objects = disk(5).astype(object)
    for masks in (strings, objects, disk(5) + 0j):
        with pytest.raises(ValueError, match="must hold bool, integer or float values.*got dtype"):
            labeler.label_batch(masks[None], workers=1, progress=False)
        with pytest.raises(LabelError, match="must hold bool, integer or float values"):
            labeler.label(masks)
    assert len(solved) == 1


def test_oversized_masks_are_refused(solved):
    big = disk(140, size=300)
    with pytest.raises(LabelError, match=r"300x300 = 90000 pixels is over .*max_pixels=65536"):
        DistanceLabeler().label(big)
    result = DistanceLabeler().label_batch(np.stack([big, big]), workers=1, progress=False)
    assert not result.ok.any() and "max_pixels=65536" in result.errors[1] and not solved
    small = DistanceLabeler()
    small.max_pixels = 100
    with pytest.raises(LabelError, match="max_pixels=100"):
        small.label(disk(5))
    unlimited = DistanceLabeler()
    unlimited.max_pixels = None
    assert unlimited.label_batch(big[None], workers=1, progress=False).ok.all()
    for bad in (0, -5, 2.5, True, "1000"):
        with pytest.raises(ValueError, match="max_pixels must be an integer >= 1 or None"):
            BatchLabeler(max_pixels=bad)


class CountingPool(ProcessPoolExecutor):
    """A ProcessPoolExecutor that records its max_workers and the processes it started."""

    created: list[int] = []
    started: list[int] = []

    def __init__(self, max_workers=None, **kwargs):
        CountingPool.created.append(max_workers)
        super().__init__(max_workers=max_workers, **kwargs)

    def shutdown(self, *args, **kwargs):
        CountingPool.started.append(len(self._processes or {}))
        super().shutdown(*args, **kwargs)


def test_workers_bound_the_worker_processes(monkeypatch):
    monkeypatch.setattr(batch_module, "ProcessPoolExecutor", CountingPool)
    monkeypatch.setattr(batch_module, "_available_cores", lambda: 3)
    CountingPool.created, CountingPool.started = [], []
    masks = np.stack([disk(r) for r in np.linspace(2, 7, 12)])
    expected = DistanceLabeler().label_batch(masks, workers=1, progress=False).labels
    assert CountingPool.created == []  # workers=1: no worker process
    for workers, bound in ((2, 2), (None, 3)):
        result = DistanceLabeler().label_batch(masks, workers=workers, progress=False)
        assert np.array_equal(result.labels, expected)
        assert CountingPool.created[-1] == bound and 1 <= CountingPool.started[-1] <= bound
    assert multiprocessing.active_children() == []
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(ValueError, match="workers must be an integer >= 1 or None"):
            DistanceLabeler().label_batch(masks, workers=bad, progress=False)


def test_progress_false_shows_no_bar(capfd):
    masks = np.stack([disk(r) for r in (3, 4, 5, 6)])
    for workers in (1, 2):
        DistanceLabeler().label_batch(masks, workers=workers, progress=False)
        assert capfd.readouterr() == ("", "")
    DistanceLabeler().label_batch(masks, workers=1, progress=True)
    assert "distance labels" in capfd.readouterr().err  # what a bar looks like
