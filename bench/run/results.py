"""What a run writes as it goes: ``rounds.csv`` rows, labeled sets (``labeled.npz``), manifest.

Rows are appended and flushed one round at a time and the other files are replaced atomically,
so a killed run keeps every finished round.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from bench.run.config import ConfigError
from bench.run.diagnostics import COLUMNS as DIAGNOSTIC_COLUMNS

if TYPE_CHECKING:
    import pandas as pd

ROUND_COLUMNS = [
    "task",
    "strategy",
    "repeat",
    "seed",
    "round",
    "n_labeled",
    "metric",
    "value",
    "train_s",
    "select_s",
    "label_s",
]
EXTRA_COLUMNS = ["eval_s", "diagnose_s", "n_synthetic", "n_rejected", *DIAGNOSTIC_COLUMNS]
#: Columns of a run with ``--validation N``, after the task's extra metrics: N, and the metric on those samples.
VALIDATION_COLUMNS = ["n_validation", "val_value"]
#: Columns of a classification task, after its extra metrics: the labeled set's smallest class count,
#: and (where its metric is accuracy) the mean per-class recall on the test set.
CLASS_COLUMNS = ["min_class_labeled", "balanced_accuracy"]
#: Columns a run started before they existed lacks; its resumed rows leave them out.
LATER_COLUMNS = {"diagnose_s", *DIAGNOSTIC_COLUMNS, *CLASS_COLUMNS}


@dataclass
class RoundRecord:
    """One row of ``rounds.csv``: the metric after training in round ``round`` of one repeat.

    ``select_s`` and ``label_s`` are the seconds spent choosing and labeling the samples that
    joined the training set for this round (for round 1: the initial set); ``train_s`` and
    ``eval_s`` the seconds spent training F this round and scoring it on the test set (and the
    validation set: ``val_value``, with ``n_validation`` its size, in ``extra``), and
    ``diagnose_s`` those spent measuring the additions' ``diagnostics`` (:mod:`bench.run.diagnostics`:
    how hard, balanced and novel they were under F when chosen; NaN in round 1).
    ``n_rejected`` counts candidates the strategy refused and replaced while building this
    round's additions (SI: synthesized masks the labeler rejected; SNN: steps that left the data
    manifold).
    """

    task: str
    strategy: str
    repeat: int
    seed: int
    round: int
    n_labeled: int
    metric: str
    value: float
    train_s: float
    select_s: float
    label_s: float
    eval_s: float
    diagnose_s: float = 0.0
    n_synthetic: int = 0
    n_rejected: int = 0
    diagnostics: dict[str, float] = field(default_factory=dict)
    extra: dict[str, float] = field(default_factory=dict)

    def row(self) -> dict[str, Any]:
        row = asdict(self)
        row.update(row.pop("diagnostics"))
        row.update(row.pop("extra"))
        return row


@dataclass(frozen=True)
class MetricInfo:
    """What a ``value`` in ``rounds.csv`` is: written into ``manifest.json`` and ``table.csv``."""

    name: str
    higher_is_better: bool
    label: str  # axis label with the unit, e.g. "test accuracy (%)"
    display_scale: float = 1.0  # tables and figures show value * display_scale
    decimals: int = 1

    @classmethod
    def of(cls, metric) -> MetricInfo:
        """From a task's :class:`tasks.base.Metric`."""
        return cls(metric.name, metric.higher_is_better, metric.label, metric.display_scale, metric.decimals)

    @property
    def direction(self) -> str:
        return "higher is better" if self.higher_is_better else "lower is better"


class RoundsWriter:
    """Appends :class:`RoundRecord` rows to ``rounds.csv``, flushing after each row."""

    def __init__(self, path: Path, extra_metrics: list[str]) -> None:
        self.path = Path(path)
        self.columns = ROUND_COLUMNS + EXTRA_COLUMNS + list(extra_metrics)
        new = not self.path.exists() or self.path.stat().st_size == 0
        if not new:  # a resumed run keeps the columns it started with
            with open(self.path, newline="") as f:
                self.columns = next(csv.reader(f))
        self._file = open(self.path, "a", newline="")
        self._writer = csv.DictWriter(self._file, fieldnames=self.columns, extrasaction="raise")
        if new:
            self._writer.writeheader()
            self._file.flush()

    def write(self, record: RoundRecord) -> None:
        row = record.row()
        for key in ("train_s", "select_s", "label_s", "eval_s", "diagnose_s"):
            row[key] = round(row[key], 4)
        for key in LATER_COLUMNS - set(self.columns):  # a run started before them (or without them: regression)
            row.pop(key, None)
        self._writer.writerow(row)
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> RoundsWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def complete_part(path: Path) -> tuple[bytes, bool]:
    """The bytes of ``rounds.csv`` up to its last complete line, and whether a torn last line
    (a row cut short by a kill while it was written) was cut off."""
    raw = Path(path).read_bytes()
    if not raw or raw.endswith(b"\n"):
        return raw, False
    return raw[: raw.rfind(b"\n") + 1], True


