"""The text of ``python -m bench list``: tasks, strategies, and the strategy x task matrix."""

from __future__ import annotations

import dataclasses

from bench.run.plan import create_task
from strategies import STRATEGIES
from tasks import TASKS
from tasks.base import optimizer_name


def listing() -> str:
    tasks = {name: create_task(name) for name in TASKS.names()}
    strategies = {name: STRATEGIES.get(name) for name in STRATEGIES.names()}
    width = max(map(len, [*tasks, *strategies]))
    lines = ["tasks:"]
    for name, task in tasks.items():
        p = task.protocol
        lines.append(f"  {name:<{width}}  {task.description}")
        lines.append(
            f"  {'':<{width}}  defaults: --initial {p.initial} --increment {p.increment} "
            f"--rounds {p.rounds} --epochs {p.epochs} --batch-size {p.batch_size} --lr {p.lr:g} "
            f"--optimizer {optimizer_name(p.optimizer)}"
            + "".join(f" --optimizer-option {k}={v}" for k, v in p.optimizer_options.items())
            + f" --start {p.start}"
        )
        if task.augmentation:
            lines.append(f"  {'':<{width}}  --augment: {task.augmentation}")
        if task.generative is not None:
            settings = " ".join(f"{k}={v}" for k, v in dataclasses.asdict(task.generative).items())
            lines.append(
                f"  {'':<{width}}  generative model ({type(task.generative).__name__}, "
                f"--generative-option KEY=VALUE): {settings}"
            )
    lines += ["", "strategies:"]
    lines += [f"  {name:<{width}}  {cls.description}" for name, cls in strategies.items()]
    lines += ["", "which strategy applies to which task (x = applies, - = refused: it needs what the task lacks):"]
    lines.append(f"  {'':<{width}}  " + "  ".join(f"{t:^{max(len(t), 3)}}" for t in tasks))
    for name, cls in strategies.items():
        cells = ["-" if cls.refuses(task) else "x" for task in tasks.values()]
        lines.append(f"  {name:<{width}}  " + "  ".join(f"{c:^{max(len(t), 3)}}" for c, t in zip(cells, tasks)))
    broken = [
        f"  {registry.kind} {name}: {why}" for registry in (TASKS, STRATEGIES) for name, why in registry.broken.items()
    ]
    if broken:
        lines += ["", "plug-ins left out because they failed to import:", *broken]
    return "\n".join(lines)
