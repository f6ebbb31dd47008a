"""Command line: ``python -m bench run | tune | track | study | list | report | index | show | trajectories |
check | latent | perf``.

Bad input exits with status 2 and one line that names the problem and the fix.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

from bench.paths import default_data_root
from bench.run.config import TRACKERS, ConfigError, Execution, RunConfig
from bench.run.recipe import typed_value

EXIT_USAGE = 2


def finite_float(text: str) -> float:
    """A float flag's value: NaN and infinities are refused (exit 2)."""
    value = float(text)
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number (got {text})")
    return value


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1 (got {value})")
    return value


def non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more (got {value})")
    return value


def add_protocol_args(parser: argparse.ArgumentParser) -> None:
    """Flags shared by ``run`` and ``perf``; protocol flags default to the task's own values."""
    parser.add_argument("--task", help="task name (see `python -m bench list`); required")
    g = parser.add_argument_group("protocol (defaults: the task's, see `python -m bench list`)")
    g.add_argument("--rounds", type=int, help="number of rounds T")
    g.add_argument("--initial", type=int, help="labeled samples at round 1")
    g.add_argument("--increment", type=int, help="samples added after each round")
    g.add_argument("--epochs", type=int, help="training epochs per round")
    g.add_argument("--batch-size", type=int, help="mini-batch size")
    g.add_argument("--lr", type=finite_float, help="the optimizer's learning rate")
    g.add_argument(
        "--optimizer",
        help="a torch.optim optimizer by name, e.g. sgd, adamw (default: the task's, "
        "Adam for the built-in tasks); another one drops the task's optimizer options",
    )
    g.add_argument(
        "--optimizer-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an optimizer keyword argument, e.g. momentum=0.5, weight_decay=5e-4; repeatable",
    )
    g.add_argument(
        "--start",
        choices=["warm", "reset", "fresh"],
        help="how F starts each round after the first: warm (keep training it, as the paper "
        "did), reset (the repeat's initial weights) or fresh (a new seeded initialisation, "
        "the same for every strategy); default: the task's (warm for the built-in tasks)",
    )
    g.add_argument(
        "--augment",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="train F on randomly augmented batches (tasks that offer it, e.g. cifar10: "
        "flip and crop, on the device; default: off)",
    )
    parser.add_argument("--seed", type=int, default=0, help="base seed; repeat r derives its own")
    parser.add_argument("--device", default="auto", help="auto (cuda when available), cpu or cuda")
    parser.add_argument(
        "--score-dtype",
        default="auto",
        choices=["auto", "float32", "bfloat16"],
        help="precision of the pool scoring that strategies select with (probabilities, "
        "embeddings); auto: bfloat16 where the device computes it natively (2-3x "
        "faster), else float32. Test-set metrics are always float32",
    )
    parser.add_argument(
        "--train-dtype",
        default="float32",
        choices=["auto", "float32", "bfloat16"],
        help="autocast precision of training F (default float32; bfloat16 is not always "
        "faster on a GPU: measure with `perf`)",
    )
    parser.add_argument(
        "--threads",
        type=positive_int,
        help="CPU threads for torch per unit (default: torch's choice, or cores // --jobs; "
        "use 1 per run when several runs share the machine, or they slow each other "
        "down badly). Results are identical only at the same thread count",
    )
    parser.add_argument(
        "--nondeterministic",
        action="store_true",
        default=False,
        help="on CUDA, allow the fastest (nondeterministic) kernels: a few percent faster, "
        "but the same command no longer gives the same numbers (recorded in the manifest)",
    )
    parser.add_argument(
        "--subset", type=positive_int, help="use N random pool samples and at most N test samples (quick runs, CI)"
    )
    parser.add_argument(
        "--imbalance",
        type=float,
        metavar="R",
        help="classification tasks: keep a seeded long-tailed pool (after --subset), the class at position c of a "
        "seeded order keeping n_max * R^(-c/(C-1)) samples, n_max the smallest class count (Cao et al. 2019); "
        "R >= 1 is the head-to-tail ratio, 1 a balanced pool; the test set is kept whole",
    )
    parser.add_argument(
        "--data-root", type=Path, default=None, help=f"data folder (default: $BENCH_DATA, else {default_data_root()})"
    )
    parser.add_argument(
        "--no-download",
        dest="download",
        action="store_false",
        help="never download missing data; fail with a message instead",
    )


