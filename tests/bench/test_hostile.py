"""Nothing a user does corrupts a run: hostile numbers, shared folders, broken caches, honest status.

Each test is one way a careful, adversarial user broke a run before; each now ends in exit 2
with a message (or the documented recovery), and no run folder is left claiming ``running``.
"""

from __future__ import annotations

import json
import random
import shutil
import signal
import time
from pathlib import Path

import pytest
import torch

from bench.cli.main import main
from bench.cli.runner import execute
from bench.generative import cache as generative_module
from bench.run.assembly import Assembly, assemble
from bench.run.config import RunConfig
from bench.run.folder import FolderLock
from bench.run.plan import plan_run
from bench.testing import Blobs
from tasks import TASKS
from tasks.base import TaskData
from tests.bench.test_resume import blobs_cli

TINY = ["--task", "blobs", "--strategy", "random", "--rounds", "2", "--quiet", "--threads", "1"]
SLOW = ["run", "--task", "blobs", "--strategy", "slow", "--quiet", "--threads", "1"]  # 0.3 s per selection


def cli(*args: str) -> int:
    """``python -m bench`` in this process; argparse's refusal (SystemExit 2) is an exit code too."""
    try:
        return main(list(args))
    except SystemExit as exit:
        return exit.code


def run(capsys, tmp_path, *args: str, out: str = "o") -> tuple[int, str]:
    code = cli("run", *TINY, "--out", str(tmp_path / out), *args)
    return code, capsys.readouterr().err


def status(folder: Path) -> str:
    return json.loads((folder / "manifest.json").read_text())["status"]


@pytest.mark.parametrize(
    "args",
    [
        ["--lr", "nan"],
        ["--lr", "inf"],
        ["--lr", "1e308"],
        ["--lr", "-1"],
        ["--alpha", "nan"],
        ["--option", "alpha=nan"],
        ["--option", "random.x=inf"],
        ["--optimizer-option", "momentum=nan"],
        ["--generative-option", "lr=-inf"],
        ["--epochs", str(10**12)],
        ["--repeats", str(10**12)],
        ["--threads", str(10**9)],
        ["--seed", str(2**70)],
        ["--latent-dim", str(10**9)],
        ["--jobs", str(10**7)],
        ["--option", ".alpha=1"],
        ["--option", "random.=1"],
        ["--strategy", "snn", "--generative-option", "epochs=1000000000000"],
        ["--strategy", "snn", "--generative-option", "hidden=100000000"],
        ["--strategy", "snn", "--alpha", "1e300"],
        ["--strategy", "snn,si", "--option", "si.alpha=5000"],
        ["--optimizer", "lbfgs"],
        ["--optimizer", "sparseadam"],
    ],
)
def test_non_finite_and_absurd_numbers_are_refused_before_any_work(capsys, tmp_path, blobs_task, args):
    code, err = run(capsys, tmp_path, *args)
    assert code == 2 and ("error: " in err), err
    assert "Traceback" not in err
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_fuzzed_numeric_flags_exit_0_or_2_never_1(capsys, tmp_path, blobs_task):
    """Random finite, non-finite, negative and huge values for every numeric flag of ``run``."""
    flags = {
        "--rounds": int,
        "--initial": int,
        "--increment": int,
        "--epochs": int,
        "--batch-size": int,
        "--lr": float,
        "--seed": int,
        "--threads": int,
        "--subset": int,
        "--repeats": int,
        "--alpha": float,
        "--latent-dim": int,
        "--jobs": int,
    }
    draw = random.Random(20261126)
    specials = ["nan", "inf", "-inf", "-1", "0", "1e308", str(10**12), "-1e-300", "1e-320", "3.5", "abc"]
    for i in range(40):
        flag = draw.choice(sorted(flags))
        if draw.random() < 0.5:
            value = draw.choice(specials)
        else:  # a plausible value: most of these must run
            value = str(draw.randint(1, 5)) if flags[flag] is int else f"{10 ** draw.uniform(-4, 0):.3g}"
        code = cli("run", *TINY, "--out", str(tmp_path / f"f{i}"), flag, value)
        err = capsys.readouterr().err
        assert code in (0, 2), f"{flag} {value}: exit {code}\n{err}"
        assert "Traceback" not in err, f"{flag} {value}: {err}"
        if (tmp_path / f"f{i}" / "manifest.json").exists():
            assert status(tmp_path / f"f{i}") == "complete", f"{flag} {value}"


def test_a_folder_in_use_by_another_run_is_refused(capsys, tmp_path, blobs_task):
    (tmp_path / "o").mkdir()
    lock = FolderLock(tmp_path / "o")  # another run holds it
    try:
        code, err = run(capsys, tmp_path)
        assert code == 2 and "is in use by another run (pid" in err
    finally:
        lock.release()
    code, err = run(capsys, tmp_path)
    assert code == 0, err


