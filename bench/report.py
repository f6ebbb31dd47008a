"""Table-1-style tables and Figure-3-style learning curves from ``rounds.csv`` files."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from bench.results import ROUND_COLUMNS, read_rounds_csv

TABLE_COLUMNS = ["strategy", "round", "n_labeled", "mean", "std", "repeats"]


class ReportError(ValueError):
    """Inputs that cannot be reported together (missing file, mixed tasks, duplicate rows)."""


def read_rounds(paths: list[Path]) -> pd.DataFrame:
    """Concatenate ``rounds.csv`` files (or run folders holding one) into one frame."""
    frames = []
    for path in map(Path, paths):
        csv_path = path / "rounds.csv" if path.is_dir() else path
        if not csv_path.is_file():
            raise ReportError(f"no rounds.csv at {csv_path}: pass a run folder or a rounds.csv file")
        try:
            frame = read_rounds_csv(csv_path)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
            raise ReportError(f"{csv_path} is not a readable rounds.csv ({err})") from err
        missing = [c for c in ROUND_COLUMNS if c not in frame.columns]
        if missing:
            raise ReportError(f"{csv_path} lacks the columns {', '.join(missing)}: is it a rounds.csv?")
        if frame.empty:
            raise ReportError(f"{csv_path} has no rows yet: no round of the run has finished")
        frames.append(frame)
    rounds = pd.concat(frames, ignore_index=True)
    for column in ("task", "metric"):
        values = rounds[column].unique()
        if len(values) > 1:
            raise ReportError(f"cannot report several {column}s together ({', '.join(map(str, values))}); "
                              f"report each {column} separately")
    duplicated = rounds.duplicated(["strategy", "seed", "repeat", "round"])
    if duplicated.any():
        row = rounds[duplicated].iloc[0]
        raise ReportError(f"duplicate rows for strategy {row.strategy!r}, seed {row.seed}, repeat {row.repeat}, "
                          f"round {row['round']}: the inputs overlap (pass each run once)")
    return rounds


def unfinished(folder: Path) -> str | None:
    """For a run folder whose manifest says it has not finished (``running`` or ``interrupted``):
    how many of its units and rounds are missing, and how to go on. None for a finished run."""
    folder = Path(folder)
    try:
        manifest = json.loads((folder / "manifest.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if manifest.get("status") not in ("running", "interrupted") or "units" not in manifest:
        return None
    csv_path = folder / "rounds.csv"
    rows = read_rounds_csv(csv_path) if csv_path.exists() and csv_path.stat().st_size else pd.DataFrame()
    done = rows.groupby(["strategy", "repeat"]).size().to_dict() if len(rows) else {}
    total = manifest["protocol"]["rounds"]
    open_units = [u for u in manifest["units"].values() if u["status"] not in ("complete", "failed")]
    missing = sum(total - done.get((u["strategy"], u["repeat"]), 0) for u in open_units)
    return (f"{folder} is an unfinished run ({manifest['status']}): {len(open_units)} of {len(manifest['units'])} "
            f"units unfinished, {missing} rounds missing; go on with: python -m bench run --resume {folder}")


def summarize(rounds: pd.DataFrame) -> pd.DataFrame:
    """Mean and sample std (ddof=1; NaN for one repeat) of the metric per (strategy, round), over
    its repeats (one row each: ``read_rounds`` refuses duplicates)."""
    order = list(dict.fromkeys(rounds["strategy"]))
    table = (
        rounds.groupby(["strategy", "round"], sort=False)
        .agg(n_labeled=("n_labeled", "mean"), mean=("value", "mean"), std=("value", "std"),
             repeats=("value", "size"))
        .reset_index()
    )
    table["strategy"] = pd.Categorical(table["strategy"], categories=order, ordered=True)
    table = table.sort_values(["strategy", "round"]).reset_index(drop=True)
    table["strategy"] = table["strategy"].astype(str)
    table["n_labeled"] = table["n_labeled"].round().astype(int)
    return table[TABLE_COLUMNS]


def markdown_table(table: pd.DataFrame, task: str, metric: str, decimals: int = 1) -> str:
    """The paper's Table 1 layout: a row per strategy, a column per round t, ``mean ± std``."""
    rounds = sorted(table["round"].unique())
    sizes = table.groupby("round")["n_labeled"].first()
    repeats = sorted(table["repeats"].unique())
    header = "| strategy | " + " | ".join(f"t={t}" for t in rounds) + " |"
    lines = [
        f"**{task}**: {metric}, mean ± std over {'/'.join(map(str, repeats))} repeats",
        "",
        header,
        "|" + "---|" * (len(rounds) + 1),
        "| n_labeled | " + " | ".join(str(sizes[t]) for t in rounds) + " |",
    ]
    for strategy, rows in table.groupby("strategy", sort=False):
        cells = {r["round"]: _mean_std(r["mean"], r["std"], decimals) for _, r in rows.iterrows()}
        lines.append(f"| {strategy} | " + " | ".join(cells.get(t, "") for t in rounds) + " |")
    return "\n".join(lines) + "\n"


