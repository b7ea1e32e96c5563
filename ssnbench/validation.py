"""Value checks shared by the suite loader (config.py) and the model builders (models/), and where
a user's text file stops being UTF-8 (suite files, the release's CSVs).

Why one module: a suite file's values and a model's options are the same kind of user input and
deserve the same one-line messages (`<key>: expected ..., got ...; did you mean ...?`). Each check
returns the value (normalised: a float for a number) or raises `ConfigError` whose message starts
with the key; config.py prefixes the file name.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Sequence
from typing import Any

from ssnbench.errors import ConfigError

__all__ = [
    "check_bool",
    "check_choice",
    "check_float",
    "check_int",
    "check_mapping",
    "check_str",
    "suggest",
    "typename",
    "utf8_error_at",
]


def _fail(key: str, message: str) -> ConfigError:
    return ConfigError(f"{key}: {message}" if key else message)


def typename(value: Any) -> str:
    """'an integer (5)', 'nothing (null)': what the user wrote, in words."""
    if value is None:
        return "nothing (null)"
    return {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "a mapping",
    }.get(type(value), type(value).__name__) + f" ({value!r})"[:60]


def utf8_error_at(data: bytes, err: UnicodeDecodeError) -> tuple[int, int, str]:
    """(line, column, byte as `0xNN`) of the first byte of `data` that is not UTF-8, counted from 1:
    where the one-line error about a file that is not UTF-8 (a suite, meta.csv) points the user."""
    line = data[: err.start].count(b"\n") + 1
    column = err.start - (data.rfind(b"\n", 0, err.start) + 1) + 1
    return line, column, f"0x{data[err.start]:02X}"


def suggest(word: str, choices: Sequence[str]) -> str:
    """"; did you mean 'x'?" for the closest choice, or ""."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def check_choice(key: str, value: Any, choices: Sequence[str]) -> str:
    if not isinstance(value, str) or value not in choices:
        hint = suggest(value, choices) if isinstance(value, str) else ""
        raise _fail(key, f"expected one of {', '.join(choices)}, got {typename(value)}{hint}")
    return value


def check_bool(key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise _fail(key, f"expected true or false, got {typename(value)}")
    return value


def check_str(key: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _fail(key, f"expected a non-empty string, got {typename(value)}")
    return value


def _range(minimum: float | None, maximum: float | None, max_inclusive: bool = True) -> str:
    if minimum is not None and maximum is not None:
        return f"in [{minimum}, {maximum}{']' if max_inclusive else ')'}"
    if minimum is not None:
        return f">= {minimum}"
    return f"<= {maximum}" if max_inclusive else f"< {maximum}"


def check_int(key: str, value: Any, minimum: int | None = None, maximum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _fail(key, f"expected an integer, got {typename(value)}")
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise _fail(key, f"expected an integer {_range(minimum, maximum)}, got {value}")
    return value


def check_float(
    key: str,
    value: Any,
    minimum: float | None = None,
    maximum: float | None = None,
    *,
    positive: bool = False,
    max_inclusive: bool = True,
    numeric_strings: bool = False,
) -> float:
    """A finite number in range, as float. `numeric_strings`: accept "1e-4" (YAML 1.1 reads a
    number without a dot as a string; suite files accept it rather than surprise people)."""
    if numeric_strings and isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise _fail(key, f"expected a number, got {typename(value)}") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _fail(key, f"expected a number, got {typename(value)}")
    value = float(value)
    if not math.isfinite(value):
        raise _fail(key, f"expected a finite number, got {value}")
    if positive and value <= 0:
        raise _fail(key, f"expected a number > 0, got {value}")
    too_high = maximum is not None and (value > maximum or (not max_inclusive and value == maximum))
    if (minimum is not None and value < minimum) or too_high:
        raise _fail(key, f"expected a number {_range(minimum, maximum, max_inclusive)}, got {value}")
    return value


def check_mapping(key: str, value: Any, allowed: Sequence[str], required: Sequence[str] = ()) -> dict:
    """A mapping with string keys among `allowed` (did-you-mean on a typo) and every `required` key."""
    if not isinstance(value, dict):
        raise _fail(key, f"expected a mapping, got {typename(value)}")
    for k in value:
        if not isinstance(k, str):
            raise _fail(key, f"keys must be strings, got {k!r}")
        if k not in allowed:
            where = f"{key}.{k}" if key else k
            hint = suggest(k, allowed) or f"; expected one of {', '.join(allowed)}"
            raise _fail(where, "unknown key" + hint)
    for k in required:
        if k not in value:
            raise _fail(f"{key}.{k}" if key else k, "missing (required)")
    return value
