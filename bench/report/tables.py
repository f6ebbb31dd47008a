"""Reports from ``rounds.csv`` files: Table 1 (mean ± std per strategy and round), the paired
difference to random per round with a t-test and a Wilcoxon p-value, and per strategy the area
under the learning curve and the labels needed to reach a target, with Figure 3 beside them.

The metric's name, direction and display scale come from the runs' manifests (or, for a bare
``rounds.csv``, from the installed task); a report never guesses whether higher is better.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import logging
import math
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from bench.report.hardness import DESCRIPTION, hardness_table, has_diagnostics, markdown_hardness, plot_hardness
from bench.report.paper import CITATION, TABLE_1
from bench.report.run_page import ReportFrames, Source, write_run_page
from bench.report.stats import (
    aubc,
    balanced_curves,
    label_savings,
    paired_differences,
    unpaired_repeats,
    validation_curves,
    wilcoxon_floor,
)
from bench.run.results import ROUND_COLUMNS, MetricInfo, RoundsFileError, read_rounds_csv
from tasks.base import Protocol

TABLE_COLUMNS = ["strategy", "round", "n_labeled", "mean", "std", "repeats"]
#: Settings of a manifest's ``config`` that need not agree for runs to be reported together:
#: which strategies and repeats ran (repeats pair by seed), where and how fast they ran (device,
#: threads, kernels), where the data and output live, what was logged, and each strategy's own
#: settings (told apart by :func:`label_variants`). Every other setting, a future one included,
#: changes what is trained and must agree.
NOT_TRAINING = frozenset(
    {
        "task",
        "strategies",
        "repeats",
        "seed",
        "device",
        "threads",
        "nondeterministic",
        "data_root",
        "download",
        "out",
        "quiet",
        "diagnostics",
        "strategy_options",
        "latent_dim",
        "generative_options",
    }
)
BASELINE = "random"
#: At most this many left-out values are listed one by one in a report's note.
LISTED = 10

log = logging.getLogger(__name__)
#: The settings a manifest's ``protocol`` records as the run resolved them.
PROTOCOL_FIELDS = frozenset(f.name for f in dataclasses.fields(Protocol))


class ReportError(ValueError):
    """Inputs that cannot be reported together (missing file, mixed tasks, duplicate rows)."""


def _csv_path(path: Path) -> Path:
    return path / "rounds.csv" if path.is_dir() else path


#: The manifest entries a report reads, and the JSON types a run writes there.
MANIFEST_ENTRIES: dict[str, tuple[type, ...]] = {
    "status": (str,),
    "task": (str,),
    "metric": (dict,),
    "protocol": (dict,),
    "config": (dict,),
    "strategies": (dict,),
    "generative": (dict, type(None)),
    "device": (dict,),
    "data": (dict,),
    "units": (dict,),
}
JSON_NAMES = {dict: "an object", str: "a string", type(None): "null", bool: "true or false", int: "an integer"}


def _manifest(path: Path) -> dict | None:
    """The manifest beside a rounds.csv (or in a run folder); None when there is none. One that
    cannot be read, is not a JSON object, or has an entry a report reads of another type than a
    run writes is refused (ReportError naming the file and the entry), never skipped: skipping
    it would skip the protocol checks and the metric's recorded direction."""
    csv_path = _csv_path(Path(path))
    file = csv_path.parent / "manifest.json"
    if not file.exists():
        return None
    fix = f"restore it (e.g. from git), or move it away to report {csv_path} without it (and without its checks)"
    try:
        manifest = json.loads(file.read_text())
    except (OSError, ValueError) as err:  # ValueError: not UTF-8, not JSON
        raise ReportError(f"{file} is not readable JSON ({err}); {fix}") from None
    if not isinstance(manifest, dict):
        raise ReportError(f"{file} is not a JSON object but {type(manifest).__name__}; {fix}")
    for key, kinds in MANIFEST_ENTRIES.items():
        value = manifest.get(key)
        if key in manifest and not isinstance(value, kinds):
            expected = " or ".join(JSON_NAMES[kind] for kind in kinds)
            raise ReportError(
                f"{file}: {key!r} is {type(value).__name__} ({value!r:.60}) where a run writes {expected}; {fix}"
            )
    for name, settings in manifest.get("strategies", {}).items():
        if not isinstance(settings, dict):
            raise ReportError(f"{file}: the settings of strategy {name!r} are not an object; {fix}")
    return manifest


def report_sources(paths: Sequence[Path]) -> list[Source]:
    """The runs a report is made from: each input's folder and manifest (None for a bare rounds.csv)."""
    return [Source(_csv_path(Path(p)).parent, _manifest(Path(p))) for p in paths]


