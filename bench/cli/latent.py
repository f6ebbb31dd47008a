"""``python -m bench latent``: how good the task's generative model is, as ``run`` resolves it."""

from __future__ import annotations

import dataclasses

from bench.generative.quality import cached_quality, describe
from bench.run.assembly import assemble
from bench.run.config import ConfigError, RunConfig
from bench.run.plan import applicable_strategies, create_task
from strategies import STRATEGIES
from tasks.base import Capability


def latent_report(config: RunConfig) -> str:
    """The task's generative model as ``run`` resolves it (data, settings, cache file; trained if
    not cached), and its latent-quality statistics, described."""
    task = create_task(config.task)
    latent = [name for name in applicable_strategies(task) if Capability.GENERATIVE in STRATEGIES.get(name).requires]
    if not latent:
        raise ConfigError(f"task {task.name!r} has no generative model (no latent strategy applies to it)")
    # a one-sample protocol: nothing is labeled here, and any --subset passes the plan's size checks
    assembly = assemble(dataclasses.replace(config, strategies=latent[:1], rounds=1, initial=1, increment=1))
    plan, path = assembly.plan, assembly.generative_file
    quality = cached_quality(path, assembly.generative, plan.generative, plan.task, assembly.data, plan.config.seed)
    return describe(quality, path)
