"""Planning a run: resolve and check the task, strategies, options, sizes and device before any
work, then load the data and the generative model the strategies need."""

from __future__ import annotations

import inspect
import logging
import math
import os
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from bench.generative.base import GenerativeSpec
from bench.paths import cache_root
from bench.registry import UnknownNameError
from bench.run.config import (
    LIMITS,
    MAX_LR,
    ConfigError,
    RunConfig,
    check_finite,
    check_limit,
    check_protocol,
    resolve_device,
    resolve_score_dtype,
)
from bench.run.imbalance import long_tailed_indices
from bench.run.results import CLASS_COLUMNS, VALIDATION_COLUMNS
from strategies import STRATEGIES
from strategies.base import Strategy
from tasks import TASKS
from tasks.base import Capability, DataError, OptimizerSpec, Protocol, Task, TaskData, make_optimizer, optimizer_name

log = logging.getLogger(__name__)


@dataclass
class Plan:
    """A validated run: the resolved task, strategies, protocol and device."""

    config: RunConfig
    task: Task
    strategies: list[type[Strategy]]
    protocol: Protocol
    device: torch.device
    score_dtype: torch.dtype  # precision of the pool scoring strategies select with
    train_dtype: torch.dtype  # autocast precision of training F (float32: no autocast)
    generative: GenerativeSpec | None = None  # the generative model a chosen strategy needs (resolved settings)

    @property
    def strategy_names(self) -> list[str]:
        return [s.name for s in self.strategies]

    @property
    def extra_columns(self) -> list[str]:
        """The columns of ``rounds.csv`` after the fixed ones: the task's extra metrics, for a
        classification task the labeled set's smallest class count and, where its metric is
        accuracy, the balanced accuracy (:func:`class_columns`), then the validation set's size and
        metric with ``--validation``."""
        validation = VALIDATION_COLUMNS if self.config.validation else []
        return self.task.extra_metrics() + class_columns(self.task) + validation

    def make_strategy(self, cls: type[Strategy]) -> Strategy:
        """Instantiate a strategy with the options meant for it (see :func:`strategy_options`)."""
        return cls(**strategy_options(cls, self.config.strategy_options))


def class_columns(task: Task) -> list[str]:
    """The class-balance columns of ``rounds.csv`` for ``task``: ``min_class_labeled`` for a
    classification task (one with class probabilities), and ``balanced_accuracy`` too where its
    metric is ``accuracy``; none for a regression task."""
    if Capability.PROBABILITIES not in task.capabilities:
        return []
    return CLASS_COLUMNS if task.metric.name == "accuracy" else CLASS_COLUMNS[:1]


def strategy_options(cls: type[Strategy], options: dict[str, Any]) -> dict[str, Any]:
    """The options for strategy ``cls``: ``"<name>.<key>"`` entries, and plain ``"<key>"``
    entries that its constructor accepts (a scoped entry wins over a plain one)."""
    accepted = inspect.signature(cls).parameters
    chosen = {k: v for k, v in options.items() if "." not in k and k in accepted}
    prefix = f"{cls.name}."
    chosen.update({k[len(prefix) :]: v for k, v in options.items() if k.startswith(prefix)})
    return chosen


def strategy_settings(cls: type[Strategy], options: dict[str, Any]) -> dict[str, Any]:
    """Every constructor option of strategy ``cls`` with the value it runs with."""
    settings = {
        name: p.default
        for name, p in inspect.signature(cls).parameters.items()
        if p.default is not inspect.Parameter.empty
    }
    settings.update(strategy_options(cls, options))
    return settings