def repair_rounds_csv(path: Path) -> bool:
    """Cut a torn last row off ``rounds.csv`` in place; True when there was one."""
    path = Path(path)
    if not path.exists():
        return False
    raw, torn = complete_part(path)
    if torn:
        with open(path, "r+b") as f:
            f.truncate(len(raw))
            f.flush()
            os.fsync(f.fileno())
    return torn


def sort_rows(path: Path, units: list[tuple[str, int]]) -> None:
    """Rewrite ``rounds.csv`` (atomically) with its rows in plan order: by (strategy, repeat) as
    listed in ``units``, then round. Rows arrive in any order from units run side by side; the
    lines themselves are kept byte for byte."""
    header, *lines = Path(path).read_bytes().splitlines(keepends=True)
    columns = next(csv.reader([header.decode()]))
    at = {name: columns.index(name) for name in ("strategy", "repeat", "round")}
    rank = {unit: i for i, unit in enumerate(units)}

    def key(line: bytes) -> tuple[int, int]:
        row = next(csv.reader([line.decode()]))
        unit = (row[at["strategy"]], int(row[at["repeat"]]))
        return rank.get(unit, len(rank)), int(row[at["round"]])

    lines.sort(key=key)
    _atomic_write(Path(path), lambda tmp: tmp.write_bytes(header + b"".join(lines)))


class RoundsFileError(ConfigError):
    """A ``rounds.csv`` whose rows are not as a run writes them (the message names the file,
    the line and the fix): a report, a resume or a check refuses it (exit 2)."""


def read_rounds_csv(path: Path) -> pd.DataFrame:
    """``rounds.csv`` as a frame, a torn last row (never data) left out. Any other row must have
    as many fields as the header: a run appends whole rows, so a short or long one in the
    middle is damage or an edit, and read as it stands its fields would land in the wrong
    columns (a cut-off ``accuracy`` read as another metric); RoundsFileError names it."""
    import pandas as pd

    raw, torn = complete_part(path)
    if torn:
        logging.getLogger(__name__).warning("%s ends in a half-written row (a killed run); it is ignored", path)
    check_fields(path, raw)
    return pd.read_csv(io.BytesIO(raw))


def check_fields(path: Path, raw: bytes) -> None:
    """Refuse (RoundsFileError) ``rounds.csv`` bytes that are not text, or with a row whose
    number of fields differs from the header's; blank lines pass, as pandas skips them."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise RoundsFileError(f"{path} is not a text file ({err}); pass the rounds.csv a run wrote") from None
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    for row in reader:
        if row and header is not None and len(row) != len(header):
            raise RoundsFileError(
                f"{path} line {reader.line_num}: {len(row)} fields where the header has {len(header)}, a cut-off or "
                f"edited row (a killed run tears only the last line); restore that line or remove it"
            )


def _atomic_write(path: Path, write) -> None:
    """Replace ``path`` by what ``write`` writes to a temp file beside it; a write that fails (a
    full disk) or is interrupted removes the temp file and leaves ``path`` as it was."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise


class LabeledLog:
    """The labeled set of every (strategy, repeat, round), saved to one ``.npz``.

    Keys are ``"<strategy>/repeat<r>/round<t>"``; values are the pool indices trained on in that
    round, in the order they were added, with -1 for each synthesized sample. The latent codes of
    the synthesized samples, in the same order, are under ``"<strategy>/repeat<r>/round<t>/latents"``;
    where a strategy gave them (:attr:`strategies.base.Selection.scores`), what it ranked each sample
    by is under ``".../round<t>/scores"`` (float32, one per sample of the set, NaN where none was given).
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.arrays: dict[str, np.ndarray] = {}

    @staticmethod
    def key(strategy: str, repeat: int, round: int) -> str:
        return f"{strategy}/repeat{repeat}/round{round}"

    def add(
        self,
        strategy: str,
        repeat: int,
        round: int,
        indices: np.ndarray,
        latents: np.ndarray | None = None,
        scores: np.ndarray | None = None,
    ) -> None:
        key = self.key(strategy, repeat, round)
        self.arrays[key] = np.asarray(indices, dtype=np.int64)
        if latents is not None:
            self.arrays[f"{key}/latents"] = np.asarray(latents, dtype=np.float32)
        if scores is not None:
            self.arrays[f"{key}/scores"] = np.asarray(scores, dtype=np.float32)

    def save(self, compressed: bool = False) -> None:
        """Write every array added so far (replacing the previous file atomically). Uncompressed,
        as after every round, it takes 0.01 s where compressing the 200 sets of an MNIST grid (4
        strategies x 5 repeats x 10 rounds) takes 0.4 s; a finished run compresses once."""

        def write(tmp: Path) -> None:
            with open(tmp, "wb") as f:
                (np.savez_compressed if compressed else np.savez)(f, **self.arrays)

        _atomic_write(self.path, write)


def load_labeled(path: Path) -> dict[str, np.ndarray]:
    """Read a ``labeled.npz`` back as a dict (key layout as in :class:`LabeledLog`)."""
    with np.load(path) as data:
        return {key: data[key] for key in data.files}


def write_json(path: Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` as indented JSON, atomically."""
    _atomic_write(Path(path), lambda tmp: tmp.write_text(json.dumps(payload, indent=2, default=str) + "\n"))