def add_strategy_args(parser: argparse.ArgumentParser) -> None:
    """Strategy options: common ones as flags, any other as ``--option [STRATEGY.]KEY=VALUE``."""
    g = parser.add_argument_group("strategy options")
    g.add_argument("--alpha", type=finite_float, help="snn, si: latent step size along the normalised gradient")
    g.add_argument("--latent-dim", type=int, help="latent dimension of the task's generative model")
    g.add_argument(
        "--generative-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a setting of the task's generative model, e.g. epochs=2 (a short schedule), "
        "layout=unpooled (cifar10's other alpha-GAN reading); see `list`; repeatable",
    )
    g.add_argument(
        "--uncertainty-measure",
        choices=["entropy", "margin", "least-confidence"],
        help="uncertainty: the modAL measure (default entropy)",
    )
    g.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="[STRATEGY.]KEY=VALUE",
        help="a strategy constructor option, e.g. coreset.foo=1 (one strategy) or foo=1 "
        "(every chosen strategy that accepts it); repeatable",
    )


def add_execution_args(g: argparse._ArgumentGroup) -> None:
    """How units execute (``run`` and ``study``): local workers or Ray, checkpoints, a time limit."""
    g.add_argument(
        "--jobs",
        type=positive_int,
        default=1,
        help="worker processes running units side by side on this machine (default 1); on a GPU "
        "they share it, which small nets need to keep it busy",
    )
    g.add_argument(
        "--executor",
        choices=["local", "ray"],
        default="local",
        help="local (this machine, --jobs workers) or ray (units as Ray tasks on a cluster; "
        'pip install "latent-bench[ray]")',
    )
    g.add_argument(
        "--ray-address",
        help="the Ray cluster to join (auto: the one `ray start` made this machine "
        "part of); default: start a local one",
    )
    g.add_argument("--cpus-per-job", type=finite_float, help="Ray: CPUs per unit (default: its --threads)")
    g.add_argument(
        "--gpus-per-job",
        type=finite_float,
        help="Ray: GPUs per unit, fractions share one, e.g. 0.25 (default: 1 on --device cuda, else 0)",
    )
    g.add_argument(
        "--keep-checkpoints",
        action="store_true",
        help="keep each unit's checkpoints/<strategy>-r<repeat>.pt after it finishes",
    )
    g.add_argument(
        "--unit-timeout",
        type=finite_float,
        metavar="SECONDS",
        help="stop a unit (one strategy in one repeat) still running after SECONDS: it is failed and "
        "recorded, and the run goes on (default: no limit)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run strategies on a task with the progressive protocol")
    add_protocol_args(run)
    run.add_argument("--strategy", help="a strategy name, a comma-separated list, or `all` (all that apply); required")
    run.add_argument("--repeats", type=positive_int, default=1, help="repeats (paired across strategies)")
    run.add_argument("--out", type=Path, help="output folder (default: a new one under results/runs/)")
    run.add_argument("--quiet", action="store_true", help="no progress bars")
    run.add_argument(
        "--no-diagnostics",
        dest="diagnostics",
        action="store_false",
        help="skip the per-round diagnostics of the picks (pick_loss, pool_loss, pick_balance, "
        "pick_novelty in rounds.csv); they change no metric value",
    )
    run.add_argument(
        "--validation",
        type=non_negative_int,
        default=0,
        metavar="N",
        help="hold out N labeled pool samples per repeat (the same for every strategy, drawn before the "
        "initial set), never selectable or trained on; F is scored on them every round (val_value in "
        "rounds.csv). Their labels count as spent: n_labeled + N by round t (default 0: none)",
    )
    run.add_argument(
        "--recipe",
        type=Path,
        metavar="FILE",
        help="apply the recipe file `tune` wrote (its settings, e.g. lr and epochs); a flag for a setting "
        "it sets is refused, and so is a recipe for another task; recorded in manifest.json",
    )
    add_strategy_args(run)
    g = run.add_argument_group("execution (at the same --threads per unit, none of these changes a result)")
    g.add_argument(
        "--resume",
        type=Path,
        metavar="DIR",
        help="go on with the killed or interrupted run in DIR: its plan comes from DIR/manifest.json "
        "(no other flags needed), finished units are skipped, unfinished ones continue from "
        "their last checkpoint",
    )
    add_execution_args(g)
    g.add_argument(
        "--track",
        choices=TRACKERS,
        help="mirror the run into an experiment tracker: one MLflow run, a nested run per unit (strategy, repeat) "
        "with each round's metrics (step: labeled samples), the report files as artifacts; the run folder "
        'stays the record, and a tracker that fails is a warning. pip install "latent-bench[track]". A resumed '
        "run goes on tracking as its manifest says",
    )
    g.add_argument(
        "--track-uri",
        metavar="URI",
        help="the tracking server or store of --track (default: the resumed run's, else $MLFLOW_TRACKING_URI, "
        "else mlruns/ here, a local file store)",
    )

    tune = sub.add_parser(
        "tune",
        help="choose a training recipe on validation: run each recipe of a grid, rank them by "
        "validation AUBC (test values are never read) and write the winner as recipe.toml",
    )
    add_protocol_args(tune)
    tune.add_argument(
        "--grid",
        action="append",
        default=[],
        metavar="KEY=V1,V2,...",
        help="values to try for one setting: lr, epochs, batch_size, optimizer, start, augment, "
        "optimizer.<name> (an optimizer option) or <strategy>.<option>; repeatable (every combination runs)",
    )
    tune.add_argument("--strategy", default="random", help="the strategy (or comma-separated list) the recipes run")
    tune.add_argument("--repeats", type=positive_int, default=1, help="repeats per recipe (paired across recipes)")
    tune.add_argument(
        "--validation",
        type=positive_int,
        metavar="N",
        help="labeled pool samples held out per repeat that the recipes are ranked on; required. "
        "Their labels count as spent (as for run)",
    )
    tune.add_argument("--out", type=Path, help="the tune folder (default: a new one under results/tunes/)")
    tune.add_argument(
        "--quiet", action="store_true", help="no line per grid point (grid points never show progress bars)"
    )
    add_strategy_args(tune)
    g = tune.add_argument_group("execution (none of these changes a result)")
    g.add_argument(
        "--resume",
        type=Path,
        metavar="DIR",
        help="go on with the tune in DIR (its grid and settings from DIR/tune.json): finished recipes are "
        "skipped, unfinished ones resumed",
    )
    g.add_argument("--jobs", type=positive_int, default=1, help="worker processes running units side by side")

    track = sub.add_parser(
        "track",
        help="log into the experiment tracker what it lacks of a run (rounds it missed while down, the "
        "report files): into the MLflow runs the run's manifest records, or new ones",
    )
    track.add_argument("folder", type=Path, metavar="DIR", help="the run folder")
    track.add_argument("--track", choices=TRACKERS, help="the tracker (default: the one the run was tracked with)")
    track.add_argument(
        "--track-uri",
        metavar="URI",
        help="the tracking server or store (default: the run's, else $MLFLOW_TRACKING_URI, else mlruns/ here)",
    )

    study = sub.add_parser(
        "study",
        help="run every strategy over a grid of settings (a study file, or a shipped study by name) and "
        "write the study report: a pairwise penalty matrix, AUBC ranks and a reading (docs/studies.md)",
    )
    study.add_argument(
        "study", nargs="?", metavar="FILE|NAME", help="a study TOML file, or a shipped study's name (see --list)"
    )
    study.add_argument("--list", action="store_true", help="list the shipped studies and exit")
    study.add_argument("--out", type=Path, help="the study folder (default: a new one under results/studies/)")
    study.add_argument("--device", default="auto", help="auto (cuda when available), cpu or cuda")
    study.add_argument(
        "--threads",
        type=positive_int,
        help="CPU threads for torch per unit (default: as for run); the same for every cell",
    )
    study.add_argument(
        "--data-root", type=Path, default=None, help=f"data folder (default: $BENCH_DATA, else {default_data_root()})"
    )
    study.add_argument("--no-download", dest="download", action="store_false", help="never download missing data")
    study.add_argument("--quiet", action="store_true", help="no progress bars")
    g = study.add_argument_group("execution (at the same --threads per unit, none of these changes a result)")
    g.add_argument(
        "--resume",
        type=Path,
        metavar="DIR",
        help="go on with the study in DIR (its plan from DIR/study.json): finished cells are skipped, "
        "unfinished ones resumed from their checkpoints, the others started",
    )
    add_execution_args(g)

    sub.add_parser("list", help="list tasks, strategies and which strategy applies to which task")

    report = sub.add_parser(
        "report", help="rebuild table.csv, table.md and curves.png from rounds.csv, or a study folder's report"
    )
    report.add_argument(
        "runs", nargs="+", type=Path, help="run folders or rounds.csv files (one task), or one study folder"
    )
    report.add_argument("--out", type=Path, help="where to write (default: the single run folder)")
    report.add_argument(
        "--target",
        type=finite_float,
        help="the metric value whose labels-to-reach each strategy needs, in the units the tables "
        "show (default: random's final mean)",
    )
    report.add_argument("--paper", action="store_true", help="print the paper's Table 1 rows beside the measured ones")

    index = sub.add_parser(
        "index", help="write RESULTS_DIR/index.html: every run and study under it, with a link to each report"
    )
    index.add_argument(
        "results", nargs="?", type=Path, default=Path("results"), metavar="RESULTS_DIR", help="default: results/"
    )

    show = sub.add_parser("show", help="save a figure of pool samples beside their targets (Fig. S1)")
    add_figure_args(show)
    show.add_argument("--n", type=positive_int, default=6, help="samples shown")
    show.add_argument(
        "--synthesized",
        action="store_true",
        help="show SI-synthesized samples G(z) and their labels instead (tasks with a labeler)",
    )

    traj = sub.add_parser("trajectories", help="SNN trajectories in a 2-D latent space (Fig. 4)")
    add_figure_args(traj)
    traj.add_argument("--paths", type=positive_int, default=6, help="trajectories drawn")
    traj.add_argument("--steps", type=positive_int, default=8, help="steps per trajectory")
    traj.add_argument("--alpha", type=finite_float, default=0.5, help="latent step size")
    traj.add_argument("--initial", type=positive_int, default=500, help="labeled samples F is trained on")

    check = sub.add_parser(
        "check",
        help="the regression check on small subsets (CI): run the committed grid "
        "and compare every value with its reference",
    )
    check.add_argument("--update", action="store_true", help="rewrite the reference with this run's values")
    check.add_argument("--grid", type=Path, help="the grid file (default: results/reference/ci/grid.json)")
    check.add_argument("--data-root", type=Path, default=None, help="data folder (as for run)")

    latent = sub.add_parser(
        "latent",
        help="the quality of the task's generative model: reconstruction, its codes "
        "against the N(0, I) prior, realism of prior samples G(z)",
    )
    latent.add_argument("--task", required=True, help="task name (see `python -m bench list`)")
    latent.add_argument("--latent-dim", type=positive_int, help="latent dimension of the generative model (as for run)")
    latent.add_argument(
        "--generative-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a setting of the generative model (as for run); repeatable",
    )
    latent.add_argument("--seed", type=int, default=0, help="the model's seed (as for run), also of every draw")
    latent.add_argument("--subset", type=positive_int, help="use N random pool samples and at most N test samples")
    latent.add_argument("--threads", type=positive_int, help="CPU threads for torch and the task's workers")
    latent.add_argument("--device", default="auto", help="auto (cuda when available), cpu or cuda")
    latent.add_argument("--data-root", type=Path, default=None, help="data folder (as for run)")
    latent.add_argument("--no-download", dest="download", action="store_false", help="never download data")

    perf = sub.add_parser("perf", help="measure training throughput and wall time per round")
    add_protocol_args(perf)
    perf.add_argument("--strategy", default="random", help="strategy whose selection is timed too")
    add_strategy_args(perf)
    return parser


