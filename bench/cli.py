"""Command line: ``python -m bench run | list | report | show | trajectories | perf``.

Bad input exits with status 2 and one line that names the problem and the fix.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Sequence

from bench.config import ConfigError, RunConfig
from bench.paths import default_data_root

EXIT_USAGE = 2


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1 (got {value})")
    return value


def add_protocol_args(parser: argparse.ArgumentParser) -> None:
    """Flags shared by ``run`` and ``perf``; protocol flags default to the task's own values."""
    parser.add_argument("--task", required=True, help="task name (see `python -m bench list`)")
    g = parser.add_argument_group("protocol (defaults: the task's, see `python -m bench list`)")
    g.add_argument("--rounds", type=int, help="number of rounds T")
    g.add_argument("--initial", type=int, help="labeled samples at round 1")
    g.add_argument("--increment", type=int, help="samples added after each round")
    g.add_argument("--epochs", type=int, help="training epochs per round")
    g.add_argument("--batch-size", type=int, help="mini-batch size")
    g.add_argument("--lr", type=float, help="Adam learning rate")
    g.add_argument("--warm-start", action=argparse.BooleanOptionalAction, default=True,
                   help="keep training F across rounds as the paper did (default), or re-initialise "
                        "it to the repeat's initial weights every round (--no-warm-start)")
    g.add_argument("--augment", action=argparse.BooleanOptionalAction, default=None,
                   help="train F on randomly augmented batches (tasks that offer it, e.g. cifar10: "
                        "flip and crop, on the device; default: off)")
    parser.add_argument("--seed", type=int, default=0, help="base seed; repeat r derives its own")
    parser.add_argument("--device", default="auto", help="auto (cuda when available), cpu or cuda")
    parser.add_argument("--score-dtype", default="auto", choices=["auto", "float32", "bfloat16"],
                        help="precision of the pool scoring that strategies select with (probabilities, "
                             "embeddings); auto: bfloat16 where the device computes it natively (2-3x "
                             "faster), else float32. Test-set metrics are always float32")
    parser.add_argument("--train-dtype", default="float32", choices=["auto", "float32", "bfloat16"],
                        help="autocast precision of training F (default float32; bfloat16 is not always "
                             "faster on a GPU: measure with `perf`)")
    parser.add_argument("--threads", type=positive_int,
                        help="CPU threads for torch (default: torch's choice; use 1 per run when "
                             "several runs share the machine, or they slow each other down badly)")
    parser.add_argument("--subset", type=positive_int,
                        help="use N random pool samples and at most N test samples (quick runs, CI)")
    parser.add_argument("--data-root", type=Path, default=None,
                        help=f"data folder (default: $BENCH_DATA, else {default_data_root()})")
    parser.add_argument("--no-download", dest="download", action="store_false",
                        help="never download missing data; fail with a message instead")


