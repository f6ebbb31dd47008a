"""``report.html``: a run's (or a merged report's) whole report on one self-contained page: the
headline (task, metric and its direction, strategies, repeats, protocol, device, status and
failures), the AUBC summary, the curves, Table 1, the paired differences to random, the
validation and balanced-accuracy tables when the runs have them, the hardness of the picks, the
generative model's latent quality with its sample grid, and each manifest in a collapsible block.

It shows the frames :func:`bench.report.tables.write_report` wrote to the CSVs, so the page and
``table.csv`` hold the same numbers."""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from bench.generative.quality import LatentQuality, describe
from bench.report.html import Cell, details, esc, figure_file, headline, image, page, plural, pre, status_class, table
from bench.run.results import MetricInfo

#: A p-value below this is marked significant.
ALPHA = 0.05


@dataclass
class Source:
    """One run a report is made from: its folder and its manifest (None for a bare rounds.csv)."""

    folder: Path
    manifest: dict | None


@dataclass
class ReportFrames:
    """What :func:`~bench.report.tables.write_report` computed, in the units of ``rounds.csv``."""

    task: str
    metric: MetricInfo
    table: pd.DataFrame  # table.csv: strategy, round, n_labeled, mean, std, repeats (+ val_*, bacc_*, n_spent)
    summary: pd.DataFrame  # summary.csv: strategy, aubc_mean, aubc_std, repeats (+ labels_to_target, saving_pct, ...)
    target: float | None  # the labels-to-target target (None: no random and no --target)
    target_given: bool  # --target, not random's final mean
    diffs: pd.DataFrame | None = None  # differences.csv (None: random did not run)
    hardness: pd.DataFrame | None = None  # hardness.csv (None: no diagnostics)
    notes: list[str] = field(default_factory=list)
    #: the paper's Table 1 rows beside this run's (``--paper``): name, value per round t, display units
    paper: list[tuple[str, dict[int, float]]] = field(default_factory=list)
    paper_table: str = ""  # the paper's rows at its own sizes when they differ from the run's (markdown)


def run_state(manifest: dict) -> tuple[str, str]:
    """A run's status and a line on its units, from the units' own states (so a report written
    as the run ends says ``complete`` before the manifest does): ``complete``, ``complete with
    failures``, ``failed`` (the driver stopped with an error) or ``unfinished``."""
    units = manifest.get("units") if isinstance(manifest.get("units"), dict) else {}
    states = Counter(str(u.get("status")) for u in units.values() if isinstance(u, dict))
    done, failed, total = states["complete"], states["failed"], sum(states.values())
    if not total:  # a run from before units were recorded: its manifest's word
        return str(manifest.get("status", "unknown")), "units not recorded"
    line = f"{done} of {total} units complete" + (f", {failed} failed" if failed else "")
    if done + failed == total:
        return ("complete with failures" if failed else "complete"), line
    said = str(manifest.get("status", "unknown"))
    if said == "failed":
        return "failed", line
    return "unfinished", f"{line} (the manifest says {said})"


def write_run_page(out: Path, frames: ReportFrames, sources: Sequence[Source]) -> Path:
    """Write ``out/report.html`` and return its path."""
    title = f"{frames.task}: {', '.join(frames.summary['strategy'])}"
    body = [f"<h1>{esc(title)}</h1>", _headline(frames, sources)]
    body += [f'<div class="note">{esc(note)}</div>' for note in frames.notes]
    body += [_failures(sources), _summary(frames), _curves(out), _table_1(frames)]
    body += [_differences(frames), _validation(frames), _balanced(frames), _hardness(frames, out)]
    body += [_latent(sources), _settings(sources)]
    path = Path(out) / "report.html"
    path.write_text(page(f"{title} (latent-bench report)", "\n".join(part for part in body if part)))
    return path


