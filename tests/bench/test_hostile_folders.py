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

import pandas as pd
import pytest
import torch

from bench.cli.main import main
from bench.run.folder import FolderLock
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


def rewind(folder: Path, last_round: int) -> None:
    """Make a finished run (with ``--keep-checkpoints`` when its checkpoints are needed) look as a
    SIGKILL after round ``last_round`` leaves it: later rows gone, every unit and the run running."""
    rows = pd.read_csv(folder / "rounds.csv")
    rows[rows["round"] <= last_round].to_csv(folder / "rounds.csv", index=False)
    content = manifest(folder)
    content["status"] = "running"
    for unit in content["units"].values():
        unit.update(status="running", rounds_done=last_round)
    save_manifest(folder, content)


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


# items 6 and 7: the lock and the folder of a new run


def test_a_lock_file_that_is_a_link_is_never_written_through(tmp_path, blobs_task, capsys):
    target = tmp_path / "precious.txt"
    target.write_text("not the run's\n")
    for folder in (tmp_path / "o", tmp_path / "dangling"):
        folder.mkdir()
    (tmp_path / "o" / ".lock").symlink_to(target)
    (tmp_path / "dangling" / ".lock").symlink_to(tmp_path / "new.txt")
    for folder in (tmp_path / "o", tmp_path / "dangling"):
        assert run(folder) == 2
        err = capsys.readouterr().err
        assert f"{folder / '.lock'} is a symbolic link" in err and "Traceback" not in err
        with pytest.raises(Exception, match="is a symbolic link"):
            FolderLock(folder)
    assert target.read_text() == "not the run's\n" and not (tmp_path / "new.txt").exists()
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == [".lock"]


@pytest.mark.parametrize("kind", ["hard link", "fifo", "folder"])
def test_a_lock_file_that_is_not_a_plain_file_of_its_own_is_refused(tmp_path, blobs_task, capsys, kind):
    out, target = tmp_path / "o", tmp_path / "precious.txt"
    out.mkdir()
    target.write_text("")  # empty, as a lock of ours may be: only its second name gives it away
    {
        "hard link": lambda: os.link(target, out / ".lock"),
        "fifo": lambda: os.mkfifo(out / ".lock"),
        "folder": lambda: (out / ".lock").mkdir(),
    }[kind]()
    assert run(out) == 2
    assert f"{out / '.lock'} is " in capsys.readouterr().err
    with pytest.raises(Exception, match="not a lock file this harness wrote"):
        FolderLock(out)
    assert target.read_text() == ""


def test_a_resume_refuses_a_lock_file_that_is_a_link(tmp_path, blobs_task, capsys):
    assert run(tmp_path / "o", "--rounds", "2") == 0
    rewind(tmp_path / "o", 1)
    target = tmp_path / "precious.txt"
    target.write_text("not the run's\n")
    (tmp_path / "o" / ".lock").unlink()
    (tmp_path / "o" / ".lock").symlink_to(target)
    assert cli("run", "--resume", str(tmp_path / "o"), "--quiet") == 2
    assert "is a symbolic link" in capsys.readouterr().err
    assert target.read_text() == "not the run's\n"


@pytest.mark.parametrize(
    "files",
    [
        {"notes.txt": "mine"},  # an unrelated folder
        {".lock": "held by another tool\n"},  # another tool's lock
        {".lock": "pid 12 on host\n", "notes.txt": "mine"},  # a lock of ours beside something else
    ],
)
def test_a_folder_that_is_not_ours_is_refused_before_anything_is_touched(tmp_path, blobs_task, capsys, files):
    out = tmp_path / "o"
    out.mkdir()
    for name, text in files.items():
        (out / name).write_text(text)
    before = {p.name: (p.read_text(), p.stat().st_mtime_ns) for p in out.iterdir()}
    assert run(out) == 2
    err = capsys.readouterr().err
    assert f"--out {out}" in err and "Traceback" not in err
    assert {p.name: (p.read_text(), p.stat().st_mtime_ns) for p in out.iterdir()} == before