def paired_differences(rounds: pd.DataFrame, baseline: str = "random",
                       higher_is_better: bool = True) -> pd.DataFrame | None:
    """Each strategy minus ``baseline`` in the same repeat (seed) and round (the design is paired):
    mean and sample std of the difference over repeats, and in how many repeats it is strictly
    better. None when the baseline is not among the strategies."""
    if baseline not in set(rounds["strategy"]):
        return None
    keys = ["seed", "repeat", "round"]
    base = rounds.loc[rounds["strategy"] == baseline, keys + ["value"]]
    others = rounds[rounds["strategy"] != baseline].merge(base.rename(columns={"value": "baseline"}), on=keys)
    others = others.assign(delta=others["value"] - others["baseline"])
    return (
        others.groupby(["strategy", "round"], sort=False)
        .agg(mean=("delta", "mean"), std=("delta", "std"),
             better=("delta", lambda d: int((d > 0).sum() if higher_is_better else (d < 0).sum())),
             repeats=("delta", "size"))
        .reset_index()
    )


def markdown_differences(diffs: pd.DataFrame, baseline: str, higher_is_better: bool, decimals: int) -> str:
    """Paired differences to the baseline, a row per strategy, a column per round:
    ``mean ± std (better in b/n repeats)``."""
    rounds = sorted(diffs["round"].unique())
    lines = [
        f"difference to {baseline} in the same repeat (paired), mean ± std, and the repeats in which "
        f"it is better ({'higher' if higher_is_better else 'lower'} is better)",
        "",
        "| strategy | " + " | ".join(f"t={t}" for t in rounds) + " |",
        "|" + "---|" * (len(rounds) + 1),
    ]
    for strategy, rows in diffs.groupby("strategy", sort=False):
        cells = {r["round"]: f"{r['mean']:+.{decimals}f} ± {_std(r['std'], decimals)} ({r['better']}/{r['repeats']})"
                 for _, r in rows.iterrows()}
        lines.append(f"| {strategy} | " + " | ".join(cells.get(t, "") for t in rounds) + " |")
    return "\n".join(lines) + "\n"


def _std(std: float, decimals: int) -> str:
    return "n/a" if pd.isna(std) else f"{std:.{decimals}f}"


def _mean_std(mean: float, std: float, decimals: int) -> str:
    return f"{mean:.{decimals}f} ± {_std(std, decimals)}"


def plot_curves(rounds: pd.DataFrame, path: Path, ylabel: str) -> None:
    """Figure 3: metric against labeled-set size, mean line and ±1 std band per strategy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    fig, ax = plt.subplots(figsize=(6, 4))
    sns.lineplot(data=rounds, x="n_labeled", y="value", hue="strategy", errorbar=("sd", 1),
                 marker="o", ax=ax)
    ax.set_xlabel("labeled samples")
    ax.set_ylabel(ylabel)
    ax.set_title(f"{rounds['task'].iloc[0]}: {len(rounds[['seed', 'repeat']].drop_duplicates())} repeats, mean ± 1 std")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)


def write_report(rounds: pd.DataFrame, out: Path, notes: list[str] = ()) -> list[Path]:
    """Write ``table.csv``, ``table.md`` (with the paired differences to random when it ran, and
    ``notes`` such as an unfinished run's, first) and ``curves.png`` for ``rounds`` into ``out``."""
    from tasks import TASKS

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    task, metric = rounds["task"].iloc[0], rounds["metric"].iloc[0]
    decimals, ylabel, scale, higher_is_better = 4, metric, 1.0, True
    if task in TASKS:
        task_metric = TASKS.get(task).metric
        if task_metric.name == metric:
            decimals, ylabel, scale = task_metric.decimals, task_metric.label, task_metric.display_scale
            higher_is_better = task_metric.higher_is_better
    table = summarize(rounds)
    table.to_csv(out / "table.csv", index=False)
    shown = table.assign(mean=table["mean"] * scale, std=table["std"] * scale)
    text = "".join(f"> {note}\n\n" for note in notes) + markdown_table(shown, task, ylabel, decimals)
    diffs = paired_differences(rounds, "random", higher_is_better)
    if diffs is not None and len(diffs):
        diffs = diffs.assign(mean=diffs["mean"] * scale, std=diffs["std"] * scale)
        text += "\n" + markdown_differences(diffs, "random", higher_is_better, decimals)
    (out / "table.md").write_text(text)
    plot_curves(rounds.assign(value=rounds["value"] * scale), out / "curves.png", ylabel)
    return [out / "table.csv", out / "table.md", out / "curves.png"]