def _read_csv(csv_path: Path) -> pd.DataFrame:
    """:func:`~bench.run.results.read_rounds_csv`, any file it cannot read refused (ReportError naming it)."""
    try:
        return read_rounds_csv(csv_path)
    except RoundsFileError as err:
        raise ReportError(str(err)) from None
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise ReportError(f"{csv_path} is not a readable rounds.csv ({err})") from None


def read_rounds(paths: list[Path]) -> pd.DataFrame:
    """Concatenate ``rounds.csv`` files (or run folders holding one) into one frame; refuse
    inputs that cannot be compared (other tasks, metrics or protocols, overlapping rows)."""
    frames = []
    for path in map(Path, paths):
        csv_path = _csv_path(path)
        if not csv_path.is_file():
            raise ReportError(f"no rounds.csv at {csv_path}: pass a run folder or a rounds.csv file")
        frame = _read_csv(csv_path)
        missing = [c for c in ROUND_COLUMNS if c not in frame.columns]
        if missing:
            raise ReportError(f"{csv_path} lacks the columns {', '.join(missing)}: is it a rounds.csv?")
        if frame.empty:
            raise ReportError(f"{csv_path} has no rows yet: no round of the run has finished")
        for column in ("value", "n_labeled", "round", "repeat", "seed"):
            numbers = pd.to_numeric(frame[column], errors="coerce")
            bad = numbers.isna() & frame[column].notna()
            if bad.any():
                line = int(bad.to_numpy().argmax()) + 2  # the header is line 1
                raise ReportError(
                    f"{csv_path} line {line}: {column} {frame[column][bad].iloc[0]!r} is not a number; "
                    f"fix or remove that row"
                )
        frames.append(frame)
    label_variants(frames, [_manifest(path) for path in map(Path, paths)])
    rounds = pd.concat(frames, ignore_index=True)
    for column in ("task", "metric"):
        values = rounds[column].unique()
        if len(values) > 1:
            raise ReportError(
                f"cannot report several {column}s together ({', '.join(map(str, values))}); "
                f"report each {column} separately"
            )
    _check_protocols(paths, rounds)
    duplicated = rounds.duplicated(["strategy", "seed", "repeat", "round"])
    if duplicated.any():
        row = rounds[duplicated].iloc[0]
        raise ReportError(
            f"duplicate rows for strategy {row['strategy']!r}, seed {row['seed']}, repeat "
            f"{row['repeat']}, round {row['round']}: the inputs overlap (pass each run once)"
        )
    return rounds


def label_variants(frames: list[pd.DataFrame], manifests: list[dict | None]) -> None:
    """Name each input's strategies by the settings they changed, in place: a strategy run with
    options (or, for one that uses it, generative-model settings) other than its installed
    defaults is labeled with them, e.g. ``si (start=pool)`` or ``si (latent_dim=8)``, so runs of
    one strategy with other settings stay apart; with the defaults it keeps its plain name. A
    setting a manifest lacks (a run from before it existed) counts as today's default."""
    for frame, manifest in zip(frames, manifests):
        if not manifest:
            continue
        for name in frame["strategy"].unique():
            defaults = _defaults(name, manifest.get("task"))
            changed = [
                f"{k}={v}"
                for k, v in sorted(_settings(manifest, name).items())
                if k in defaults and json.dumps(v) != json.dumps(defaults[k])
            ]
            if changed:
                frame.loc[frame["strategy"] == name, "strategy"] = f"{name} ({', '.join(changed)})"


def _settings(manifest: dict, strategy: str) -> dict:
    """A strategy's options in a run, with its generative model's settings if it uses one."""
    values = dict((manifest.get("strategies") or {}).get(strategy) or {})
    generative = manifest.get("generative")
    if generative and _uses_generative(strategy):
        values.update({k: v for k, v in generative.items() if k not in ("seed", "file", "quality")})
    return values


def _defaults(strategy: str, task: str | None) -> dict:
    """A strategy's default options and its task's default generative settings (installed ones only)."""
    from strategies import STRATEGIES
    from tasks import TASKS

    if strategy not in STRATEGIES:
        return {}
    signature = inspect.signature(STRATEGIES.get(strategy).__init__)
    defaults = {k: p.default for k, p in signature.parameters.items() if p.default is not inspect.Parameter.empty}
    if _uses_generative(strategy) and task in TASKS and TASKS.get(task).generative is not None:
        defaults.update(dataclasses.asdict(TASKS.get(task).generative))
    return defaults


def _uses_generative(strategy: str) -> bool:
    from strategies import STRATEGIES
    from tasks.base import Capability

    return strategy in STRATEGIES and Capability.GENERATIVE in STRATEGIES.get(strategy).requires


