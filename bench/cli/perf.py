"""``python -m bench perf``: training throughput and wall time per round on the current device.

Runs one repeat of the progressive protocol (no files written) and reports, per round, the
labeled-set size, training seconds and samples/s, evaluation seconds, and the selection and
labeling seconds of the chosen strategy.
"""

from __future__ import annotations

import time

import pandas as pd

from bench.run.assembly import assemble
from bench.run.config import RunConfig
from bench.run.loop import run_progressive
from bench.run.manifest import device_info


def perf(config: RunConfig) -> str:
    """Measure one repeat of ``config`` and return a printable table of timings."""
    assembly = assemble(config)
    plan, data = assembly.plan, assembly.data
    rows = []

    def on_round(record, _sources, _latents, _scores) -> None:
        samples = record.n_labeled * plan.protocol.epochs
        rows.append(
            {
                "round": record.round,
                "n_labeled": record.n_labeled,
                "train_s": record.train_s,
                "train_samples_per_s": samples / max(record.train_s, 1e-9),
                "eval_s": record.eval_s,
                "eval_samples_per_s": len(data.test_x) / max(record.eval_s, 1e-9),
                "select_s": record.select_s,
                "label_s": record.label_s,
                record.metric: record.value,
            }
        )

    generative = assembly.generative
    start = time.perf_counter()
    run_progressive(plan, data, plan.strategies[0], 0, on_round, generative)
    wall = time.perf_counter() - start
    table = pd.DataFrame(rows)
    train_total = table["train_s"].sum()
    samples_total = (table["n_labeled"] * plan.protocol.epochs).sum()
    device = device_info(plan.device)
    lines = [
        f"task {plan.task.name}, strategy {plan.strategy_names[0]}, device {device}",
        f"protocol {plan.protocol}, pool {len(data.pool_x)}, test {len(data.test_x)}",
        table.to_string(index=False, float_format=lambda v: f"{v:.3f}"),
        f"training throughput: {samples_total / train_total:.0f} samples/s overall; "
        f"wall time {wall:.1f} s for {len(table)} rounds ({wall / len(table):.2f} s per round)",
    ]
    return "\n".join(lines)
