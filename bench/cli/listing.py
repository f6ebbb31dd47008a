"""The text of ``python -m bench list``: tasks and strategies (each with the distribution that
provides it; a plug-in strategy with whether a run found it reproducible), the strategy x task
matrix, why each refused pair is refused, and the plug-ins left out."""

from __future__ import annotations

import dataclasses

from bench.registry import Origin, distribution_origin
from bench.run.plan import create_task
from bench.run.probes import is_probed, verdict
from strategies import STRATEGIES
from strategies.base import RNG_ADVICE
from tasks import TASKS
from tasks.base import optimizer_name


def provided_by(origin: Origin, harness: str | None) -> str:
    """Where a registered class comes from, as the listing shows it: ``[from latent-bench 0.1.0]``
    for the harness's own, ``[from my-plugin 1.2, module my_plugin.x]`` for a plug-in's, and
    ``[module my_script, not installed]`` for a class of no installed distribution (e.g. defined
    in a script)."""
    if origin.distribution is None:
        return f"[module {origin.module}, not installed]"
    release = " ".join(filter(None, [origin.distribution, origin.version]))
    return f"[from {release}]" if origin.distribution == harness else f"[from {release}, module {origin.module}]"


def reproducibility(cls: type) -> str:
    """What the last run found about a plug-in strategy's reproducibility (see
    :mod:`bench.run.probes`), as the listing shows it."""
    found = verdict(cls)
    if found is None:
        return "reproducible: not checked yet (a run checks it; so does bench.testing.check_strategy)"
    when = f"in a run on {found.get('task')}, {str(found.get('date', ''))[:10]}"
    if found.get("reproducible"):
        return f"reproducible: yes ({when})"
    return f"reproducible: NO ({when}: it {found.get('detail')}); {RNG_ADVICE}"


def listing() -> str:
    """The text of ``list``; a refused pair's reason is the strategy's ``refuses(task)``, the
    words ``run`` refuses it with."""
    tasks = {name: create_task(name) for name in TASKS.names()}
    strategies = {name: STRATEGIES.get(name) for name in STRATEGIES.names()}
    harness = distribution_origin(__name__).distribution  # latent-bench, when installed
    width = max(map(len, [*tasks, *strategies]))
    lines = ["tasks:"]
    for name, task in tasks.items():
        p = task.protocol
        lines.append(f"  {name:<{width}}  {task.description}  {provided_by(TASKS.origin(name), harness)}")
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
    for name, cls in strategies.items():
        lines.append(f"  {name:<{width}}  {cls.description}  {provided_by(STRATEGIES.origin(name), harness)}")
        if is_probed(cls, repeat=0):
            lines.append(f"  {'':<{width}}  {reproducibility(cls)}")
    refused = {
        (strategy, task): why
        for strategy, cls in strategies.items()
        for task, made in tasks.items()
        if (why := cls.refuses(made)) is not None
    }
    legend = "x = applies" + (", - = refused: why below" if refused else "")
    lines += ["", f"which strategy applies to which task ({legend}):"]
    lines.append(f"  {'':<{width}}  " + "  ".join(f"{t:^{max(len(t), 3)}}" for t in tasks).rstrip())
    for name in strategies:
        cells = ["-" if (name, task) in refused else "x" for task in tasks]
        lines.append(
            f"  {name:<{width}}  " + "  ".join(f"{c:^{max(len(t), 3)}}" for c, t in zip(cells, tasks)).rstrip()
        )
    if refused:
        lines += ["", "refused pairs (run refuses them with exit 2, before any work):"]
        lines += [f"  {strategy} on {task}: {why}" for (strategy, task), why in refused.items()]
    broken = [
        f"  {registry.kind} {name}: {why}" for registry in (TASKS, STRATEGIES) for name, why in registry.broken.items()
    ]
    if broken:
        lines += ["", "plug-ins left out:", *broken]
    return "\n".join(lines)
