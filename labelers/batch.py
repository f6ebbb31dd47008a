"""The generic part of a mask-to-array labeler: caching, de-duplication and parallel batches.

A :class:`BatchLabeler` subclass says what makes a label (:meth:`~BatchLabeler.settings`), how to
clean a mask (:meth:`~BatchLabeler.prepare`) and how to label a cleaned one
(:meth:`~BatchLabeler.solve`); this module does the rest for it: input validation, an on-disk
:class:`~labelers.cache.LabelCache` keyed by the mask and the settings, solving identical masks of a
batch once, a pool of worker processes (one BLAS thread each) with a progress bar, and failures
reported per mask in :class:`BatchLabels` instead of raised.

Masks are validated before the cache is consulted: a batch whose dtype is not bool, integer or
float (strings, objects, complex numbers) is refused with a ValueError; a mask with NaN or infinite
values, or one larger than the labeler's ``max_pixels``, is refused with a LabelError (reported per
mask by :meth:`~BatchLabeler.label_batch`). Finite values keep their meaning: nonzero = in.

A minimal labeler::

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
import numbers
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

__all__ = ["MAX_PIXELS", "BatchLabeler", "BatchLabels"]

#: label_batch writes new results to the cache in groups of this many.
_CACHE_FLUSH = 64

#: The default ``max_pixels`` of a labeler: masks of more pixels (height x width) are refused.
#: 256 x 256, 16 times an IVUS mask (64 x 64); a 512 x 512 mask takes the FEM labeler ~30 s.
MAX_PIXELS = 256 * 256

#: dtype kinds a mask may have: bool, signed and unsigned integers, floats.
_MASK_KINDS = "biuf"

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
    #: Masks of more pixels than this are refused (None: no limit); set by ``__init__``.
    max_pixels: int | None = MAX_PIXELS

    def __init__(
        self, cache: LabelCache | str | os.PathLike | None = None, max_pixels: int | None = MAX_PIXELS
    ) -> None:
        """``cache``: a LabelCache, the path of its SQLite file, or None (no cache); an unusable
        cache file is dealt with, with a warning, never raised (see :mod:`labelers.cache`).
        ``max_pixels``: masks of more pixels (height x width) are refused with a LabelError before
        any work, since labeling time grows steeply with the size; None: no limit."""
        if max_pixels is not None and (not _is_integer(max_pixels) or max_pixels < 1):
            raise ValueError(f"max_pixels must be an integer >= 1 or None (no limit), got {max_pixels!r}")
        self.max_pixels = None if max_pixels is None else int(max_pixels)
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
        """One mask ``[H, W]`` -> its label ``[H, W]`` (from the cache if there); raises LabelError,
        also for a mask of the wrong dtype, with NaN or infinite values, or over ``max_pixels``."""
        mask = np.asarray(mask)
        try:
            _check_dtype(mask)
        except ValueError as error:
            raise LabelError(str(error)) from None
        if mask.ndim != 2:
            raise LabelError(f"mask must be 2-D, got shape {mask.shape}")
        refused = self._refusals(mask[None])
        if refused:
            raise LabelError(refused[0])
        key = None if self.cache is None else self.cache.key(mask, self.settings())
        result = None if key is None else self.cache.get(key)
        if result is None:
            result = _prepare_and_solve(self, mask)[1]
            if key is not None:
                self.cache.put(key, result)
        if isinstance(result, LabelError):
            raise result
        return result

    def label_batch(self, masks: np.ndarray, workers: int | None = None, progress: bool = True) -> BatchLabels:
        """Label masks ``[N, H, W]``, cached ones from the cache and the rest in worker processes.

        ``workers``: the most worker processes to start (an integer >= 1); ``None``: one per
        available core; ``1``: none, all masks are solved in this process. Fewer are started for a
        small batch (one per ``masks_per_worker_min`` masks to solve), never more; each runs one
        BLAS/OpenMP thread, and this process solves with one BLAS thread. ``progress``: show a
        progress bar (on stderr, only when a mask needs solving); ``False`` never shows one.

        New results are cached as they arrive, identical masks are solved once, and a mask that
        cannot be labeled (including one with NaN or infinite values, or one over ``max_pixels``)
        is reported in ``errors`` instead of raising. Raises ValueError for a batch that is not
        ``[N, H, W]``, whose dtype is not bool, integer or float, or for a bad ``workers``."""
        masks = np.asarray(masks)
        if masks.ndim != 3:
            raise ValueError(f"masks must be [N, H, W], got shape {masks.shape}")
        _check_dtype(masks)
        if workers is not None and (not _is_integer(workers) or workers < 1):
            raise ValueError(f"workers must be an integer >= 1 or None (one per core), got {workers!r}")
        n = len(masks)
        refused = self._refusals(masks)
        settings = self.settings()
        keys = [None if i in refused else LabelCache.key(mask, settings) for i, mask in enumerate(masks)]
        wanted = [key for key in keys if key is not None]
        results: dict[str, np.ndarray | LabelError] = {}
        if self.cache is not None:
            results = self.cache.get_many(wanted)
        copies = Counter(wanted)
        first_index: dict[str, int] = {}
        for index, key in enumerate(keys):
            if key is not None and key not in results:
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
            if key is None:
                errors[index] = refused[index]
                cleaned[index] = masks[index] != 0
                continue
            result = results[key]
            if isinstance(result, LabelError):
                errors[index] = str(result)
            else:
                labels[index], ok[index] = result, True
            cleaned[index] = solved[key] if key in solved else self._prepared_or_raw(masks[index])
        return self.batch_type(labels, ok, errors, cleaned)

    def _refusals(self, masks: np.ndarray) -> dict[int, str]:
        """Why masks ``[N, H, W]`` (of a valid dtype) are refused before any work, by index: over
        ``max_pixels`` (then all of them), or holding NaN or infinite values."""
        n, height, width = masks.shape
        if self.max_pixels is not None and height * width > self.max_pixels:
            message = (
                f"mask of {height}x{width} = {height * width} pixels is over this labeler's limit of "
                f"max_pixels={self.max_pixels}: labeling time grows steeply with the mask size; "
                "pass a larger max_pixels (or None) to the labeler to label it anyway"
            )
            return dict.fromkeys(range(n), message)
        if masks.dtype.kind != "f":
            return {}
        bad = np.count_nonzero(~np.isfinite(masks.reshape(n, -1)), axis=1)
        return {
            int(index): f"mask has {bad[index]} NaN or infinite pixel values: a mask must be finite (nonzero = in)"
            for index in np.flatnonzero(bad)
        }

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


def _is_integer(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def _check_dtype(masks: np.ndarray) -> None:
    """Refuse (ValueError) masks that are not bool, integer or float: a string or object array has
    no "nonzero = in" meaning to keep."""
    if masks.dtype.kind not in _MASK_KINDS:
        raise ValueError(f"masks must hold bool, integer or float values (nonzero = in), got dtype {masks.dtype}")


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
