"""Recipes: settings of a run's training recipe and strategies that ``python -m bench tune`` chooses
on validation and ``python -m bench run --recipe FILE`` applies.

A recipe sets some of these keys (:data:`RECIPE_KEYS`), each a setting of
:class:`~bench.run.config.RunConfig`:

- ``lr`` (a number), ``epochs`` and ``batch_size`` (whole numbers), ``optimizer`` (a ``torch.optim``
  name), ``start`` (warm, reset or fresh) and ``augment`` (true or false);
- ``optimizer.<name>``: an optimizer keyword argument (``optimizer.weight_decay``), as
  ``--optimizer-option name=VALUE``;
- ``<strategy>.<option>``: a strategy constructor option (``si.start``), as ``--option
  <strategy>.<option>=VALUE``; planning checks it as it checks ``--option``.

Values are typed as the command line types them: the protocol keys by their setting's type, an
option's value as a whole number, else a number, else text (:func:`typed_value`).

A grid (``--grid KEY=V1,V2 ...``) lists values per key; its recipes are every combination, in
grid order (the first key's values vary slowest). A recipe file is TOML::

    # comment lines: how the recipe was chosen
    task = "mnist"
    lr = 0.001
    epochs = 5

    [options]
    "optimizer.weight_decay" = 0.0001
    "si.start" = "pool"

``task`` names the task it was tuned on (a recipe for another task is refused); the protocol keys
are top-level scalars; the ``optimizer.*`` and strategy options sit in the one table ``[options]``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.run.config import ConfigError, RunConfig

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: the same reader, as the package tomli
    import tomli as tomllib

#: The protocol keys a recipe may set (RunConfig fields) and the type of their values.
RECIPE_KEYS: dict[str, type] = {
    "lr": float,
    "epochs": int,
    "batch_size": int,
    "optimizer": str,
    "start": str,
    "augment": bool,
}
#: The prefix of a recipe key that sets an optimizer keyword argument.
OPTIMIZER_PREFIX = "optimizer."
#: The value types an option (``optimizer.*`` or a strategy's) may have, as ``--option`` gives them.
OPTION_TYPES = (int, float, str)
#: The flag that sets each protocol key on the command line.
FLAGS = {key: f"--{key.replace('_', '-')}" for key in RECIPE_KEYS}
#: What a grid key or value may not hold: it names the grid point's folder.
UNSAFE = ("/", "\\", "\0")

KEYS_HELP = (
    "lr, epochs, batch_size, optimizer, start, augment, optimizer.<name> (an optimizer option) or "
    "<strategy>.<option> (a strategy option)"
)


def typed_value(text: str) -> int | float | str:
    """An option value as the command line types it: a whole number, else a number, else text
    (``"2"`` -> 2, ``"1e-4"`` -> 0.0001, ``"pool"`` -> ``"pool"``); a non-finite number
    (``nan``, ``inf``) is returned as such for the caller to refuse."""
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def is_option(key: str) -> bool:
    """Whether recipe key ``key`` is an option (``optimizer.<name>`` or ``<strategy>.<option>``)."""
    return "." in key


def check_key(
    key: str, where: str, keys: dict[str, type] = RECIPE_KEYS, sets: str = f"A recipe sets {KEYS_HELP}"
) -> None:
    """Refuse (ConfigError) a key that is none of ``keys`` and no option (``<scope>.<name>``);
    ``where`` says where it was given, ``sets`` what may be set instead."""
    if key in keys:
        return
    scope, dot, name = key.partition(".")
    if dot and scope and name and "." not in name:
        return
    hint = f"; did you mean {key.replace('-', '_')}?" if key.replace("-", "_") in keys else ""
    raise ConfigError(f"{where}: unknown key {key!r}{hint}. {sets}")


def check_value(key: str, value: Any, where: str, keys: dict[str, type] = RECIPE_KEYS) -> Any:
    """``value`` for key ``key`` of ``keys`` (a setting and its type; any other key is an option),
    checked (ConfigError naming ``where``, the key and the fix): of the key's type (an int passes
    for ``lr``, returned as a float), finite, and no text holding a path separator. Ranges (a
    positive ``lr``, a known start mode) are planning's."""
    expected: tuple[type, ...] = (keys[key],) if key in keys else OPTION_TYPES
    if expected == (float,):
        expected = (int, float)
    if isinstance(value, bool) != (expected == (bool,)) or not isinstance(value, expected):
        names = " or ".join("a whole number" if t is int else t.__name__ for t in expected)
        raise ConfigError(f"{where}: {key} = {value!r} is {type(value).__name__}; give {names}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{where}: {key} = {value!r} is not a finite number; give a finite value")
    if isinstance(value, str) and (not value or any(c in value for c in UNSAFE)):
        raise ConfigError(f"{where}: {key} = {value!r}: give non-empty text without / or \\")
    return float(value) if key in keys and keys[key] is float else value