def check_options(strategies: list[type[Strategy]], options: dict[str, Any]) -> None:
    """Refuse options no chosen strategy accepts, and values a strategy's constructor rejects."""
    for key in options:
        scope, dot, name = key.rpartition(".")
        if not name or (dot and not scope):
            raise ConfigError(
                f"option {key!r}: write KEY=VALUE (every chosen strategy that accepts it) or "
                f"STRATEGY.KEY=VALUE (one strategy)"
            )
        owners = [c for c in strategies if (not scope or c.name == scope) and name in inspect.signature(c).parameters]
        if not owners:
            known = sorted({f"{c.name}.{p}" for c in strategies for p in inspect.signature(c).parameters})
            raise ConfigError(
                f"option {key!r} is not accepted by any chosen strategy "
                f"({', '.join(c.name for c in strategies)}); options they accept: "
                f"{', '.join(known) or 'none'}"
            )
    for cls in strategies:
        chosen = strategy_options(cls, options)
        mistyped = mistyped_option(cls, chosen, options, annotated_only=True)
        if mistyped is not None:
            raise ConfigError(mistyped)
        try:
            cls(**chosen)
        except (TypeError, ValueError) as err:
            mistyped = mistyped_option(cls, chosen, options, annotated_only=False)
            if mistyped is not None:
                raise ConfigError(f"{mistyped} (strategy {cls.name!r} said: {err})") from None
            raise ConfigError(f"strategy {cls.name!r}: {err}") from None


#: The option types a constructor's annotation can declare and ``--option`` can give, and how a
#: refusal asks for one.
OPTION_TYPES: dict[type, str] = {int: "a whole number", float: "a number", str: "text"}


def option_type(parameter: inspect.Parameter, annotated_only: bool) -> type | None:
    """The type an option must have, or None when the constructor does not say. With
    ``annotated_only`` (checked before the constructor runs) only an int or float annotation
    counts; otherwise (after the constructor failed) an int, float or str annotation, else the
    default's type. Text is checked only then: ``--option`` reads every number as a number, so a
    str option whose values look like numbers must stay possible."""
    types = [int, float] if annotated_only else list(OPTION_TYPES)
    annotation = parameter.annotation
    if isinstance(annotation, str):  # postponed annotations (from __future__ import annotations)
        annotation = {t.__name__: t for t in OPTION_TYPES}.get(annotation.strip())
    if annotation in types:
        return annotation
    default = parameter.default
    if annotated_only or type(default) not in types:
        return None
    return type(default)


def mistyped_option(
    cls: type[Strategy], chosen: dict[str, Any], options: dict[str, Any], annotated_only: bool
) -> str | None:
    """A message naming the first option in ``chosen`` whose value is not of the type its
    constructor parameter declares (:func:`option_type`; an int passes for a float), with the
    value given and the expected type; None when all fit."""
    parameters = inspect.signature(cls).parameters
    for name, value in chosen.items():
        expected = option_type(parameters[name], annotated_only)
        if expected is None:
            continue
        if expected is str:
            fits = isinstance(value, str)
        else:
            numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
            fits = numeric and (expected is float or isinstance(value, int))
        if not fits:
            key = f"{cls.name}.{name}" if f"{cls.name}.{name}" in options else name
            default = parameters[name].default
            known = default is not inspect.Parameter.empty
            return (
                f"--option {key}={value!r}: strategy {cls.name!r} expects {expected.__name__} for {name}"
                + (f" (its default is {default!r})" if known else "")
                + f", got {type(value).__name__} {value!r}; give {OPTION_TYPES[expected]}"
                + (f", e.g. --option {key}={default}" if known else "")
            )
    return None


#: The longest latent step ``alpha`` of a strategy that needs a generative model (snn, si: p' = p
#: + alpha * d, d a unit vector). The codes follow the N(0, I) prior, so even in the largest latent
#: space (4096-d, codes about 64 from the origin) they lie within about 150 of each other: a
#: longer step leaves every code behind (SNN drops every such step as off the manifold; SI
#: synthesizes far from anything G was trained on), and 1e300 overflows float32 to inf.
MAX_ALPHA = 1000.0


def check_latent_steps(strategies: list[type[Strategy]], options: dict[str, Any]) -> None:
    """Refuse a latent step ``alpha`` above :data:`MAX_ALPHA` for a strategy that needs a
    generative model (the constructors refuse one that is not positive)."""
    for cls in strategies:
        alpha = strategy_options(cls, options).get("alpha")
        if Capability.GENERATIVE not in cls.requires or not isinstance(alpha, (int, float)) or alpha <= MAX_ALPHA:
            continue
        given = f"--option {cls.name}.alpha={alpha:g}" if f"{cls.name}.alpha" in options else f"--alpha {alpha:g}"
        raise ConfigError(
            f"{given} ({cls.name}'s step in the latent space) is out of range: at most {MAX_ALPHA:g}. The latent "
            f"codes follow the N(0, I) prior and lie within about 150 of each other even in the largest latent "
            f"space, so a longer step leaves every code and the region G was trained on; give a step of the "
            f"codes' scale, e.g. the default 0.5"
        )