@pytest.mark.slow
def test_two_processes_given_one_out_folder_one_runs_the_other_is_refused(tmp_path):
    out = str(tmp_path / "shared")
    # about 33 s: the second process must start (import torch) while the first still runs, also on a loaded machine
    first = blobs_cli(*SLOW, "--rounds", "10", "--repeats", "12", "--out", out, wait=False)
    deadline = time.monotonic() + 60
    while not (tmp_path / "shared" / "manifest.json").exists():
        assert time.monotonic() < deadline and first.poll() is None, first.stderr.read()
        time.sleep(0.1)
    second = blobs_cli("run", *TINY, "--out", out)
    assert second.returncode == 2 and "in use by another run" in second.stderr, second.stderr
    assert first.poll() is None  # refused while the first was running, not after it ended
    assert first.wait(timeout=120) == 0, first.stderr.read()
    assert status(tmp_path / "shared") == "complete"
    assert set(json.loads((tmp_path / "shared" / "manifest.json").read_text())["strategies"]) == {"slow"}


def test_a_non_empty_folder_that_holds_no_run_is_not_overwritten(capsys, tmp_path, blobs_task):
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "table.md").write_text("a report of mine")
    code, err = run(capsys, tmp_path)
    assert code == 2 and "not empty and holds no run" in err
    assert (tmp_path / "o" / "table.md").read_text() == "a report of mine"


def test_an_unusable_cache_folder_is_refused_up_front(capsys, tmp_path, blobs_task, monkeypatch):
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "file" / "cache"))
    code, err = run(capsys, tmp_path)
    assert code == 2 and "cache folder" in err and "BENCH_CACHE" in err


@pytest.fixture
def blobs_plan(tmp_path, blobs_task, monkeypatch):
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "cache"))
    assembly = assemble(RunConfig(task="blobs", strategies=["snn"], quiet=True))
    return assembly.plan, assembly.data


def generative_model(plan, data):
    """The generative model and its cache file, as a fresh run assembles them."""
    assembly = Assembly(plan)  # loads the same data again
    return assembly.generative, assembly.generative_file


def test_a_cached_generative_model_with_altered_weights_is_retrained_and_replaced(blobs_plan, caplog):
    plan, data = blobs_plan
    model, path = generative_model(plan, data)
    saved = torch.load(path, weights_only=True)
    name = next(iter(saved["state_dict"]))
    for damage, why in ((float("nan"), "non-finite weights"), (0.5, "do not match their checksum")):
        tampered = {**saved, "state_dict": {**saved["state_dict"]}}
        tampered["state_dict"][name] = torch.full_like(saved["state_dict"][name], damage)
        if damage != damage:  # a NaN file whose checksum was recomputed: finiteness still catches it
            tampered["checksum"] = generative_module.weights_digest(tampered["state_dict"])
        torch.save(tampered, path)
        caplog.clear()
        again, _ = generative_model(plan, data)
        assert why in caplog.text and "retraining" in caplog.text
        assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), model.state_dict().values()))
        assert generative_module.integrity_problem(torch.load(path, weights_only=True)) is None  # replaced


