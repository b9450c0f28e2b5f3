"""The one check of a config's values: a wrong one becomes a one-line TinyconvError naming the field.

    check_fields(config, {"lr": "(0, inf)", "stem": STEMS}, "recipe")

checks every field of a config dataclass against its annotation (int, float, bool, str, X | None, tuple[T, ...],
list[T], dict, a dataclass) and its rule: an interval of numbers ("[0, 1)", "(0, inf)") or a tuple of the strings
allowed, applied to each entry of a list. The config dataclasses (tinyconv.model.config, tinyconv.data.augment_config,
tinyconv.training.recipe) check their types and ranges with it, so that a wrong value is one line naming the field
before anything is written, and a new field is checked by the type it is declared with. It is a bottom-layer module
because all three use it.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import numbers
import types
import typing

from tinyconv.errors import TinyconvError


def check_fields(config, rules: dict, what: str) -> None:
    """Raise TinyconvError for the first field of the dataclass `config` whose value does not have the type it is
    annotated with or lies outside its rule in `rules` (field name -> "[low, high)" or a tuple of strings).

    Numbers must be finite (NaN and infinity never are a setting), an int field takes no float and no bool (True is
    an int in Python), a float field takes an int, a bool field only True or False.
    """
    hints = typing.get_type_hints(type(config))
    for field in dataclasses.fields(config):
        check_value(f"{what} field {field.name!r}", getattr(config, field.name), hints[field.name],
                    rules.get(field.name))


def check_value(label: str, value, hint, rule=None) -> None:
    """check_fields for one value; `label` starts the message ("recipe field 'lr'")."""
    if not (_has_type(value, hint) and _in_rule(value, rule)):
        raise TinyconvError(f"{label} must be {_describe(hint, rule)}, got {_show(value)}")


def _alternatives(hint) -> tuple:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return typing.get_args(hint)
    return (hint,)


def _has_type(value, hint) -> bool:
    if len(_alternatives(hint)) > 1:
        return any(_has_type(value, alternative) for alternative in _alternatives(hint))
    origin = typing.get_origin(hint)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    if origin in (tuple, list):  # a JSON list is as good as a tuple: run configs and overrides hold lists
        return isinstance(value, (tuple, list)) and all(_has_type(item, typing.get_args(hint)[0]) for item in value)
    return isinstance(value, origin or hint)  # str, dict, a dataclass


def _in_rule(value, rule) -> bool:
    """Whether every number (or string) in `value` lies in `rule`; values of other kinds are not its business."""
    if rule is None or value is None:
        return True
    if isinstance(value, (tuple, list)):
        return all(_in_rule(item, rule) for item in value)
    if isinstance(rule, tuple):
        return not isinstance(value, str) or value in rule
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return True
    low, high, low_open, high_open = _interval(rule)
    return (value > low if low_open else value >= low) and (value < high if high_open else value <= high)


@functools.cache
def _interval(rule: str) -> tuple[float, float, bool, bool]:
    """"[0, 1)" -> (0.0, 1.0, False, True)."""
    low, high = (float(part.strip(" [()]")) for part in rule.split(","))
    return low, high, rule.strip().startswith("("), rule.strip().endswith(")")


def _describe(hint, rule) -> str:
    """What a field takes, in words: "an integer >= 1", "a list of integers >= 1", "a number > 0 or none"."""
    alternatives = _alternatives(hint)
    if len(alternatives) > 1:
        words = [_describe(alternative, rule) for alternative in alternatives if alternative is not type(None)]
        return " or ".join(words + (["none"] if type(None) in alternatives else []))
    if typing.get_origin(hint) in (tuple, list):
        return f"a list of {_describe_one(typing.get_args(hint)[0], rule, plural=True)}"
    return _describe_one(hint, rule)


def _describe_one(hint, rule, plural: bool = False) -> str:
    names = {bool: ("true or false", "booleans"), int: ("an integer", "integers"), float: ("a number", "numbers"),
             str: ("a string", "strings"), dict: ("a mapping of names to values", "mappings")}
    if hint not in names:
        return f"a {getattr(hint, '__name__', hint)}"
    text = names[hint][plural]
    if isinstance(rule, tuple) and hint is str:
        return f"one of {', '.join(rule)}" if not plural else f"{text}, each one of {', '.join(rule)}"
    if isinstance(rule, str) and hint in (int, float):
        low, high, low_open, high_open = _interval(rule)
        if math.isinf(high):
            return f"{text} {'>' if low_open else '>='} {_number(low)}"
        return f"{text} in {'(' if low_open else '['}{_number(low)}, {_number(high)}{')' if high_open else ']'}"
    return text


def _number(value: float) -> str:
    return str(int(value)) if value.is_integer() and abs(value) < 1e15 else repr(value)


def _show(value) -> str:
    return repr(list(value) if isinstance(value, tuple) else value)
