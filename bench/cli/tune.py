"""``python -m bench tune``: choose a training recipe on validation, never on the test set.

Every recipe of a grid (:mod:`bench.run.recipe`) runs the progressive protocol with ``--validation
N`` as an ordinary run, in a folder of its own under the tune folder (named from its settings,
``lr=0.001,epochs=5``), run by the ordinary driver (:func:`bench.cli.runner.execute`; ``--jobs``
applies). The recipes are ranked by their validation AUBC: the area under each repeat's curve of
``val_value`` (the task's metric on the N held-out labeled pool samples) over the budget, divided
by the budget span (:func:`bench.report.stats.aubc`), averaged over the chosen strategies within a
repeat, then mean and sample std over repeats; higher or lower is better as the task's metric
says, and ties go to the recipe earlier in the grid. The winner is written as ``recipe.toml``,
which ``python -m bench run --recipe FILE`` applies.

Test values are never read: the ranking is built from :func:`read_validation`, a projection of
each ``rounds.csv`` onto :data:`VALIDATION_VIEW`, which holds no column computed on the test set
(``value``, the task's extra metrics); nothing else of a grid point's results is read but the
failures its manifest lists. (Each grid point is an ordinary run, so its own folder holds its test
curves and tables, as any run's does.) Grid points run without progress bars, which show each
round's test metric; tune logs one line per grid point instead.

The tune folder holds ``tune.json`` (the task, grid and shared settings, which ``tune --resume DIR``
reads), one run folder per recipe, ``ranking.csv``, ``ranking.md`` and ``recipe.toml``.
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from bench.cli.runner import finish, new_folder, prepare_out, run_status, with_threads
from bench.report.stats import aubc
from bench.run.config import ConfigError, Execution, RunConfig
from bench.run.folder import FolderLock
from bench.run.manifest import command_line, now, recorded_config
from bench.run.plan import Plan, plan_run
from bench.run.recipe import Recipe, check_key, check_value, format_value, grid_recipes
from bench.run.results import MetricInfo, complete_part

log = logging.getLogger(__name__)

#: The columns of a grid point's ``rounds.csv`` that tune reads: who, when, and the validation
#: metric. Nothing computed on the test set (``value``, a task's extra metrics) is among them.
VALIDATION_VIEW = ["strategy", "seed", "repeat", "round", "n_labeled", "n_validation", "val_value"]
#: The file in a tune folder that records its plan.
TUNE_FILE = "tune.json"


def read_validation(folder: Path) -> pd.DataFrame:
    """The rows of ``folder/rounds.csv`` projected onto :data:`VALIDATION_VIEW` (a torn last row
    left out); the other columns, the test metric among them, are not even parsed."""
    path = Path(folder) / "rounds.csv"
    raw, _ = complete_part(path)
    header = raw.split(b"\n", 1)[0].decode()
    missing = [c for c in VALIDATION_VIEW if c not in header.strip().split(",")]
    if missing:
        raise ConfigError(f"{path} has no {', '.join(missing)} column; it is not a run with --validation")
    return pd.read_csv(io.BytesIO(raw), usecols=VALIDATION_VIEW)[VALIDATION_VIEW]


@dataclass(frozen=True)
class Score:
    """A recipe's validation AUBC (the metric's units): mean and sample std over ``repeats``
    complete repeats (NaN std for one; NaN mean for none)."""

    mean: float
    std: float
    repeats: int


def validation_score(curves: pd.DataFrame) -> Score:
    """The validation AUBC of one recipe from its :func:`read_validation` rows: per curve (strategy
    and repeat) the area under ``val_value`` over ``n_labeled`` divided by the budget span; per
    repeat, the mean over strategies; then mean and std over the repeats in which every strategy
    finished every round (a unit that failed part-way would score a shorter budget)."""
    if curves.empty:
        return Score(math.nan, math.nan, 0)
    keyed = curves.assign(unit=curves["strategy"] + "-r" + curves["repeat"].astype(str))
    per_unit = aubc(keyed.drop(columns="strategy").rename(columns={"unit": "strategy", "val_value": "value"}))
    repeat_of = keyed.drop_duplicates("unit").set_index("unit")["repeat"]
    per_unit["repeat"] = per_unit["strategy"].map(repeat_of)
    strategies = curves["strategy"].nunique()
    per_repeat = per_unit.groupby("repeat")["aubc_mean"].agg(["mean", "size"])
    values = per_repeat.loc[per_repeat["size"] == strategies, "mean"].to_numpy(dtype=float)
    if len(values) == 0:
        return Score(math.nan, math.nan, 0)
    return Score(float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else math.nan, len(values))


def rank(recipes: list[Recipe], scores: list[Score], higher_is_better: bool) -> list[int]:
    """The position (0-based, in grid order) of each recipe from best to worst by validation
    AUBC mean; ties keep grid order, recipes without a score come last."""

    def key(i: int) -> tuple[bool, float, int]:
        mean = scores[i].mean
        return math.isnan(mean), -mean if higher_is_better else mean, i

    return sorted(range(len(recipes)), key=key)


def ranking_frame(recipes: list[Recipe], scores: list[Score], metric: MetricInfo, validation: int) -> pd.DataFrame:
    """``ranking.csv``: one row per recipe, best first: its rank, settings (a column per grid
    key), the metric and its direction, the validation AUBC mean and std (the metric's units),
    the repeats they are over, the validation samples per repeat and the recipe's run folder."""
    rows = []
    for place, i in enumerate(rank(recipes, scores, metric.higher_is_better), start=1):
        score = scores[i]
        rows.append(
            {
                "rank": place,
                **recipes[i].settings,
                "metric": metric.name,
                "direction": metric.direction,
                "val_aubc_mean": score.mean,
                "val_aubc_std": score.std,
                "repeats": score.repeats,
                "n_validation": validation,
                "folder": recipes[i].name,
            }
        )
    return pd.DataFrame(rows)


def ranking_markdown(frame: pd.DataFrame, keys: list[str], metric: MetricInfo, validation: int) -> str:
    """``ranking.md``: the ranking as a table in the metric's display units."""
    scale, digits = metric.display_scale, metric.decimals + 1
    label = metric.label.removeprefix("test ")  # a task's label names the set it is usually measured on
    lines = [
        f"Recipes ranked by validation AUBC of {label} ({metric.direction}): the mean over the budget of "
        f"the metric on {validation} held-out labeled pool samples per repeat, mean ± std over repeats. "
        f"No test value was read.",
        "",
        "| rank | " + " | ".join(keys) + " | validation AUBC | repeats |",
        "|---:|" + "---|" * len(keys) + "---:|---:|",
    ]
    for row in frame.to_dict("records"):
        mean, std = row["val_aubc_mean"] * scale, row["val_aubc_std"] * scale
        spread = "" if math.isnan(std) else f" ± {std:.{digits}f}"
        shown = "n/a" if math.isnan(mean) else f"{mean:.{digits}f}{spread}"
        settings = " | ".join(format_value(row[key]) for key in keys)
        lines.append(f"| {row['rank']} | {settings} | {shown} | {row['repeats']} |")
    return "\n".join(lines) + "\n"


@dataclass
class Tune:
    """A tune: the settings every grid point shares (``base``, its ``out`` unset) and the grid."""

    base: RunConfig
    grid: dict[str, list[Any]]

    @property
    def recipes(self) -> list[Recipe]:
        return grid_recipes(self.base.task, self.grid)

    def plans(self) -> list[Plan]:
        """Every grid point's checked plan (ConfigError naming the grid point and the fix), before any work."""
        if self.base.validation < 1:
            raise ConfigError("tune ranks recipes on validation: give --validation N (labeled pool samples per repeat)")
        clashes = self.recipes[0].clashes(self.base)
        if clashes:
            raise ConfigError(
                f"{', '.join(clashes)} and --grid set the same setting; give it either as a flag or in the grid"
            )
        plans = []
        for recipe in self.recipes:
            try:
                plans.append(plan_run(recipe.apply(self.base)))
            except ConfigError as err:
                raise ConfigError(f"grid point {recipe.name}: {err}; fix --grid or the other flags") from None
        return plans

    def record(self) -> dict[str, Any]:
        """What ``tune.json`` holds: the command, when it started, the grid and the shared settings."""
        return {
            "command": command_line(),
            "started": now(),
            "task": self.base.task,
            "grid": self.grid,
            "config": recorded_config(self.base),
        }

    @classmethod
    def read(cls, folder: Path) -> Tune:
        """The tune recorded in ``folder/tune.json`` (its values checked as a grid's are)."""
        path = Path(folder) / TUNE_FILE
        try:
            saved = json.loads(path.read_text())
            grid = {}
            for key, values in saved["grid"].items():
                check_key(key, f"{path} grid")
                grid[key] = [check_value(key, value, f"{path} grid") for value in values]
            return cls(RunConfig.from_manifest(saved["config"]), grid)
        except OSError as err:
            why = err.strerror or err
            raise ConfigError(f"--resume {folder}: cannot read {path} ({why}); pass a tune folder") from None
        except (ValueError, KeyError, TypeError, AttributeError) as err:
            raise ConfigError(f"--resume {folder}: {path} is not a tune's record ({err}); pass a tune folder") from None


def start(tune: Tune, out: Path | None, execution: Execution) -> tuple[Path, list[str]]:
    """Check every grid point, claim a new tune folder and run the grid; returns the folder and the
    failed units (``<recipe>/<unit>``)."""
    execution.check()
    # the same threads for every point; no progress bar (it shows the test metric)
    tune = dataclasses.replace(tune, base=dataclasses.replace(with_threads(tune.base, execution), quiet=True))
    plans = tune.plans()
    if out is not None and (Path(out) / TUNE_FILE).exists():
        raise ConfigError(f"--out {out} already holds a tune; choose a new folder, or go on with tune --resume {out}")
    folder, lock = prepare_out(out or new_folder("tunes", tune.base.task), tune.base.task)
    try:
        (folder / TUNE_FILE).write_text(json.dumps(tune.record(), indent=2, default=str) + "\n")
        return folder, run_grid(tune, plans, folder, execution, {})
    finally:
        lock.release()


def go_on(folder: Path, execution: Execution, given: dict[str, Any]) -> tuple[Path, list[str]]:
    """Go on with the tune in ``folder``: finished grid points are skipped, unfinished ones resumed,
    the others started. ``given``: the run settings a resume may change (data root, download)."""
    execution.check()
    given = {**given, "quiet": True}  # no progress bar: it shows the test metric
    tune = Tune.read(folder)
    tune = dataclasses.replace(tune, base=dataclasses.replace(tune.base, **given))
    plans = tune.plans()
    lock = FolderLock(folder)
    try:
        return folder, run_grid(tune, plans, folder, execution, given)
    finally:
        lock.release()


def run_grid(tune: Tune, plans: list[Plan], folder: Path, execution: Execution, given: dict[str, Any]) -> list[str]:
    """Run each grid point not yet finished in its folder, then write the ranking and the winning
    recipe; returns the failed units."""
    recipes = tune.recipes
    failures = []
    for i, (recipe, plan) in enumerate(zip(recipes, plans), start=1):
        point = folder / recipe.name
        log.info("tune %d/%d: %s (%s)", i, len(recipes), recipe.name, run_status(point) or "new")
        failed = finish(point, plan.config, execution, given)
        failures += [f"{recipe.name}/{f['strategy']}-r{f['repeat']}" for f in failed]
    write_results(tune, plans, folder)
    return failures


def write_results(tune: Tune, plans: list[Plan], folder: Path) -> None:
    """Rank the grid's recipes on validation alone and write ``ranking.csv``, ``ranking.md`` and the
    winner as ``recipe.toml``."""
    recipes = tune.recipes
    metric = MetricInfo.of(plans[0].task.metric)
    validation = tune.base.validation
    scores = [validation_score(read_validation(folder / recipe.name)) for recipe in recipes]
    frame = ranking_frame(recipes, scores, metric, validation)
    frame.to_csv(folder / "ranking.csv", index=False)
    (folder / "ranking.md").write_text(ranking_markdown(frame, list(tune.grid), metric, validation))
    best = rank(recipes, scores, metric.higher_is_better)[0]
    winner, score, protocol = recipes[best], scores[best], plans[0].protocol
    if score.repeats == 0:
        log.warning("no recipe finished a repeat: no recipe.toml written; see the failures in each run's manifest")
        return
    base = tune.base
    grid = "; ".join(f"{key}={','.join(map(format_value, values))}" for key, values in tune.grid.items())
    subset = f", subset {base.subset}" if base.subset is not None else ""
    header = [
        "Chosen by python -m bench tune on validation alone: no test value was read.",
        f"task {base.task}; strategies {', '.join(plans[0].strategy_names)}; seed {base.seed}; "
        f"{base.repeats} repeats; {validation} validation samples (labeled pool samples) per repeat",
        f"protocol: initial {protocol.initial}, increment {protocol.increment}, rounds {protocol.rounds}{subset}",
        f"grid: {grid} ({len(recipes)} recipes)",
        f"winner: validation AUBC of {metric.name} ({metric.direction}) {score.mean:.6g} "
        f"(std {score.std:.3g} over {score.repeats} repeats), rank 1 of {len(recipes)}; see ranking.csv",
    ]
    winner.write(folder / "recipe.toml", header)
