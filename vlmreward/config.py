"""Run configurations: one dataclass per command, exposed as command-line flags and as YAML files.

Every field of a config dataclass becomes a ``--flag`` whose help text is the field's ``help`` metadata
(declare fields with :func:`option`). Values come from, lowest precedence first: the dataclass defaults, a
YAML mapping given with ``--config`` (a path, or the name of a config shipped in ``vlmreward/configs/``), the
flags typed on the command line. The dataclass may define ``check(self)`` to validate the combination; all
errors are :class:`ConfigError` (a ValueError) with a one-line message naming the field.

Supported field types: bool, int, float, str, ``list[X]`` of int, float or str, and ``X | None`` of those.
"""
from __future__ import annotations

import argparse
import dataclasses
import difflib
import types
import typing
from pathlib import Path

CONFIG_DIR = Path(__file__).resolve().parent / "configs"


class ConfigError(ValueError):
    """A bad configuration value; the message names the field and the value."""


class ConfigTypeError(ConfigError, TypeError):
    """A configuration value of the wrong type (``num_envs: three``, ``anneal_lr: 1``)."""


def option(default, help: str):
    """A dataclass field with a default and the help text of its command-line flag."""
    if isinstance(default, list):
        return dataclasses.field(default_factory=lambda: list(default), metadata={"help": help})
    return dataclasses.field(default=default, metadata={"help": help})


def _field_type(cls, f: dataclasses.Field) -> tuple[type, bool]:
    """(base type, optional) of a field: ``int | None`` -> (int, True)."""
    t = typing.get_type_hints(cls)[f.name]
    optional = False
    if typing.get_origin(t) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(t) if a is not type(None)]
        optional = len(args) < len(typing.get_args(t))
        if len(args) != 1:
            raise TypeError(f"{cls.__name__}.{f.name}: unsupported type {t}")
        t = args[0]
    return t, optional


def shipped_configs() -> list[str]:
    """Names of the configs shipped with the package (``vlmreward train --config <name>``)."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def resolve_config_path(name_or_path) -> Path:
    """A YAML path, or the name of a shipped config (``"cartpole"`` -> ``vlmreward/configs/cartpole.yaml``).

    Raises FileNotFoundError when neither exists (listing the shipped names)."""
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return path
    shipped = CONFIG_DIR / f"{path.stem}.yaml"
    if path.parent == Path(".") and path.suffix in ("", ".yaml") and shipped.is_file():
        return shipped
    raise FileNotFoundError(f"config file not found: {str(name_or_path)!r} (shipped configs: "
                            f"{', '.join(shipped_configs()) or 'none'})")


def add_arguments(parser: argparse.ArgumentParser, cls, *, shipped: bool = True) -> None:
    """Adds ``--config`` and one ``--flag`` per field of ``cls``; unset flags stay absent from the namespace,
    so that a config file can fill them. ``shipped``: the help names the shipped configs (``vlmreward train``'s;
    they are no configs of another command)."""
    names = f", or a shipped config name ({', '.join(shipped_configs())})" if shipped else ""
    parser.add_argument("--config", default=None,
                        help=f"YAML file of {cls.__name__} fields{names}; flags override it")
    for f in dataclasses.fields(cls):
        t, optional = _field_type(cls, f)
        flag = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        kw = dict(dest=f.name, default=argparse.SUPPRESS, help=f"{f.metadata.get('help', '')} (default: {default})")
        if t is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, **kw)
        elif typing.get_origin(t) is list:
            parser.add_argument(flag, nargs="+", type=typing.get_args(t)[0], **kw)
        else:
            parser.add_argument(flag, type=t, metavar=t.__name__.upper(), **kw)


def coerce(cls, name: str, value, *, source: str = "config"):
    """``value`` (as YAML reads it) converted to the type of field ``name``; ConfigError when it does not fit.

    YAML quirks handled: ``1e5`` (read as a string by PyYAML) and ``100000.0`` are valid ints; ``true`` is not an
    int; ``null`` is only valid for optional fields. Raises ConfigTypeError (a ValueError and a TypeError)."""
    f = {f.name: f for f in dataclasses.fields(cls)}[name]
    t, optional = _field_type(cls, f)
    where = f"{source} key {name!r}"
    if value is None:
        if optional:
            return None
        raise ConfigTypeError(f"{where} must be {getattr(t, '__name__', t)}, got null")
    if typing.get_origin(t) is list:
        item = typing.get_args(t)[0]
        if not isinstance(value, (list, tuple)) or any(isinstance(v, (dict, list)) for v in value):
            words = {str: "strings", int: "integers", float: "numbers"}[item]
            raise ConfigTypeError(f"{where} must be a list of {words}, got {value!r}")
        return [str(v) if item is str else _coerce_scalar(item, v, f"{where} item") for v in value]
    return _coerce_scalar(t, value, where)


def _coerce_scalar(t: type, value, where: str):
    if t is bool:
        if not isinstance(value, bool):
            raise ConfigTypeError(f"{where} must be true or false, got {value!r}")
        return value
    if t in (int, float):
        if isinstance(value, bool):
            raise ConfigTypeError(f"{where} must be {t.__name__}, got {value!r}")
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                raise ConfigTypeError(f"{where} must be {t.__name__}, got {value!r}") from None
        if not isinstance(value, (int, float)):
            raise ConfigTypeError(f"{where} must be {t.__name__}, got {value!r}")
        if t is int:
            if isinstance(value, float) and not value.is_integer():
                raise ConfigTypeError(f"{where} must be an integer, got {value!r}")
            return int(value)
        return float(value)
    if not isinstance(value, t):
        raise ConfigTypeError(f"{where} must be {t.__name__}, got {value!r}")
    return value


def load_config(cls, path) -> dict:
    """Reads a YAML mapping of ``cls`` fields (keys with dashes or underscores), values coerced.

    Raises FileNotFoundError for a missing file, ConfigError for invalid YAML, a non-mapping or an unknown key
    (with close matches), ConfigTypeError for a value of the wrong type."""
    import yaml

    path = resolve_config_path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"config {path} is not valid YAML: {str(e).splitlines()[0]}") from e
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config {path} must be a YAML mapping of {cls.__name__} fields, "
                          f"got {type(data).__name__}")
    names = [f.name for f in dataclasses.fields(cls)]
    out = {}
    for key, value in data.items():
        name = str(key).replace("-", "_")
        if name not in names:
            close = difflib.get_close_matches(name, names, n=3)
            raise ConfigError(f"unknown key {key!r} in config {path}" + (f"; did you mean {close}?" if close else ""))
        out[name] = coerce(cls, name, value, source=f"config {path.name}:")
    return out


def from_namespace(cls, namespace: argparse.Namespace):
    """An instance of ``cls`` from the defaults, then ``namespace.config``, then the flags given."""
    values = load_config(cls, namespace.config) if getattr(namespace, "config", None) else {}
    names = {f.name for f in dataclasses.fields(cls)}
    values.update({k: v for k, v in vars(namespace).items() if k in names})
    return check(cls(**values))


def check(config):
    """Runs ``config.check()`` when the dataclass defines it; returns ``config``."""
    if hasattr(config, "check"):
        config.check()
    return config


def require(condition: bool, message: str) -> None:
    """Raises ConfigError(message) unless ``condition``: the building block of ``check()`` methods."""
    if not condition:
        raise ConfigError(message)