def add_figure_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--task", required=True, help="task name (see `python -m bench list`)")
    parser.add_argument("--out", type=Path, help="image file (default: results/figures/<command>-<task>.png)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the samples drawn")
    parser.add_argument("--subset", type=positive_int, help="use N random pool samples (quick looks)")
    parser.add_argument("--data-root", type=Path, default=None, help="data folder (as for run)")
    parser.add_argument("--no-download", dest="download", action="store_false", help="never download data")


def figure(args: argparse.Namespace) -> Path:
    """Build the figure of ``show`` or ``trajectories``; returns where it was saved."""
    from bench.report import figures
    from bench.run.assembly import assemble
    from bench.run.plan import create_task
    from tasks.base import Capability

    trajectories = args.command == "trajectories"
    synthesized = getattr(args, "synthesized", False)
    if trajectories and Capability.PROBABILITIES not in create_task(args.task).capabilities:
        raise ConfigError(
            f"trajectories colour the latent space by class, and {args.task!r} is not a "
            f"classification task; use a task such as mnist"
        )
    strategies = ["snn"] if trajectories else ["si"] if synthesized else ["random"]
    # a one-sample protocol: nothing is labeled here, and any --subset passes the plan's size checks
    assembly = assemble(
        RunConfig(
            task=args.task,
            strategies=strategies,
            device="cpu",
            seed=args.seed,
            subset=args.subset,
            latent_dim=2 if trajectories else None,
            rounds=1,
            initial=1,
            increment=1,
            data_root=args.data_root or default_data_root(),
            download=args.download,
        )
    )
    task, data = assembly.plan.task, assembly.data
    out = (
        args.out
        or Path("results") / "figures" / f"{args.command}{'-synthesized' if synthesized else ''}-{task.name}.png"
    )
    if trajectories:
        return figures.trajectory_figure(
            task,
            data,
            assembly.generative,
            out,
            n_paths=args.paths,
            steps=args.steps,
            alpha=args.alpha,
            initial=args.initial,
            seed=args.seed,
        )
    if synthesized:
        return figures.synthesized_figure(task, assembly.generative, out, n=args.n, seed=args.seed)
    return figures.sample_figure(task, data, out, n=args.n, seed=args.seed)