def _check_protocols(paths: list[Path], rounds: pd.DataFrame) -> None:
    """Refuse runs of different protocols: by their manifests (:func:`trained_with`: every
    setting that changes what is trained), and by the labeled-set size of each round."""
    seen: dict[str, tuple[Path, object]] = {}
    for path in map(Path, paths):
        manifest = _manifest(path)
        if not manifest:
            continue
        for key, value in trained_with(manifest).items():
            first = seen.setdefault(key, (path, value))
            if json.dumps(first[1], sort_keys=True, default=str) != json.dumps(value, sort_keys=True, default=str):
                raise ReportError(
                    f"runs of different protocols: {key} is {first[1]!r} in {first[0]} but {value!r} "
                    f"in {path}; report them separately (a paired comparison needs one protocol)"
                )
    sizes = rounds.groupby("round")["n_labeled"].unique()
    for t, values in sizes.items():
        if len(values) > 1:
            raise ReportError(
                f"runs of different protocols: round {t} has {sorted(values)} labeled samples "
                f"in different inputs; report them separately"
            )


def trained_with(manifest: dict) -> dict[str, object]:
    """What a run trained with, by its manifest: the protocol as it ran (``protocol``: rounds,
    sizes, epochs, batch size, learning rate, optimizer, start mode, augmentation, ...), the
    precisions F was trained and the pool scored in (``device``), the pool and test-set sizes
    (``data``), and every ``config`` setting but those in :data:`NOT_TRAINING` (e.g. ``subset``).
    The config's protocol fields are left to ``protocol``, which holds them resolved (a null
    ``lr`` in the config is the task's). A setting an older manifest lacks is not compared,
    except the start mode and optimizer, whose values before those flags are known."""
    config, protocol = manifest.get("config") or {}, dict(manifest.get("protocol") or {})
    warm = config.get("warm_start", True)  # manifests before --start: warm unless --no-warm-start
    protocol.setdefault("start", "warm" if warm else "reset")
    protocol.setdefault("optimizer", "adam")  # manifests before --optimizer: Adam, without options
    protocol.setdefault("optimizer_options", {})
    protocol["optimizer"] = str(protocol["optimizer"]).lower()
    settings = {k: v for k, v in config.items() if k not in NOT_TRAINING | PROTOCOL_FIELDS | {"warm_start"}}
    settings.setdefault("validation", 0)  # manifests before --validation held none out
    settings.setdefault("imbalance", None)  # manifests before --imbalance kept the whole pool
    device, data = manifest.get("device") or {}, manifest.get("data") or {}
    settings.update({k: device[k] for k in ("train_dtype", "score_dtype") if k in device})  # "auto" resolved
    settings.update({f"{k} size": data[k] for k in ("pool", "test") if k in data})
    return {**settings, **protocol}


def metric_info(paths: list[Path], rounds: pd.DataFrame) -> MetricInfo:
    """The metric of the runs at ``paths``: from their manifests, else from the installed task."""
    recorded: dict[MetricInfo, Path] = {}
    for path in map(Path, paths):
        manifest = _manifest(path)
        if manifest and "metric" in manifest:
            recorded.setdefault(_metric(_csv_path(path).parent / "manifest.json", manifest["metric"]), path)
    if len(recorded) > 1:
        described = "; ".join(f"{m} in {p}" for m, p in recorded.items())
        raise ReportError(f"the inputs' manifests describe their metric differently ({described})")
    if recorded:
        return next(iter(recorded))
    from tasks import TASKS

    task, metric = rounds["task"].iloc[0], rounds["metric"].iloc[0]
    if task in TASKS and TASKS.get(task).metric.name == metric:
        return MetricInfo.of(TASKS.get(task).metric)
    raise ReportError(
        f"no manifest.json beside the inputs records whether {metric!r} is better higher or lower, "
        f"and task {task!r} is not installed; report a run folder with its manifest.json"
    )


def _metric(file: Path, entry: dict) -> MetricInfo:
    """A manifest's ``metric`` entry as a :class:`MetricInfo`; one with a missing, unknown or
    wrong-typed field is refused (ReportError naming the file and the field)."""
    fields = {f.name: f for f in dataclasses.fields(MetricInfo)}
    kinds: dict[str, tuple[type, ...]] = {
        "name": (str,),
        "higher_is_better": (bool,),
        "label": (str,),
        "display_scale": (int, float),
        "decimals": (int,),
    }
    problems = [f"unknown field {k!r}" for k in entry if k not in fields]
    problems += [f"no {k!r}" for k, f in fields.items() if k not in entry and f.default is dataclasses.MISSING]
    for key, value in entry.items():
        if key in kinds and (
            not isinstance(value, kinds[key]) or (key != "higher_is_better" and isinstance(value, bool))
        ):
            problems.append(f"{key} {value!r} is not {' or '.join(k.__name__ for k in kinds[key])}")
    scale = entry.get("display_scale", 1.0)
    if not problems and not (math.isfinite(scale) and scale > 0):
        problems.append(f"display_scale {scale!r} is not a positive finite number")
    if not problems and entry.get("decimals", 1) < 0:
        problems.append(f"decimals {entry['decimals']!r} is negative")
    if problems:
        raise ReportError(
            f"{file}: its 'metric' is not as a run writes it ({'; '.join(problems)}); restore the file (e.g. from "
            f"git), or move it away to report the rounds.csv beside it with the installed task's metric"
        )
    return MetricInfo(**entry)