def test_a_cache_that_cannot_be_written_trains_and_goes_on_without_caching(blobs_plan, caplog, monkeypatch):
    plan, data = blobs_plan

    def read_only(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(generative_module.torch, "save", read_only)
    model, path = generative_model(plan, data)
    assert model is not None and not path.exists()
    assert "going on without caching it" in caplog.text


class LabelTwoHundred(Blobs):
    name = "blobs-label-200"

    def load(self, data_root=None, download=True) -> TaskData:
        data = super().load(data_root, download)
        data.pool_y[17] = 200
        return data


def test_a_label_out_of_range_is_refused_at_load(capsys, tmp_path):
    with TASKS.scoped():
        TASKS.add(LabelTwoHundred.name, LabelTwoHundred)
        code = main(["run", "--task", LabelTwoHundred.name, "--strategy", "random", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and "pool sample 17 has label 200" in err and "4 classes" in err
    assert not (tmp_path / "o").exists()


def test_a_damaged_mnist_label_file_is_named(capsys, tmp_path, mnist_root):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in ("train-images-idx3-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        (raw / name).symlink_to(mnist_root / "MNIST" / "raw" / name)
    labels = bytearray((mnist_root / "MNIST" / "raw" / "train-labels-idx1-ubyte").read_bytes())
    labels[8 + 123] = 200  # past the 8-byte header: sample 123
    (raw / "train-labels-idx1-ubyte").write_bytes(bytes(labels))
    code = main(
        [
            "run",
            "--task",
            "mnist",
            "--strategy",
            "random",
            "--data-root",
            str(tmp_path),
            "--no-download",
            "--out",
            str(tmp_path / "o"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "train-labels-idx1-ubyte holds label 200 at index 123" in err


class Crashes(RuntimeError):
    pass


def test_a_driver_that_crashes_leaves_a_failed_manifest_with_the_error(tmp_path, blobs_task, monkeypatch):
    import bench.cli.runner

    def crash(*args, **kwargs):
        raise Crashes("the disk went away")

    monkeypatch.setattr(bench.cli.runner, "write_report", crash)
    with pytest.raises(Crashes):
        execute(RunConfig(task="blobs", strategies=["random"], rounds=2, out=tmp_path / "o", quiet=True))
    manifest = json.loads((tmp_path / "o" / "manifest.json").read_text())
    assert manifest["status"] == "failed"
    assert manifest["error"]["error"] == "Crashes: the disk went away"
    assert "Crashes" in manifest["error"]["traceback"][-1]


def test_ctrl_c_ends_with_one_line_and_an_interrupted_resumable_run(capsys, tmp_path, blobs_task, monkeypatch):
    import bench.cli.runner

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(bench.cli.runner, "write_report", interrupt)
    code, err = run(capsys, tmp_path)
    assert code == 130 and err.strip().splitlines()[-1] == "interrupted (Ctrl-C)" and "Traceback" not in err
    assert status(tmp_path / "o") == "interrupted"
    monkeypatch.undo()
    assert main(["run", "--resume", str(tmp_path / "o"), "--quiet"]) == 0
    assert status(tmp_path / "o") == "complete"


@pytest.mark.slow
def test_sigterm_ends_the_run_as_interrupted_and_it_resumes(tmp_path):
    out = tmp_path / "o"
    process = blobs_cli(*SLOW, "--rounds", "6", "--repeats", "2", "--out", str(out), wait=False)
    deadline = time.monotonic() + 60
    while not (out / "rounds.csv").exists() or not (out / "rounds.csv").stat().st_size:
        assert time.monotonic() < deadline and process.poll() is None, process.stderr.read()
        time.sleep(0.1)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 130
    assert process.stderr.read().strip().splitlines()[-1] == "interrupted (SIGTERM)"
    assert status(out) == "interrupted"
    resumed = blobs_cli("run", "--resume", str(out), "--quiet")
    assert resumed.returncode == 0, resumed.stderr
    assert status(out) == "complete"


def test_report_refuses_a_value_that_is_not_a_number_naming_the_line(capsys, tmp_path, blobs_task):
    assert run(capsys, tmp_path)[0] == 0
    csv = tmp_path / "o" / "rounds.csv"
    lines = csv.read_text().splitlines()
    cells = lines[2].split(",")
    cells[lines[0].split(",").index("value")] = "9x.5"
    lines[2] = ",".join(cells)
    csv.write_text("\n".join(lines) + "\n")
    assert main(["report", str(tmp_path / "o")]) == 2
    assert "line 3: value '9x.5' is not a number" in capsys.readouterr().err


def test_duplicate_rows_are_named_by_their_values(capsys, tmp_path, blobs_task):
    assert run(capsys, tmp_path)[0] == 0
    shutil.copytree(tmp_path / "o", tmp_path / "copy")
    assert main(["report", str(tmp_path / "o"), str(tmp_path / "copy"), "--out", str(tmp_path / "r")]) == 2
    assert "duplicate rows for strategy 'random', seed 1484405855, repeat 0, round 1:" in capsys.readouterr().err


def test_unknown_strategy_message_spells_its_plural(capsys, tmp_path, blobs_task):
    code, err = run(capsys, tmp_path, "--strategy", "nope")
    assert code == 2 and "registered strategies:" in err


def test_threads_bound_the_tasks_own_processes_and_quiet_silences_it(tmp_path):
    plan = plan_run(RunConfig(task="ivus", strategies=["random"], threads=1, quiet=True))
    assert plan.task.workers == 1 and plan.task.progress is False
    assert plan_run(RunConfig(task="ivus", strategies=["random"])).task.progress is True


def test_training_that_diverges_stops_its_unit_with_the_reason(tmp_path, blobs_task, monkeypatch):
    import bench.run.loop

    train = bench.run.loop.train_epochs

    def diverging(model, *args, **kwargs):  # what a far too large learning rate does to F
        train(model, *args, **kwargs)
        with torch.no_grad():
            next(model.parameters()).fill_(float("inf"))

    monkeypatch.setattr(bench.run.loop, "train_epochs", diverging)
    out = execute(RunConfig(task="blobs", strategies=["random"], rounds=2, out=tmp_path / "o", quiet=True))
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "complete with failures"
    assert manifest["failures"][0]["error"].startswith("TrainingDiverged: training diverged in round 1")