def parse_options(items: list[str], flag: str = "--option") -> dict[str, object]:
    """``["alpha=2", "measure=margin"]`` -> ``{"alpha": 2, "measure": "margin"}`` (numbers parsed)."""
    options: dict[str, object] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"{flag} {item!r} is not KEY=VALUE (e.g. {flag} epochs=2)")
        value = typed_value(text)
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{flag} {item!r}: not a finite number; give a finite value")
        options[key] = value
    return options


def given_flags(argv: Sequence[str] | None) -> set[str]:
    """The destinations of the flags actually typed on the command line (defaults left out)."""
    parser = build_parser()
    stack = [parser]
    while stack:
        current = stack.pop()
        for action in current._actions:
            if isinstance(action, argparse._SubParsersAction):
                stack.extend(action.choices.values())
            elif action.dest != "help":
                action.default = argparse.SUPPRESS
    return set(vars(parser.parse_args(argv))) - {"command"}


#: RunConfig fields set by each ``run`` flag (for checking a resume against the manifest).
FLAG_FIELDS = {
    "strategy": "strategies",
    "option": "strategy_options",
    "alpha": "strategy_options",
    "uncertainty_measure": "strategy_options",
    "generative_option": "generative_options",
    "optimizer_option": "optimizer_options",
}
EXECUTION_FLAGS = {
    "resume",
    "jobs",
    "executor",
    "ray_address",
    "cpus_per_job",
    "gpus_per_job",
    "keep_checkpoints",
    "unit_timeout",
    "track",
    "track_uri",
    "out",
}