def _headline(frames: ReportFrames, sources: Sequence[Source]) -> str:
    metric, table = frames.metric, frames.table
    manifests = [s.manifest for s in sources if s.manifest]
    first = manifests[0] if manifests else {}
    repeats = int(table["repeats"].max())
    items = [
        ("task", esc(frames.task)),
        ("metric", f"{esc(metric.label)}, <b>{esc(metric.direction)}</b>"),
        ("strategies", esc(", ".join(frames.summary["strategy"]))),
        ("repeats", f"{repeats}" + (f" (seeds {esc(_seeds(manifests))})" if manifests else "")),
        ("labeled", esc(_sizes(table))),
    ]
    protocol = first.get("protocol")
    if isinstance(protocol, dict):
        items.append(("protocol", esc(", ".join(f"{k} {_plain(v)}" for k, v in protocol.items()))))
    if isinstance(first.get("recipe"), dict):
        items.append(("recipe", esc(_plain(first["recipe"].get("file", first["recipe"])))))
    data = first.get("data")
    if isinstance(data, dict):
        items.append(("data", esc(", ".join(f"{k} {_plain(v)}" for k, v in data.items()))))
    generative = first.get("generative")
    if isinstance(generative, dict):
        shown = {
            k: v for k, v in generative.items() if k not in ("quality", "file", "under") and not isinstance(v, dict)
        }
        items.append(("generative model", esc(", ".join(f"{k} {_plain(v)}" for k, v in shown.items()))))
    for s in sources:
        if not s.manifest:
            continue
        m = s.manifest
        status, units = run_state(m)
        name = f"run {s.folder.name}" if len(sources) > 1 else "run"
        device = m.get("device") or {}
        where = ", ".join(
            str(x)
            for x in (
                device.get("device"),
                plural(device["torch_threads"], "thread") if "torch_threads" in device else None,
                plural((m.get("execution") or {}).get("jobs", 1), "job"),
                m.get("host"),
            )
            if x
        )
        git = m.get("git") or {}
        commit = f"{str(git.get('commit', ''))[:10]}{' (dirty)' if git.get('dirty') else ''}"
        when = " to ".join(str(m[k]) for k in ("started", "finished") if m.get(k))
        items.append(
            (
                name,
                f'<span class="{status_class(status)}">{esc(status)}</span>: {esc(units)}; {esc(where)}; '
                f"{esc(when)}; commit {esc(commit)}; latent-bench {esc((m.get('versions') or {}).get('latent-bench'))}",
            )
        )
    if not manifests:
        items.append(("runs", "no manifest beside the rounds: settings and status unknown"))
    return headline(items)


def _seeds(manifests: list[dict]) -> str:
    seeds = sorted({s for m in manifests for s in m.get("repeat_seeds", [])})
    return ", ".join(map(str, seeds))


def _sizes(table: pd.DataFrame) -> str:
    sizes = table.groupby("round")["n_labeled"].first()
    return " → ".join(f"{int(n):,}" for n in sizes)


def _plain(value: object) -> str:
    return json.dumps(value) if isinstance(value, (dict, list)) else str(value)


def _failures(sources: Sequence[Source]) -> str:
    parts = []
    for s in sources:
        m = s.manifest or {}
        if isinstance(m.get("error"), dict):
            error = m["error"]
            parts.append(
                f'<div class="failure">the run stopped with an error: {esc(error.get("error"))}'
                f"{details('traceback', pre(''.join(error.get('traceback', []))))}</div>"
            )
        for f in m.get("failures", []):
            if not isinstance(f, dict):
                continue
            parts.append(
                f'<div class="failure"><b>{esc(f.get("strategy"))}-r{esc(f.get("repeat"))}</b> failed after '
                f"{esc(f.get('rounds_done'))} rounds: {esc(f.get('error'))}"
                f"{details('traceback', pre(''.join(f.get('traceback') or [])))}</div>"
            )
    return ("<h2>Failures</h2>" + "".join(parts)) if parts else ""


def _mean_std(mean: float, std: float, decimals: int) -> str:
    return f"{mean:.{decimals}f} ± " + ("n/a" if pd.isna(std) else f"{std:.{decimals}f}")


def _best(values: pd.Series, higher_is_better: bool) -> float:
    finite = values.dropna()
    if finite.empty:
        return math.nan
    return float(finite.max() if higher_is_better else finite.min())


