"""Run configuration for the `mixlab` command: config files, flags, and method lists.

A configuration is just the keyword arguments of `mixlab.lab.train.RunConfig`. They come, lowest
precedence first, from the dataclass defaults, then a config file (TOML or YAML, a flat mapping of
field names), then command-line flags (one per field, `--batch-size 128` for `batch_size`).

Method lists (`--methods` of `mixlab bench`) are split by `split_methods`:

* if the text contains `;`, it is split on `;` only: `fmix:alpha=1,decay_power=3;mixup`;
* otherwise it is split on commas, and a piece that starts with `name=` (a keyword argument) is
  glued back to the method before it: `none,fmix:alpha=1,decay_power=3,mixup` is
  `["none", "fmix:alpha=1,decay_power=3", "mixup"]`.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import re
import types
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

__all__ = [
    "ConfigError",
    "add_run_config_flags",
    "coerce_settings",
    "coerce_value",
    "flag_overrides",
    "load_config_file",
    "resolve_run_config",
    "run_config_class",
    "run_config_fields",
    "split_methods",
]


class ConfigError(ValueError):
    """A user-facing configuration problem; the CLI prints it as one line and exits with 2."""


# --------------------------------------------------------------------------------------------
# Method lists


_KWARG_PIECE = re.compile(r"^\s*[A-Za-z_][A-Za-z0-9_]*\s*=")


def split_methods(text: str | Iterable[str]) -> list[str]:
    """Split a method list into method specs (see the module docstring for the rule).

    Args:
        text: e.g. ``"none,mixup,fmix:alpha=1,decay_power=3,fmix+mixup"``; a list of specs is
            returned stripped and checked as it is.

    Returns:
        The specs in order, e.g. ``["none", "mixup", "fmix:alpha=1,decay_power=3", "fmix+mixup"]``.

    Raises:
        ConfigError: on an empty list, an empty spec, or a spec given twice.
    """
    if isinstance(text, str):
        if ";" in text:
            specs = [s.strip() for s in text.split(";")]
        else:
            specs = []
            for piece in text.split(","):
                if specs and _KWARG_PIECE.match(piece):
                    specs[-1] = f"{specs[-1]},{piece.strip()}"
                else:
                    specs.append(piece.strip())
    else:
        specs = [str(s).strip() for s in text]
    if not specs or any(not s for s in specs):
        raise ConfigError(
            f"methods: expected a list of method specs like 'none,mixup', got {text!r}"
        )
    seen = set()
    for s in specs:
        if s in seen:
            raise ConfigError(f"methods: {s!r} is listed twice")
        seen.add(s)
    return specs


# --------------------------------------------------------------------------------------------
# Config files


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a flat configuration mapping from a TOML (``.toml``) or YAML (``.yaml``/``.yml``) file.

    Keys may use dashes or underscores (``batch-size`` and ``batch_size`` are the same key).

    Raises:
        ConfigError: if the file is missing, unreadable, not valid TOML/YAML, or not a mapping.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"cannot read config file {str(path)!r}: {e.strerror or e}") from None
    suffix = path.suffix.lower()
    try:
        if suffix == ".toml":
            data = _parse_toml(text)
        elif suffix in (".yaml", ".yml"):
            data = _parse_yaml(text)
        else:  # unknown suffix: TOML first, then YAML
            try:
                data = _parse_toml(text)
            except Exception:
                data = _parse_yaml(text)
    except ConfigError:
        raise
    except Exception as e:
        msg = " ".join(str(e).split())
        raise ConfigError(f"cannot parse config file {str(path)!r}: {msg}") from None
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(
            f"config file {str(path)!r}: expected a mapping of settings, got {type(data).__name__}"
        )
    return {str(k).replace("-", "_"): v for k, v in data.items()}


def _parse_toml(text: str) -> Any:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        try:
            import tomli as tomllib
        except ModuleNotFoundError:
            raise ConfigError(
                "TOML config files need Python >= 3.11 or the 'tomli' package; use YAML"
            ) from None
    return tomllib.loads(text)


def _parse_yaml(text: str) -> Any:
    try:
        import yaml
    except ModuleNotFoundError:
        raise ConfigError("YAML config files need the 'pyyaml' package; use TOML") from None
    return yaml.safe_load(text)


# --------------------------------------------------------------------------------------------
# RunConfig fields, typed


@dataclasses.dataclass(frozen=True)
class FieldInfo:
    """One RunConfig field: its name, resolved type, default (or MISSING) and help text."""

    name: str
    type: Any
    default: Any
    help: str = ""


def run_config_class() -> type:
    """The trainer's `RunConfig` dataclass (imported lazily: the CLI starts fast without torch)."""
    from mixlab.lab.train import RunConfig

    return RunConfig