def optimizer_problem(spec: OptimizerSpec, lr: float, options: dict[str, Any]) -> str | None:
    """Why the training loop cannot drive optimizer ``spec``, or None when it can. The loop
    (:func:`bench.training.train_epochs`) calls ``step()`` once per mini-batch, without a closure,
    on the dense gradients of F's weights and biases; one such step on a small weight and bias
    tells (LBFGS needs a closure, SparseAdam sparse gradients)."""
    weights = [torch.zeros(2, 2, requires_grad=True), torch.zeros(2, requires_grad=True)]
    try:
        optimizer = make_optimizer(spec, weights, lr, options)
        for weight in weights:
            weight.grad = torch.ones_like(weight)
        optimizer.step()
    except Exception as err:
        return f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else 'no message'}"
    return None


def drivable_optimizers() -> list[str]:
    """The ``torch.optim`` optimizers the training loop can drive (by their defaults), lower case."""
    names = sorted(
        name.lower()
        for name, value in vars(torch.optim).items()
        if isinstance(value, type) and issubclass(value, torch.optim.Optimizer) and value is not torch.optim.Optimizer
    )
    return [name for name in names if optimizer_problem(name, 1e-3, {}) is None]


def check_optimizer(protocol: Protocol) -> None:
    """Refuse an optimizer the training loop cannot drive (:func:`optimizer_problem`), listing those
    it can; check_protocol has already refused one that cannot be built with its options."""
    problem = optimizer_problem(protocol.optimizer, protocol.lr, protocol.optimizer_options)
    if problem is not None:
        raise ConfigError(
            f"--optimizer {optimizer_name(protocol.optimizer)}: the training loop cannot drive it ({problem}); "
            f"it calls step() once per mini-batch without a closure, on dense gradients of every weight and bias "
            f"of F, so closure-based (LBFGS) and sparse-only (SparseAdam) optimizers do not work. Use one that "
            f"does: {', '.join(drivable_optimizers())}"
        )


def applicable_strategies(task: Task) -> list[str]:
    """Names of the registered strategies that do not refuse ``task``."""
    return [name for name in STRATEGIES.names() if STRATEGIES.get(name).refuses(task) is None]


def check_cache_folder(root: Path) -> None:
    """Refuse a cache folder that cannot be created; warn when it is read-only (cached models
    and labels are then read, and nothing new is kept)."""
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(
            f"the cache folder {root} cannot be created ({err.strerror or err}); point BENCH_CACHE "
            f"at a folder you can write to"
        ) from None
    if not os.access(root, os.W_OK):
        log.warning("the cache folder %s is read-only: what is cached there is used, nothing new is kept", root)


def create_task(name: str) -> Task:
    """The registered task ``name``, given the harness's cache folder (the one place a run's
    task is made); an unknown name raises ConfigError listing the known ones."""
    try:
        task = TASKS.create(name)
    except UnknownNameError as err:
        raise ConfigError(str(err)) from None
    task.cache_dir = cache_root()
    return task


