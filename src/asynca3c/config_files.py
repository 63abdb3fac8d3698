"""Settings files for ``asynca3c train --config``: TOML or YAML, one table per environment.

The layout follows rl-baselines3-zoo's hyperparameter files, so tuned settings
for several environments live in one file and the env id picks its table::

    [default]            # applies to every environment
    seconds = 60

    ["CartPole-v1"]      # applies when training CartPole-v1
    lr = 0.002
    hidden = [16]

Precedence, lowest first: Config defaults < preset < the file's ``default``
table < the file's table for the env id < its table for the env id with an
observation wrapper (``["CartPole-v1+mask-velocity"]``, when ``env_wrapper``
names it) < command-line flags. Without a
``--config`` file, the ``default`` preset uses the settings shipped with the
package (``hyperparams.toml``); the ``seed`` preset is the article's constants
and stays as it is.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib.resources
import re
import tomllib
from pathlib import Path
from typing import Any

from asynca3c.config import PRESETS, Config, ConfigError, preset

#: Name of the tuned settings shipped inside the package.
SHIPPED = "hyperparams.toml"

_DEFAULTS = Config()
_FIELDS = {f.name for f in dataclasses.fields(Config)}
#: Kinds Config's own validation does not check (a wrong type there would crash or slip through).
_KINDS = {bool: "true or false", str: "a string", dict: "a table"}

Layer = tuple[str, dict[str, Any]]  # (where the values come from, the values)


def load_settings(path: str | Path) -> dict[str, dict[str, Any]]:
    """The tables of a settings file, checked: every top-level value a table, every key a Config field."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file {path}: no such file") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path}: not UTF-8 text") from None
    except OSError as e:
        raise ConfigError(f"config file {path}: cannot read it ({e.strerror or e})") from None
    suffix = path.suffix.lower()
    if suffix == ".toml":
        data = _parse_toml(text, path)
    elif suffix in (".yaml", ".yml"):
        data = _parse_yaml(text, path)
    else:
        raise ConfigError(f"config file {path}: unknown format {suffix or '(no suffix)'!r}; "
                          "use .toml, .yaml or .yml")
    return _check(data, str(path))


def shipped_settings() -> dict[str, dict[str, Any]]:
    """The tuned settings installed with the package (read as a resource, so it works from a wheel too)."""
    resource = _shipped()
    return _check(_parse_toml(resource.read_text(encoding="utf-8"), resource), str(resource))


def _shipped():
    return importlib.resources.files("asynca3c") / SHIPPED


def layers(base_preset: str, flags: dict[str, Any], path: str | Path | None = None) -> list[Layer]:
    """The sources of a run's settings, lowest precedence first.

    ``path`` None means the shipped settings for the ``default`` preset and no
    file for any other preset.
    """
    start = preset(base_preset)  # refuses an unknown preset name
    if path is not None:
        name, settings = str(path), load_settings(path)
    elif base_preset == "default":
        name, settings = str(_shipped()), shipped_settings()
    else:
        name, settings = "", {}
    default = settings.get("default", {})
    env = flags.get("env") or default.get("env") or start.env
    wrapper = next((layer["env_wrapper"] for layer in (flags, settings.get(env, {}), default)  # the highest one set
                    if "env_wrapper" in layer), "")
    wrapped = [(f"{name} [{env}+{wrapper}]", settings[f"{env}+{wrapper}"])] if f"{env}+{wrapper}" in settings else []
    return [(f"preset {base_preset}", PRESETS[base_preset]),
            (f"{name} [default]", default),
            (f"{name} [{env}]", settings.get(env, {})),
            *wrapped,
            ("command line", flags)]


def build(sources: list[Layer]) -> Config:
    """Merge the layers into one Config; a bad value is reported with the file and table it came from."""
    merged: dict[str, Any] = {}
    for _, values in sources:
        merged.update(values)
    try:
        return Config(**merged)
    except ConfigError as e:
        # Blame the layer that set the field the message names ("lr=... is not allowed", "gamma must ...").
        named = re.match(r"(\w+)[= ]", str(e))
        where = next((label for label, values in reversed(sources) if named and named[1] in values), None)
        if where is None or where.startswith(("preset ", "command line")):
            raise
        raise ConfigError(f"config file {where}: {e}") from None


def resolve(base_preset: str, flags: dict[str, Any], path: str | Path | None = None) -> Config:
    """The Config of a run: preset < file's default table < file's env table < flags."""
    return build(layers(base_preset, flags, path))


def _parse_toml(text: str, path) -> Any:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:  # its message ends with "(at line L, column C)"
        raise ConfigError(f"config file {path}: not valid TOML: {e}") from None


def _parse_yaml(text: str, path) -> Any:
    try:
        import yaml  # optional: only YAML files need it
    except ImportError:
        raise ConfigError(f"config file {path}: reading YAML needs PyYAML: pip install pyyaml") from None
    try:
        return yaml.safe_load(text) or {}
    except yaml.MarkedYAMLError as e:  # str(e) spans several lines; keep the problem and where
        mark = e.problem_mark or e.context_mark
        at = f" (at line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise ConfigError(f"config file {path}: not valid YAML: {e.problem or e.context}{at}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {path}: not valid YAML: {' '.join(str(e).split())}") from None


def _check(data: Any, path: str) -> dict[str, dict[str, Any]]:
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: expected tables of settings at the top level, "
                          f"got {type(data).__name__}")
    for section, table in data.items():
        if table is None:  # YAML: a section whose settings are all commented out
            table = data[section] = {}
        if not isinstance(table, dict):
            raise ConfigError(f"config file {path}: top-level {section!r} = {table!r} is not a table; put settings "
                              "under [default] or under an environment id such as [\"CartPole-v1\"]")
        for key in list(table):
            table[key] = _value(path, section, key, table[key])
    return data


def _value(path: str, section, key, value):
    where = f"config file {path} [{section}]"
    if key not in _FIELDS:
        close = difflib.get_close_matches(str(key), _FIELDS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"{where}: unknown field {key!r}{hint}; see asynca3c train --help "
                          "(field names are the flags with _ for -)")
    if key == "env" and section != "default":
        raise ConfigError(f"{where}: env belongs in [default] or on the command line (--env), "
                          "not in an environment's table")
    default = getattr(_DEFAULTS, key)
    kind = type(default)
    if kind in _KINDS and not isinstance(value, kind):
        raise ConfigError(f"{where}: {key}={value!r} is not allowed: {_KINDS[kind]}")
    if kind is float and isinstance(value, str):  # PyYAML reads 1e-3 (no dot) as text
        try:
            value = float(value)
        except ValueError:
            pass
    return value