def parse_value(key: str, text: str, where: str) -> Any:
    """A grid value's text as the value of recipe key ``key`` (checked by :func:`check_value`)."""
    kind = RECIPE_KEYS.get(key)
    value: Any
    if kind is bool:
        value = {"true": True, "false": False}.get(text.lower(), text)
    elif kind is str:
        value = text
    else:
        value = typed_value(text)
    return check_value(key, value, where)


def format_value(value: Any) -> str:
    """A recipe value as a grid point's folder and the tables name it (``0.001``, ``5``, ``true``)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value) if isinstance(value, float) else str(value)


def parse_grid(items: list[str]) -> dict[str, list[Any]]:
    """``["lr=1e-4,1e-3", "epochs=5,10"]`` -> ``{"lr": [0.0001, 0.001], "epochs": [5, 10]}``, in the
    order given. Refused (ConfigError, naming the item and the fix): no grid, an item that is not
    KEY=V1,V2..., an unknown key, a key given twice, an empty value list or value, a value of the
    wrong type or non-finite, and a value listed twice."""
    if not items:
        raise ConfigError("no --grid given; give at least one, e.g. --grid lr=1e-4,1e-3")
    grid: dict[str, list[Any]] = {}
    for item in items:
        key, sep, text = item.partition("=")
        where = f"--grid {item}"
        if not sep or not key:
            raise ConfigError(f"{where} is not KEY=V1,V2,... (e.g. --grid lr=1e-4,1e-3)")
        check_key(key, where)
        if key in grid:
            raise ConfigError(f"{where}: key {key} is given twice; list all its values in one --grid {key}=...")
        if not text:
            raise ConfigError(f"{where}: no values; list at least one, e.g. --grid {key}=V1,V2")
        texts = text.split(",")
        if "" in texts:
            raise ConfigError(f"{where}: an empty value; remove the extra comma")
        values = [parse_value(key, t, where) for t in texts]
        for i, value in enumerate(values):
            if value in values[:i]:
                raise ConfigError(f"{where}: {format_value(value)} is listed twice (as {texts[i]}); list it once")
        grid[key] = values
    return grid


@dataclass(frozen=True)
class Recipe:
    """Settings for a run on ``task``: recipe key -> value (see the module's docstring)."""

    task: str
    settings: dict[str, Any]

    @property
    def name(self) -> str:
        """The settings as ``key=value`` joined by commas (``lr=0.001,epochs=5``): a grid point's folder."""
        return ",".join(f"{key}={format_value(value)}" for key, value in self.settings.items())

    def clashes(self, config: RunConfig) -> list[str]:
        """The keys of this recipe that ``config`` sets too (a protocol setting not None, an
        optimizer option or a strategy option of the same name, scoped or plain), as the flags
        that set them: a recipe's setting is never silently overridden."""
        found = []
        for key in self.settings:
            if key in RECIPE_KEYS:
                if getattr(config, key) is not None:
                    found.append(FLAGS[key])
            elif key.startswith(OPTIMIZER_PREFIX):
                if key.removeprefix(OPTIMIZER_PREFIX) in config.optimizer_options:
                    found.append(f"--optimizer-option {key.removeprefix(OPTIMIZER_PREFIX)}=")
            else:
                found += [f"--option {k}=" for k in (key, key.partition(".")[2]) if k in config.strategy_options]
        return found

    def apply(self, config: RunConfig) -> RunConfig:
        """``config`` with this recipe's settings; a recipe for another task is refused."""
        if config.task != self.task:
            raise ConfigError(
                f"the recipe was tuned on task {self.task!r}, not {config.task!r}; tune one for "
                f"{config.task} (python -m bench tune --task {config.task} ...) or drop --recipe"
            )
        protocol = {k: v for k, v in self.settings.items() if k in RECIPE_KEYS}
        optimizer = {
            k.removeprefix(OPTIMIZER_PREFIX): v for k, v in self.settings.items() if k.startswith(OPTIMIZER_PREFIX)
        }
        strategy = {k: v for k, v in self.settings.items() if is_option(k) and not k.startswith(OPTIMIZER_PREFIX)}
        return dataclasses.replace(
            config,
            **protocol,
            optimizer_options={**config.optimizer_options, **optimizer},
            strategy_options={**config.strategy_options, **strategy},
        )

    def toml(self, header: list[str] | None = None) -> str:
        """This recipe as a TOML file's text, each line of ``header`` a comment on top."""
        lines = [f"# {line}".rstrip() for line in header or []]
        lines.append(f"task = {_toml_scalar(self.task)}")
        lines += [f"{key} = {_toml_scalar(v)}" for key, v in self.settings.items() if not is_option(key)]
        options = [f"{json.dumps(key)} = {_toml_scalar(v)}" for key, v in self.settings.items() if is_option(key)]
        if options:
            lines += ["", "[options]", *options]
        return "\n".join(lines) + "\n"

    def write(self, path: Path, header: list[str] | None = None) -> None:
        """Write this recipe to ``path`` (TOML, see :meth:`toml`)."""
        Path(path).write_text(self.toml(header))


def _toml_scalar(value: Any) -> str:
    """A TOML scalar: true/false, an integer, a float (``repr``: 0.001, 1e-05), or a basic string."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(value)  # a JSON string of ASCII escapes is a TOML basic string


def grid_recipes(task: str, grid: dict[str, list[Any]]) -> list[Recipe]:
    """Every combination of the grid's values, in grid order: the first key's values vary slowest."""
    return [Recipe(task, dict(zip(grid, values))) for values in itertools.product(*grid.values())]


def read_recipe(path: Path) -> Recipe:
    """The recipe in TOML file ``path``; refused (ConfigError naming the file, the key and the fix)
    when it cannot be read, is not TOML, names no task, or has an unknown key or a value of the
    wrong type."""
    path = Path(path)
    where = f"recipe {path}"
    try:
        saved = tomllib.loads(path.read_text())
    except OSError as err:
        raise ConfigError(f"cannot read {where} ({err.strerror or err}); pass a recipe file tune wrote") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(f"{where} is not TOML ({err}); pass a recipe file tune wrote") from None
    task = saved.pop("task", None)
    if not isinstance(task, str) or not task:
        raise ConfigError(f'{where} names no task; add a line task = "<the task it was tuned on>"')
    options = saved.pop("options", {})
    if not isinstance(options, dict):
        raise ConfigError(f"{where}: options = {options!r} is not a table; write it as [options]")
    settings = {}
    for key, value in saved.items():
        check_key(key, where)
        if is_option(key):
            raise ConfigError(f"{where}: option {key} belongs in the [options] table")
        settings[key] = check_value(key, value, where)
    for key, value in options.items():
        check_key(key, f"{where} [options]")
        if not is_option(key):
            raise ConfigError(f"{where}: {key} is not an option; write it above the [options] table")
        settings[key] = check_value(key, value, f"{where} [options]")
    if not settings:
        raise ConfigError(f"{where} sets nothing; a recipe sets at least one of {KEYS_HELP}")
    return Recipe(task, settings)


def recipe_record(path: Path, recipe: Recipe) -> dict[str, Any]:
    """What a run's manifest records of the recipe it applied: the file's name (no folder: a
    manifest names none of the machine), the SHA-256 of its bytes, and its settings."""
    path = Path(path)
    return {"file": path.name, "sha256": hashlib.sha256(path.read_bytes()).hexdigest(), "settings": recipe.settings}