def test_a_folder_holding_only_an_old_lock_of_ours_is_used(tmp_path, blobs_task):
    out = tmp_path / "o"
    out.mkdir()
    (out / ".lock").write_text("pid 12 on host\n")  # left by a run that stopped before writing anything
    assert run(out) == 0
    assert manifest(out)["status"] == "complete"


# item 8: where a report may write


def test_a_report_never_overwrites_another_runs_folder_or_a_live_run(tmp_path, blobs_task, capsys):
    for name in ("a", "b"):
        assert run(tmp_path / name, "--rounds", "2", "--seed", str(len(name))) == 0
    b_table = (tmp_path / "b" / "table.md").read_text()
    assert cli("report", str(tmp_path / "a"), "--out", str(tmp_path / "b")) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'b'} holds another run" in err
    assert (tmp_path / "b" / "table.md").read_text() == b_table

    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("mine")
    assert cli("report", str(tmp_path / "a"), "--out", str(tmp_path / "mine")) == 2
    assert "not a report folder" in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "mine").iterdir()) == ["notes.txt"]

    assert cli("report", str(tmp_path / "a"), "--out", str(tmp_path / "r")) == 0  # a new folder
    assert cli("report", str(tmp_path / "a"), "--out", str(tmp_path / "r")) == 0  # ... its own report again
    assert cli("report", str(tmp_path / "a")) == 0  # the run's own folder
    assert cli("report", str(tmp_path / "a" / "rounds.csv")) == 0
    capsys.readouterr()

    lock = FolderLock(tmp_path / "a")  # a run (or resume) is writing it
    try:
        assert cli("report", str(tmp_path / "a")) == 2
        assert "in use by a run" in capsys.readouterr().err
        assert cli("report", str(tmp_path / "a"), "--out", str(tmp_path / "r")) == 0  # reading it is fine
    finally:
        lock.release()


# items 9 and 12: an edited or incomplete manifest


@pytest.fixture
def killed(tmp_path, blobs_task) -> Path:
    """A run of random and uncertainty killed after round 2 of 3, with its checkpoints; its
    uninterrupted twin is ``tmp_path / "reference"``."""
    strategies = ["--strategy", "random,uncertainty"]
    assert run(tmp_path / "reference", *strategies) == 0
    assert run(tmp_path / "killed", *strategies, "--keep-checkpoints") == 0
    rewind(tmp_path / "killed", 2)
    return tmp_path / "killed"


@pytest.mark.parametrize(
    "field, value", [("seed", 7), ("task", "mnist"), ("rounds", 4), ("strategies", ["random"]), ("lr", 0.5)]
)
def test_a_resume_refuses_a_plan_edited_in_the_manifest(killed, capsys, field, value):
    content = manifest(killed)
    content["config"][field] = value
    save_manifest(killed, content)
    assert cli("run", "--resume", str(killed), "--quiet") == 2
    err = capsys.readouterr().err
    assert f"config.{field}" in err and "manifest.json" in err and "Traceback" not in err
    assert len(pd.read_csv(killed / "rounds.csv")) == 2 * 2  # nothing was added


@pytest.mark.parametrize("field, value", [("seed", 7), ("task", "mnist"), ("rounds", 2), ("initial", 30)])
def test_a_manifest_without_plan_checksums_is_checked_against_its_rows_and_records(killed, capsys, field, value):
    content = manifest(killed)
    del content["plan_checksums"]  # as a run started before they were recorded
    content["config"][field] = value
    save_manifest(killed, content)
    assert cli("run", "--resume", str(killed), "--quiet") == 2
    err = capsys.readouterr().err
    assert f"config.{field}" in err and "does not match" in err and "Traceback" not in err, err


