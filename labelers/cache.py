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

A cache is only ever a speed-up, so no method of :class:`LabelCache` raises an SQLite error: a file
it cannot use is dealt with, with a :class:`LabelCacheWarning` saying what was done, and
:attr:`LabelCache.mode` says what is left:

* A corrupt file (SQLite: "file is not a database", "database disk image is malformed"), found when
  it is opened or by any later query, is renamed to ``<name>.corrupt-<date>-<time>-<pid>`` with its
  ``-wal``, ``-shm`` and ``-journal`` side files (the warning names it), and a new, empty cache is
  started at the path; what had been read from the old file is written to the new one, the rest is
  recomputed by the caller. A rename leaves the file's open handles working, so other processes
  sharing it go on (they find the file corrupt too, see that it has been moved, and open the new
  one; SQLite sees that a file was moved, and then does not delete the side files of the new one
  when closing its last connection to the old one). A move holds an exclusive lock on the cache's
  folder (``flock``), opening and closing a shared one, so of several processes that find the file
  corrupt only one moves it, and none opens or closes the file halfway through a move. A corrupt
  file that cannot be moved (read-only folder) is left alone and the cache is off.
* A read-only file or folder is opened read-only (the ``file:...?mode=ro`` URI, and with
  ``immutable=1`` where SQLite cannot create the ``-shm`` file in a read-only folder): its labels
  are served, new ones are not saved, and one warning says so (``mode`` "ro"). A write that fails
  later for any other reason (disk full, a file made read-only meanwhile) also turns the cache
  read-only, with one warning.
* A file another connection keeps locked for writing (a long write transaction, e.g. another
  tool's ``BEGIN EXCLUSIVE``; this cache's own writers hold the lock for milliseconds) is waited for
  quietly for about a second, then a warning says so at once, and after a few seconds more the
  cache goes on without it: read-only (or off, if it cannot be read either), as above. Such a wait
  is made once per cache: a later lock gets the quiet second only.
* A path that cannot be opened at all (its folder cannot be created, a folder at the path, a
  missing file in a read-only folder), or a read that fails for any other reason, turns the cache
  off (``mode`` "off", every lookup a miss, nothing saved), with one warning.

The read-only and off warnings are given once per process and path.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import TypeVar

import numpy as np

from labelers.base import LabelError

try:
    import fcntl
except ImportError:  # not on POSIX: no folder lock
    fcntl = None

__all__ = ["LabelCache", "LabelCacheWarning"]

CachedValue = np.ndarray | LabelError
T = TypeVar("T")

#: How long a statement waits quietly for a lock another connection holds (this cache's writers
#: hold it for milliseconds), and how long more, once, after saying so (see LabelCache._patiently).
_QUIET_WAIT_S = 1.0
_LOCKED_WAIT_S = 4.0
_QUERY_CHUNK = 500  # keys per SELECT ... IN (...), below SQLite's bound-parameter limit
#: The files SQLite keeps beside a database; they belong to it and move with it.
_SIDE_FILES = ("-wal", "-shm", "-journal")
#: Primary SQLite result codes of a damaged file: SQLITE_CORRUPT, SQLITE_NOTADB.
_CORRUPT_CODES = (11, 26)
#: Primary SQLite result codes of a lock held by another connection: SQLITE_BUSY, SQLITE_LOCKED.
_BUSY_CODES = (5, 6)

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

#: (path, kind) of the read-only and off warnings given in this process.
_WARNED: set[tuple[str, str]] = set()
#: Serialises this process's folder-lock blocks (see _folder_lock), and how deep they are nested.
_PROCESS_LOCK = threading.RLock()
_lock_depth = 0


class LabelCacheWarning(UserWarning):
    """A label cache file could not be used as it is: moved aside, used read-only, or left out."""


class _CorruptEntry(Exception):
    """A stored entry that cannot be decoded."""


@contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """Run the block as one write transaction (BEGIN IMMEDIATE: take the write lock up front); a
    failed COMMIT (busy) rolls it back too, so that it can be tried again."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:  # SQLite rolls back by itself after some errors
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass  # the error that got us here is the one to report
        raise


def _prepare(conn: sqlite3.Connection) -> None:
    """Set a read-write connection up: WAL mode, and the labels table."""
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute(_SCHEMA)


def _probe(conn: sqlite3.Connection) -> None:
    """Read the labels table (raises where it cannot be read)."""
    conn.execute("SELECT 1 FROM labels LIMIT 1").fetchall()


def _select(conn: sqlite3.Connection, keys: list[str]) -> list[tuple]:
    """The stored rows (key, kind, dtype, shape, payload, checksum) of those ``keys`` present."""
    return conn.execute(
        f"SELECT key, kind, dtype, shape, payload, checksum FROM labels WHERE key IN ({','.join('?' * len(keys))})",
        keys,
    ).fetchall()


def _write_rows(conn: sqlite3.Connection, statement: str, rows: list[tuple]) -> None:
    """Run ``statement`` for every row, in one transaction."""
    with _transaction(conn):
        conn.executemany(statement, rows)


def _is_corrupt(error: sqlite3.Error) -> bool:
    """Whether an SQLite error says the file is damaged (rather than busy, read-only, ...)."""
    code = getattr(error, "sqlite_errorcode", None)  # Python >= 3.11
    if code is not None:
        return code & 0xFF in _CORRUPT_CODES
    message = str(error)
    return "malformed" in message or "not a database" in message


def _is_busy(error: sqlite3.Error) -> bool:
    """Whether an SQLite error says another connection holds a lock ("database is locked")."""
    code = getattr(error, "sqlite_errorcode", None)  # Python >= 3.11
    if code is not None:
        return code & 0xFF in _BUSY_CODES
    return "locked" in str(error)


def _locked(error: sqlite3.Error) -> str:
    """Why the cache goes on without a file another connection keeps locked, as warnings say it."""
    return f"another writer keeps it locked: {error}"


def _set_busy_timeout(conn: sqlite3.Connection, seconds: float) -> None:
    """Let ``conn``'s statements wait up to ``seconds`` for a lock another connection holds."""
    conn.execute(f"PRAGMA busy_timeout = {int(seconds * 1000)}")


def _file_identity(path: Path) -> tuple[int, int] | None:
    """(device, inode) of the file at ``path``, None if there is none."""
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_dev, stat.st_ino


def _writable(path: Path) -> bool:
    """Whether this process may write the file and create files beside it (for ``-wal``, ``-shm``)."""
    return os.access(path, os.W_OK) and os.access(path.parent, os.W_OK)


