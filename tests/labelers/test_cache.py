"""Specification of the SQLite label cache (labelers/cache.py) and its use by the FEM labeler."""

from __future__ import annotations

import json
import multiprocessing
import os
import pickle
import shutil
import sqlite3
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

from labelers import LabelError, fem
from labelers.cache import LabelCache, LabelCacheWarning
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


@pytest.mark.parametrize("journal", ["wal", "delete"])
def test_a_cache_locked_by_another_writer_says_so_at_once_and_goes_read_only_within_seconds(tmp_path, journal):
    """Another writer's long transaction (``BEGIN EXCLUSIVE``) stalled a put for 60 s per
    statement, about 3 minutes in all, before the cache went read-only. In a rollback journal
    (``delete``, another tool's) readers wait for the lock too."""
    path = tmp_path / "labels.sqlite"
    with LabelCache(path) as first:
        first.put("kept", stress_map(1))
    other = sqlite3.connect(path, isolation_level=None)
    other.execute(f"PRAGMA journal_mode = {journal}")
    other.execute("BEGIN EXCLUSIVE")
    said: list[tuple[float, str]] = []
    start = time.monotonic()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.showwarning = lambda message, *rest, **more: said.append((time.monotonic() - start, str(message)))
            with LabelCache(path) as cache:
                cache.put("new", stress_map(2))
                assert cache.mode == "ro"
                assert np.array_equal(cache.get("kept"), stress_map(1))  # its labels are still used
                assert cache.get("new") is None
        elapsed = time.monotonic() - start
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert said and "is locked by another writer (database is locked): waiting up to 4 s more" in said[0][1]
    assert said[0][0] < 3, said  # at once: after a quiet second, not after the wait
    assert any("is used read-only (another writer keeps it locked" in message for _, message in said), said
    assert elapsed < 10, said  # quiet 1 s + 4 s, with room for a loaded machine
    with LabelCache(path) as again:  # the lock released: written again
        again.put("new", stress_map(2))
        assert again.mode == "rw" and np.array_equal(again.get("new"), stress_map(2))


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
        "material": "mooney-rivlin",
        "pressure_kpa": 16.0,
        "pixel_mm": 0.1,
        "c1_kpa": 0.138,
        "d1_kpa": 3.833,
        "d2": 18.803,
        "bulk_ratio": 1000.0,
        "smoothing_sigma_px": 1.0,
        "newton_rtol": 1e-8,
        "max_newton_iter": 20,
        "initial_load_steps": 1,
        "max_step_cuts": 6,
        "fem_version": "1.0",
    }


def test_backends_do_not_share_cache_entries(tmp_path, solves):
    path = tmp_path / "labels.sqlite"
    FEMLabeler("linear", cache=path).label(ring())
    FEMLabeler("linear", cache=path, backend="skfem").label(ring())
    FEMLabeler("linear", cache=path, backend="skfem").label(ring())
    assert len(solves) == 2 and len(LabelCache(path)) == 2


# --------------------------------------------------------------------------------------------------
# A cache file that cannot be used as it is: corrupt, read-only, or no file at all
# --------------------------------------------------------------------------------------------------

REPO = Path(__file__).resolve().parents[2]


def small_masks() -> np.ndarray:
    """Three different small rings: labeled in ~0.01 s each."""
    return np.stack([ring(4, 10, size=32), ring(5, 12, size=32), ring(6, 12, size=32)])


def cached_labels(path) -> np.ndarray:
    """Label small_masks() into the cache at ``path`` (closed afterwards, like a finished run)."""
    labeler = FEMLabeler("linear", cache=path)
    stress = labeler.label_batch(small_masks(), workers=1, progress=False).stress
    labeler.cache.close()
    return stress