def test_a_manifest_without_plan_checksums_still_resumes(killed, tmp_path, capsys):
    content = manifest(killed)
    del content["plan_checksums"]
    for unit in content["units"].values():
        unit.pop("checkpoint", None)  # nor checkpoint records: its checkpoints load, and are used
    save_manifest(killed, content)
    assert cli("run", "--resume", str(killed), "--quiet") == 0
    assert "running the unit again" not in capsys.readouterr().err
    same_results(tmp_path / "reference", killed)


@pytest.mark.parametrize(
    "edit, named",
    [
        (lambda m: m.pop("status"), "has no status"),
        (lambda m: m.update(status="paused"), "status is 'paused'"),
        (lambda m: m["units"]["random-r0"].pop("status"), "units.random-r0 has no status"),
        (lambda m: m["units"]["random-r0"].update(rounds_done="two"), "units.random-r0.rounds_done"),
        (lambda m: m["units"].pop("random-r0"), "units"),
        (lambda m: m.update(units=[]), "units"),
    ],
)
def test_a_manifest_missing_a_field_is_refused_naming_it(killed, capsys, edit, named):
    content = manifest(killed)
    edit(content)
    save_manifest(killed, content)
    assert cli("run", "--resume", str(killed), "--quiet") == 2
    err = capsys.readouterr().err
    assert named in err and str(killed / "manifest.json") in err and "Traceback" not in err, err


# items 10 and 11: checkpoints


def resume_warns(folder: Path, capsys, caplog) -> str:
    """Resume ``folder`` (it must succeed) and return what it printed and logged."""
    assert cli("run", "--resume", str(folder), "--quiet") == 0
    return capsys.readouterr().err + caplog.text


def test_a_checkpoint_of_another_unit_is_refused_and_its_unit_starts_again(killed, tmp_path, capsys, caplog):
    checkpoints = killed / "checkpoints"
    (checkpoints / "random-r0.pt").write_bytes((checkpoints / "uncertainty-r0.pt").read_bytes())
    said = resume_warns(killed, capsys, caplog)
    assert f"{checkpoints / 'random-r0.pt'} is not the checkpoint this run recorded for random-r0" in said
    assert "running the unit again from its first round" in said
    same_results(tmp_path / "reference", killed)


def test_a_checkpoint_with_an_edited_round_is_refused(killed, tmp_path, capsys, caplog):
    path = killed / "checkpoints" / "random-r0.pt"
    state = torch.load(path, weights_only=True)
    state["round"] = 1
    torch.save(state, path)
    said = resume_warns(killed, capsys, caplog)
    assert "is not the checkpoint this run recorded for random-r0" in said
    same_results(tmp_path / "reference", killed)


def test_a_checkpoint_of_another_plan_is_refused(killed, tmp_path, capsys, caplog):
    content = manifest(killed)
    content["units"]["random-r0"]["checkpoint"]["plan"] = "0" * 16
    save_manifest(killed, content)
    said = resume_warns(killed, capsys, caplog)
    assert "was made for another plan" in said
    same_results(tmp_path / "reference", killed)


@pytest.mark.parametrize("legacy", [False, True])
@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty"])
def test_a_damaged_checkpoint_is_set_aside_without_torchs_advice(killed, tmp_path, capsys, caplog, damage, legacy):
    path = killed / "checkpoints" / "uncertainty-r0.pt"
    payload = path.read_bytes()
    path.write_bytes({"garbage": os.urandom(5000), "truncated": payload[: len(payload) // 2], "empty": b""}[damage])
    if legacy:  # a run started before checkpoints were recorded: the driver must load it to know
        content = manifest(killed)
        for unit in content["units"].values():
            del unit["checkpoint"]
        save_manifest(killed, content)
    said = resume_warns(killed, capsys, caplog)
    assert "uncertainty-r0" in said and "running the unit again from its first round" in said
    assert "weights_only" not in said
    assert manifest(killed)["status"] == "complete" and not manifest(killed).get("failures")
    same_results(tmp_path / "reference", killed)