def _summary(frames: ReportFrames) -> str:
    metric, summary = frames.metric, frames.summary
    scale, d = metric.display_scale, metric.decimals
    best = _best(summary["aubc_mean"], metric.higher_is_better)
    extra = [
        (c, t) for c, t in (("val_aubc", "validation AUBC"), ("bacc_aubc", "balanced AUBC")) if f"{c}_mean" in summary
    ]
    header = ["strategy", "AUBC", "repeats", "labels to target", "saving vs random", *(t for _, t in extra)]
    rows = []
    for _, r in summary.iterrows():
        mean = float(r["aubc_mean"]) * scale
        labels = r.get("labels_to_target", math.nan)
        saving = r.get("saving_pct", math.nan)
        row = [
            Cell(str(r["strategy"])),
            Cell(_mean_std(mean, r["aubc_std"] * scale, d), mean, "best" if r["aubc_mean"] == best else ""),
            int(r["repeats"]),
            Cell("not reached" if pd.isna(labels) else f"{labels:,.0f}", float(labels)),
            Cell("n/a" if pd.isna(saving) else f"{saving:+.0f}%", float(saving)),
        ]
        for c, _ in extra:
            value = float(r[f"{c}_mean"]) * scale
            row.append(Cell(_mean_std(value, r[f"{c}_std"] * scale, d), value))
        rows.append(row)
    if frames.target is None:
        target = "no target: random did not run (pass --target VALUE)"
    else:
        where = "--target" if frames.target_given else "random's final mean"
        target = f"labels to reach {frames.target * scale:.{d}f} ({where}), read off each mean curve"
    caption = (
        f"AUBC: the area under each repeat's learning curve over the budget span (the curve's mean), "
        f"{metric.label}, {metric.direction}; mean ± std over repeats. {target}; the saving is against random's."
    )
    return "<h2>Summary</h2>" + table(header, rows, caption, name="summary")


def _curves(out: Path) -> str:
    shown = image(
        figure_file(Path(out) / "curves"),
        "learning curves",
        "mean ± std band per strategy; below: the paired difference to random in the same repeat",
    )
    return ("<h2>Learning curves</h2>" + shown) if shown else ""


def _wide(
    frames: ReportFrames,
    mean: str,
    std: str,
    name: str,
    caption: str,
    spent: bool = False,
    paper: Sequence[tuple[str, dict[int, float]]] = (),
    higher_is_better: bool | None = None,
) -> str:
    """A table of ``mean ± std`` a row per strategy, a column per round (the paper's Table 1 layout),
    after the ``paper`` rows when given; the best of each round in bold, by ``higher_is_better``
    (default: the metric's direction)."""
    metric, t = frames.metric, frames.table
    higher = metric.higher_is_better if higher_is_better is None else higher_is_better
    scale, d = metric.display_scale, metric.decimals
    rounds = sorted(t["round"].unique())
    sizes = t.groupby("round")["n_labeled"].first()
    most = int(t["repeats"].max())
    header = ["strategy", *(f"t={r} ({int(sizes[r]):,})" for r in rounds)]
    best = {r: _best(t.loc[t["round"] == r, mean], higher) for r in rounds}
    rows = []
    if spent:
        per_round = t.groupby("round")["n_spent"].first()
        rows.append([Cell("labels spent", ""), *(Cell(f"{int(per_round[r]):,}", float(per_round[r])) for r in rounds)])
    for paper_name, values in paper:
        row = [Cell(paper_name, "", "muted")]
        rows.append(
            row + [Cell(f"{values[r]:.1f}", values[r], "muted") if r in values else Cell("", "") for r in rounds]
        )
    for strategy, group in t.groupby("strategy", sort=False):
        cells = {int(r["round"]): r for _, r in group.iterrows()}
        row = [Cell(str(strategy))]
        for r in rounds:
            if r not in cells or pd.isna(cells[r][mean]):
                row.append(Cell("", math.nan))
                continue
            x = cells[r]
            fewer = f" (n={int(x['repeats'])})" if x["repeats"] < most else ""
            value = float(x[mean]) * scale
            row.append(Cell(_mean_std(value, x[std] * scale, d) + fewer, value, "best" if x[mean] == best[r] else ""))
        rows.append(row)
    return table(header, rows, caption, name=name)


def _table_1(frames: ReportFrames) -> str:
    metric = frames.metric
    caption = (
        f"{metric.label} ({metric.direction}), mean ± std over {int(frames.table['repeats'].max())} repeats, a "
        f"column per round t (labeled samples); (n=k): a cell over k repeats; bold: the best mean of its round"
        + ("; grey: the paper's rows (Mo et al., Table 1)" if frames.paper else "")
    )
    own = pre(frames.paper_table) if frames.paper_table else ""
    return "<h2>Table 1</h2>" + _wide(frames, "mean", "std", "table-1", caption, paper=frames.paper) + own


def _validation(frames: ReportFrames) -> str:
    if "val_mean" not in frames.table:
        return ""
    caption = (
        f"{frames.metric.name} on the validation samples held out of the pool in each repeat (never selected "
        f"or trained on; {frames.metric.direction}); their labels count as spent"
    )
    return "<h2>Validation</h2>" + _wide(frames, "val_mean", "val_std", "validation", caption, spent=True)


