"""Nothing a user does corrupts a run, round two: the run folder, its lock, its manifest and its
checkpoints (issue 27, items 3 and 6-12).

A full disk stops the run as ``interrupted`` and it resumes; a lock file that is a link, or
another tool's, is never written; a report never overwrites a folder that is not its own; an
edited plan is refused on resume; a checkpoint that is not the unit's own, or is damaged, is set
aside and its unit starts again from its first round, with the numbers of an uninterrupted run.
"""

from __future__ import annotations

import builtins
import errno
import io
import json
import os
from pathlib import Path

import pytest

from bench.cli.main import main
from tests.bench.test_resume import same_results

TINY = ["--task", "blobs", "--strategy", "random", "--rounds", "3", "--quiet", "--threads", "1"]


def cli(*args: str) -> int:
    """``python -m bench`` in this process; argparse's refusal (SystemExit 2) is an exit code too."""
    try:
        return main(list(args))
    except SystemExit as exit:
        return exit.code


def run(out: Path, *args: str) -> int:
    return cli("run", *TINY, "--out", str(out), *args)


def manifest(folder: Path) -> dict:
    return json.loads((folder / "manifest.json").read_text())


def save_manifest(folder: Path, content: dict) -> None:
    (folder / "manifest.json").write_text(json.dumps(content))


def leftovers(folder: Path) -> list[Path]:
    """Temp files of atomic writes left in a run folder."""
    return sorted(folder.rglob("*.tmp"))


# item 3: a full disk stops the run as interrupted, resumable


def disk_full(monkeypatch, name: str, sticky: bool = False, after: int = 0) -> None:
    """Opening a file whose name ends with ``name`` for writing, after ``after`` such opens went
    well, fails with ENOSPC once the file was created (as a full disk leaves it); with ``sticky``,
    every later write fails too."""
    real_open, full, opened = builtins.open, [], []

    def fake_open(file, mode="r", *args, **kwargs):
        if any(c in mode for c in "wax+") and (full or str(file).endswith(name)):
            opened.append(file)
            if len(opened) > after:
                real_open(file, mode, *args, **kwargs).close()
                if sticky:
                    full.append(True)
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", fake_open)
    monkeypatch.setattr(io, "open", fake_open)


@pytest.mark.parametrize(
    "name, sticky, after",
    [
        ("random-r0.pt.tmp", False, 0),  # the checkpoint after round 1
        ("random-r0.pt.tmp", True, 0),  # ... and nothing can be written after it, the manifest neither
        ("labeled.npz.tmp", False, 1),
        ("manifest.json.tmp", False, 3),
        ("table.csv", False, 0),  # the report, once every unit is done
    ],
)
def test_a_full_disk_stops_the_run_as_interrupted_with_one_line_and_it_resumes(
    tmp_path, blobs_task, capsys, monkeypatch, name, sticky, after
):
    assert run(tmp_path / "reference") == 0
    out = tmp_path / "o"
    disk_full(monkeypatch, name, sticky, after)
    code = run(out)
    monkeypatch.undo()
    err = capsys.readouterr().err
    assert code == 130, err
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"interrupted (cannot write {out}") and "No space left on device" in last, err
    assert "Traceback" not in err
    assert not leftovers(out)
    # where the manifest cannot be written it still says running, which a resume reads as interrupted
    assert manifest(out)["status"] == ("running" if sticky or name == "manifest.json.tmp" else "interrupted")
    assert not manifest(out).get("failures")  # the unit did nothing wrong
    assert cli("run", "--resume", str(out), "--quiet") == 0, capsys.readouterr().err
    assert manifest(out)["status"] == "complete"
    same_results(tmp_path / "reference", out)


def test_a_run_folder_that_cannot_be_set_up_is_refused_and_left_as_it_was(tmp_path, blobs_task, capsys, monkeypatch):
    disk_full(monkeypatch, "manifest.json.tmp")
    code = run(tmp_path / "o")
    monkeypatch.undo()
    err = capsys.readouterr().err
    assert code == 2 and f"cannot write {tmp_path / 'o' / 'manifest.json'}: No space left on device" in err, err
    assert not (tmp_path / "o").exists()
