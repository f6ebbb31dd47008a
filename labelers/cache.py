"""An on-disk SQLite cache of labels, shared safely by concurrent processes.

A label is keyed by the input mask and the labeler's settings (see :meth:`LabelCache.key`), so a
mask is never solved twice for the same settings, and changing any setting (or the solver version,
which is part of the settings) gives new keys. Both outcomes of labeling are cached: a stress map
(any numpy array) and a :class:`~labelers.base.LabelError` (failures are deterministic too).

Every entry carries its dtype, shape and a SHA-256 checksum. An entry that fails to decode (bad
checksum, wrong size, unknown kind) is deleted when read and reported as a miss, so the caller
recomputes it. The database runs in WAL mode with a busy timeout, and every write is one
``BEGIN IMMEDIATE`` transaction of ``INSERT OR REPLACE`` statements, so several processes can read
and write the same file at once.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from labelers.base import LabelError

__all__ = ["LabelCache"]

CachedValue = np.ndarray | LabelError

_BUSY_TIMEOUT_S = 60.0
_QUERY_CHUNK = 500  # keys per SELECT ... IN (...), below SQLite's bound-parameter limit

_SCHEMA = """
CREATE TABLE IF NOT EXISTS labels (
    key      TEXT PRIMARY KEY,
    kind     TEXT NOT NULL,  -- 'array' or 'error'
    dtype    TEXT NOT NULL,  -- numpy dtype string of an array; '' for an error
    shape    TEXT NOT NULL,  -- JSON list of an array's shape; '' for an error
    payload  BLOB NOT NULL,  -- array bytes (C order) or the UTF-8 error message
    checksum TEXT NOT NULL   -- sha256 over kind, dtype, shape and payload
)
"""


class _CorruptEntry(Exception):
    """A stored entry that cannot be decoded."""


@contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """Run the block as one write transaction (BEGIN IMMEDIATE: take the write lock up front)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _checksum(kind: str, dtype: str, shape: str, payload: bytes) -> str:
    digest = hashlib.sha256()
    for part in (kind.encode(), dtype.encode(), shape.encode(), payload):
        digest.update(len(part).to_bytes(8, "little"))
        digest.update(part)
    return digest.hexdigest()


def _encode(value: CachedValue) -> tuple[str, str, str, bytes]:
    if isinstance(value, LabelError):
        return "error", "", "", str(value).encode()
    if isinstance(value, np.ndarray):
        array = np.ascontiguousarray(value)
        return "array", array.dtype.str, json.dumps(list(array.shape)), array.tobytes()
    raise TypeError(f"can only cache numpy arrays and LabelError, got {type(value).__name__}")


def _decode(kind: str, dtype: str, shape: str, payload: bytes, checksum: str) -> CachedValue:
    payload = bytes(payload)
    if checksum != _checksum(kind, dtype, shape, payload):
        raise _CorruptEntry("checksum mismatch")
    if kind == "error":
        return LabelError(payload.decode())
    if kind == "array":
        dims = tuple(int(n) for n in json.loads(shape))
        array = np.frombuffer(payload, dtype=np.dtype(dtype))
        if array.size != int(np.prod(dims)):
            raise _CorruptEntry("payload size does not match the shape")
        return array.reshape(dims).copy()
    raise _CorruptEntry(f"unknown kind {kind!r}")


class LabelCache:
    """A persistent map from (mask, settings) keys to stress maps or labeling failures."""

    def __init__(self, path: str | os.PathLike) -> None:
        """Open (creating it and its parent folders if needed) the SQLite file at ``path``."""
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._conn: sqlite3.Connection | None = None
        self._pid: int | None = None
        self._connection().execute(_SCHEMA)

    def _connection(self) -> sqlite3.Connection:
        """This process's connection (a forked child opens its own)."""
        if self._conn is None or self._pid != os.getpid():
            conn = sqlite3.connect(self.path, timeout=_BUSY_TIMEOUT_S, isolation_level=None)
            conn.execute(f"PRAGMA busy_timeout = {int(_BUSY_TIMEOUT_S * 1000)}")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            self._conn, self._pid = conn, os.getpid()
        return self._conn

    def close(self) -> None:
        """Close this process's connection; the cache reopens it when used again."""
        if self._conn is not None and self._pid == os.getpid():
            self._conn.close()
        self._conn = self._pid = None

    def __enter__(self) -> LabelCache:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __getstate__(self) -> dict:
        return {"path": self.path}

    def __setstate__(self, state: dict) -> None:
        self.path = state["path"]
        self._conn = self._pid = None

    def __repr__(self) -> str:
        return f"LabelCache({str(self.path)!r})"

    @staticmethod
    def key(mask: np.ndarray, settings: dict) -> str:
        """SHA-256 hex key of a mask (normalised to bool: nonzero = True) and JSON-able settings."""
        normalised = np.ascontiguousarray(np.asarray(mask) != 0)
        canonical = json.dumps(settings, sort_keys=True, separators=(",", ":"), allow_nan=False)
        digest = hashlib.sha256()
        digest.update(f"{normalised.dtype.str}|{normalised.shape}|".encode())
        digest.update(normalised.tobytes())
        digest.update(b"|")
        digest.update(canonical.encode())
        return digest.hexdigest()

    def get(self, key: str) -> CachedValue | None:
        """The cached stress map or LabelError for ``key``; None on a miss (or a corrupt entry)."""
        return self.get_many([key]).get(key)

    def get_many(self, keys: Iterable[str]) -> dict[str, CachedValue]:
        """The cached values of those ``keys`` that hit; corrupt entries are deleted and left out."""
        keys = list(dict.fromkeys(keys))
        conn = self._connection()
        found: dict[str, CachedValue] = {}
        corrupt: list[tuple[str, str]] = []
        for start in range(0, len(keys), _QUERY_CHUNK):
            chunk = keys[start : start + _QUERY_CHUNK]
            rows = conn.execute(
                "SELECT key, kind, dtype, shape, payload, checksum FROM labels"
                f" WHERE key IN ({','.join('?' * len(chunk))})",
                chunk,
            ).fetchall()
            for key, kind, dtype, shape, payload, checksum in rows:
                try:
                    found[key] = _decode(kind, dtype, shape, payload, checksum)
                except (_CorruptEntry, ValueError, TypeError, UnicodeDecodeError):
                    corrupt.append((key, checksum))
        if corrupt:
            # Delete only the entry that was read, not one another process has just rewritten.
            with _transaction(conn):
                conn.executemany("DELETE FROM labels WHERE key = ? AND checksum = ?", corrupt)
        return found

    def put(self, key: str, value: CachedValue) -> None:
        """Store a stress map or a LabelError under ``key``, replacing any previous entry."""
        self.put_many([(key, value)])

    def put_many(self, items: Mapping[str, CachedValue] | Iterable[tuple[str, CachedValue]]) -> None:
        """Store many (key, value) pairs in one transaction."""
        pairs = items.items() if isinstance(items, Mapping) else items
        rows = []
        for key, value in pairs:
            kind, dtype, shape, payload = _encode(value)
            rows.append((key, kind, dtype, shape, payload, _checksum(kind, dtype, shape, payload)))
        if not rows:
            return
        conn = self._connection()
        with _transaction(conn):
            conn.executemany(
                "INSERT OR REPLACE INTO labels (key, kind, dtype, shape, payload, checksum)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                rows,
            )

    def __len__(self) -> int:
        return self._connection().execute("SELECT COUNT(*) FROM labels").fetchone()[0]
