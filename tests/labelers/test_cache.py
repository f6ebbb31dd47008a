"""Specification of the SQLite label cache (labelers/cache.py) and its use by the FEM labeler."""

from __future__ import annotations

import multiprocessing
import pickle
import sqlite3

import numpy as np
import pytest

from labelers import LabelError
from labelers import fem
from labelers.cache import LabelCache
from labelers.fem import FEMLabeler

SETTINGS = {"material": "linear", "pressure_kpa": 16.0, "fem_version": "1.0"}


def ring(a: float = 10, b: float = 20, size: int = 64) -> np.ndarray:
    rows, cols = np.mgrid[:size, :size] + 0.5
    r = np.hypot(rows - size / 2, cols - size / 2)
    return (r >= a) & (r <= b)


def stress_map(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((64, 64), dtype=np.float32)


@pytest.fixture
def cache(tmp_path) -> LabelCache:
    with LabelCache(tmp_path / "nested" / "labels.sqlite") as opened:
        yield opened


@pytest.fixture
def solves(monkeypatch) -> list[int]:
    """Counts calls of the FEM solve in this process (label_batch with workers=1)."""
    calls = []
    solve = fem._label_one

    def counting(*args, **kwargs):
        calls.append(1)
        return solve(*args, **kwargs)

    monkeypatch.setattr(fem, "_label_one", counting)
    return calls


def tamper(path, key: str) -> None:
    """Flip a byte of a stored payload behind the cache's back."""
    with sqlite3.connect(path) as db:
        (payload,) = db.execute("SELECT payload FROM labels WHERE key = ?", (key,)).fetchone()
        broken = bytearray(payload)
        broken[len(broken) // 2] ^= 0xFF
        db.execute("UPDATE labels SET payload = ? WHERE key = ?", (bytes(broken), key))


# --------------------------------------------------------------------------------------------------
# LabelCache on its own
# --------------------------------------------------------------------------------------------------


def test_creates_parent_folders(cache, tmp_path):
    assert (tmp_path / "nested" / "labels.sqlite").exists()
    assert len(cache) == 0


def test_round_trip_of_arrays_and_errors(cache):
    stress = stress_map()
    cache.put("a", stress)
    cache.put("b", LabelError("mask has no enclosed lumen (open ring)"))
    got = cache.get("a")
    assert got.dtype == np.float32 and got.shape == (64, 64) and np.array_equal(got, stress)
    error = cache.get("b")
    assert isinstance(error, LabelError) and str(error) == "mask has no enclosed lumen (open ring)"
    assert cache.get("missing") is None
    assert len(cache) == 2


def test_put_replaces_an_entry(cache):
    cache.put("a", stress_map(0))
    cache.put("a", stress_map(1))
    assert np.array_equal(cache.get("a"), stress_map(1)) and len(cache) == 1


def test_many_at_once(cache):
    items = {f"k{i}": stress_map(i) for i in range(600)}  # more than one SELECT chunk
    cache.put_many(items)
    found = cache.get_many(list(items) + ["missing"])
    assert set(found) == set(items)
    assert all(np.array_equal(found[key], value) for key, value in items.items())


def test_key_depends_on_the_mask_and_the_settings():
    mask = ring()
    key = LabelCache.key(mask, SETTINGS)
    assert key == LabelCache.key(mask.astype(np.uint8) * 255, dict(reversed(SETTINGS.items())))
    assert key != LabelCache.key(mask, {**SETTINGS, "pressure_kpa": 12.0})
    assert key != LabelCache.key(ring(11), SETTINGS)
    assert key != LabelCache.key(mask[:, :63], SETTINGS)


def test_corrupt_entry_is_deleted_and_missed(cache):
    cache.put("a", stress_map())
    tamper(cache.path, "a")
    assert cache.get("a") is None
    assert len(cache) == 0


def test_entry_of_the_wrong_size_is_deleted_and_missed(cache):
    from labelers.cache import _checksum

    cache.put("a", stress_map())
    payload = b"\0" * 100  # a consistent checksum, but not 64 x 64 float32 values
    with sqlite3.connect(cache.path) as db:
        db.execute(
            "UPDATE labels SET payload = ?, checksum = ? WHERE key = 'a'",
            (payload, _checksum("array", "<f4", "[64, 64]", payload)),
        )
    assert cache.get("a") is None
    assert len(cache) == 0


def test_pickles_by_path(cache):
    cache.put("a", stress_map())
    copy = pickle.loads(pickle.dumps(cache))
    assert np.array_equal(copy.get("a"), stress_map())


def _write_entries(path, prefix: str, count: int) -> None:
    cache = LabelCache(path)
    for i in range(count):
        cache.put(f"{prefix}{i}", stress_map(i))
        cache.get_many([f"{prefix}{i}", f"other{i}"])


def test_concurrent_processes_can_write(tmp_path):
    path = tmp_path / "shared.sqlite"
    LabelCache(path)
    context = multiprocessing.get_context("spawn")
    writers = [context.Process(target=_write_entries, args=(path, prefix, 100)) for prefix in "ab"]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join(timeout=120)
    assert [writer.exitcode for writer in writers] == [0, 0]
    assert len(LabelCache(path)) == 200


# --------------------------------------------------------------------------------------------------
# The cache inside FEMLabeler
# --------------------------------------------------------------------------------------------------


def test_label_solves_each_mask_once(tmp_path, solves):
    labeler = FEMLabeler("linear", cache=tmp_path / "labels.sqlite")
    first = labeler.label(ring())
    second = labeler.label(ring())
    assert len(solves) == 1 and np.array_equal(first, second)


def test_failures_are_cached_too(tmp_path, solves):
    path = tmp_path / "labels.sqlite"
    labeler = FEMLabeler("mooney-rivlin", cache=path, max_newton_iter=1, max_step_cuts=0)
    for _ in range(2):
        with pytest.raises(LabelError, match="did not converge"):
            labeler.label(ring())
    assert len(solves) == 1


def test_changed_settings_miss(tmp_path, solves):
    path = tmp_path / "labels.sqlite"
    FEMLabeler("linear", cache=path).label(ring())
    FEMLabeler("linear", pressure_kpa=12.0, cache=path).label(ring())
    assert len(solves) == 2


def test_corrupt_entry_is_recomputed(tmp_path, solves):
    cache = LabelCache(tmp_path / "labels.sqlite")
    labeler = FEMLabeler("linear", cache=cache)
    expected = labeler.label(ring())
    tamper(cache.path, cache.key(ring(), labeler.settings()))
    assert np.array_equal(labeler.label(ring()), expected)
    assert len(solves) == 2
    assert np.array_equal(labeler.label(ring()), expected)
    assert len(solves) == 2


def test_second_label_batch_makes_no_solves(tmp_path, solves):
    masks = np.stack([ring(10), ring(9), ring(9), np.zeros((64, 64), bool), ring(8, 16)])
    labeler = FEMLabeler("linear", cache=tmp_path / "labels.sqlite")
    first = labeler.label_batch(masks, workers=1, progress=False)
    assert len(solves) == 3  # the duplicate is solved once, the empty mask never reaches the solver
    second = labeler.label_batch(masks, workers=1, progress=False)
    assert len(solves) == 3
    assert np.array_equal(first.stress, second.stress) and np.array_equal(first.ok, second.ok)
    assert first.errors == second.errors == {3: "empty mask"}
    assert np.array_equal(first.masks, second.masks)
    assert len(labeler.cache) == 4


def test_label_batch_reuses_labels_from_label(tmp_path, solves):
    labeler = FEMLabeler("linear", cache=tmp_path / "labels.sqlite")
    single = labeler.label(ring())
    batch = labeler.label_batch(np.stack([ring(), ring(9)]), workers=1, progress=False)
    assert len(solves) == 2 and np.array_equal(batch.stress[0], single)


def test_the_default_settings_keep_the_keys_of_existing_caches():
    """The settings of the default labeler, as labels were cached before backends existed."""
    assert FEMLabeler().settings() == {
        "material": "mooney-rivlin", "pressure_kpa": 16.0, "pixel_mm": 0.1, "c1_kpa": 0.138,
        "d1_kpa": 3.833, "d2": 18.803, "bulk_ratio": 1000.0, "smoothing_sigma_px": 1.0,
        "newton_rtol": 1e-8, "max_newton_iter": 20, "initial_load_steps": 1, "max_step_cuts": 6,
        "fem_version": "1.0",
    }


def test_backends_do_not_share_cache_entries(tmp_path, solves):
    path = tmp_path / "labels.sqlite"
    FEMLabeler("linear", cache=path).label(ring())
    FEMLabeler("linear", cache=path, backend="skfem").label(ring())
    FEMLabeler("linear", cache=path, backend="skfem").label(ring())
    assert len(solves) == 2 and len(LabelCache(path)) == 2
