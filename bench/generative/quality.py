"""How good a generative model's latent space is: reconstruction, the aggregate posterior against
the N(0, I) prior the latent strategies sample from, and the realism of prior samples G(z) by the
task's own measures (:meth:`tasks.base.Task.realism`).

Computed once per cached model and kept beside its weights (``<model>.quality.json``, tied to the
weights' checksum): runs copy it into their manifest (``generative.quality``) and
``python -m bench latent`` prints it (:func:`describe`). Every draw comes from
generators seeded here, inside a fork of torch's RNG, so computing it changes no run's numbers.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import textwrap
import time
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from scipy.stats import chi2
from torch import Tensor, nn

from bench.generative.base import GenerativeSpec, unit_images
from bench.generative.cache import cache_relative, weights_digest
from bench.generative.realism import BATCH, batched, isolated_rng, task_realism
from strategies.latent import gaussian_fit
from tasks.base import Realism, RealismSets, Task, TaskData

SAMPLES = 4000  # at most this many pool samples, test samples and prior draws per statistic
BALL = 0.99  # the prior's probability mass inside the ball codes are counted outside of
VERSION = "3"  # bump when a statistic or the layout changes: cached ones are then computed again
#: How the report names the sets of :class:`~tasks.base.RealismSets`.
SET_LABELS = {"pool": "pool x", "test": "test", "reconstructions": "G(E(x))", "prior": "G(z)"}
log = logging.getLogger(__name__)


@dataclass
class PosteriorFit:
    """The aggregate posterior, codes E(x) [N, d], against the prior N(0, I)."""

    mean: list[float]  # [d]
    eigenvalues: list[float]  # of the codes' covariance, largest first (the prior's: all 1)
    kl: float  # KL(N(mean, cov) || N(0, I)) of the codes' Gaussian fit, nats
    ball: float  # chi2.ppf(BALL, d): the prior puts mass BALL inside ||z||^2 <= ball
    outside: float  # share of the codes with ||z||^2 > ball (the prior's: 1 - BALL)


@dataclass
class LatentQuality:
    """The latent-quality statistics of one trained generative model (see the module doc)."""

    task: str
    model: str  # its label, e.g. "VAE" or "alpha-GAN"
    loss: str  # what reconstruction["loss"] is, with units (the model's own training loss)
    spec: dict[str, Any]  # its settings
    seed: int  # of the model and of every draw here
    weights: str  # checksum of the weights measured (bench.generative.vae.weights_digest)
    data: dict[str, int]  # pool and test sizes
    #: the samples the statistics use: "pool" (of those the model trained on), "held_out" (of the
    #: pool samples held out from its training), "test", and "prior" draws z
    samples: dict[str, int]
    #: "loss" or "mse" (per pixel) -> "pool" (trained on) / "held_out" (absent when none) / "test" -> mean
    reconstruction: dict[str, dict[str, float]]
    posterior: PosteriorFit  # of the pool samples' codes
    realism: Realism  # the task's measures of the pool, test, reconstruction and prior-sample sets
    seconds: dict[str, float]  # time each part took to compute
    #: how the weights were chosen (:func:`training_record`); empty when not known
    training: dict[str, Any] = dataclasses.field(default_factory=dict)
    version: str = VERSION

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, saved: Any) -> LatentQuality:
        """The statistics as :meth:`as_dict` wrote them (``loss`` may be missing: files before it);
        TypeError naming the first field that is missing, unknown or of another type than the
        dataclasses declare (:func:`check_schema`)."""
        if isinstance(saved, dict):
            saved = {"loss": "", **saved}
        check_schema(saved, cls, "")
        return cls(**{**saved, "posterior": PosteriorFit(**saved["posterior"]), "realism": Realism(**saved["realism"])})


def check_schema(value: Any, hint: Any, where: str) -> None:
    """Raise TypeError naming the field at ``where`` (a dotted path; "" the whole file) when
    ``value``, read from JSON, does not have type ``hint``: a dataclass (an object with its
    fields, those without a default required), ``dict[str, T]``, ``list[T]``, ``str``, ``int``,
    ``float`` (an int passes), a union of these or ``Any``. A cached file is checked so that a damaged one is
    computed again, never copied into a manifest or printed."""
    if hint is Any:
        return
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise TypeError(f"{where or 'the file'} is {type(value).__name__} {value!r:.40}, not an object")
        fields = {f.name: f for f in dataclasses.fields(hint)}
        unknown = sorted(set(value) - set(fields))
        if unknown:
            raise TypeError(f"{where or 'the file'} has unknown fields: {', '.join(unknown)}")
        hints = typing.get_type_hints(hint)
        for name, field in fields.items():
            path = f"{where}.{name}" if where else name
            if name in value:
                check_schema(value[name], hints[name], path)
            elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
                raise TypeError(f"{path} is missing")
        return
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is dict:
        if not isinstance(value, dict):
            raise TypeError(f"{where} is {type(value).__name__} {value!r:.40}, not an object")
        for key, item in value.items():
            check_schema(key, args[0], f"{where} key {key!r}")
            check_schema(item, args[1], f"{where}[{key!r}]")
        return
    if origin is list:
        if not isinstance(value, list):
            raise TypeError(f"{where} is {type(value).__name__} {value!r:.40}, not a list")
        for i, item in enumerate(value):
            check_schema(item, args[0], f"{where}[{i}]")
        return
    if origin in (typing.Union, types.UnionType):  # X | None
        for option in args:
            try:
                return check_schema(value, option, where)
            except TypeError:
                pass
        raise TypeError(f"{where} is {type(value).__name__} {value!r:.40}, not {hint}")
    allowed = (int, float) if hint is float else (hint,)
    if isinstance(value, bool) or not isinstance(value, allowed):
        raise TypeError(f"{where} is {type(value).__name__} {value!r:.40}, not {hint.__name__}")


def posterior_fit(codes: Tensor) -> PosteriorFit:
    """How far codes [N, d] lie from N(0, I): their mean, covariance eigenvalues, the KL divergence
    of their Gaussian fit (:func:`strategies.latent.gaussian_fit`) and the share outside the 99% ball."""
    mean, cov = gaussian_fit(codes.cpu())
    d = len(mean)
    sign, logdet = torch.linalg.slogdet(cov)
    kl = 0.5 * float(cov.trace() + mean @ mean - d - logdet) if sign > 0 else math.inf
    ball = float(chi2.ppf(BALL, d))
    outside = float((codes.double().square().sum(1) > ball).double().mean())
    eigenvalues = torch.linalg.eigvalsh(cov).flip(0)
    return PosteriorFit(mean.tolist(), eigenvalues.tolist(), kl, ball, outside)


@torch.no_grad()
def reconstruct(model: nn.Module, spec: GenerativeSpec, x: Tensor) -> tuple[dict[str, Tensor], Tensor, Tensor]:
    """Per-sample reconstruction errors of x [N, ...] through the posterior mean ("loss": the
    model's own, as its spec computes it; "mse": squared error per pixel in [0, 1]), each [N]; the
    codes E(x) [N, d]; and the reconstructions G(E(x)) [N, ...] in [0, 1]."""
    losses, errors, codes, outputs = [], [], [], []
    for batch in x.split(BATCH):
        z = model.encode(batch)
        loss, output = spec.reconstruct(model, batch)
        losses.append(loss)
        errors.append((output - unit_images(batch)).square().flatten(1).mean(1))
        codes.append(z)
        outputs.append(output)
    return {"loss": torch.cat(losses), "mse": torch.cat(errors)}, torch.cat(codes), torch.cat(outputs)


def sample(x: Tensor, rows: Tensor, draws: torch.Generator) -> Tensor:
    """At most :data:`SAMPLES` of the ``rows`` (CPU indices) of x, drawn at random with ``draws``."""
    return x[rows[torch.randperm(len(rows), generator=draws)[:SAMPLES]].to(x.device)]


def compute(
    model: nn.Module,
    spec: GenerativeSpec,
    task: Task,
    data: TaskData,
    seed: int,
    training: dict[str, Any] | None = None,
) -> LatentQuality:
    """The statistics of ``model`` (trained on ``data``'s pool with ``seed``, less the share its
    spec held out: :meth:`GenerativeSpec.pool_split` recomputes it) on at most :data:`SAMPLES`
    random pool samples it trained on, held-out pool samples, test samples and prior draws, all
    drawn from ``seed``; ``training`` (:func:`training_record`) is kept as it is."""
    device = data.pool_x.device
    seconds: dict[str, float] = {}
    with isolated_rng(device):
        draws = torch.Generator().manual_seed(seed)
        trained_on, held_out = spec.pool_split(len(data.pool_x), seed)
        pool = sample(data.pool_x, trained_on, draws)
        test = sample(data.test_x, torch.arange(len(data.test_x)), draws)
        z = torch.randn(len(pool), model.latent_dim, generator=draws).to(device)
        held = sample(data.pool_x, held_out, draws)
        start = time.perf_counter()
        pool_errors, codes, reconstructions = reconstruct(model, spec, pool)
        errors = {"pool": pool_errors, "test": reconstruct(model, spec, test)[0]}
        if len(held):
            errors["held_out"] = reconstruct(model, spec, held)[0]
        reconstruction = {k: {part: float(e[k].mean()) for part, e in errors.items()} for k in pool_errors}
        seconds["reconstruction"] = time.perf_counter() - start
        start = time.perf_counter()
        posterior = posterior_fit(codes)
        seconds["aggregate posterior"] = time.perf_counter() - start
        start = time.perf_counter()
        realism = task_realism(task, RealismSets(pool, test, reconstructions, batched(model.decode, z)), data, seed)
        seconds["realism"] = time.perf_counter() - start
    return LatentQuality(
        task=task.name,
        model=spec.label,
        loss=spec.loss,
        spec=spec.settings(),
        seed=seed,
        weights=weights_digest(model.state_dict()),
        data={"pool": len(data.pool_x), "test": len(data.test_x)},
        samples={"pool": len(pool), "held_out": len(held), "test": len(test), "prior": len(z)},
        reconstruction=reconstruction,
        posterior=posterior,
        realism=realism,
        seconds=seconds,
        training=training or {},
    )


def training_record(model_file: Path, spec: GenerativeSpec, pool: int) -> dict[str, Any]:
    """How the weights cached at ``model_file`` (trained on a pool of ``pool`` samples) were
    chosen, from what the cache keeps beside them: pool samples trained on and held out, the
    most epochs, the patience, the epochs run, the epoch kept (1-based) and its held-out loss
    with what that loss is. Empty when the file has no such record (a spec without a held-out
    choice keeps its last epoch)."""
    try:
        saved = torch.load(model_file, map_location="cpu", weights_only=True)
    except Exception as err:  # not cached (a read-only cache) or unreadable: the statistics go on without it
        log.warning("could not read how %s was trained (%s)", Path(model_file).name, err)
        return {}
    if saved.get("epochs_run") is None:
        return {}
    settings = spec.settings()
    trained_on, held_out = spec.pool_split(pool, int(saved["seed"]))
    return {
        "trained_on": len(trained_on),
        "held_out": len(held_out),
        "max_epochs": settings.get("epochs"),
        "patience": settings.get("patience"),
        "epochs_run": saved["epochs_run"],
        "best_epoch": saved["best_epoch"],
        "held_out_loss": saved["final_loss"] if len(held_out) else None,
        "held_out_loss_is": spec.held_out_loss,
    }


def quality_file(model_file: Path) -> Path:
    """Where the statistics of the model cached at ``model_file`` are kept."""
    return Path(model_file).with_suffix(".quality.json")


def cached_quality(
    model_file: Path, model: nn.Module, spec: GenerativeSpec, task: Task, data: TaskData, seed: int
) -> LatentQuality:
    """The statistics of the model cached at ``model_file``: read from :func:`quality_file` when
    they belong to these weights and this version, else computed now and kept there."""
    path = quality_file(model_file)
    weights = weights_digest(model.state_dict())
    try:
        saved = LatentQuality.from_dict(json.loads(path.read_text()))
        if saved.weights == weights and saved.version == VERSION:
            return saved
        log.info("%s belongs to other weights or an older version; computing it again", path.name)
    except FileNotFoundError:
        pass
    except (ValueError, TypeError, KeyError) as err:  # damaged, or an older layout
        log.warning("latent-quality file %s is damaged or unreadable (%s); computing it again", path, err)
    quality = compute(model, spec, task, data, seed, training_record(model_file, spec, len(data.pool_x)))
    log.info(
        "latent quality of %s computed in %s",
        Path(model_file).name,
        ", ".join(f"{k} {v:.1f} s" for k, v in quality.seconds.items()),
    )
    try:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(quality.as_dict(), indent=1))
        tmp.replace(path)
    except OSError as err:  # a read-only or full cache: report it without keeping it
        log.warning("could not keep the latent quality in %s (%s)", path.parent, err.strerror or err)
    return quality


def describe(quality: LatentQuality, model_file: Path | None = None) -> str:
    """The statistics as text that says what each number is, its units and sample sizes; the
    weights at ``model_file`` (under the cache root) named relative to the cache root, so the text
    names no folder of the machine."""
    q, fit, n = quality, quality.posterior, quality.samples
    settings = ", ".join(f"{k} {v}" for k, v in q.spec.items())
    lines = [f"Latent quality of the {q.task} generative model: {q.model} ({settings}), seed {q.seed}"]
    if model_file is not None:
        lines.append(
            f"weights: {cache_relative(model_file)} under the cache root "
            f"(statistics kept beside them: {quality_file(model_file).name})"
        )
    held = n.get("held_out", 0)
    lines += [
        f"data: {q.data['pool']} pool and {q.data['test']} test samples; the statistics use {n['pool']} random "
        f"pool samples x the model trained on, {held} random pool samples held out from its training, "
        f"{n['test']} random test samples and {n['prior']} prior draws z ~ N(0, I), drawn with seed {q.seed}",
        *([chosen(q.training)] if q.training else []),
        "",
        "1. Reconstruction G(E(x)) of x, E(x) the posterior mean: mean over the samples (the held-out pool",
        "   samples and the test samples are unseen in training: a gap to the pool's is overfitting)",
    ]
    parts = {"pool": f"pool x ({n['pool']})", "held_out": f"held-out pool ({held})", "test": f"test ({n['test']})"}
    lines += _table(
        [
            ["", *parts.values()],
            *(
                [label, *(_num(q.reconstruction[key][p]) if p in q.reconstruction[key] else "-" for p in parts)]
                for key, label in (("loss", q.loss), ("mse", "squared error per pixel, in [0, 1]"))
            ),
        ]
    )
    dim = len(fit.mean)
    lines += [
        "",
        f"2. Aggregate posterior: the codes E(x) of the {n['pool']} pool samples x ({dim}-d) against the prior N(0, I)",
        "   (the prior column: what codes drawn from the prior would give)",
    ]
    lines += _table(
        [
            ["", "codes", "prior"],
            ["mean", _vector(fit.mean), "0"],
            ["covariance eigenvalues, largest first", _vector(fit.eigenvalues), "all 1"],
            ["KL(N(mean, cov) || N(0, I)) of their Gaussian fit, nats", _num(fit.kl), "0"],
            [
                f"share with ||z||^2 > {fit.ball:.4g} (outside the prior's {BALL:.0%} ball)",
                f"{fit.outside:.2%}",
                f"{1 - BALL:.0%}",
            ],
        ]
    )
    columns = list(SET_LABELS)
    sizes = {"pool": n["pool"], "test": n["test"], "reconstructions": n["pool"], "prior": n["prior"]}
    lines += [
        "",
        f"3. Realism, by the {q.task} task's measures of each set (defined below the table):",
        *_wrap(
            f"pool x = the {n['pool']} pool samples (of those the model trained on); test = the {n['test']} "
            f"test samples; G(E(x)) = the pool samples' reconstructions; G(z) = the {n['prior']} prior draws z decoded"
        ),
    ]
    lines += _table(
        [
            ["", *(f"{SET_LABELS[c]} ({sizes[c]})" for c in columns)],
            *(
                [measure, *(_num(row[c]) if c in row else "-" for c in columns)]
                for measure, row in q.realism.values.items()
            ),
        ]
    )
    for text in [*(f"{measure}: {about}" for measure, about in q.realism.about.items()), *q.realism.notes]:
        lines += _wrap(text)
    lines += [
        "",
        "Seconds to compute (once, when the statistics were made): "
        + ", ".join(f"{k} {v:.2f}" for k, v in q.seconds.items()),
    ]
    return "\n".join(lines)


def chosen(training: dict[str, Any]) -> str:
    """One line: the epoch whose weights were kept, and why (a :func:`training_record`)."""
    t = training
    if t.get("held_out_loss") is None:
        return f"epoch chosen: the last, {t['epochs_run']} of max {t['max_epochs']} (nothing held out)"
    return (
        f"epoch chosen: {t['best_epoch']} of max {t['max_epochs']} (stopped after {t['epochs_run']} epochs, "
        f"patience {t['patience']}; held-out loss {_num(t['held_out_loss'])}, {t['held_out_loss_is']}, "
        f"on {t['held_out']} held-out pool samples; trained on {t['trained_on']})"
    )


def _wrap(text: str) -> list[str]:
    """A paragraph as indented lines of at most 110 characters, continuation lines indented further."""
    return textwrap.wrap(text, 110, initial_indent="   ", subsequent_indent="     ")


def _num(value: float) -> str:
    return f"{value:.4g}"


def _vector(values: list[float]) -> str:
    return "[" + ", ".join(f"{v:.3g}" for v in values) + "]"


def _table(rows: list[list[str]], indent: str = "   ") -> list[str]:
    """Rows of cells as aligned lines: the first column left-aligned, the others right-aligned."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        (
            indent
            + "  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths)))
        ).rstrip()
        for row in rows
    ]
