"""Durations in experiment files: a number of seconds, or a string such as ``45s`` or ``7d``.

>>> parse_duration("7d")
604800.0
>>> parse_duration(90)
90.0
>>> parse_duration("1.5h"), parse_duration("250ms")
(5400.0, 0.25)
>>> format_duration(604800.0), format_duration(259200.0), format_duration(0.25)
('1w', '3d', '250ms')
>>> parse_duration("7 days")
Traceback (most recent call last):
...
ValueError: a duration is a number of seconds or a string like 45s, 30m, 12h, 7d, 2w, got '7 days'
"""

from __future__ import annotations

import math
import re

#: seconds per unit; ``m`` is minutes (there is no month: months have no fixed length)
UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}

#: the string form, also used as the JSON Schema ``pattern`` of a duration string
DURATION_PATTERN = r"^[0-9]+(\.[0-9]+)?(ms|s|m|h|d|w)$"
_DURATION_RE = re.compile(DURATION_PATTERN)

#: how error messages describe a duration
DURATION_EXPECTED = "a duration: a number of seconds or a string like 45s, 30m, 12h, 7d, 2w"


def parse_duration(value: float | int | str) -> float:
    """Seconds (a finite float ≥ 0) from a number of seconds or a string ``<number><unit>``.

    Units: ``ms``, ``s``, ``m`` (minutes), ``h``, ``d``, ``w``. Raises ``ValueError`` with a
    one-line message for anything else (negative, NaN, infinite, a bool, an unknown unit).
    """
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"a duration is a number of seconds or a string like 45s, 30m, 12h, "
                         f"7d, 2w, got {value!r}")
    if isinstance(value, str):
        match = _DURATION_RE.match(value.strip())
        if match is None:
            raise ValueError(f"a duration is a number of seconds or a string like 45s, 30m, "
                             f"12h, 7d, 2w, got {value!r}")
        number, unit = value.strip()[: match.start(2)], match.group(2)
        seconds = float(number) * UNIT_SECONDS[unit]
    else:
        seconds = float(value)
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"a duration must be a finite number of seconds >= 0, got {value!r}")
    return seconds


def format_duration(seconds: float) -> str:
    """The string for ``seconds`` in the largest unit that holds it a whole number of times.

    Exact: ``parse_duration(format_duration(s)) == s`` for every finite ``s >= 0`` whose
    ``repr`` has no exponent (others raise ``ValueError``; write them as numbers).
    """
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"cannot format {seconds!r} as a duration")
    for unit in ("w", "d", "h", "m", "s", "ms"):
        count = seconds / UNIT_SECONDS[unit]
        if count >= 1 and count == int(count) and int(count) * UNIT_SECONDS[unit] == seconds:
            return f"{int(count)}{unit}"
    text = repr(float(seconds))
    if "e" in text:
        raise ValueError(f"cannot format {seconds!r} as a duration string")
    return f"{text}s"