@contextmanager
def _folder_lock(folder: Path, exclusive: bool) -> Iterator[None]:
    """Hold ``flock`` on the cache's folder: shared while opening or closing the database,
    exclusive while moving it aside. Best effort: without it (no ``fcntl``, a file system
    that refuses it) the block runs unlocked. The lock is on the folder, not on the database file:
    closing any descriptor of the database would drop SQLite's own locks on it.

    Within a process, a thread lock serialises these blocks; a block entered inside another (a
    cache closed by the garbage collector meanwhile) takes no second ``flock``, which would wait
    for the first one forever."""
    global _lock_depth
    with _PROCESS_LOCK:
        fd = None
        if _lock_depth == 0 and fcntl is not None:
            try:
                fd = os.open(folder, os.O_RDONLY)
                fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            except OSError:
                pass
        _lock_depth += 1
        try:
            yield
        finally:
            _lock_depth -= 1
            if fd is not None:
                os.close(fd)  # releases the lock


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
    """A persistent map from (mask, settings) keys to stress maps or labeling failures.

    Never raises an SQLite error (see the module docstring): :attr:`mode` is "rw" (reads and
    writes), "ro" (reads only: a read-only file or folder, or writes failed) or "off" (unusable:
    every lookup misses, nothing is saved), and a :class:`LabelCacheWarning` says why it is not "rw".
    """

    def __init__(self, path: str | os.PathLike) -> None:
        """Open (creating it and its parent folders if needed) the SQLite file at ``path``; a file
        that cannot be used as it is is moved aside, used read-only or left out, with a
        :class:`LabelCacheWarning` (see the module docstring), never raised."""
        self.path = Path(path)
        self._reset()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            self._turn_off(f"its folder cannot be created ({error})")
            return
        self._connection()

    def _reset(self) -> None:
        #: "rw", "ro" or "off" (see the class docstring).
        self.mode = "rw"
        self._conn: sqlite3.Connection | None = None
        self._pid: int | None = None
        self._identity: tuple[int, int] | None = None  # the file our connection opened
        self._waited = False  # whether a lock of another connection has been waited for (once)

    # ----------------------------------------------------------------------------------------------
    # Opening and closing
    # ----------------------------------------------------------------------------------------------

    def _connection(self) -> sqlite3.Connection | None:
        """This process's connection (a forked child opens its own); None when the cache is off."""
        if self._pid != os.getpid():
            self._conn = self._pid = None  # the parent's connection is not ours to use or close
        if self._conn is None and self.mode != "off":
            self._open()
        return self._conn

    def _open(self) -> None:
        """Open the file for reading and writing, or read-only, or not at all (mode "off"); a
        corrupt file is moved aside first."""
        for _ in range(3):  # at most: a move aside, a read-only fallback, the read-only open
            if self.mode == "rw" and self.path.exists() and not _writable(self.path):
                which = "the file" if os.access(self.path.parent, os.W_OK) else "its folder"
                self._read_only(f"{which} is read-only")
            if self.mode == "ro":
                self._open_read_only()
                return
            if self.mode == "off":
                return
            try:
                self._open_read_write()
                return
            except sqlite3.Error as error:
                if _is_corrupt(error):
                    self._move_aside(error)  # closes the connection; mode "off" if it cannot move
                    continue
                self.close()
                if self.path.is_file():
                    self._read_only(_locked(error) if _is_busy(error) else f"it cannot be opened for writing: {error}")
                else:
                    self._turn_off(f"it cannot be opened: {error}")
        self._turn_off("it is still unusable after being moved aside")

    def _open_read_write(self) -> None:
        """Open for reading and writing. On an error the connection is kept open (as ``_conn``), so
        that a corrupt file is moved aside before it closes: closing it first would have SQLite
        delete the file's ``-wal`` and ``-shm``."""
        with _folder_lock(self.path.parent, exclusive=False):
            conn = self._conn = sqlite3.connect(self.path, timeout=_QUIET_WAIT_S, isolation_level=None)
            self._pid = os.getpid()
            self._identity = _file_identity(self.path)
            self._patiently(conn, _prepare)

    def _open_read_only(self) -> None:
        """Open read-only: plain (``mode=ro``), or immutable where SQLite cannot create the ``-shm``
        file (a read-only folder); mode "off" if neither reads the labels table."""
        uri = self.path.resolve().as_uri()
        failure = None
        for query in ("mode=ro", "mode=ro&immutable=1"):
            conn = None
            try:
                conn = sqlite3.connect(f"{uri}?{query}", uri=True, timeout=_QUIET_WAIT_S, isolation_level=None)
                self._patiently(conn, _probe)
            except sqlite3.Error as error:
                if conn is not None:
                    conn.close()
                if _is_corrupt(error):
                    self._turn_off(f"it is corrupt ({error}) and read-only, so it cannot be moved aside")
                    return
                failure = error
                continue
            self._conn, self._pid, self._identity = conn, os.getpid(), _file_identity(self.path)
            return
        self._turn_off(f"it cannot be read: {failure}")

    def close(self) -> None:
        """Close this process's connection; the cache reopens it when used again."""
        if self._conn is not None and self._pid == os.getpid():
            with _folder_lock(self.path.parent, exclusive=False):
                self._close_locked()
        self._conn = self._pid = None

    def _close_locked(self) -> None:
        """Close this process's connection, with the folder lock held (so that the file is not
        moved aside meanwhile: the last connection to a database deletes its -wal and -shm by
        name, unless SQLite sees that the file was moved)."""
        conn, self._conn = self._conn, None
        if conn is not None and self._pid == os.getpid():
            conn.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown: nothing left to do
            pass

    def __enter__(self) -> LabelCache:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __getstate__(self) -> dict:
        return {"path": self.path}

    def __setstate__(self, state: dict) -> None:
        self.path = state["path"]
        self._reset()

    def __repr__(self) -> str:
        return f"LabelCache({str(self.path)!r})"

    # ----------------------------------------------------------------------------------------------
    # What to do about an unusable file
    # ----------------------------------------------------------------------------------------------

    def _warn(self, kind: str | None, message: str) -> None:
        """Warn, once per process, path and ``kind`` (None: always)."""
        if kind is not None:
            if (str(self.path), kind) in _WARNED:
                return
            _WARNED.add((str(self.path), kind))
        warnings.warn(message, LabelCacheWarning, stacklevel=4)

    def _read_only(self, reason: str) -> None:
        if self.mode == "rw":
            self.mode = "ro"
            self._warn(
                "ro",
                f"label cache {self.path} is used read-only ({reason}): its labels are used, new labels are not saved",
            )

    def _turn_off(self, reason: str) -> None:
        if self.mode != "off":
            self.mode = "off"
            self.close()
            self._warn("off", f"label cache {self.path} is not used ({reason}): labels are computed and not saved")

    def _aside_name(self) -> Path:
        stem = f"{self.path.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
        moved, count = self.path.with_name(stem), 1
        while any(os.path.lexists(f"{moved}{suffix}") for suffix in ("",) + _SIDE_FILES):
            count += 1
            moved = self.path.with_name(f"{stem}-{count}")
        return moved

    def _move_aside(self, error: sqlite3.Error) -> bool:
        """Rename a corrupt file and its side files, unless another process has already done so;
        True if a new file can be opened at the path (otherwise the cache is off)."""
        failure = moved = None
        sides: list[str] = []
        with _folder_lock(self.path.parent, exclusive=True):
            # Rename first, then close: closing the last connection to the file would delete its
            # -wal and -shm (by name, so after the rename it deletes nothing).
            if self._identity is None or _file_identity(self.path) == self._identity:
                moved = self._aside_name()
                try:
                    os.rename(self.path, moved)
                except FileNotFoundError:
                    moved = None  # gone already: open a new one
                except OSError as rename_error:
                    failure = rename_error
                else:
                    for suffix in _SIDE_FILES:
                        try:
                            os.rename(f"{self.path}{suffix}", f"{moved}{suffix}")
                        except OSError:
                            continue
                        sides.append(suffix)
            # else: another process has moved it aside, and the file at the path is a new one
            self._close_locked()
        self._identity = None
        if failure is not None:
            self._turn_off(f"it is corrupt ({error}) and cannot be moved aside ({failure})")
            return False
        if moved is not None:
            with_sides = f" with its {', '.join(sides)} file{'s' * (len(sides) > 1)}" if sides else ""
            self._warn(
                None,
                f"label cache {self.path} is corrupt ({error}): moved it aside to "
                f"{moved}{with_sides}, and started a new one; labels not cached again "
                "are computed",
            )
        return True

    def _patiently(self, conn: sqlite3.Connection, statements: Callable[[sqlite3.Connection], T]) -> T:
        """``statements(conn)`` (``conn``'s busy timeout is the quiet wait). Where another
        connection's lock outlasts the quiet wait, say so at once and run them once more, waiting
        up to :data:`_LOCKED_WAIT_S` longer; that is done once per cache (a lock that outlasts it
        again is raised after the quiet wait), so the cache goes on without the file within
        seconds, not after a minute per statement."""
        try:
            return statements(conn)
        except sqlite3.OperationalError as error:
            if self._waited or not _is_busy(error):
                raise
            self._waited = True
            self._warn(
                "locked",
                f"label cache {self.path} is locked by another writer ({error}): waiting up to "
                f"{_LOCKED_WAIT_S:g} s more, then going on without writing to it",
            )
        _set_busy_timeout(conn, _LOCKED_WAIT_S)
        try:
            return statements(conn)
        finally:
            _set_busy_timeout(conn, _QUIET_WAIT_S)

    def _recover(self, error: sqlite3.Error, writing: bool) -> bool:
        """Deal with an error of a query; True if the query may be tried again (on a new file)."""
        if _is_corrupt(error):
            if self.mode == "rw":
                return self._move_aside(error)
            self._turn_off(f"it is corrupt ({error}) and read-only, so it cannot be moved aside")
        elif writing:
            self._read_only(_locked(error) if _is_busy(error) else f"writing to it failed: {error}")
        else:
            self._turn_off(_locked(error) if _is_busy(error) else f"reading it failed: {error}")
        return False

    def _query(self, read: Callable[[sqlite3.Connection], T], default: T) -> T:
        """``read(connection)``, or ``default`` where the cache is off or cannot be read."""
        for _ in range(2):
            conn = self._connection()
            if conn is None:
                break
            try:
                return self._patiently(conn, read)
            except sqlite3.Error as error:
                if not self._recover(error, writing=False):
                    break
        return default

    def _write(self, statement: str, rows: list[tuple]) -> None:
        """Run ``statement`` for every row in one transaction; nothing where the cache is read-only
        or off, or the write fails (the cache turns read-only)."""
        for _ in range(2):
            conn = self._connection() if self.mode == "rw" else None
            if conn is None or self.mode != "rw":
                return
            try:
                self._patiently(conn, partial(_write_rows, statement=statement, rows=rows))
                return
            except sqlite3.Error as error:
                if not self._recover(error, writing=True):
                    return

    # ----------------------------------------------------------------------------------------------
    # The map
    # ----------------------------------------------------------------------------------------------

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
        """The cached values of those ``keys`` that hit; corrupt entries are deleted and left out.

        If the file turns out to be corrupt, what was read from it is kept (every entry is checked
        against its checksum), the rest is looked up in the file that replaces it, and what was
        read is saved there."""
        keys = list(dict.fromkeys(keys))
        found: dict[str, CachedValue] = {}
        rescued: dict[str, CachedValue] = {}
        corrupt: list[tuple[str, str]] = []
        for _ in range(2):
            conn = self._connection()
            if conn is None:
                break
            try:
                for start in range(0, len(keys), _QUERY_CHUNK):
                    chunk = [key for key in keys[start : start + _QUERY_CHUNK] if key not in found]
                    if not chunk:
                        continue
                    rows = self._patiently(conn, partial(_select, keys=chunk))
                    for key, kind, dtype, shape, payload, checksum in rows:
                        try:
                            found[key] = _decode(kind, dtype, shape, payload, checksum)
                        except (_CorruptEntry, ValueError, TypeError, UnicodeDecodeError):
                            corrupt.append((key, checksum))
                break
            except sqlite3.Error as error:
                if not self._recover(error, writing=False):
                    break
                rescued, corrupt = dict(found), []  # the old file's entries, for the new one
        if corrupt:
            # Delete only the entry that was read, not one another process has just rewritten.
            self._write("DELETE FROM labels WHERE key = ? AND checksum = ?", corrupt)
        if rescued:
            self.put_many(rescued)
        return found

    def put(self, key: str, value: CachedValue) -> None:
        """Store a stress map or a LabelError under ``key``, replacing any previous entry."""
        self.put_many([(key, value)])

    def put_many(self, items: Mapping[str, CachedValue] | Iterable[tuple[str, CachedValue]]) -> None:
        """Store many (key, value) pairs in one transaction (nothing where the cache is read-only
        or off)."""
        pairs = items.items() if isinstance(items, Mapping) else items
        rows = []
        for key, value in pairs:
            kind, dtype, shape, payload = _encode(value)
            rows.append((key, kind, dtype, shape, payload, _checksum(kind, dtype, shape, payload)))
        if rows:
            self._write(
                "INSERT OR REPLACE INTO labels (key, kind, dtype, shape, payload, checksum) VALUES (?, ?, ?, ?, ?, ?)",
                rows,
            )

    def __len__(self) -> int:
        return self._query(lambda conn: conn.execute("SELECT COUNT(*) FROM labels").fetchone()[0], 0)