def execution(args: argparse.Namespace) -> Execution:
    return Execution(
        jobs=args.jobs,
        executor=args.executor,
        ray_address=args.ray_address,
        cpus_per_job=args.cpus_per_job,
        gpus_per_job=args.gpus_per_job,
        keep_checkpoints=args.keep_checkpoints,
        unit_timeout=args.unit_timeout,
        track=getattr(args, "track", None),  # run only: a study's cells are not tracked
        track_uri=getattr(args, "track_uri", None),
    )


def run(args: argparse.Namespace, argv: Sequence[str] | None) -> Path:
    """``run``: a new run, or with ``--resume`` the rest of an earlier one."""
    from bench.cli.runner import execute, resume

    if args.resume is None:
        for flag in ("task", "strategy"):
            if getattr(args, flag) is None:
                raise ConfigError(f"--{flag} is required (or --resume DIR to go on with an earlier run)")
        if args.recipe is None:
            return execute(run_config(args), execution(args))
        config, record = with_recipe(run_config(args), args.recipe)
        return execute(config, execution(args), record)
    if args.recipe is not None:
        raise ConfigError("--recipe with --resume: a resumed run keeps the recipe it started with; drop --recipe")
    given = given_flags(argv) - EXECUTION_FLAGS
    if args.out is not None and args.out != args.resume:
        raise ConfigError(
            f"--out {args.out} with --resume {args.resume}: a resumed run writes into its own folder; drop --out"
        )
    filled = run_config(args)
    values = {FLAG_FIELDS.get(flag, flag): getattr(filled, FLAG_FIELDS.get(flag, flag)) for flag in given}
    return resume(args.resume, execution(args), values)