def _balanced(frames: ReportFrames) -> str:
    if "bacc_mean" not in frames.table:
        return ""
    caption = "balanced accuracy (the mean per-class recall, higher is better), mean ± std over repeats"
    return "<h2>Balanced accuracy</h2>" + _wide(
        frames, "bacc_mean", "bacc_std", "balanced", caption, higher_is_better=True
    )


def _differences(frames: ReportFrames) -> str:
    diffs, metric = frames.diffs, frames.metric
    if diffs is None or diffs.empty:
        return ""
    scale, d = metric.display_scale, metric.decimals
    header = ["strategy", "round", "labeled", "difference", "better in", "p (t-test)", "p (Wilcoxon)", "significant"]
    rows = []
    for _, r in diffs.iterrows():
        mean = float(r["mean"]) * scale
        good = (mean > 0) == metric.higher_is_better
        significant = not pd.isna(r["t_p"]) and r["t_p"] < ALPHA
        mark = ("better" if good else "worse") if significant else ""
        rows.append(
            [
                Cell(str(r["strategy"])),
                int(r["round"]),
                int(r["n_labeled"]),
                Cell(f"{mean:+.{d}f} ± " + ("n/a" if pd.isna(r["std"]) else f"{r['std'] * scale:.{d}f}"), mean),
                Cell(f"{int(r['better'])}/{int(r['repeats'])}", float(r["better"])),
                Cell(_p(r["t_p"]), float(r["t_p"])),
                Cell(_p(r["wilcoxon_p"]), float(r["wilcoxon_p"])),
                Cell(("* " + mark) if mark else "", mark, "sig" if mark == "better" else "worse" if mark else ""),
            ]
        )
    caption = (
        f"each strategy minus random in the same repeat (paired), {metric.label}: mean ± std over repeats, the "
        f"repeats in which it is better ({metric.direction}), two-sided p-values of a paired t-test and a "
        f"Wilcoxon signed-rank test; * a t-test p below {ALPHA}"
    )
    return "<h2>Paired differences to random</h2>" + table(header, rows, caption, name="differences")


def _p(p: float) -> str:
    return "n/a" if pd.isna(p) else f"{p:.3g}" + ("*" if p < ALPHA else "")


def _hardness(frames: ReportFrames, out: Path) -> str:
    h = frames.hardness
    if h is None or h.empty:
        return ""
    measures = [m for m in ("hardness", "balance", "novelty") if f"{m}_mean" in h]
    header = ["strategy", "round", "labeled", *measures]
    rows = []
    for _, r in h.iterrows():
        row: list = [Cell(str(r["strategy"])), int(r["round"]), int(r["n_labeled"])]
        for m in measures:
            value = float(r[f"{m}_mean"])
            row.append(Cell("" if pd.isna(value) else _mean_std(value, r[f"{m}_std"], 3), value))
        rows.append(row)
    caption = (
        "the samples that joined the training set each round, measured under the model that chose them: "
        "hardness = their loss / the unlabeled pool's (above 1: harder), balance = entropy of their classes / "
        "log C, novelty = distance to the nearest training sample / the pool's; mean ± std over repeats"
    )
    shown = image(figure_file(Path(out) / "hardness"), "hardness, balance and novelty of the picks")
    return "<h2>What each strategy picks</h2>" + shown + table(header, rows, caption, name="hardness")


def _latent(sources: Sequence[Source]) -> str:
    parts, seen = [], set()
    for s in sources:
        quality = ((s.manifest or {}).get("generative") or {}).get("quality")
        key = json.dumps(quality, sort_keys=True)
        if not isinstance(quality, dict) or key in seen:
            continue  # several runs of one model show it once
        seen.add(key)
        name = f" ({s.folder.name})" if len(sources) > 1 else ""
        try:
            text = describe(LatentQuality.from_dict(quality))
        except (TypeError, KeyError, ValueError) as err:
            text = f"not measured: {quality.get('error', err)}"
        samples = image(
            s.folder / "generative-samples.png",
            "generative model samples",
            "row 1: pool samples x; row 2: their reconstructions G(E(x)); rows 3-4: prior samples G(z), z ~ N(0, I)",
        )
        parts.append(f"<h3>The generative model{esc(name)}</h3>{pre(text)}{samples}")
    return ("<h2>Latent quality</h2>" + "".join(parts)) if parts else ""


def _settings(sources: Sequence[Source]) -> str:
    blocks = [
        details(f"manifest.json of {s.folder.name}", pre(json.dumps(s.manifest, indent=2)))
        for s in sources
        if s.manifest
    ]
    return ("<h2>Settings</h2>" + "".join(blocks)) if blocks else ""