def unfinished(folder: Path) -> str | None:
    """For a run folder whose manifest says it has not finished (``running``, ``interrupted`` or
    ``failed``):
    how many of its units and rounds are missing, and how to go on. None for a finished run."""
    folder = Path(folder)
    manifest = _manifest(folder)
    if not manifest or manifest.get("status") not in ("running", "interrupted", "failed") or "units" not in manifest:
        return None
    csv_path = folder / "rounds.csv"
    rows = _read_csv(csv_path) if csv_path.exists() and csv_path.stat().st_size else pd.DataFrame()
    written = len(rows) and {"strategy", "repeat"} <= set(rows.columns)  # else read_rounds says what is wrong
    done = rows.groupby(["strategy", "repeat"]).size().to_dict() if written else {}
    try:
        total = int(manifest["protocol"]["rounds"])
        open_units = [u for u in manifest["units"].values() if u["status"] not in ("complete", "failed")]
        missing = sum(total - done.get((u["strategy"], u["repeat"]), 0) for u in open_units)
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise ReportError(
            f"{folder / 'manifest.json'}: its protocol or units are not as a run writes them ({type(err).__name__}: "
            f"{err}); restore the file (e.g. from git), or move it away to report the rounds.csv without it"
        ) from None
    return (
        f"{folder} is an unfinished run ({manifest['status']}): {len(open_units)} of {len(manifest['units'])} "
        f"units unfinished, {missing} rounds missing; go on with: python -m bench run --resume {folder}"
    )