def with_recipe(config: RunConfig, path: Path) -> tuple[RunConfig, dict]:
    """``config`` with the recipe in file ``path`` applied, and the manifest's record of it. A
    recipe for another task, or a setting the command line gives too, is refused."""
    from bench.run.recipe import read_recipe, recipe_record

    recipe = read_recipe(path)
    applied = recipe.apply(config)
    clashes = recipe.clashes(config)
    if clashes:
        raise ConfigError(
            f"{', '.join(clashes)} and --recipe {path} set the same setting "
            f"(the recipe sets {', '.join(recipe.settings)}); drop the flag, or edit the recipe"
        )
    return applied, recipe_record(path, recipe)


#: Flags a resumed tune may give: how it executes and where it finds its data.
TUNE_RESUMABLE = {"resume", "jobs", "quiet", "data_root", "download"}


def tune(args: argparse.Namespace, argv: Sequence[str] | None) -> tuple[Path, list[str]]:
    """``tune``: a new tune, or with ``--resume`` the rest of an earlier one; returns the tune
    folder and the failed units."""
    import dataclasses

    from bench.cli.tune import Tune, go_on, start
    from bench.run.recipe import parse_grid

    runs = Execution(jobs=args.jobs)
    if args.resume is not None:
        extra = sorted(given_flags(argv) - TUNE_RESUMABLE)
        if extra:
            flags = ", ".join(f"--{name.replace('_', '-')}" for name in extra)
            raise ConfigError(
                f"{flags} with --resume: a resumed tune keeps its grid and settings ({args.resume / 'tune.json'}); "
                f"drop {flags}"
            )
        given: dict[str, object] = {"download": args.download}
        if args.data_root is not None:
            given["data_root"] = args.data_root
        return go_on(args.resume, runs, given)
    if args.task is None:
        raise ConfigError("--task is required (or --resume DIR to go on with an earlier tune)")
    if args.validation is None:
        raise ConfigError(
            "--validation N is required: tune ranks recipes on N held-out labeled pool samples per repeat"
        )
    grid = parse_grid(args.grid)
    # the picks' diagnostics change no value, and tune reads none: skip their cost
    base = dataclasses.replace(run_config(args), out=None, diagnostics=False)
    return start(Tune(base, grid), args.out, runs)


#: Flags a resumed study may give: how it executes and where it finds its data.
STUDY_RESUMABLE = EXECUTION_FLAGS | {"quiet", "data_root", "download"}


