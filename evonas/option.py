"""One config field declared once: its type, allowed values, help and command-line flag (`option`).

`Option.check` gives a bad value's one-line `ConfigError`, naming where it came from and what is allowed;
`evonas.options.SearchConfig` declares its fields with `option` and gets their `Option`s by `finish_options`.
"""

import dataclasses
import json
import math
from typing import Any

from evonas.errors import ConfigError

_TYPE_NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "a string", dict: "a JSON object",
               tuple: "an integer or a list of integers"}


@dataclasses.dataclass(frozen=True)
class Option:
    """What a `SearchConfig` field accepts, and how the command line spells it."""

    kind: type  # bool, int, float, str, dict, or tuple (of integers; one integer is a tuple of one)
    help: str
    flag: str | None  # e.g. "--population"; None: only a --config file sets it
    group: str  # the argument group of `evonas search --help`
    low: float | None = None  # smallest allowed value (inclusive)
    high: float | None = None  # largest allowed value (inclusive)
    above: float | None = None  # values must exceed it (exclusive)
    choices: tuple[str, ...] | None = None
    nullable: bool = False  # None (JSON null) is allowed and means "the default behaviour" of the help
    deprecated_flags: tuple[str, ...] = ()  # old spellings: accepted with a warning

    def allowed(self) -> str:
        """What the option accepts, in words: "an integer of at least 1", "one of 'word', 'byte'"."""
        if self.choices is not None:
            text = "one of " + ", ".join(repr(c) for c in self.choices)
        else:
            text = _TYPE_NAMES[self.kind]
            low, high, above = (None if v is None else _number(v, self.kind) for v in (self.low, self.high, self.above))
            if low and high:
                text += f" from {low} to {high}"
            elif above:
                text += f" above {above}" + (f" and at most {high}" if high else "")
            elif low or high:
                text += f" of at least {low}" if low else f" of at most {high}"
        return text + (" (or null)" if self.nullable else "")

    def check(self, value: Any, where: str) -> Any:
        """`value` if allowed (an int given for a float becomes a float); else a ConfigError naming `where`."""
        if value is None and self.nullable:
            return value
        if self.kind is tuple:
            items = [value] if is_kind(value, int) else value
            if not isinstance(items, (list, tuple)) or not items or not all(is_kind(v, int) for v in items):
                raise ConfigError(f"{where} must be {self.allowed()}, got {shown(value)}")
            return tuple(Option(int, self.help, None, self.group, self.low, self.high, self.above).check(v, where)
                         for v in items)
        if not is_kind(value, self.kind) or self.choices is not None and value not in self.choices:
            raise ConfigError(f"{where} must be {self.allowed()}, got {shown(value)}")
        if self.kind is float:
            value = float(value)
            if not math.isfinite(value):
                raise ConfigError(f"{where} must be {self.allowed()}, got {shown(value)}")
        if (self.low is not None and value < self.low or self.high is not None and value > self.high
                or self.above is not None and value <= self.above):
            raise ConfigError(f"{where} must be {self.allowed()}, got {shown(value)}")
        return value


def _number(value: float, kind: type) -> str:
    return f"{int(value):,}" if kind is int else f"{value:g}"


def is_kind(value: Any, kind: type) -> bool:
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)


def shown(value: Any) -> str:
    text = json.dumps(value) if isinstance(value, (dict, list, bool)) or value is None else repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def option(default: Any, help: str, *, kind: type | None = None, flag: str | None | bool = True,
           group: str = "search", **allowed: Any) -> Any:
    """A `SearchConfig` field and its `Option`. `flag=True` derives the flag from the field's name
    (`vocab_size` -> `--vocab-size`); `flag=None` makes it a config-file key only."""
    kind = kind or type(default)
    declared = {"kind": kind, "help": help, "flag": flag, "group": group, "nullable": default is None, **allowed}
    if isinstance(default, dict):
        return dataclasses.field(default_factory=lambda: json.loads(json.dumps(default)), metadata={"option": declared})
    return dataclasses.field(default=default, metadata={"option": declared})


def finish_options(cls):
    """Replaces each field's declared dict by its `Option`, with the flag a `True` asked for."""
    for field in dataclasses.fields(cls):
        declared = dict(field.metadata["option"])
        if declared["flag"] is True:
            declared["flag"] = "--" + field.name.replace("_", "-")
        cls.OPTIONS[field.name] = Option(**declared)
    return cls