def finite_values(rounds: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """The rows whose metric value is a finite number, and a note listing the others.

    A NaN or infinite value is no measurement (a diverged F, a damaged file): averaged in, one
    NaN turns a whole cell, its paired difference and the strategy's AUBC into NaN, and one
    infinity gives an infinite AUBC and a fictitious saving. Such rows are left out of every
    table and figure; the note names each (strategy, repeat, seed, round and value), and the
    tables show how many repeats each cell still averages. None left is refused."""
    values = pd.to_numeric(rounds["value"], errors="coerce").to_numpy(dtype=float)
    bad = ~np.isfinite(values)
    if not bad.any():
        return rounds, []
    if bad.all():
        raise ReportError(
            "no finite metric value in the inputs: every value in rounds.csv is NaN or infinite; "
            "nothing can be reported (check the runs' manifest.json for failed units)"
        )
    rows = rounds[bad]
    listed = [
        f"{r['strategy']} repeat {r['repeat']} (seed {r['seed']}) t={r['round']}: {r['value']}"
        for _, r in rows.head(LISTED).iterrows()
    ]
    more = f" and {len(rows) - LISTED} more" if len(rows) > LISTED else ""
    note = (
        f"{_count(len(rows), 'metric value is not a finite number and is', 'metric values are not finite and are')} "
        f"left out of every table and figure: "
        f"{'; '.join(listed)}{more}. A cell over fewer repeats than the others is marked (n=k), and a repeat "
        f"missing a round is left out of its strategy's AUBC; the rows are in rounds.csv"
    )
    return rounds[~bad].reset_index(drop=True), [note]


def summarize(rounds: pd.DataFrame) -> pd.DataFrame:
    """Mean and sample std (ddof=1; NaN for one repeat) of the metric per (strategy, round), over
    its repeats (one row each: ``read_rounds`` refuses duplicates)."""
    order = list(dict.fromkeys(rounds["strategy"]))
    table = (
        rounds.groupby(["strategy", "round"], sort=False)
        .agg(n_labeled=("n_labeled", "mean"), mean=("value", "mean"), std=("value", "std"), repeats=("value", "size"))
        .reset_index()
    )
    table["strategy"] = pd.Categorical(table["strategy"], categories=order, ordered=True)
    table = table.sort_values(["strategy", "round"]).reset_index(drop=True)
    table["strategy"] = table["strategy"].astype(str)
    table["n_labeled"] = table["n_labeled"].round().astype(int)
    return table[TABLE_COLUMNS]


def markdown_table(
    table: pd.DataFrame, task: str, metric: str, decimals: int = 1, paper: list[tuple[str, dict[int, float]]] = ()
) -> str:
    """The paper's Table 1 layout: a row per strategy, a column per round t, ``mean ± std``;
    ``paper`` rows (name, value per round t of this table; a round without one stays empty) go first."""
    rounds = sorted(table["round"].unique())
    sizes = table.groupby("round")["n_labeled"].first()
    most = int(table["repeats"].max())
    fewer = "; (n=k): a cell over k of them" if (table["repeats"] < most).any() else ""
    header = "| strategy | " + " | ".join(f"t={t}" for t in rounds) + " |"
    lines = [
        f"**{task}**: {metric}, mean ± std over {most} repeats{fewer}",
        "",
        header,
        "|" + "---|" * (len(rounds) + 1),
        "| n_labeled | " + " | ".join(str(sizes[t]) for t in rounds) + " |",
    ]
    for name, values in paper:
        lines.append(f"| {name} | " + " | ".join(f"{values[t]:.1f}" if t in values else "" for t in rounds) + " |")
    for strategy, rows in table.groupby("strategy", sort=False):
        cells = {
            r["round"]: _mean_std(r["mean"], r["std"], decimals) + _fewer(r["repeats"], most)
            for _, r in rows.iterrows()
        }
        lines.append(f"| {strategy} | " + " | ".join(cells.get(t, "") for t in rounds) + " |")
    return "\n".join(lines) + "\n"


def markdown_differences(diffs: pd.DataFrame, baseline: str, higher_is_better: bool, decimals: int) -> str:
    """Paired differences to the baseline, a row per strategy, a column per round:
    ``mean ± std (better in b/n repeats) p t/W``, a p below 0.05 marked with *."""
    rounds = sorted(diffs["round"].unique())
    repeats = int(diffs["repeats"].max())
    lines = [
        f"difference to {baseline} in the same repeat (paired), mean ± std, the repeats in which it is better "
        f"({'higher' if higher_is_better else 'lower'} is better), and two-sided p-values of a paired t-test "
        f"and a Wilcoxon signed-rank test (p t/W; * below 0.05). With {repeats} repeats the Wilcoxon p cannot go "
        f"below {wilcoxon_floor(repeats):.4g}.",
        "",
        "| strategy | " + " | ".join(f"t={t}" for t in rounds) + " |",
        "|" + "---|" * (len(rounds) + 1),
    ]
    for strategy, rows in diffs.groupby("strategy", sort=False):
        cells = {
            r["round"]: f"{r['mean']:+.{decimals}f} ± {_std(r['std'], decimals)} ({r['better']}/{r['repeats']}) "
            f"p {_p(r['t_p'])}/{_p(r['wilcoxon_p'])}"
            for _, r in rows.iterrows()
        }
        lines.append(f"| {strategy} | " + " | ".join(cells.get(t, "") for t in rounds) + " |")
    return "\n".join(lines) + "\n"


def markdown_summary(summary: pd.DataFrame, metric: MetricInfo, target: float | None, target_given: bool) -> str:
    """Per strategy: AUBC mean ± std, labels to reach the target and the saving against random."""
    d = metric.decimals
    if target is None:
        target_text = "no target: random did not run (pass --target VALUE)"
    else:
        target_text = f"{target * metric.display_scale:.{d}f} ({'--target' if target_given else 'random’s final mean'})"
    most = int(summary["repeats"].max()) if len(summary) else 0
    fewer = " (those that ran every round; (n=k): over k of them)" if (summary["repeats"] < most).any() else ""
    held = "val_aubc_mean" in summary
    about_validation = " Validation AUBC: the same area of the metric on the run's validation samples." if held else ""
    fair = "bacc_aubc_mean" in summary
    if fair:
        about_validation += " Balanced AUBC: the same area of the balanced accuracy (the mean per-class recall)."

    lines = [
        f"summary over the whole budget ({metric.direction}): AUBC is the area under each repeat's learning curve "
        f"divided by the budget span (the curve's mean over the budget), mean ± std over repeats{fewer}; labels "
        f"to reach {target_text} are read off each strategy's mean curve (linear between rounds), and the saving "
        f"is against random's.{about_validation}",
        "",
        "| strategy | AUBC | labels to target | saving vs random |"
        + (" validation AUBC |" if held else "")
        + (" balanced AUBC |" if fair else ""),
        "|---|---|---|---|" + ("---|" if held else "") + ("---|" if fair else ""),
    ]
    for _, r in summary.iterrows():
        if target is None:
            labels = "n/a"
        else:
            labels = "not reached" if pd.isna(r["labels_to_target"]) else f"{r['labels_to_target']:.0f}"
        saving = "n/a" if pd.isna(r.get("saving_pct")) else f"{r['saving_pct']:+.0f}%"
        aubc = _mean_std(r["aubc_mean"] * metric.display_scale, r["aubc_std"] * metric.display_scale, d)
        aubc += _fewer(r["repeats"], most)
        validation = ""
        if held:
            scale = metric.display_scale
            validation = f" {_mean_std(r['val_aubc_mean'] * scale, r['val_aubc_std'] * scale, d)} |"
        if fair:
            scale = metric.display_scale
            validation += f" {_mean_std(r['bacc_aubc_mean'] * scale, r['bacc_aubc_std'] * scale, d)} |"
        lines.append(f"| {r['strategy']} | {aubc} | {labels} | {saving} |{validation}")
    return "\n".join(lines) + "\n"


def markdown_validation(table: pd.DataFrame, task: str, metric: MetricInfo) -> str:
    """The validation metric per strategy and round (``val_mean ± val_std``, a row per strategy,
    a column per round) with the labels spent by each round, the validation samples' included."""
    scale, d = metric.display_scale, metric.decimals
    spent = table.groupby("round")["n_spent"].first()
    held = int((table["n_spent"] - table["n_labeled"]).iloc[0])
    shown = table.assign(mean=table["val_mean"] * scale, std=table["val_std"] * scale)
    text = markdown_table(
        shown,
        f"{task}, validation",
        f"{metric.name} on the {held} validation samples held out of the pool in each repeat "
        f"(never selected or trained on; {metric.direction})",
        d,
    )
    lines = text.rstrip("\n").split("\n")
    at = next(i for i, line in enumerate(lines) if line.startswith("| n_labeled |")) + 1
    lines.insert(at, "| labels spent | " + " | ".join(str(spent[t]) for t in sorted(spent.index)) + " |")
    return "\n".join(lines) + "\n"


def balanced_table(balanced: pd.DataFrame, repeats: bool = False) -> pd.DataFrame:
    """Per strategy and round of the balanced-accuracy curves (:func:`~bench.report.stats.balanced_curves`):
    ``bacc_mean``, ``bacc_std`` (over repeats, ddof=1) and ``min_class_labeled`` (the mean over repeats of
    the labeled set's smallest class count); with ``repeats`` also ``n_labeled`` and ``repeats``."""
    table = summarize(balanced).rename(columns={"mean": "bacc_mean", "std": "bacc_std"})
    smallest = balanced.groupby(["strategy", "round"], sort=False)["min_class_labeled"].mean().reset_index()
    table = table.merge(smallest, on=["strategy", "round"], how="left")
    columns = ["strategy", "round", *(["n_labeled", "repeats"] if repeats else []), "bacc_mean", "bacc_std"]
    return table[[*columns, "min_class_labeled"]]


def markdown_balanced(table: pd.DataFrame, task: str, metric: MetricInfo) -> str:
    """The balanced accuracy per strategy and round (:func:`balanced_table` with ``repeats``): a row per
    strategy, a column per round, ``mean ± std`` in the metric's display units and, in brackets, the
    labeled set's smallest class count (mean over repeats)."""
    scale, d = metric.display_scale, metric.decimals
    rounds = sorted(table["round"].unique())
    sizes = table.groupby("round")["n_labeled"].first()
    most = int(table["repeats"].max())
    fewer = "; (n=k): a cell over k of them" if (table["repeats"] < most).any() else ""
    lines = [
        f"**{task}, balanced accuracy**: the mean over the classes of each class's recall on the test set, in the "
        f"units of {metric.label} (higher is better), mean ± std over {most} repeats{fewer}; (min m): the labeled "
        f"set's smallest class count, mean over the repeats",
        "",
        "| strategy | " + " | ".join(f"t={t}" for t in rounds) + " |",
        "|" + "---|" * (len(rounds) + 1),
        "| n_labeled | " + " | ".join(str(sizes[t]) for t in rounds) + " |",
    ]
    for strategy, rows in table.groupby("strategy", sort=False):
        cells = {
            r["round"]: _mean_std(r["bacc_mean"] * scale, r["bacc_std"] * scale, d)
            + _fewer(r["repeats"], most)
            + ("" if pd.isna(r["min_class_labeled"]) else f" (min {_count_mean(r['min_class_labeled'])})")
            for _, r in rows.iterrows()
        }
        lines.append(f"| {strategy} | " + " | ".join(cells.get(t, "") for t in rounds) + " |")
    return "\n".join(lines) + "\n"


def _count_mean(mean: float) -> str:
    """A mean of counts: whole as a whole number, else with one decimal."""
    return f"{mean:.0f}" if mean == round(mean) else f"{mean:.1f}"


def _count(n: int, one: str, several: str) -> str:
    """``n`` with the singular or plural phrase that follows it."""
    return f"{n} {one if n == 1 else several}"


def _fewer(repeats: int, most: int) -> str:
    """`` (n=k)`` after a cell that averages fewer repeats than the table's most, else nothing."""
    return f" (n={int(repeats)})" if repeats < most else ""


def _p(p: float) -> str:
    return "n/a" if pd.isna(p) else f"{p:.3g}" + ("*" if p < 0.05 else "")


def _std(std: float, decimals: int) -> str:
    return "n/a" if pd.isna(std) else f"{std:.{decimals}f}"


def _mean_std(mean: float, std: float, decimals: int) -> str:
    return f"{mean:.{decimals}f} ± {_std(std, decimals)}"


@dataclasses.dataclass(frozen=True)
class PaperComparison:
    """The paper's Table 1 rows as a report shows them beside a run (:func:`paper_comparison`)."""

    rows: list[tuple[str, dict[int, float]]]  # (name, value per round t of the run) where the sizes are equal
    notes: list[str]  # the citation, and where the labeled-set sizes differ, that and how
    own_table: str  # markdown: the rows at the paper's own sizes when no round of the run has one; else ""


def paper_comparison(task: str, sizes: dict[int, int]) -> PaperComparison:
    """The paper's Table 1 rows for ``task`` beside a run whose round t had ``sizes[t]`` labeled samples.

    The paper's value for round t is shown in round t of the run only where both had the same
    labeled-set size (:attr:`PaperRows.n_labeled`; the same size in another round is not the same
    protocol: F has trained for another number of rounds). Where they differ the cell stays empty
    and a note gives both sizes; when no round matches (e.g. a reduced run), the rows leave the
    run's table for one of their own with the paper's sizes, so no paper value stands beside a
    measurement of another protocol."""
    paper = TABLE_1.get(task)
    if paper is None:
        return PaperComparison([], [f"the paper reports no {task} rows"], "")
    note = f"; {paper.note}" if paper.note else ""
    notes = [f"paper rows: {CITATION}, {paper.metric}{note}"]
    named = [("paper Rand", paper.rand), (f"paper Ours ({paper.ours_is})", paper.ours)]
    matched = [t for t, n in sizes.items() if t <= len(paper.n_labeled) and paper.n_labeled[t - 1] == n]
    differ = f"the paper's rows are at {_sizes(paper.n_labeled)} labels, this run at {_sizes(sizes.values())}"
    if not matched:
        notes.append(f"not comparable: {differ}; they are listed at the paper's sizes after this run's table")
        header = "| strategy | " + " | ".join(f"t={t}" for t in range(1, len(paper.n_labeled) + 1)) + " |"
        lines = [
            "the paper's rows at its own labeled-set sizes, not comparable with this run's",
            "",
            header,
            "|" + "---|" * (len(paper.n_labeled) + 1),
            "| n_labeled | " + " | ".join(map(str, paper.n_labeled)) + " |",
            *(f"| {name} | " + " | ".join(f"{v:.1f}" for v in values) + " |" for name, values in named),
        ]
        return PaperComparison([], notes, "\n".join(lines) + "\n")
    if len(matched) < len(sizes):
        shown = ", ".join(f"t={t}" for t in matched)
        notes.append(f"not comparable in every round: {differ}; paper values are shown only in {shown}")
    rows = [(name, {t: values[t - 1] for t in matched}) for name, values in named]
    return PaperComparison(rows, notes, "")


def _sizes(counts: Iterable[int]) -> str:
    """Labeled-set sizes in words: ``1,000 to 10,000 (+1,000 a round)`` when evenly spaced."""
    sizes = [int(n) for n in counts]
    steps = {b - a for a, b in zip(sizes, sizes[1:])}
    if len(sizes) > 2 and len(steps) == 1:
        return f"{sizes[0]:,} to {sizes[-1]:,} (+{steps.pop():,} a round)"
    return ", ".join(f"{n:,}" for n in sizes)


def write_report(
    rounds: pd.DataFrame,
    out: Path,
    metric: MetricInfo,
    notes: list[str] = (),
    target: float | None = None,
    paper: bool = False,
    sources: Sequence[Source] = (),
) -> list[Path]:
    """Write into ``out``: ``table.csv`` (mean ± std per strategy and round), ``differences.csv``
    (paired differences to random with p-values), ``summary.csv`` (AUBC, labels to target),
    ``table.md`` (all three, ``notes`` first, the paper's rows with ``paper``) and ``curves.png``
    / ``curves.svg`` (Figure 3 and the paired difference to random; its bands clipped to the
    installed task's ``Metric.bounds``); when the runs measured their
    picks, ``hardness.csv`` and ``hardness.png`` / ``.svg`` too (:mod:`bench.report.hardness`, also in
    ``table.md``), and ``report.html`` (all of it on one page, with the headline of the runs
    ``sources`` name: :mod:`bench.report.run_page`). ``target`` is in the units of ``rounds.csv``
    values. Every table names its metric and direction. Non-finite values are left out
    (:func:`finite_values`), and so are repeats without a random repeat of their seed from the paired differences
    (:func:`~bench.report.stats.unpaired_repeats`), each with a note in ``table.md`` and the log."""
    from bench.report.curves import metric_bounds, plot_curves

    rounds, left_out = finite_values(rounds)
    found = [*left_out, *unpaired_repeats(rounds, BASELINE)]
    for note in found:
        log.warning("note: %s", note)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    task, scale, d = rounds["task"].iloc[0], metric.display_scale, metric.decimals
    described = {f"metric_{k}": v for k, v in dataclasses.asdict(metric).items()}
    table = summarize(rounds)
    validation = validation_curves(rounds)
    if validation is not None:  # the validation metric beside the test metric, and the labels spent with it
        held = summarize(validation).rename(columns={"mean": "val_mean", "std": "val_std"})
        table = table.merge(held[["strategy", "round", "val_mean", "val_std"]], on=["strategy", "round"], how="left")
        table["n_spent"] = table["n_labeled"] + int(validation["n_validation"].max())
    balanced = balanced_curves(rounds)
    if balanced is not None:  # the balanced accuracy and the labeled set's smallest class beside the metric
        table = table.merge(balanced_table(balanced), on=["strategy", "round"], how="left")
    table.assign(**described).to_csv(out / "table.csv", index=False)
    sizes = {int(t): int(n) for t, n in table.groupby("round")["n_labeled"].first().items()}
    comparison = paper_comparison(task, sizes) if paper else PaperComparison([], [], "")
    text = "".join(f"> {note}\n\n" for note in [*notes, *found, *comparison.notes])
    text += markdown_table(
        table.assign(mean=table["mean"] * scale, std=table["std"] * scale),
        task,
        f"{metric.label} ({metric.direction})",
        d,
        comparison.rows,
    )
    if comparison.own_table:
        text += "\n" + comparison.own_table
    if validation is not None:
        text += "\n" + markdown_validation(table, task, metric)
    if balanced is not None:
        text += "\n" + markdown_balanced(balanced_table(balanced, repeats=True), task, metric)
    diffs = paired_differences(rounds, BASELINE, metric.higher_is_better)
    if diffs is not None and len(diffs):
        diffs.assign(**described).to_csv(out / "differences.csv", index=False)
        text += "\n" + markdown_differences(
            diffs.assign(mean=diffs["mean"] * scale, std=diffs["std"] * scale), BASELINE, metric.higher_is_better, d
        )
    chosen, savings = label_savings(rounds, target, metric.higher_is_better, BASELINE)
    summary = aubc(rounds)
    if validation is not None:
        held = aubc(validation).rename(columns={"aubc_mean": "val_aubc_mean", "aubc_std": "val_aubc_std"})
        summary = summary.merge(held.drop(columns="repeats"), on="strategy", how="left")
    if balanced is not None:
        fair = aubc(balanced).rename(columns={"aubc_mean": "bacc_aubc_mean", "aubc_std": "bacc_aubc_std"})
        summary = summary.merge(fair.drop(columns="repeats"), on="strategy", how="left")
    if len(savings):
        summary = summary.merge(savings, on="strategy", how="left")
    summary.assign(target=chosen if chosen is not None else math.nan, **described).to_csv(
        out / "summary.csv", index=False
    )
    text += "\n" + markdown_summary(summary, metric, chosen, target is not None)
    paths = plot_curves(rounds, diffs, out / "curves", metric, BASELINE, metric_bounds(task, metric))
    hardness = None
    if has_diagnostics(rounds):
        hardness = hardness_table(rounds)
        hardness.assign(description=DESCRIPTION).to_csv(out / "hardness.csv", index=False)
        text += "\n" + markdown_hardness(hardness)
        paths += [out / "hardness.csv", *plot_hardness(hardness, out / "hardness", task)]
    (out / "table.md").write_text(text)
    frames = ReportFrames(
        task,
        metric,
        table,
        summary,
        chosen,
        target is not None,
        diffs,
        hardness,
        notes=[*notes, *found, *comparison.notes],
        paper=comparison.rows,
        paper_table=comparison.own_table,
    )
    paths.append(write_run_page(out, frames, sources))
    written = [out / "table.csv", out / "differences.csv", out / "summary.csv", out / "table.md", *paths]
    return [path for path in written if path.exists()]