def study(args: argparse.Namespace, argv: Sequence[str] | None) -> tuple[Path, list[str]]:
    """``study``: a new study, or with ``--resume`` the rest of an earlier one; returns the study
    folder and the failed units."""
    from bench.cli.study import go_on, start

    if args.resume is not None:
        extra = sorted(given_flags(argv) - STUDY_RESUMABLE) + (["study"] if args.study else [])
        if extra:
            flags = ", ".join(name if name == "study" else f"--{name.replace('_', '-')}" for name in extra)
            raise ConfigError(
                f"{flags} with --resume: a resumed study keeps its cells and settings "
                f"({args.resume / 'study.json'}); drop {flags}"
            )
        if args.out is not None and args.out != args.resume:
            raise ConfigError(
                f"--out {args.out} with --resume {args.resume}: a resumed study writes into its own folder; drop --out"
            )
        given: dict[str, object] = {"download": args.download, "quiet": args.quiet}
        if args.data_root is not None:
            given["data_root"] = args.data_root
        return go_on(args.resume, execution(args), given)
    if args.study is None:
        raise ConfigError("give a study file or a shipped study's name (python -m bench study --list), or --resume DIR")
    base = RunConfig(
        task="",
        strategies=[],
        device=args.device,
        threads=args.threads,
        data_root=args.data_root or default_data_root(),
        download=args.download,
        quiet=args.quiet,
    )
    return start(args.study, args.out, base, execution(args))