def run_config_fields(cls: type | None = None) -> list[FieldInfo]:
    """The fields of `RunConfig` (or `cls`) with their types resolved from the annotations."""
    cls = cls or run_config_class()
    try:
        hints = typing.get_type_hints(cls)
    except Exception:
        hints = {}
    out = []
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = dataclasses.MISSING
        tp = hints.get(f.name, f.type if not isinstance(f.type, str) else Any)
        out.append(FieldInfo(f.name, tp, default, str(f.metadata.get("help", ""))))
    return out


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    origin = typing.get_origin(tp)
    if origin is typing.Union or (hasattr(types, "UnionType") and origin is types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        optional = len(args) < len(typing.get_args(tp))
        if len(args) == 1:
            return args[0], optional
        return Any, optional
    return tp, False


_TRUE = {"1", "true", "yes", "on", "y", "t"}
_FALSE = {"0", "false", "no", "off", "n", "f"}


def coerce_value(name: str, value: Any, tp: Any) -> Any:
    """Convert `value` (a flag string or a config-file value) to the field type `tp`.

    Strings are parsed: ``"none"`` is None for Optional fields, ``"1,2"`` is a tuple/list for
    sequence fields, ``"true"``/``"false"`` are booleans.

    Raises:
        ConfigError: naming the field, the expected type and the value received.
    """
    base, optional = _unwrap_optional(tp)
    if value is None or (optional and isinstance(value, str) and value.lower() in ("none", "null")):
        if optional or base is Any:
            return None
        raise ConfigError(f"{name}: expected {_type_name(base)}, got None")
    try:
        return _coerce(value, base)
    except (TypeError, ValueError):
        raise ConfigError(f"{name}: expected {_type_name(base)}, got {value!r}") from None


def _coerce(value: Any, tp: Any) -> Any:
    origin = typing.get_origin(tp)
    if tp is Any or tp is object:
        return value
    if origin is typing.Literal:
        choices = typing.get_args(tp)
        for c in choices:
            if value == c or (isinstance(value, str) and str(c) == value):
                return c
        raise ValueError(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
        raise ValueError(value)
    if tp is int:
        if isinstance(value, bool):
            raise ValueError(value)
        if isinstance(value, float):
            if not value.is_integer():
                raise ValueError(value)
            return int(value)
        return int(value)
    if tp is float:
        if isinstance(value, bool):
            raise ValueError(value)
        return float(value)
    if tp is str:
        if isinstance(value, (dict, list, tuple)):
            raise ValueError(value)
        return str(value)
    if origin in (tuple, list) or tp in (tuple, list):
        return _coerce_sequence(value, tp)
    if origin is dict or tp is dict:
        if not isinstance(value, Mapping):
            raise ValueError(value)
        return dict(value)
    if isinstance(tp, type) and isinstance(value, tp):
        return value
    if isinstance(tp, type):
        return tp(value)
    return value


def _coerce_sequence(value: Any, tp: Any) -> tuple | list:
    origin = typing.get_origin(tp) or tp
    args = typing.get_args(tp)
    if isinstance(value, str):
        items: list[Any] = [v.strip() for v in value.split(",") if v.strip()]
    elif isinstance(value, (list, tuple)):
        items = list(value)
    else:
        items = [value]
    if origin is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
        if len(items) != len(args):
            raise ValueError(value)
        items = [_coerce(v, a) for v, a in zip(items, args, strict=True)]
    elif args:
        items = [_coerce(v, args[0]) for v in items]
    return tuple(items) if origin is tuple else items


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is typing.Literal:
        return "one of " + ", ".join(repr(c) for c in typing.get_args(tp))
    if isinstance(tp, type) and not typing.get_args(tp):
        return {
            "int": "an integer",
            "float": "a number",
            "bool": "true/false",
            "str": "a string",
        }.get(tp.__name__, tp.__name__)
    return str(tp).replace("typing.", "")


# --------------------------------------------------------------------------------------------
# Flags


def add_run_config_flags(
    parser: argparse.ArgumentParser,
    fields: list[FieldInfo],
    *,
    exclude: Iterable[str] = (),
    defaults: Mapping[str, Any] | None = None,
) -> None:
    """Add one flag per RunConfig field (``--batch-size`` for ``batch_size``).

    Flags default to `argparse.SUPPRESS`, so the parsed namespace holds only the flags the user
    gave; `flag_overrides` reads them back. Values stay strings and are typed by
    `resolve_run_config`, so a bad value is reported like a bad config-file value.
    """
    exclude = set(exclude)
    defaults = dict(defaults or {})
    group = parser.add_argument_group("run configuration (RunConfig fields; override --config)")
    for f in fields:
        if f.name in exclude:
            continue
        flag = "--" + f.name.replace("_", "-")
        default = defaults.get(f.name, f.default)
        shown = "required" if default is dataclasses.MISSING else f"default: {default!r}"
        help_text = f"{f.help} ({shown})" if f.help else f"({shown})"
        help_text = help_text.replace("%", "%%")  # argparse %-formats help strings
        base, _ = _unwrap_optional(f.type)
        if base is bool:
            group.add_argument(
                flag,
                dest=f.name,
                action=argparse.BooleanOptionalAction,
                default=argparse.SUPPRESS,
                help=help_text,
            )
        else:
            metavar = f.name.upper()
            group.add_argument(
                flag, dest=f.name, default=argparse.SUPPRESS, metavar=metavar, help=help_text
            )


def flag_overrides(ns: argparse.Namespace, fields: list[FieldInfo]) -> dict[str, Any]:
    """The RunConfig fields the user set on the command line, as ``{name: raw value}``."""
    return {f.name: getattr(ns, f.name) for f in fields if hasattr(ns, f.name)}


def coerce_settings(
    layers: Iterable[Mapping[str, Any]], fields: list[FieldInfo], *, ignore: Iterable[str] = ()
) -> dict[str, Any]:
    """Merge setting layers (later wins) into one dict of typed values; names use underscores.

    Raises:
        ConfigError: on an unknown key (with a suggestion) or a badly typed value.
    """
    by_name = {f.name: f for f in fields}
    ignore = set(ignore)
    merged: dict[str, Any] = {}
    for layer in layers:
        for key, value in layer.items():
            key = str(key).replace("-", "_")
            if key in ignore:
                continue
            if key not in by_name:
                close = difflib.get_close_matches(key, list(by_name), n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise ConfigError(f"unknown setting {key!r}{hint}")
            merged[key] = coerce_value(key, value, by_name[key].type)
    return merged


def resolve_run_config(
    *layers: Mapping[str, Any], cls: type | None = None, ignore: Iterable[str] = ()
) -> Any:
    """Merge configuration layers (later wins), type every value, and build a `RunConfig`.

    Args:
        layers: mappings of field name -> value (dashes allowed in names).
        cls: the dataclass to build (default: `RunConfig`).
        ignore: keys to drop silently (e.g. bench-only keys).

    Raises:
        ConfigError: on an unknown key (with a suggestion), a badly typed value, a missing
            required field, or a value the dataclass itself rejects.
    """
    cls = cls or run_config_class()
    fields = run_config_fields(cls)
    merged = coerce_settings(layers, fields, ignore=ignore)
    missing = [f.name for f in fields if f.default is dataclasses.MISSING and f.name not in merged]
    if missing:
        raise ConfigError(f"missing required setting(s): {', '.join(missing)}")
    try:
        return cls(**merged)
    except (TypeError, ValueError, KeyError) as e:
        raise ConfigError(str(e).strip("'\"") or type(e).__name__) from None