def plan_run(config: RunConfig) -> Plan:
    """Check a configuration before any work; raise ConfigError naming the problem and fix.
    Changes nothing: :func:`bench.run.assembly.assemble` applies the plan's torch settings."""
    task = create_task(config.task)
    task.progress = not config.quiet
    if config.threads is not None:
        task.workers = config.threads  # the task's own processes (e.g. FEM labeling) stay within --threads
    check_cache_folder(cache_root())
    names = config.strategies
    if names == ["all"]:
        names = applicable_strategies(task)
    if not names:
        raise ConfigError("no strategy given; use --strategy NAME[,NAME...] or --strategy all")
    if len(set(names)) != len(names):
        raise ConfigError(f"a strategy is listed twice in --strategy {','.join(names)}")
    strategies = []
    for name in names:
        try:
            cls = STRATEGIES.get(name)
        except UnknownNameError as err:
            raise ConfigError(str(err)) from None
        why = cls.refuses(task, strategy_options(cls, config.strategy_options))
        if why is not None:
            raise ConfigError(
                f"strategy {name!r} does not apply to task {task.name!r}: {why}. "
                f"Strategies that apply to {task.name}: {', '.join(applicable_strategies(task))}"
            )
        strategies.append(cls)
    if config.latent_dim is not None and config.latent_dim < 1:
        raise ConfigError(f"--latent-dim must be at least 1 (got {config.latent_dim})")
    for name in ("latent_dim", "repeats", "threads", "seed"):
        check_limit(name, getattr(config, name))
    if config.threads is not None and config.threads < 1:
        raise ConfigError(f"--threads must be at least 1 (got {config.threads})")
    for key, value in {**config.strategy_options, **config.generative_options}.items():
        check_finite(f"option {key}=", value)
    if config.repeats < 1:
        raise ConfigError(f"--repeats must be at least 1 (got {config.repeats})")
    if config.subset is not None and config.subset < 1:
        raise ConfigError(f"--subset must be at least 1 (got {config.subset})")
    if config.seed < 0:
        raise ConfigError(f"--seed must be non-negative (got {config.seed})")
    if config.validation < 0:
        raise ConfigError(f"--validation must be 0 (none) or a number of pool samples (got {config.validation})")
    check_limit("validation", config.validation)
    check_imbalance(task, config.imbalance)
    check_options(strategies, config.strategy_options)
    check_latent_steps(strategies, config.strategy_options)
    protocol = config.protocol(task.protocol)
    if config.subset is not None:
        if task.pool_size is not None and config.subset > task.pool_size:
            raise ConfigError(
                f"--subset {config.subset} is larger than the {task.name} pool ({task.pool_size} samples); lower it"
            )
        check_protocol(protocol, config.subset, f"--subset {config.subset}", config.validation)
    else:
        check_protocol(protocol, task.pool_size or 2**62, f"the {task.name} pool", config.validation)
    check_optimizer(protocol)
    device = resolve_device(config.device)
    if protocol.augment and task.augmentation is None:
        raise ConfigError(f"--augment: task {task.name!r} has no data augmentation; drop the flag")
    score_dtype = resolve_score_dtype(config.score_dtype, device)
    train_dtype = resolve_score_dtype(config.train_dtype, device, "--train-dtype")
    generative = generative_spec(task, strategies, config)  # refuses bad generative options now, before any work
    return Plan(config, task, strategies, protocol, device, score_dtype, train_dtype, generative)


def check_imbalance(task: Task, ratio: float | None) -> None:
    """Refuse ``--imbalance R`` for a task that does not classify, and an R that is not a finite
    number of at least 1 (None: no imbalance, passes)."""
    if ratio is None:
        return
    if Capability.PROBABILITIES not in task.capabilities:
        raise ConfigError(
            f"--imbalance applies to classification tasks; {task.name} is a regression task "
            f"(its targets have no classes to make rare); drop it"
        )
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not math.isfinite(ratio):
        raise ConfigError(f"--imbalance {ratio}: not a finite number; give a ratio of at least 1, e.g. --imbalance 10")
    if ratio < 1:
        raise ConfigError(
            f"--imbalance {ratio:g} is below 1: R is the head class's count over the tail class's (1: a balanced "
            f"pool); give a ratio of at least 1, e.g. --imbalance 10"
        )