def run_config(args: argparse.Namespace) -> RunConfig:
    options = parse_options(args.option)
    if args.uncertainty_measure:
        options["uncertainty.measure"] = args.uncertainty_measure
    if args.alpha is not None:
        options["alpha"] = args.alpha
    return RunConfig(
        task=args.task,
        strategies=[s.strip() for s in (args.strategy or "").split(",") if s.strip()],
        rounds=args.rounds,
        initial=args.initial,
        increment=args.increment,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        repeats=getattr(args, "repeats", 1),
        seed=args.seed,
        device=args.device,
        threads=args.threads,
        score_dtype=args.score_dtype,
        start=args.start,
        optimizer=args.optimizer,
        optimizer_options=parse_options(args.optimizer_option, "--optimizer-option"),
        augment=args.augment,
        train_dtype=args.train_dtype,
        subset=args.subset,
        data_root=args.data_root or default_data_root(),
        download=args.download,
        out=getattr(args, "out", None),
        quiet=getattr(args, "quiet", False),
        strategy_options=options,
        latent_dim=args.latent_dim,
        generative_options=parse_options(args.generative_option, "--generative-option"),
        nondeterministic=args.nondeterministic,
        diagnostics=getattr(args, "diagnostics", True),
        validation=getattr(args, "validation", 0),
        imbalance=getattr(args, "imbalance", None),
    )


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the process is, so a run ends as honestly as on Ctrl-C."""


def _terminate(signum, frame) -> None:
    # the first SIGTERM ends the run; more (a supervisor repeating it) must not break its cleanup
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise Terminated("SIGTERM")


EXIT_INTERRUPTED = 130


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    on_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminate) if on_main_thread else None
    try:
        return _main(args, argv)
    finally:
        # once terminated, SIGTERM stays ignored while the process exits (restoring the default
        # would let a repeated one kill it with 143 in the last moments)
        if on_main_thread and signal.getsignal(signal.SIGTERM) is not signal.SIG_IGN:
            signal.signal(signal.SIGTERM, previous)


def _main(args: argparse.Namespace, argv: Sequence[str] | None) -> int:
    """The command in ``args``; bad input exits 2, Ctrl-C and SIGTERM 130."""
    from bench.report.tables import ReportError
    from tasks.base import DataError

    logging.basicConfig(level=logging.WARNING if getattr(args, "quiet", False) else logging.INFO, format="%(message)s")
    logging.captureWarnings(True)  # e.g. a label cache moved aside or read-only: one line, no source dump
    try:
        if args.command == "list":
            from bench.cli.listing import listing

            print(listing())
        elif args.command == "run":
            out = run(args, argv)
            print(
                f"results in {out}; open {out / 'report.html'}"
                if (out / "report.html").exists()
                else f"results in {out}"
            )
            failed = json.loads((out / "manifest.json").read_text()).get("failures", [])
            if failed:
                units = ", ".join(f"{f['strategy']}-r{f['repeat']}" for f in failed)
                print(
                    f"{len(failed)} unit(s) failed: {units} (errors in {out / 'manifest.json'})",
                    file=sys.stderr,
                )
                return 1
        elif args.command == "tune":
            folder, failures = tune(args, argv)
            if (folder / "ranking.md").exists():
                print((folder / "ranking.md").read_text())
            if (folder / "recipe.toml").exists():
                print(f"recipe in {folder / 'recipe.toml'} (apply it with python -m bench run --recipe FILE)")
            if failures:
                print(f"{len(failures)} unit(s) failed: {', '.join(failures)}", file=sys.stderr)
                return 1
        elif args.command == "study" and args.list:
            from bench.study.spec import shipped_studies

            for name, description in shipped_studies().items():
                print(f"{name}: {description}")
        elif args.command == "study":
            folder, failures = study(args, argv)
            print(f"study in {folder}; its report: {folder / 'report.html'} and {folder / 'study.md'}")
            if failures:
                print(f"{len(failures)} unit(s) failed: {', '.join(failures)}", file=sys.stderr)
                return 1
        elif args.command == "index":
            from bench.report.index import write_index

            if not args.results.is_dir():
                raise ConfigError(f"{args.results} is not a folder; pass the folder that holds your runs and studies")
            print(write_index(args.results))
        elif args.command == "report" and len(args.runs) == 1 and (args.runs[0] / "study.json").is_file():
            from bench.cli.study import recorded_cells
            from bench.study.report import write_study_report

            if args.out is not None and args.out != args.runs[0]:
                raise ReportError(f"{args.runs[0]} is a study: its report is written into it; drop --out")
            for path in write_study_report(args.runs[0], recorded_cells(args.runs[0])):
                print(path)
        elif args.command == "report":
            from bench.report.tables import metric_info, read_rounds, report_sources, unfinished, write_report
            from bench.run.folder import check_report_target

            if args.out is None and len(args.runs) != 1:
                raise ReportError("several inputs: pass --out DIR for the combined report")
            out = args.out or (args.runs[0] if args.runs[0].is_dir() else args.runs[0].parent)
            check_report_target(args.runs, out)
            notes = [note for run in args.runs if (note := unfinished(run if run.is_dir() else run.parent))]
            for note in notes:
                print(f"note: {note}", file=sys.stderr)
            rounds = read_rounds(args.runs)
            metric = metric_info(args.runs, rounds)
            target = None if args.target is None else args.target / metric.display_scale
            sources = report_sources(args.runs)
            for path in write_report(rounds, out, metric, notes, target, args.paper, sources):
                print(path)
        elif args.command in ("show", "trajectories"):
            print(figure(args))
        elif args.command == "track":
            from bench.cli.runner import track

            if not track(args.folder, args.track, args.track_uri):
                return 1
            print(f"tracked {args.folder}")
        elif args.command == "check":
            from bench.cli.check import GRID, check

            return check(args.grid or GRID, args.update, args.data_root)
        elif args.command == "latent":
            from bench.cli.latent import latent_report

            print(
                latent_report(
                    RunConfig(
                        task=args.task,
                        strategies=[],
                        seed=args.seed,
                        subset=args.subset,
                        latent_dim=args.latent_dim,
                        generative_options=parse_options(args.generative_option, "--generative-option"),
                        threads=args.threads,
                        device=args.device,
                        data_root=args.data_root or default_data_root(),
                        download=args.download,
                    )
                )
            )
        elif args.command == "perf":
            from bench.cli.perf import perf

            if args.task is None:
                raise ConfigError("--task is required")
            print(perf(run_config(args)))
    except (ConfigError, DataError, ReportError) as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt as err:
        print(f"interrupted ({str(err) or 'Ctrl-C'})", file=sys.stderr)
        return EXIT_INTERRUPTED
    return 0
