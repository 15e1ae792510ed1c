"""Durations as people write them (`90s`, `30m`, `2h`, `1h30m`): time budgets of a search and of
its seed repeats."""

from __future__ import annotations

import math
import re
from typing import Any

from sweep.errors import ConfigError

#: One duration part: a number and its unit (seconds when the unit is left out).
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)\s*([hms]?)")
_UNIT_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0, "": 1.0}


def parse_duration(key: str, value: Any) -> float:
    """Seconds in a duration such as `90s`, `30m`, `2h`, `1h30m` or `45` (seconds)."""
    text = str(value).strip().lower()
    parts = list(_DURATION_PART.finditer(text))
    joined = "".join(m.group(0) for m in parts).replace(" ", "")
    if (
        isinstance(value, bool)
        or not parts
        or joined != text.replace(" ", "")
        or (len(parts) > 1 and any(not m.group(2) for m in parts))
    ):
        raise ConfigError(key, value, "expected a duration such as 90s, 30m, 2h or 1h30m")
    seconds = sum(float(m.group(1)) * _UNIT_SECONDS[m.group(2)] for m in parts)
    if not (math.isfinite(seconds) and seconds > 0):
        raise ConfigError(key, value, "must be a positive duration")
    return seconds
