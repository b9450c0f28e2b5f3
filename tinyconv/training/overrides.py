"""Text to typed recipe values: `--set FIELD=VALUE`, the per-field flags (`--lr 1e-3`) and `model.FIELD=VALUE`.

    parse_overrides(["lr=1e-3", "classes=10", "model.depths=1,1,2"])
        -> {"lr": 0.001, "classes": 10, "model_overrides": {"depths": [1, 1, 2]}}
    recipe_flags(["--mix-prob", "0.5"]) -> ["mix_prob=0.5"]

Each value is typed by its TrainConfig (or ModelConfig) field; a wrong field or value is a TinyconvError.
"""

from __future__ import annotations

import json
import typing

from tinyconv.errors import TinyconvError
from tinyconv.model.config import ModelConfig
from tinyconv.training.recipe import field_types, parse_value


def parse_model_value(name: str, text: str) -> object:
    """A ModelConfig override from text, typed by the field: `3`, `3,5,7` or `[3, 5, 7]` for a per-stage field
    (tuple[int, ...]: one value for every stage, or one per stage), `true`/`false`/`1`/`0` for a bool, `none` for
    an optional number. A value that is not of the field's type is a TinyconvError naming it; its range is the
    config's to check (ModelConfig.validate)."""
    hints = typing.get_type_hints(ModelConfig)
    if name not in hints:
        raise TinyconvError(f"unknown model field {name!r} in override model.{name}; known: {', '.join(sorted(hints))}")
    hint, label, text = hints[name], f"model.{name}", text.strip()
    if typing.get_origin(hint) is not tuple:
        return parse_value(label, text, hint)
    entry = typing.get_args(hint)[0]
    try:
        if text.startswith("["):
            items = json.loads(text)
            if not isinstance(items, list):
                raise ValueError(text)
            return [parse_value(label, item if isinstance(item, str) else json.dumps(item), entry) for item in items]
        if "," in text:  # widths=48,96,192
            return [parse_value(label, part, entry) for part in text.split(",")]
        return parse_value(label, text, entry)  # one value: every stage
    except (TinyconvError, ValueError):  # json.JSONDecodeError is a ValueError
        kind = {int: ("an integer", "integers"), float: ("a number", "numbers")}.get(entry, ("a string", "strings"))
        raise TinyconvError(f"override {label}={text!r}: expected {kind[0]} for every stage or a list of "
                            f"{kind[1]}, one per stage (e.g. 3, or 3,5,7, or [3, 5, 7])") from None


def parse_overrides(items) -> dict:
    """`["lr=1e-3", "classes=10", "model.depths=1,1,2"]` -> a dict typed by the TrainConfig fields.

    `model.FIELD=VALUE` items change the model config (collected under "model_overrides").
    Raises TinyconvError for an unknown field or a value of the wrong type.
    """
    hints = field_types()
    overrides: dict = {}
    for item in items:
        if "=" not in item:
            raise TinyconvError(f"override {item!r} is not FIELD=VALUE")
        name, text = item.split("=", 1)
        name = name.strip()
        if name.startswith("model."):
            overrides.setdefault("model_overrides", {})[name[len("model.") :]] = parse_model_value(
                name[len("model.") :], text
            )
            continue
        if name not in hints:
            raise TinyconvError(f"unknown recipe field {name!r} in override {item!r}; known: {', '.join(hints)}")
        value = parse_value(name, text, hints[name])
        if name == "model_overrides":
            if not isinstance(value, dict):
                raise TinyconvError(f"override {item!r}: model_overrides must be a JSON object")
            overrides.setdefault("model_overrides", {}).update(value)
        else:
            overrides[name] = value
    return overrides


def recipe_flags(extra: list[str]) -> list[str]:
    """`train --weight-decay 1e-4 --mix-prob=0` -> ["weight_decay=1e-4", "mix_prob=0"] (checked by parse_overrides).

    Raises ValueError for a malformed flag (the CLI reports it as a usage error).
    """
    items, i = [], 0
    while i < len(extra):
        flag = extra[i]
        if not flag.startswith("--") or len(flag) == 2:
            raise ValueError(f"unrecognized argument {flag!r}; recipe fields go as --FIELD VALUE or --set FIELD=VALUE")
        name, eq, value = flag[2:].partition("=")
        if not eq:
            if i + 1 >= len(extra):
                raise ValueError(f"{flag} needs a value")
            value, i = extra[i + 1], i + 1
        items.append(f"{name.replace('-', '_')}={value}")
        i += 1
    return items
