"""Bad input is refused before any work, with exit status 2 and a message naming the fix."""

from __future__ import annotations

import pytest

from bench.cli.main import main
from strategies import STRATEGIES
from strategies.base import Strategy
from tasks.base import Capability, describe_capability


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


class NeedsSynthesisLabels(Strategy):
    name = "needs-labeler"
    description = "needs a labeler for synthetic inputs (tests only)"
    requires = frozenset({Capability.SYNTHETIC_LABELS})

    def select(self, context, k):
        raise AssertionError("never called: the harness refuses the pair first")


@pytest.fixture
def needs_labeler():
    STRATEGIES.add("needs-labeler", NeedsSynthesisLabels)
    yield
    STRATEGIES.remove("needs-labeler")


def test_unknown_task_lists_registered_tasks(capsys, tmp_path):
    code, _, err = run_cli(capsys, "run", "--task", "mnits", "--strategy", "random", "--out", str(tmp_path / "o"))
    assert code == 2
    assert "unknown task 'mnits'" in err and "mnist" in err
    assert not (tmp_path / "o").exists()


def test_unknown_strategy_lists_registered_strategies(capsys, tmp_path):
    code, _, err = run_cli(
        capsys, "run", "--task", "mnist", "--strategy", "random,rnadom", "--out", str(tmp_path / "o")
    )
    assert code == 2
    assert "unknown strategy 'rnadom'" in err and "random" in err


def test_strategy_that_does_not_apply_is_refused_with_what_it_needs(capsys, tmp_path, needs_labeler):
    code, _, err = run_cli(
        capsys, "run", "--task", "mnist", "--strategy", "needs-labeler", "--out", str(tmp_path / "o")
    )
    assert code == 2
    assert "does not apply to task 'mnist'" in err
    assert describe_capability(Capability.SYNTHETIC_LABELS) in err
    applicable = err.split("Strategies that apply to mnist: ")[1]
    assert "random" in applicable and "coreset" in applicable and "needs-labeler" not in applicable


def test_all_selects_only_applicable_strategies(needs_labeler):
    from bench.run.config import RunConfig
    from bench.run.plan import plan_run

    plan = plan_run(RunConfig(task="mnist", strategies=["all"]))
    assert "random" in plan.strategy_names
    assert "needs-labeler" not in plan.strategy_names


def test_impossible_sizes_are_refused(capsys, tmp_path):
    code, _, err = run_cli(
        capsys,
        "run",
        "--task",
        "mnist",
        "--strategy",
        "random",
        "--subset",
        "1000",
        "--initial",
        "500",
        "--increment",
        "100",
        "--rounds",
        "7",
        "--out",
        str(tmp_path / "o"),
    )
    assert code == 2
    assert "impossible sizes" in err and "500 + (7 - 1) * 100 = 1100" in err and "1000" in err


def test_budget_larger_than_the_full_pool_is_refused_before_loading(capsys, tmp_path, monkeypatch):
    monkeypatch.setattr("tasks.ivus.IVUSTask.load", lambda *a, **k: pytest.fail("loaded the data"))
    code, _, err = run_cli(
        capsys,
        "run",
        "--task",
        "ivus",
        "--strategy",
        "random",
        "--initial",
        "500",
        "--increment",
        "100",
        "--rounds",
        "6",
        "--out",
        str(tmp_path / "o"),
    )
    assert code == 2
    assert "impossible sizes" in err and "990" in err
    code, _, err = run_cli(
        capsys,
        "run",
        "--task",
        "mnist",
        "--strategy",
        "random",
        "--no-download",
        "--initial",
        "50000",
        "--increment",
        "5000",
        "--rounds",
        "4",
        "--data-root",
        str(tmp_path / "no-data"),
        "--out",
        str(tmp_path / "o"),
    )
    assert code == 2
    assert "impossible sizes" in err and "60000" in err


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--seed", "-1"], "--seed must be non-negative"),
        (["--increment", "0", "--rounds", "3"], "--increment must be at least 1"),
        (["--subset", "70000"], "larger than the mnist pool"),
    ],
)
def test_bad_numbers_are_refused(capsys, tmp_path, flags, message):
    code, _, err = run_cli(capsys, "run", "--task", "mnist", "--strategy", "snn", *flags, "--out", str(tmp_path / "o"))
    assert code == 2 and message in err


def test_missing_data_says_where_it_looked_and_how_to_provide_it(capsys, tmp_path):
    empty = tmp_path / "empty"
    code, _, err = run_cli(
        capsys,
        "run",
        "--task",
        "mnist",
        "--strategy",
        "random",
        "--no-download",
        "--data-root",
        str(empty),
        "--out",
        str(tmp_path / "o"),
    )
    assert code == 2
    assert "MNIST not found" in err
    assert str(empty / "MNIST" / "raw") in err
    assert "--data-root" in err and "BENCH_DATA" in err
    assert not (tmp_path / "o").exists()