def generative_spec(task: Task, strategies: list[type[Strategy]], config: RunConfig) -> GenerativeSpec | None:
    """The settings of the task's generative model when a chosen strategy needs one (the task's,
    with ``--latent-dim`` and ``--generative-option`` applied), else None."""
    options = config.generative_options
    if not any(
        Capability.GENERATIVE in s.requirements(strategy_options(s, config.strategy_options)) for s in strategies
    ):
        if options:
            raise ConfigError("--generative-option given, but no chosen strategy uses a generative model")
        return None
    default = task.generative
    fields = list(default.settings())
    unknown = sorted(set(options) - set(fields))
    if unknown:
        raise ConfigError(
            f"--generative-option {', '.join(unknown)}: the {task.name} generative model "
            f"({type(default).__name__}) has no such setting; it has {', '.join(fields)}"
        )
    if config.latent_dim is not None and options.get("latent_dim", config.latent_dim) != config.latent_dim:
        raise ConfigError(
            f"--latent-dim {config.latent_dim} and --generative-option latent_dim={options['latent_dim']!r} "
            f"disagree; give one of them"
        )
    spec = default.replace(**{"latent_dim": config.latent_dim, **options})
    for name in fields:
        value, before = getattr(spec, name), getattr(default, name)
        if type(value) is not type(before) and not (isinstance(before, float) and type(value) is int):
            raise ConfigError(
                f"--generative-option {name}={value!r}: expected {type(before).__name__} (the default is {before!r})"
            )
        if isinstance(value, (int, float)) and name in spec.zero_allowed:
            if not (value >= 0 and math.isfinite(value)):
                raise ConfigError(f"--generative-option {name}={value!r}: must be at least 0 and finite")
        elif isinstance(value, (int, float)) and not (value > 0 and math.isfinite(value)):
            raise ConfigError(f"--generative-option {name}={value!r}: must be positive and finite")
        check_generative_limit(name, value, before)
    # a float setting given as a whole number (beta=8) is that float: one model, one cache key
    spec = spec.replace(**{n: float(getattr(spec, n)) for n in fields if isinstance(getattr(default, n), float)})
    pool = config.subset or task.pool_size  # the most samples the pool can have; None: not known before loading
    try:
        spec.check()
        if pool is not None:
            spec.check_pool(pool)
    except ValueError as err:
        raise ConfigError(f"--generative-option {err}") from None
    return spec


#: The generative model's settings that the run's own flags bound too, with their limits: a
#: generative model trained for more epochs, or with a larger batch, latent space or learning
#: rate than F may be, is a typo too.
GENERATIVE_LIMITS: dict[str, tuple[str, int | float]] = {
    "epochs": ("--epochs", LIMITS["epochs"]),
    "batch_size": ("--batch-size", LIMITS["batch_size"]),
    "latent_dim": ("--latent-dim", LIMITS["latent_dim"]),
    "lr": ("--lr", MAX_LR),
}
#: The most parameters a generative model may have (2**31 float32 weights take 8 GiB, and four
#: times that to train): beyond it a setting is a typo, not a model for these tasks.
MAX_GENERATIVE_PARAMETERS = 2**31
#: Copies of its weights that training a generative model holds: the weights, their gradients
#: and Adam's two moment estimates (activations come on top).
TRAINING_COPIES = 4


def check_generative_limit(name: str, value: Any, default: Any) -> None:
    """Refuse a generative setting above the limit of the run's flag of the same name
    (:data:`GENERATIVE_LIMITS`)."""
    if name not in GENERATIVE_LIMITS or not isinstance(value, (int, float)):
        return
    flag, limit = GENERATIVE_LIMITS[name]
    if value > limit:
        shown = f"{limit:g}" if isinstance(limit, float) else str(limit)
        raise ConfigError(
            f"--generative-option {name}={value!r} is out of range: at most {shown}, the limit of the run's "
            f"own {flag} (beyond it a value is a typo, not a plan); give a smaller value (the task's is {default!r})"
        )


def machine_memory(device: torch.device) -> int | None:
    """Bytes of memory ``device`` has: a GPU's own, or the machine's physical memory for the CPU;
    None where the system does not say."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # a system without these names (Windows)
        return None


def check_generative_size(plan: Plan, input_shape: tuple[int, ...]) -> None:
    """Refuse a generative model that would not fit before it is built: more than
    :data:`MAX_GENERATIVE_PARAMETERS` parameters, or more memory to train than the device has.
    Measured on torch's meta device (:meth:`GenerativeSpec.footprint`) for inputs of
    ``input_shape``; the message names the settings that differ from the task's."""
    spec, default = plan.generative, plan.task.generative
    if spec is None or default is None:
        return
    changed = [name for name, value in spec.settings().items() if value != getattr(default, name)]
    settings = ", ".join(f"{name}={getattr(spec, name)!r}" for name in changed) or "the task's settings"
    model = f"the {plan.task.name} generative model ({spec.label}) with {settings}"
    fix = f"lower {' or '.join(changed)}" if changed else "lower its settings with --generative-option"
    try:
        count, size = spec.footprint(input_shape)
    except Exception as err:
        try:
            default.footprint(input_shape)
        except Exception:  # a spec whose models cannot be built on the meta device: nothing to measure
            return
        raise ConfigError(f"{model} cannot be built: {type(err).__name__}: {str(err).splitlines()[0]}; {fix}") from None
    if count > MAX_GENERATIVE_PARAMETERS:
        raise ConfigError(
            f"{model} would have {count:,} parameters, more than 2**31 = {MAX_GENERATIVE_PARAMETERS:,} "
            f"(the most a generative model may have: beyond it a setting is a typo); {fix}"
        )
    memory = machine_memory(plan.device)
    if memory is not None and TRAINING_COPIES * size > memory:
        where = "this GPU's" if plan.device.type == "cuda" else "this machine's"
        raise ConfigError(
            f"{model} would need {TRAINING_COPIES * size / 2**30:.1f} GiB to train (its weights, their "
            f"gradients and Adam's two moments: {TRAINING_COPIES} x {size / 2**30:.1f} GiB), more than "
            f"{where} {memory / 2**30:.1f} GiB of memory; {fix}"
        )


