"""Table-1-style tables and Figure-3-style learning curves from ``rounds.csv`` files."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from bench.results import ROUND_COLUMNS

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
            frame = pd.read_csv(csv_path)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
            raise ReportError(f"{csv_path} is not a readable rounds.csv ({err})") from err
        missing = [c for c in ROUND_COLUMNS if c not in frame.columns]
        if missing:
            raise ReportError(f"{csv_path} lacks the columns {', '.join(missing)}: is it a rounds.csv?")
        frames.append(frame)
    rounds = pd.concat(frames, ignore_index=True)
    for column in ("task", "metric"):
        values = rounds[column].unique()
        if len(values) > 1:
            raise ReportError(f"cannot report several {column}s together ({', '.join(map(str, values))}); "
                              f"report each {column} separately")
    duplicated = rounds.duplicated(["strategy", "repeat", "round"])
    if duplicated.any():
        row = rounds[duplicated].iloc[0]
        raise ReportError(f"duplicate rows for strategy {row.strategy!r}, repeat {row.repeat}, round "
                          f"{row['round']}: the inputs overlap (pass each run once)")
    return rounds


def summarize(rounds: pd.DataFrame) -> pd.DataFrame:
    """Mean and sample std (ddof=1; NaN for one repeat) of the metric per (strategy, round)."""
    order = list(dict.fromkeys(rounds["strategy"]))
    table = (
        rounds.groupby(["strategy", "round"], sort=False)
        .agg(n_labeled=("n_labeled", "mean"), mean=("value", "mean"), std=("value", "std"),
             repeats=("repeat", "nunique"))
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


def _mean_std(mean: float, std: float, decimals: int) -> str:
    return f"{mean:.{decimals}f} ± {'n/a' if pd.isna(std) else f'{std:.{decimals}f}'}"


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
    ax.set_title(f"{rounds['task'].iloc[0]}: {len(rounds['repeat'].unique())} repeats, mean ± 1 std")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)


def write_report(rounds: pd.DataFrame, out: Path) -> list[Path]:
    """Write ``table.csv``, ``table.md`` and ``curves.png`` for ``rounds`` into ``out``."""
    from tasks import TASKS

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    task, metric = rounds["task"].iloc[0], rounds["metric"].iloc[0]
    decimals, ylabel, scale = 4, metric, 1.0
    if task in TASKS:
        task_metric = TASKS.get(task).metric
        if task_metric.name == metric:
            decimals, ylabel, scale = task_metric.decimals, task_metric.label, task_metric.display_scale
    table = summarize(rounds)
    table.to_csv(out / "table.csv", index=False)
    shown = table.assign(mean=table["mean"] * scale, std=table["std"] * scale)
    (out / "table.md").write_text(markdown_table(shown, task, ylabel, decimals))
    plot_curves(rounds.assign(value=rounds["value"] * scale), out / "curves.png", ylabel)
    return [out / "table.csv", out / "table.md", out / "curves.png"]
