"""The run folder, written by the driver alone: rows, labeled sets, checkpoints and the manifest.

Units report events (:mod:`bench.run.units`); :class:`RunFolder` turns them into files as they
arrive. The manifest lists every unit with its status (``pending``, ``running``, ``complete``,
``failed``) and rounds done; the run's ``status`` is ``running``, ``interrupted`` (stopped by
Ctrl-C or SIGTERM, or found stopped by a resume), ``failed`` (the driver itself failed; the
manifest's ``error`` says why), ``complete`` or ``complete with failures``. A run owns its
folder: :class:`FolderLock` keeps a second run (or resume) out while it is alive. Each unit saves
a checkpoint after every round (``checkpoints/<strategy>-r<repeat>.pt``), removed when it
finishes unless kept.

A unit that starts again from a checkpoint recomputes rounds whose rows were already written
(the driver was killed between a row and the next checkpoint); those rows are kept and the
recomputed ones, identical in value, are not written twice.

A file of the folder that cannot be written (a full disk, a quota, a file size limit) is the
driver's problem, not a unit's: :class:`FolderWriteError` stops the run as ``interrupted``, to be
resumed once the folder can be written again.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import re
import shutil
import socket
import stat
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # not POSIX: folders are not locked
    fcntl = None

from bench.run.checkpoint import from_bytes, write_atomic
from bench.run.config import ConfigError
from bench.run.manifest import now, plan_checksum
from bench.run.probes import record as record_probe
from bench.run.results import LabeledLog, RoundsWriter, load_labeled, read_rounds_csv, repair_rounds_csv, write_json
from bench.run.units import Checkpointed, Event, Failed, Finished, Probed, RoundFinished, Started, Unit
from strategies.base import RNG_ADVICE

log = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"
LOCK = ".lock"
#: The files a run writes into its folder besides the report's tables and figures.
RUN_FILES = ("manifest.json", "rounds.csv", "labeled.npz")


class FolderWriteError(KeyboardInterrupt):
    """A file of the run folder could not be written (disk full, a quota, a file size limit, a
    read-only or vanished folder). Nothing a unit did: the run stops as Ctrl-C stops it, with one
    line, exit 130 and an ``interrupted`` manifest, and resumes once the folder can be written.
    It is a KeyboardInterrupt so that a unit's ``except Exception`` (which records the unit's own
    failures, for good) lets it through to the driver."""

    def __init__(self, path: Path, err: OSError) -> None:
        super().__init__(f"cannot write {path}: {err.strerror or err}")


@contextmanager
def writing(path: Path) -> Iterator[None]:
    """Turn an OSError while writing ``path`` (a file of the run folder, or the folder) into
    :class:`FolderWriteError`."""
    try:
        yield
    except OSError as err:
        raise FolderWriteError(path, err) from err


#: What a lock file of this harness holds: the holder :class:`FolderLock` wrote, or nothing.
LOCK_TEXT = re.compile(r"(pid \d+ on [^\n]*\n?)?")


def lock_problem(path: Path) -> str | None:
    """Why ``path`` (a folder's ``.lock``) is not a lock file this harness may take over, or None
    when it is one or there is none (see :func:`_foreign`)."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return None
    if (problem := _foreign(info)) is not None:
        return problem
    with open(path, "rb") as f:
        return _foreign(info, f.read(4096))


def _foreign(info: os.stat_result, text: bytes | None = None) -> str | None:
    """What makes a lock file with status ``info`` and content ``text`` (None: not read yet) not
    this harness's: a symbolic link (writing it would write its target), anything but a plain
    file, a file with other names (hard links), or content this harness does not write."""
    if stat.S_ISLNK(info.st_mode):
        return "is a symbolic link"
    if not stat.S_ISREG(info.st_mode):
        return "is not a plain file"
    if info.st_nlink > 1:
        return "is a file with other names (hard links)"
    if text is not None and not LOCK_TEXT.fullmatch(text.decode("utf-8", "replace")):
        return f"holds {text[:40]!r}"
    return None


def not_our_lock(path: Path, problem: str) -> str:
    """The refusal of a folder whose lock file at ``path`` has ``problem``."""
    return (
        f"{path} {problem}, not a lock file this harness wrote; nothing in {path.parent} is touched: "
        f"choose another folder (or remove that file, if it is no one's)"
    )


class FolderLock:
    """This process's exclusive claim on a run folder: an ``flock`` on ``<out>/.lock`` (which
    names the holder), held until :meth:`release` or the process ends, however it ends. A
    second claim while it is held raises ConfigError. (Without ``fcntl``, nothing is locked.)

    The lock file is opened without following a symbolic link, and one that is not this
    harness's (a link, not a plain file, another tool's content: :func:`lock_problem`) is
    refused (ConfigError) untouched: a run writes only files it owns."""

    def __init__(self, out: Path) -> None:
        self.path = Path(out) / LOCK
        flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
        try:
            fd = os.open(self.path, flags, 0o644)
        except OSError as err:
            if err.errno in (errno.ELOOP, errno.EMLINK):  # what O_NOFOLLOW answers for a link
                raise ConfigError(not_our_lock(self.path, "is a symbolic link")) from None
            if err.errno == errno.EISDIR:
                raise ConfigError(not_our_lock(self.path, "is not a plain file")) from None
            raise ConfigError(
                f"cannot write to {out} ({err.strerror or err}); choose a folder you can write to"
            ) from None
        problem = _foreign(os.fstat(fd))
        if problem is not None:
            os.close(fd)
            raise ConfigError(not_our_lock(self.path, problem))
        self._file = os.fdopen(fd, "r+b")
        if fcntl is not None:
            try:
                fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                holder = self._file.read(4096).decode("utf-8", "replace").strip() or "another process"
                self._file.close()
                raise ConfigError(
                    f"{out} is in use by another run ({holder}); wait for it to end, or choose another folder"
                ) from None
        problem = _foreign(os.fstat(fd), self._file.read(4096))
        if problem is not None:
            self._file.close()
            raise ConfigError(not_our_lock(self.path, problem))
        self._file.seek(0)
        self._file.truncate()
        self._file.write(f"pid {os.getpid()} on {socket.gethostname()}\n".encode())
        self._file.flush()

    def release(self) -> None:
        """Give the folder up (the lock file stays, empty of meaning, for the next claim)."""
        self._file.close()


def lock_holder(folder: Path) -> str | None:
    """Who holds ``folder``'s lock (the holder its lock file names), or None when no live
    process does. Looks without creating, following or changing anything: a shared ``flock``
    tried and given back at once."""
    if fcntl is None:
        return None
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(Path(folder) / LOCK, flags)
    except OSError:  # none, a link, unreadable: no run of this harness holds it
        return None
    if not stat.S_ISREG(os.fstat(fd).st_mode):  # a folder, a FIFO: not a lock of this harness
        os.close(fd)
        return None
    with os.fdopen(fd, "rb") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return f.read(4096).decode("utf-8", "replace").strip() or "another process"
    return None


#: What ``report`` writes (:func:`bench.report.tables.write_report`): a folder of these alone is a report.
REPORT_FILES = frozenset(
    {
        "table.csv",
        "table.md",
        "differences.csv",
        "summary.csv",
        "hardness.csv",
        "curves.png",
        "curves.svg",
        "hardness.png",
        "hardness.svg",
        "report.html",
    }
)


def check_report_target(runs: list[Path], out: Path) -> None:
    """Refuse (ConfigError) to write a report of ``runs`` (run folders or rounds.csv files) into
    ``out`` where it would overwrite what is not its own: ``out`` must be new or empty, the
    folder of the one run reported, or hold report files only (an earlier report, rebuilt); and
    no run may be writing into it (a live run's folder is reported once the run has ended)."""
    out = Path(out)
    if not out.exists():
        return
    if not out.is_dir():
        raise ConfigError(f"--out {out} is a file; choose a folder")
    holder = lock_holder(out)
    if holder is not None:
        raise ConfigError(
            f"{out} is in use by a run ({holder}); report it once that run has ended, "
            f"or pass --out to write the report into another folder"
        )
    folders = {(run if run.is_dir() else run.parent).resolve() for run in runs}
    if folders == {out.resolve()}:  # the run's own report
        return
    names = {p.name for p in out.iterdir()}
    if names & {*RUN_FILES, CHECKPOINTS}:
        whose = "one of the runs reported" if out.resolve() in folders else "another run"
        raise ConfigError(
            f"--out {out} holds {whose}, whose tables are not overwritten; a report of other or "
            f"several runs goes into a new or empty folder of its own"
        )
    if names - REPORT_FILES:
        raise ConfigError(
            f"--out {out} is not a report folder (it holds {', '.join(sorted(names - REPORT_FILES)[:3])}); "
            f"nothing there is overwritten: choose a new or empty folder"
        )


class RunFolder:
    """Writes one run's outputs into ``out`` as its units' events arrive."""

    def __init__(
        self, out: Path, manifest: dict[str, Any], extra_metrics: list[str], keep_checkpoints: bool = False
    ) -> None:
        self.out = Path(out)
        self.manifest = manifest
        self.keep_checkpoints = keep_checkpoints
        self.plan = plan_checksum(manifest["config"])  # what every checkpoint of this run is bound to
        self.labeled = LabeledLog(self.out / "labeled.npz")
        if self.labeled.path.exists():
            self.labeled.arrays = load_labeled(self.labeled.path)
        self.written: dict[str, int] = {}  # unit key -> highest round with a row in rounds.csv
        if (self.out / "rounds.csv").exists() and (self.out / "rounds.csv").stat().st_size:
            rows = read_rounds_csv(self.out / "rounds.csv")
            for (strategy, repeat), rounds in rows.groupby(["strategy", "repeat"])["round"]:
                self.written[Unit(strategy, int(repeat)).key] = int(rounds.max())
        with writing(self.out / "rounds.csv"):
            self.writer = RoundsWriter(self.out / "rounds.csv", extra_metrics)

    @classmethod
    def create(
        cls,
        out: Path,
        manifest: dict[str, Any],
        units: list[Unit],
        extra_metrics: list[str],
        keep_checkpoints: bool = False,
    ) -> RunFolder:
        """A new run: the manifest lists every unit as pending."""
        manifest["units"] = {
            u.key: {"strategy": u.strategy, "repeat": u.repeat, "status": "pending", "rounds_done": 0} for u in units
        }
        folder = cls(out, manifest, extra_metrics, keep_checkpoints)
        folder.save_manifest()
        return folder

    @classmethod
    def reopen(cls, out: Path, extra_metrics: list[str], keep_checkpoints: bool = False) -> RunFolder:
        """An earlier run to go on with: a torn last row is dropped, the status says
        ``interrupted`` until the units run again."""
        out = Path(out)
        manifest = json.loads((out / "manifest.json").read_text())
        with writing(out / "rounds.csv"):
            torn = repair_rounds_csv(out / "rounds.csv")
        if torn:
            log.warning(
                "%s ended in a half-written row (the run was killed while writing it); dropped it", out / "rounds.csv"
            )
        for tmp in [*(out / f"{name}.tmp" for name in RUN_FILES), *(out / CHECKPOINTS).glob("*.pt.tmp")]:
            tmp.unlink(missing_ok=True)  # a write the run was killed in
        if manifest["status"] == "running":
            manifest["status"] = "interrupted"
            manifest.setdefault("interruptions", []).append({"found": now()})
        folder = cls(out, manifest, extra_metrics, keep_checkpoints)
        folder.save_manifest()
        return folder

    def unfinished(self) -> list[Unit]:
        """Units that are neither complete nor failed, in plan order."""
        return [
            Unit(u["strategy"], u["repeat"])
            for u in self.manifest["units"].values()
            if u["status"] not in ("complete", "failed")
        ]

    def rounds_written(self) -> int:
        return sum(self.written.values())

    def checkpoint_path(self, unit: Unit) -> Path:
        return self.out / CHECKPOINTS / f"{unit.key}.pt"

    def latest_checkpoint(self, unit: Unit) -> bytes | None:
        """The unit's last checkpoint (bytes), or None when it has none yet, or none it can use:
        a checkpoint this run did not record for this unit (another unit's, an edited or
        damaged one, one of another plan) is refused with a warning, and the unit starts again
        from its first round (the rows it wrote are kept; the same ones recomputed are not
        written twice)."""
        path = self.checkpoint_path(unit)
        if not path.exists():
            return None
        payload = path.read_bytes()
        problem = self._checkpoint_problem(unit, payload)
        if problem is not None:
            log.warning("%s %s; running the unit again from its first round", path, problem)
            return None
        return payload

    def _checkpoint_problem(self, unit: Unit, payload: bytes) -> str | None:
        """Why ``payload``, read from ``unit``'s checkpoint file, is not the unit's own last
        checkpoint, or None when it is. The run records each checkpoint it writes in the unit's
        manifest entry (``checkpoint``: unit, round, plan checksum, SHA-256 of the bytes); a
        checkpoint of a run started before that is loaded here instead (safely, with
        ``weights_only=True``), so that a damaged one never reaches the unit."""
        entry = self.manifest["units"][unit.key]
        record = entry.get("checkpoint")
        if record is None:
            try:
                state = from_bytes(payload)
                rounds = int(state["round"])
            except Exception:  # noqa: BLE001 - whatever torch raises for a damaged file (and its advice) is not shown
                return "is damaged or cut short (it cannot be read as a checkpoint)"
            if not 1 <= rounds <= entry["rounds_done"]:
                return f"is of round {rounds}, and the unit has done {entry['rounds_done']}"
            return None
        if not isinstance(record, dict) or record.get("unit") != unit.key:
            return f"is recorded in the manifest for another unit than {unit.key}"
        if record.get("plan") != self.plan:
            return f"was made for another plan than this run's (checksum {record.get('plan')}, not {self.plan})"
        if record.get("sha256") != hashlib.sha256(payload).hexdigest():
            return (
                f"is not the checkpoint this run recorded for {unit.key} after round {record.get('round')} "
                f"(another unit's, edited, damaged or cut short)"
            )
        return None

    def start(self) -> None:
        self.manifest["status"] = "running"
        self.save_manifest()

    def on_event(self, event: Event) -> None:
        """Write what ``event`` reports."""
        entry = self.manifest["units"][event.unit.key]
        if isinstance(event, Started):
            entry.update(status="running", worker=event.worker)
        elif isinstance(event, RoundFinished):
            self._round(event, entry)
        elif isinstance(event, Checkpointed):
            with writing(self.checkpoint_path(event.unit)):
                write_atomic(self.checkpoint_path(event.unit), event.payload)
            entry["checkpoint"] = {  # what latest_checkpoint checks before the unit goes on from it
                "unit": event.unit.key,
                "round": event.round,
                "plan": self.plan,
                "sha256": hashlib.sha256(event.payload).hexdigest(),
            }
        elif isinstance(event, Probed):
            self._probed(event)
        elif isinstance(event, Finished):
            entry["status"] = "complete"
            self._drop_checkpoint(event.unit)
        elif isinstance(event, Failed):
            entry.update(status="failed", error=event.error)
            failure = dict(
                strategy=event.unit.strategy,
                repeat=event.unit.repeat,
                rounds_done=entry["rounds_done"],
                error=event.error,
                traceback=event.traceback,
            )
            self.manifest.setdefault("failures", []).append(failure)
            (log.warning if event.selection else log.error)(
                "%s stopped after %d rounds: %s", event.unit.key, entry["rounds_done"], event.error
            )
            self._drop_checkpoint(event.unit)
        self.save_manifest()

    def _round(self, event: RoundFinished, entry: dict[str, Any]) -> None:
        record, key = event.record, event.unit.key
        if record.round > self.written.get(key, 0):
            with writing(self.writer.path):
                self.writer.write(record)
            self.written[key] = record.round
        self.labeled.add(record.strategy, record.repeat, record.round, event.sources, event.latents, event.scores)
        with writing(self.labeled.path):
            self.labeled.save()
        entry["rounds_done"] = record.round

    def _probed(self, event: Probed) -> None:
        """Record a plug-in strategy's reproducibility probe in the manifest and the cache root;
        warn when it failed, since identical commands will then give different numbers."""
        from strategies import STRATEGIES

        name, probe = event.unit.strategy, event.probe
        self.manifest.setdefault("reproducibility", {})[name] = {
            "reproducible": probe.reproducible,
            "how": "a plug-in strategy's first selection, made twice from the same state",
            "detail": probe.detail,
        }
        if name in STRATEGIES:
            record_probe(STRATEGIES.get(name), self.manifest["config"]["task"], probe)
        if not probe.reproducible:
            log.warning(
                "strategy %r is not reproducible: it %s; the same command will give other numbers: %s",
                name,
                probe.detail,
                RNG_ADVICE,
            )

    def _drop_checkpoint(self, unit: Unit) -> None:
        if not self.keep_checkpoints:
            self.manifest["units"][unit.key].pop("checkpoint", None)
            with writing(self.checkpoint_path(unit)):
                self.checkpoint_path(unit).unlink(missing_ok=True)
                folder = self.out / CHECKPOINTS
                if folder.exists() and not any(folder.iterdir()):
                    shutil.rmtree(folder)

    def finish(self, error: BaseException | None = None) -> None:
        """Close the rows and mark the run: ``failed`` (with ``error``) when the driver failed,
        ``interrupted`` when stopped by Ctrl-C or SIGTERM, when the folder could not be written
        (:class:`FolderWriteError`) or when a unit never ended (a resume goes on), else
        ``complete`` (with failures, when a unit failed). A file that cannot be written now is
        raised as FolderWriteError, unless the run already stops for ``error``: then the manifest
        may keep saying ``running``, which a resume reads as interrupted."""
        closing = None
        for path, close in ((self.writer.path, self.writer.close), (self.labeled.path, self._save_labeled)):
            try:
                with writing(path):
                    close()
            except FolderWriteError as err:
                closing = closing or err
        if error is None:
            error = closing
        states = [u["status"] for u in self.manifest["units"].values()]
        if isinstance(error, (KeyboardInterrupt, SystemExit)):  # stopped from outside, not broken: resumable
            status = "interrupted"
            by = str(error) or ("Ctrl-C" if isinstance(error, KeyboardInterrupt) else "exit")
            self.manifest.setdefault("interruptions", []).append({"at": now(), "by": by})
        elif error is not None:
            status = "failed"
            self.manifest["error"] = {
                "error": f"{type(error).__name__}: {error}",
                "traceback": traceback.format_exception(error)[-3:],
            }
        elif any(state not in ("complete", "failed") for state in states):
            status = "interrupted"
        else:
            status = "complete with failures" if "failed" in states else "complete"
        for unit in self.manifest["units"].values():
            if unit["status"] == "running":
                unit["status"] = "interrupted"
        self.manifest.update(status=status, finished=now())
        try:
            self.save_manifest()
        except FolderWriteError as err:
            if error is None:
                raise
            log.warning("%s; the manifest still says running, which a resume reads as interrupted", err)
        if closing is not None and closing is error:
            raise closing

    def _save_labeled(self) -> None:
        self.labeled.save(compressed=True)

    def close(self) -> None:
        self.writer.close()

    def save_manifest(self) -> None:
        with writing(self.out / "manifest.json"):
            write_json(self.out / "manifest.json", self.manifest)
