"""The generic part of a mask-to-array labeler: caching, de-duplication and parallel batches.

A :class:`BatchLabeler` subclass says what makes a label (:meth:`~BatchLabeler.settings`), how to
clean a mask (:meth:`~BatchLabeler.prepare`) and how to label a cleaned one
(:meth:`~BatchLabeler.solve`); this module does the rest for it: input validation, an on-disk
:class:`~labelers.cache.LabelCache` keyed by the mask and the settings, solving identical masks of a
batch once, a pool of worker processes (one BLAS thread each) with a progress bar, and failures
reported per mask in :class:`BatchLabels` instead of raised. A minimal labeler::

    class DistanceLabeler(BatchLabeler):
        description = "distance labels"

        def settings(self) -> dict:
            return {"labeler": "distance", "version": "1"}

        def solve(self, mask: np.ndarray) -> np.ndarray:
            return ndimage.distance_transform_edt(mask).astype(np.float32)
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import os
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass

import numpy as np
from tqdm.auto import tqdm

from labelers.base import LabelError
from labelers.cache import LabelCache

try:
    import threadpoolctl
except ImportError:  # optional: only used to keep BLAS single-threaded
    threadpoolctl = None

__all__ = ["BatchLabeler", "BatchLabels"]

#: label_batch writes new results to the cache in groups of this many.
_CACHE_FLUSH = 64

_THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


@dataclass
class BatchLabels:
    """The result of :meth:`BatchLabeler.label_batch` for N masks of shape H x W."""

    labels: np.ndarray  #: [N, H, W] of the labeler's ``label_dtype``; zeros where failed
    ok: np.ndarray  #: bool [N]
    errors: dict[int, str]  #: index -> LabelError message for failed masks
    masks: np.ndarray  #: bool [N, H, W]: the cleaned masks labeled; the raw mask where cleaning failed


class BatchLabeler:
    """Base class of labelers that map a mask ``[H, W]`` (nonzero = in) to an array ``[H, W]``.

    Subclasses define :meth:`settings` and :meth:`solve`, and :meth:`prepare` if masks need
    cleaning; the instance must pickle (worker processes receive a copy), and :meth:`solve` must
    depend only on the cleaned mask and the settings, since its results are cached under them.
    """

    #: Progress bar title.
    description = "labels"
    #: dtype of the labels (the arrays :meth:`solve` returns).
    label_dtype = np.float32
    #: label_batch starts one worker process per this many masks to solve, at most: starting a
    #: process costs about as much as labeling this many masks, so small batches run in-process.
    masks_per_worker_min = 16
    #: The type label_batch returns (a subclass may add names for its labels).
    batch_type: type[BatchLabels] = BatchLabels

    def __init__(self, cache: LabelCache | str | os.PathLike | None = None) -> None:
        """``cache``: a LabelCache, the path of its SQLite file, or None (no cache)."""
        self.cache = cache if cache is None or isinstance(cache, LabelCache) else LabelCache(cache)

    def settings(self) -> dict:
        """Everything that changes a label, JSON-serialisable (part of the cache key)."""
        raise NotImplementedError

    def prepare(self, mask: np.ndarray) -> np.ndarray:
        """The cleaned bool mask ``[H, W]`` to label, or raise LabelError saying why it cannot be.

        The default only checks that the mask is 2-D and binarises it (nonzero = True)."""
        mask = np.asarray(mask)
        if mask.ndim != 2:
            raise LabelError(f"mask must be 2-D, got shape {mask.shape}")
        return mask != 0

    def solve(self, mask: np.ndarray) -> np.ndarray:
        """The label ``[H, W]`` of a cleaned mask (from :meth:`prepare`); raises LabelError."""
        raise NotImplementedError

    def label(self, mask: np.ndarray) -> np.ndarray:
        """One mask ``[H, W]`` -> its label ``[H, W]`` (from the cache if there); raises LabelError."""
        key = None if self.cache is None else self.cache.key(mask, self.settings())
        result = None if key is None else self.cache.get(key)
        if result is None:
            result = _prepare_and_solve(self, mask)[1]
            if key is not None:
                self.cache.put(key, result)
        if isinstance(result, LabelError):
            raise result
        return result

    def label_batch(
        self, masks: np.ndarray, workers: int | None = None, progress: bool = True
    ) -> BatchLabels:
        """Label masks ``[N, H, W]``, cached ones from the cache and the rest in parallel worker
        processes (``workers=None``: all cores; ``workers=1``: in this process). New results are
        cached as they arrive, identical masks are solved once, and a mask that cannot be labeled
        is reported in ``errors`` instead of raising. The progress bar shows only when a mask
        needs solving."""
        masks = np.asarray(masks)
        if masks.ndim != 3:
            raise ValueError(f"masks must be [N, H, W], got shape {masks.shape}")
        n = len(masks)
        settings = self.settings()
        keys = [LabelCache.key(mask, settings) for mask in masks]
        results: dict[str, np.ndarray | LabelError] = {} if self.cache is None else self.cache.get_many(keys)
        copies = Counter(keys)
        first_index: dict[str, int] = {}
        for index, key in enumerate(keys):
            if key not in results:
                first_index.setdefault(key, index)
        solved: dict[str, np.ndarray] = {}

        with tqdm(total=n, disable=not (progress and first_index), desc=self.description, unit="mask") as bar:
            bar.update(n - sum(copies[key] for key in first_index))
            unsaved = []
            for key, cleaned, result in self._solve(masks, list(first_index.items()), workers):
                results[key], solved[key] = result, cleaned
                unsaved.append((key, result))
                bar.update(copies[key])
                if self.cache is not None and len(unsaved) >= _CACHE_FLUSH:
                    self.cache.put_many(unsaved)
                    unsaved = []
            if self.cache is not None:
                self.cache.put_many(unsaved)

        labels = np.zeros(masks.shape, dtype=self.label_dtype)
        ok = np.zeros(n, dtype=bool)
        errors: dict[int, str] = {}
        cleaned = np.zeros(masks.shape, dtype=bool)
        for index, key in enumerate(keys):
            result = results[key]
            if isinstance(result, LabelError):
                errors[index] = str(result)
            else:
                labels[index], ok[index] = result, True
            cleaned[index] = solved[key] if key in solved else self._prepared_or_raw(masks[index])
        return self.batch_type(labels, ok, errors, cleaned)

    def _prepared_or_raw(self, mask: np.ndarray) -> np.ndarray:
        try:
            return self.prepare(mask)
        except LabelError:
            return np.asarray(mask) != 0

    def _solve(
        self, masks: np.ndarray, todo: list[tuple[str, int]], workers: int | None
    ) -> Iterator[tuple[str, np.ndarray, np.ndarray | LabelError]]:
        """Yield ``(key, cleaned mask, label or LabelError)`` for each ``(key, mask index)``."""
        workers = min(workers or _available_cores(), len(todo) // self.masks_per_worker_min)
        if workers <= 1:
            for key, index in todo:
                yield key, *_prepare_and_solve(self, masks[index])
            return
        pending = iter(todo)
        with ProcessPoolExecutor(max_workers=workers, initializer=_init_worker, initargs=(self,)) as pool:
            in_flight = {}
            try:
                # A few tasks per worker in flight: enough to keep them busy, without pickling
                # every mask up front.
                for key, index in itertools.islice(pending, 2 * workers):
                    in_flight[pool.submit(_label_task, masks[index] != 0)] = key
                while in_flight:
                    done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
                    for future in done:
                        key = in_flight.pop(future)
                        cleaned, result = future.result()
                        yield key, cleaned, LabelError(result) if isinstance(result, str) else result
                        for next_key, index in itertools.islice(pending, 1):
                            in_flight[pool.submit(_label_task, masks[index] != 0)] = next_key
            finally:
                for future in in_flight:
                    future.cancel()


def _prepare_and_solve(labeler: BatchLabeler, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray | LabelError]:
    """``(the cleaned mask labeled, its label or the LabelError)`` for one raw mask; the raw mask
    (as bool) stands in for the cleaned one where cleaning fails."""
    try:
        cleaned = labeler.prepare(mask)
    except LabelError as error:
        return np.asarray(mask) != 0, error
    try:
        with _one_blas_thread():
            return cleaned, labeler.solve(cleaned)
    except LabelError as error:
        return cleaned, error


#: The labeler of this worker process, set by the pool initializer.
_worker_labeler: BatchLabeler | None = None


def _init_worker(labeler: BatchLabeler) -> None:
    """Pool initializer: keep the labeler, and one BLAS/OpenMP thread (the pool supplies the
    parallelism)."""
    global _worker_labeler
    _worker_labeler = labeler
    os.environ.update({name: "1" for name in _THREAD_VARIABLES})
    if threadpoolctl is not None:
        threadpoolctl.threadpool_limits(1)


def _label_task(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray | str]:
    """Worker entry point; an error travels back as its message (small and always picklable)."""
    cleaned, result = _prepare_and_solve(_worker_labeler, mask)
    return cleaned, str(result) if isinstance(result, LabelError) else result


@functools.cache
def _thread_controller() -> threadpoolctl.ThreadpoolController:
    return threadpoolctl.ThreadpoolController()


def _one_blas_thread() -> contextlib.AbstractContextManager:
    """Run BLAS single-threaded: its threads only slow down small factorizations."""
    if threadpoolctl is None:
        return contextlib.nullcontext()
    return _thread_controller().limit(limits=1, user_api="blas")


def _available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1