def test_unwritable_out_is_refused_before_loading(capsys, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    code, _, err = run_cli(
        capsys,
        "run",
        "--task",
        "mnist",
        "--strategy",
        "random",
        "--no-download",
        "--data-root",
        str(tmp_path / "no-data"),
        "--out",
        str(blocker / "out"),
    )
    assert code == 2
    assert "cannot write to --out" in err


def test_cuda_without_a_gpu_is_refused(capsys, tmp_path, monkeypatch):
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    code, _, err = run_cli(
        capsys, "run", "--task", "mnist", "--strategy", "random", "--device", "cuda", "--out", str(tmp_path / "o")
    )
    assert code == 2
    assert "no CUDA GPU" in err and "--device cpu" in err


def test_malformed_option_is_refused(capsys, tmp_path):
    code, _, err = run_cli(
        capsys, "run", "--task", "mnist", "--strategy", "random", "--option", "alpha", "--out", str(tmp_path / "o")
    )
    assert code == 2 and "KEY=VALUE" in err


def test_report_of_a_folder_without_rounds_csv(capsys, tmp_path):
    code, _, err = run_cli(capsys, "report", str(tmp_path))
    assert code == 2 and "no rounds.csv" in err


def test_list_prints_tasks_strategies_and_the_matrix(capsys, needs_labeler):
    code, out, _ = run_cli(capsys, "list")
    assert code == 0
    assert "mnist" in out and "random" in out
    matrix = out.split("which strategy applies")[1]
    row = next(line for line in matrix.splitlines() if line.strip().startswith("needs-labeler"))
    assert "-" in row.split("needs-labeler")[1]


def test_list_says_why_each_refused_pair_is_refused(capsys, needs_labeler):
    from bench.run.plan import create_task

    code, out, _ = run_cli(capsys, "list")
    assert code == 0
    refused = out.split("refused pairs")[1].split("\n\n")[0].splitlines()[1:]
    why = NeedsSynthesisLabels.refuses(create_task("mnist"))
    assert f"  needs-labeler on mnist: {why}" in refused and "needs-labeler on ivus" not in out
    assert "  uncertainty on ivus: it needs class probabilities from the target model, which ivus does not provide" in (
        refused
    )
    header, *rows = out.split("which strategy applies")[1].split("\n\n")[0].splitlines()[1:]
    cells = {(row.split()[0], task): cell for row in rows for task, cell in zip(header.split(), row.split()[1:])}
    pairs = {tuple(line.strip().split(":")[0].split(" on ")) for line in refused}
    assert {pair for pair, cell in cells.items() if cell == "-"} == pairs  # one line for each "-"


def test_list_names_the_distribution_of_each_strategy_and_task(capsys, needs_labeler):
    from importlib.metadata import version

    code, out, _ = run_cli(capsys, "list")
    assert code == 0
    built_in = f"[from latent-bench {version('latent-bench')}]"
    lines = out.splitlines()
    for name in ("random", "snn", "mnist", "ivus"):
        assert next(line for line in lines if line.startswith(f"  {name} ")).endswith(built_in), name
    own = next(line for line in lines if line.startswith("  needs-labeler "))
    assert own.endswith("[module tests.bench.test_cli, not installed]")


def test_a_plug_in_s_distribution_and_module_are_named():
    from bench.cli.listing import provided_by
    from bench.registry import Origin

    mine = Origin("my_plugin.margin", "my-plugin", "1.2")
    assert provided_by(mine, "latent-bench") == "[from my-plugin 1.2, module my_plugin.margin]"
    assert provided_by(Origin("strategies.random", "latent-bench", "0.1.0"), "latent-bench") == (
        "[from latent-bench 0.1.0]"
    )


def test_list_shows_every_plug_in_left_out_with_why(capsys, monkeypatch):
    STRATEGIES.names()  # the entry points are read first, then one is left out
    why = "from lowest-plugin 0.1 (lowest_plugin:FirstK): its class FirstK is named 'first-k'"
    monkeypatch.setitem(STRATEGIES.broken, "lowest", why)
    code, out, _ = run_cli(capsys, "list")
    assert code == 0
    assert out.rstrip().endswith(f"plug-ins left out:\n  strategy lowest: {why}") and "failed to import" not in out


def test_an_option_no_chosen_strategy_accepts_is_refused(capsys, tmp_path):
    code, _, err = run_cli(
        capsys,
        "run",
        "--task",
        "mnist",
        "--strategy",
        "random,uncertainty",
        "--option",
        "measur=margin",
        "--out",
        str(tmp_path / "o"),
    )
    assert code == 2
    assert "option 'measur' is not accepted" in err and "uncertainty.measure" in err


def test_scoped_and_plain_options_reach_the_right_strategy():
    from bench.run.plan import strategy_options
    from strategies.uncertainty import UncertaintySampling

    assert strategy_options(UncertaintySampling, {"measure": "margin"}) == {"measure": "margin"}
    assert strategy_options(UncertaintySampling, {"measure": "margin", "uncertainty.measure": "entropy"}) == {
        "measure": "entropy"
    }
    assert strategy_options(UncertaintySampling, {"coreset.measure": "x", "alpha": 1.0}) == {}


def test_trajectories_need_a_classification_task(capsys, monkeypatch):
    monkeypatch.setattr("tasks.ivus.IVUSTask.load", lambda *a, **k: pytest.fail("loaded the data"))
    code, _, err = run_cli(capsys, "trajectories", "--task", "ivus")
    assert code == 2 and "not a classification task" in err
