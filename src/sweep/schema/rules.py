"""The per-value rules every config group's schema uses: bounds and choices in a field's
metadata, checked by `check_bounds` in one line naming the key."""

from __future__ import annotations

import math
import re
from typing import Any

from sweep.errors import ConfigError

#: Names are used as directory and MLflow experiment names; keep them to one safe path segment.
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


def bounds(**rules: Any) -> dict[str, Any]:
    """A field's rules for `check_bounds`: gt, ge, le, lt and choices (None: no rule)."""
    return {k: v for k, v in rules.items() if v is not None}


def check_bounds(key: str, value: Any, rules: Any) -> None:
    """The first rule of a field's metadata (`bounds`) that `value` breaks, as a ConfigError."""
    if value is None or not rules:
        return
    if "choices" in rules and value not in rules["choices"]:
        raise ConfigError(key, value, f"expected one of {', '.join(rules['choices'])}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(key, value, "must be a finite number")
    for rule, ok, words in (
        ("gt", lambda v, b: v > b, "greater than"),
        ("ge", lambda v, b: v >= b, "at least"),
        ("lt", lambda v, b: v < b, "less than"),
        ("le", lambda v, b: v <= b, "at most"),
    ):
        if rule in rules and not ok(value, rules[rule]):
            raise ConfigError(key, value, f"must be {words} {rules[rule]}")