def load_task_data(task: Task, data_root: Path, download: bool) -> TaskData:
    """``task.load(data_root, download)``. What it raises is the task's or its data's doing, not
    the harness's: an exception other than a DataError or ConfigError (which say what is wrong
    already) is refused as a DataError naming the task, the error and where it was raised, and
    so is a result that is not TaskData; Ctrl-C and SIGTERM pass."""
    try:
        data = task.load(data_root, download=download)
    except (DataError, ConfigError):
        raise
    except Exception as err:
        frame = traceback.extract_tb(err.__traceback__)[-1]
        message = str(err).splitlines()[0] if str(err) else "no message"
        raise DataError(
            f"task {task.name!r} failed to load its data: {type(err).__name__}: {message} (raised in "
            f"{frame.name}, {frame.filename}:{frame.lineno}); fix the task or its data"
        ) from err
    if not isinstance(data, TaskData):
        raise DataError(f"task {task.name!r}: load() returned {type(data).__name__}, not TaskData; fix the task")
    return data


def load_data(plan: Plan) -> TaskData:
    """The task's data (subset if asked, then long-tailed with ``--imbalance``), checked against the
    protocol, on the device; the generative model's size is checked against the inputs' shape here,
    before it is built."""
    data = load_task_data(plan.task, Path(plan.config.data_root), plan.config.download)
    check_generative_size(plan, tuple(data.pool_x.shape[1:]))
    subset = plan.config.subset
    if subset is not None:
        if subset > len(data.pool_x):
            raise ConfigError(
                f"--subset {subset} is larger than the {plan.task.name} pool ({len(data.pool_x)} samples); lower it"
            )
        data = data.subset(subset, torch.Generator().manual_seed(plan.config.seed))
    check_labels(plan.task, data)  # a classifier's labels are class indices before any are counted
    ratio = plan.config.imbalance
    if ratio is not None:
        keep = torch.as_tensor(long_tailed_indices(data.pool_y, ratio, plan.config.seed))
        data = TaskData(data.pool_x[keep], data.pool_y[keep], data.test_x, data.test_y, data.source)
    check_protocol(plan.protocol, len(data.pool_x), pool_description(plan), plan.config.validation)
    return data.to(plan.device)


def pool_description(plan: Plan) -> str:
    """The pool a run draws from, as messages about its size name it (``--subset 5000 with --imbalance 10``)."""
    subset, ratio = plan.config.subset, plan.config.imbalance
    where = f"--subset {subset}" if subset is not None else f"the {plan.task.name} pool"
    return where + (f" with --imbalance {ratio:g}" if ratio is not None else "")


def check_labels(task: Task, data: TaskData) -> None:
    """A classifier's targets are int64 class indices its model can output; refuse others
    before any training (they would fail deep inside a loss with a bare IndexError)."""
    if Capability.PROBABILITIES not in task.capabilities:
        return
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        classes = task.make_model().eval()(data.pool_x[:1]).shape[1]
    where = f" ({data.source})" if data.source else ""
    for part, labels in (("pool", data.pool_y), ("test", data.test_y)):
        if labels.dtype != torch.int64:
            raise DataError(f"the {task.name} data{where}: {part} labels are {labels.dtype}, not int64 class indices")
        bad = (labels < 0) | (labels >= classes)
        if bad.any():
            at = int(bad.nonzero()[0])
            raise DataError(
                f"the {task.name} data{where}: {part} sample {at} has label {int(labels[at])}, but the "
                f"model has {classes} classes (0-{classes - 1}); fix or remove that sample"
            )
