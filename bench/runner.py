"""Runs a validated plan: repeats x strategies, writing outputs as rounds finish."""

from __future__ import annotations

import logging
import shutil
from collections import Counter
from datetime import datetime
from pathlib import Path

import pandas as pd
from tqdm.auto import tqdm

from bench.config import ConfigError, RunConfig
from bench.loop import initial_indices, initial_weights, repeat_seed, run_progressive
from bench.manifest import now, start_manifest
from bench.plan import Plan, generative_model, load_data, plan_run
from bench.report import write_report
from bench.results import LabeledLog, RoundRecord, RoundsWriter, write_json
from strategies.base import SelectionError

log = logging.getLogger(__name__)


def prepare_out(out: Path | None, task: str) -> Path:
    """Create the output folder (default: a new one under ``results/runs/``) and check it is
    writable and holds no earlier run."""
    if out is None:
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        out = Path("results") / "runs" / f"{task}-{stamp}"
        suffix = 1
        while out.exists():
            out = out.with_name(f"{task}-{stamp}-{suffix}")
            suffix += 1
    out = Path(out)
    if (out / "rounds.csv").exists():
        raise ConfigError(f"--out {out} already holds a run (rounds.csv); choose a new folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        raise ConfigError(f"cannot write to --out {out} ({err.strerror or err}); "
                          f"choose a folder you can write to") from None
    return out


def recorder(writer: RoundsWriter, labeled: LabeledLog, done: Counter, rounds_bar: tqdm, repeats_bar: tqdm):
    """The ``on_round`` callback: write the row and the labeled set, count the round per
    (strategy, repeat) in ``done``, advance the progress bars."""

    def on_round(record: RoundRecord, sources, latents) -> None:
        writer.write(record)
        done[record.strategy, record.repeat] += 1
        labeled.add(record.strategy, record.repeat, record.round, sources, latents)
        labeled.save()
        rounds_bar.set_postfix_str(f"n={record.n_labeled} {record.metric}={record.value:.4g}")
        rounds_bar.update()
        repeats_bar.set_postfix_str(f"last: {record.strategy} t={record.round} {record.metric}={record.value:.4g}")

    return on_round


def execute(config: RunConfig) -> Path:
    """Validate ``config``, run every (repeat, strategy), and write all outputs; returns the folder."""
    plan = plan_run(config)
    out = prepare_out(config.out, plan.task.name)
    try:
        data = load_data(plan)
    except BaseException:
        if not any(out.iterdir()):
            out.rmdir()
        raise
    run_plan(plan, data, out)
    return out


def run_plan(plan: Plan, data, out: Path) -> None:
    """Run every repeat of every strategy on ``data``, writing rows, labeled sets and the
    manifest into ``out`` as rounds finish, then the tables and figure."""
    config, protocol = plan.config, plan.protocol
    seeds = [repeat_seed(config.seed, r) for r in range(config.repeats)]
    sizes = {"pool": len(data.pool_x), "test": len(data.test_x), **({"source": data.source} if data.source else {})}
    manifest = start_manifest(plan, seeds, sizes)
    write_json(out / "manifest.json", manifest)
    labeled = LabeledLog(out / "labeled.npz")
    failures: list[dict] = []
    done: Counter = Counter()
    generative, generative_file = generative_model(plan, data)
    if generative_file is not None:
        manifest["generative"]["file"] = str(generative_file)
        samples = generative_file.with_suffix(".png")  # a grid of reconstructions and prior samples
        if samples.exists():
            shutil.copyfile(samples, out / "generative-samples.png")
        write_json(out / "manifest.json", manifest)
    repeats_bar = tqdm(seeds, desc=f"{plan.task.name} repeats", unit="repeat", disable=config.quiet)
    with RoundsWriter(out / "rounds.csv", plan.task.extra_metrics()) as writer:
        for repeat, seed in enumerate(repeats_bar):
            init_idx = initial_indices(seed, len(data.pool_x), protocol.initial)
            init_state = initial_weights(plan.task, seed)
            for strategy in plan.strategies:
                rounds_bar = tqdm(total=protocol.rounds, desc=f"{strategy.name} repeat {repeat}", unit="round",
                                  leave=False, disable=config.quiet)
                on_round = recorder(writer, labeled, done, rounds_bar, repeats_bar)
                try:
                    run_progressive(plan, data, strategy, repeat, seed, init_idx, init_state, on_round, generative)
                except SelectionError as err:
                    rounds_done = done[strategy.name, repeat]
                    log.warning("%s, repeat %d stopped after %d rounds: %s", strategy.name, repeat, rounds_done, err)
                    failures.append(dict(strategy=strategy.name, repeat=repeat, rounds_done=rounds_done, error=str(err)))
                    manifest.update(failures=failures)
                    write_json(out / "manifest.json", manifest)
                rounds_bar.close()
    repeats_bar.close()
    write_report(pd.read_csv(out / "rounds.csv"), out)
    manifest.update(status="complete" if not failures else "complete with failures", finished=now())
    write_json(out / "manifest.json", manifest)