def truncate(path) -> None:
    with open(path, "r+b") as file:
        file.truncate(path.stat().st_size // 2)


def garbage(path) -> None:
    """Overwrite the file with random bytes and leave a stale -wal and -shm beside it."""
    rng = np.random.default_rng(0)
    for name in (path.name, f"{path.name}-wal", f"{path.name}-shm"):
        (path.parent / name).write_bytes(rng.bytes(8192))


@pytest.mark.parametrize("damage", [truncate, garbage], ids=["truncated", "garbage"])
def test_corrupt_file_is_moved_aside_and_rebuilt(tmp_path, solves, damage):
    path = tmp_path / "labels" / "fem.sqlite"
    expected = cached_labels(path)
    assert len(solves) == 3
    damage(path)
    with pytest.warns(LabelCacheWarning) as caught:
        labeler = FEMLabeler("linear", cache=path)
        result = labeler.label_batch(small_masks(), workers=1, progress=False)
    assert result.ok.all() and np.array_equal(result.stress, expected)
    assert len(solves) == 6  # recomputed
    assert len(caught) == 1
    moved = [name for name in os.listdir(path.parent) if name.startswith("fem.sqlite.corrupt-")]
    base = min(moved, key=len)  # the moved file; the others are its side files
    assert sorted(moved) == sorted([base, f"{base}-shm", f"{base}-wal"])
    assert str(path.parent / base) in str(caught[0].message)
    # The new file holds the labels again.
    assert labeler.cache.mode == "rw" and len(labeler.cache) == 3
    again = FEMLabeler("linear", cache=path).label_batch(small_masks(), workers=1, progress=False)
    assert np.array_equal(again.stress, expected)
    assert len(solves) == 6


def test_corruption_found_by_a_query_is_moved_aside(tmp_path, solves):
    path = tmp_path / "fem.sqlite"
    expected = cached_labels(path)
    data = bytearray(path.read_bytes())
    data[4096:] = np.random.default_rng(0).bytes(len(data) - 4096)  # the schema page survives
    path.write_bytes(bytes(data))
    cache = LabelCache(path)
    assert cache.mode == "rw"  # it opens...
    with pytest.warns(LabelCacheWarning, match="is corrupt .*moved it aside to .*fem.sqlite.corrupt-"):
        result = FEMLabeler("linear", cache=cache).label_batch(small_masks(), workers=1, progress=False)
    assert np.array_equal(result.stress, expected) and len(solves) == 6  # ...but its labels are lost
    assert cache.mode == "rw" and len(cache) == 3


def _hold_open(path, go, ready) -> None:
    """Another process that shares the cache file while it is moved aside."""
    cache = LabelCache(path)
    assert len(cache.get_many([f"a{i}" for i in range(5)])) == 5
    ready.set()
    go.wait(60)
    cache.get_many([f"a{i}" for i in range(5)])  # on the moved file: hits or misses, no error
    cache.put("late", stress_map(9))
    cache.close()


def test_moving_aside_does_not_break_another_process(tmp_path):
    path = tmp_path / "fem.sqlite"
    with LabelCache(path) as cache:
        cache.put_many({f"a{i}": stress_map(i) for i in range(5)})
    context = multiprocessing.get_context("spawn")
    go, ready = context.Event(), context.Event()
    other = context.Process(target=_hold_open, args=(path, go, ready))
    other.start()
    try:
        assert ready.wait(60)
        truncate(path)
        with pytest.warns(LabelCacheWarning, match="moved it aside"):
            new = LabelCache(path)
        new.put_many({f"b{i}": stress_map(i) for i in range(5)})  # kept in the new -wal for now
        go.set()
        other.join(60)
    finally:
        go.set()
        other.join(60)
    assert other.exitcode == 0
    # The other process went on (on the moved file, or on the new one once it found the moved one
    # corrupt), and closing its connection left the new file whole.
    assert len(LabelCache(path).get_many([f"b{i}" for i in range(5)])) == 5
    assert len(new.get_many([f"b{i}" for i in range(5)])) == 5
    new.close()


def _without_file_permissions_override() -> list[str]:
    """A command prefix that runs a command under file permissions: root ignores them, so it
    drops the capabilities to do so (setpriv); empty for any other user."""
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None:
        pytest.skip("running as root, and no setpriv to drop the capability to override file permissions")
    caps = "-dac_override,-dac_read_search"
    return ["setpriv", f"--inh-caps={caps}", f"--bounding-set={caps}"]


_READ_ONLY_SCRIPT = """
import json, sys, warnings
import numpy as np
from labelers import fem
from labelers.fem import FEMLabeler

solves = []
solve = fem._label_one
fem._label_one = lambda *args: solves.append(1) or solve(*args)
masks = np.load(sys.argv[2])
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    labeler = FEMLabeler("linear", cache=sys.argv[1])
    first = labeler.label_batch(masks, workers=1, progress=False)
    second = labeler.label_batch(masks, workers=1, progress=False)
np.save(sys.argv[3], first.stress)
print(json.dumps({
    "solves": len(solves), "mode": labeler.cache.mode, "entries": len(labeler.cache),
    "same": bool(np.array_equal(first.stress, second.stress)) and bool(first.ok.all()),
    "warnings": [f"{w.category.__name__}: {w.message}" for w in caught],
}))
"""


@pytest.mark.parametrize("read_only", ["folder", "file"])
def test_read_only_cache_is_used_read_only(tmp_path, read_only):
    prefix = _without_file_permissions_override()
    folder = tmp_path / "cache"
    path = folder / "fem.sqlite"
    cached = cached_labels(path)[:2]
    masks = small_masks()
    masks[2] = ring(3, 9, size=32)  # not cached
    np.save(tmp_path / "masks.npy", masks)
    before, listing = path.read_bytes(), sorted(os.listdir(folder))
    (folder if read_only == "folder" else path).chmod(0o555 if read_only == "folder" else 0o444)
    try:
        done = subprocess.run(
            [
                *prefix,
                sys.executable,
                "-c",
                _READ_ONLY_SCRIPT,
                str(path),
                str(tmp_path / "masks.npy"),
                str(tmp_path / "stress.npy"),
            ],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
        )
    finally:
        folder.chmod(0o755)
        path.chmod(0o644)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    which = "its folder" if read_only == "folder" else "the file"
    assert report["warnings"] == [
        f"LabelCacheWarning: label cache {path} is used read-only ({which} is read-only): its labels "
        "are used, new labels are not saved"
    ]
    assert report["mode"] == "ro" and report["same"]
    assert report["solves"] == 2  # only the new mask, in both batches: it could not be saved
    assert report["entries"] == 3
    stress = np.load(tmp_path / "stress.npy")
    assert np.array_equal(stress[:2], cached)
    assert np.array_equal(stress[2], FEMLabeler("linear").label(masks[2]))
    assert path.read_bytes() == before  # no write
    if read_only == "folder":
        assert sorted(os.listdir(folder)) == listing


def test_unusable_path_works_without_a_cache(tmp_path, solves):
    (tmp_path / "folder.sqlite").mkdir()
    (tmp_path / "a_file").write_text("")
    for path in (tmp_path / "folder.sqlite", tmp_path / "a_file" / "labels" / "fem.sqlite"):
        with pytest.warns(LabelCacheWarning, match="is not used"):
            labeler = FEMLabeler("linear", cache=path)
        assert labeler.cache.mode == "off"
        result = labeler.label_batch(small_masks(), workers=1, progress=False)
        assert result.ok.all() and len(labeler.cache) == 0 and labeler.cache.get("x") is None
        labeler.cache.put("x", stress_map())
    assert len(solves) == 6