def add_strategy_args(parser: argparse.ArgumentParser) -> None:
    """Strategy options: common ones as flags, any other as ``--option [STRATEGY.]KEY=VALUE``."""
    g = parser.add_argument_group("strategy options")
    g.add_argument("--alpha", type=float, help="snn, si: latent step size along the normalised gradient")
    g.add_argument("--latent-dim", type=int, help="latent dimension of the task's generative model")
    g.add_argument("--generative-option", action="append", default=[], metavar="KEY=VALUE",
                   help="a setting of the task's generative model, e.g. epochs=2 (a short schedule), "
                        "layout=unpooled (cifar10's other alpha-GAN reading); see `list`; repeatable")
    g.add_argument("--uncertainty-measure", choices=["entropy", "margin", "least-confidence"],
                   help="uncertainty: the modAL measure (default entropy)")
    g.add_argument("--option", action="append", default=[], metavar="[STRATEGY.]KEY=VALUE",
                   help="a strategy constructor option, e.g. coreset.foo=1 (one strategy) or foo=1 "
                        "(every chosen strategy that accepts it); repeatable")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run strategies on a task with the progressive protocol")
    add_protocol_args(run)
    run.add_argument("--strategy", required=True,
                     help="a strategy name, a comma-separated list, or `all` (all that apply)")
    run.add_argument("--repeats", type=positive_int, default=1, help="repeats (paired across strategies)")
    run.add_argument("--out", type=Path, help="output folder (default: a new one under results/runs/)")
    run.add_argument("--quiet", action="store_true", help="no progress bars")
    add_strategy_args(run)

    sub.add_parser("list", help="list tasks, strategies and which strategy applies to which task")

    report = sub.add_parser("report", help="rebuild table.csv, table.md and curves.png from rounds.csv")
    report.add_argument("runs", nargs="+", type=Path, help="run folders or rounds.csv files (one task)")
    report.add_argument("--out", type=Path, help="where to write (default: the single run folder)")

    show = sub.add_parser("show", help="save a figure of pool samples beside their targets (Fig. S1)")
    add_figure_args(show)
    show.add_argument("--n", type=positive_int, default=6, help="samples shown")
    show.add_argument("--synthesized", action="store_true",
                      help="show SI-synthesized samples G(z) and their labels instead (tasks with a labeler)")

    traj = sub.add_parser("trajectories", help="SNN trajectories in a 2-D latent space (Fig. 4)")
    add_figure_args(traj)
    traj.add_argument("--paths", type=positive_int, default=6, help="trajectories drawn")
    traj.add_argument("--steps", type=positive_int, default=8, help="steps per trajectory")
    traj.add_argument("--alpha", type=float, default=0.5, help="latent step size")
    traj.add_argument("--initial", type=positive_int, default=500, help="labeled samples F is trained on")

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
    import torch

    from bench import figures
    from bench.generative import load_or_train
    from bench.plan import plan_run
    from bench.paths import cache_root
    from tasks.base import Capability

    latent_dim = 2 if args.command == "trajectories" else None
    synthesized = getattr(args, "synthesized", False)
    strategies = ["snn"] if args.command == "trajectories" else ["si"] if synthesized else ["random"]
    plan = plan_run(RunConfig(task=args.task, strategies=strategies, device="cpu",
                              data_root=args.data_root or default_data_root(), download=args.download))
    task = plan.task
    if args.command == "trajectories" and Capability.PROBABILITIES not in task.capabilities:
        raise ConfigError(f"trajectories colour the latent space by class, and {task.name!r} is not a "
                          f"classification task; use a task such as mnist")
    data = task.load(plan.config.data_root, download=args.download)
    if args.subset:
        data = data.subset(min(args.subset, len(data.pool_x)), torch.Generator().manual_seed(args.seed))
    out = args.out or Path("results") / "figures" / f"{args.command}{'-synthesized' if synthesized else ''}-{task.name}.png"

    def vae():
        spec = task.generative.replace(latent_dim=latent_dim)
        return load_or_train(task.name, data.pool_x, spec, args.seed, cache_root() / "generative")

    if args.command == "trajectories":
        return figures.trajectory_figure(task, data, vae(), out, n_paths=args.paths, steps=args.steps,
                                         alpha=args.alpha, initial=args.initial, seed=args.seed)
    if synthesized:
        assert Capability.SYNTHETIC_LABELS in task.capabilities  # plan_run refused the task otherwise
        return figures.synthesized_figure(task, vae(), out, n=args.n, seed=args.seed)
    return figures.sample_figure(task, data, out, n=args.n, seed=args.seed)


def parse_options(items: list[str], flag: str = "--option") -> dict[str, object]:
    """``["alpha=2", "measure=margin"]`` -> ``{"alpha": 2, "measure": "margin"}`` (numbers parsed)."""
    options: dict[str, object] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"{flag} {item!r} is not KEY=VALUE (e.g. {flag} epochs=2)")
        value: object = text
        for cast in (int, float):
            try:
                value = cast(text)
                break
            except ValueError:
                pass
        options[key] = value
    return options


def run_config(args: argparse.Namespace) -> RunConfig:
    options = parse_options(args.option)
    if args.uncertainty_measure:
        options["uncertainty.measure"] = args.uncertainty_measure
    if args.alpha is not None:
        options["alpha"] = args.alpha
    return RunConfig(
        task=args.task, strategies=[s.strip() for s in args.strategy.split(",") if s.strip()],
        rounds=args.rounds, initial=args.initial, increment=args.increment, epochs=args.epochs,
        batch_size=args.batch_size, lr=args.lr, repeats=getattr(args, "repeats", 1), seed=args.seed,
        device=args.device, threads=args.threads, score_dtype=args.score_dtype, warm_start=args.warm_start,
        augment=args.augment, train_dtype=args.train_dtype,
        subset=args.subset,
        data_root=args.data_root or default_data_root(), download=args.download,
        out=getattr(args, "out", None), quiet=getattr(args, "quiet", False),
        strategy_options=options, latent_dim=args.latent_dim,
        generative_options=parse_options(args.generative_option, "--generative-option"),
    )


def main(argv: Sequence[str] | None = None) -> int:
    from bench.report import ReportError
    from tasks.base import DataNotFoundError

    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING if getattr(args, "quiet", False) else logging.INFO,
                        format="%(message)s")
    try:
        if args.command == "list":
            from bench.listing import listing

            print(listing())
        elif args.command == "run":
            from bench.runner import execute

            out = execute(run_config(args))
            print(f"results in {out}")
        elif args.command == "report":
            from bench.report import read_rounds, write_report

            if args.out is None and len(args.runs) != 1:
                raise ReportError("several inputs: pass --out DIR for the combined report")
            out = args.out or (args.runs[0] if args.runs[0].is_dir() else args.runs[0].parent)
            for path in write_report(read_rounds(args.runs), out):
                print(path)
        elif args.command in ("show", "trajectories"):
            print(figure(args))
        elif args.command == "perf":
            from bench.perf import perf

            print(perf(run_config(args)))
    except (ConfigError, DataNotFoundError, ReportError) as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USAGE
    return 0
