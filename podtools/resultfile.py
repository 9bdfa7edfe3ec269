"""The small JSON file a podtool leaves for the engine.

Written without the json module: importing it (and through it re, enum and functools) took a
third of a podtool's start-up, which every job pays. The C helper the json module itself uses
escapes the strings, so the output is what json.dumps(..., ensure_ascii=True) writes.
"""

from __future__ import annotations

import os
from _json import encode_basestring_ascii as _json_string

_INFINITY = float("inf")


def dumps(value: object) -> str:
    """JSON for what result files hold: dicts with str keys, lists, str, int, finite float, bool, None."""
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, str):
        return str(_json_string(value))
    if isinstance(value, int):
        return int.__repr__(value)
    if isinstance(value, float):
        if value != value or value in (_INFINITY, -_INFINITY):
            raise ValueError("JSON has no NaN or Infinity")
        return float.__repr__(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(dumps(item) for item in value) + "]"
    if isinstance(value, dict):
        parts = []
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"result file keys must be strings, not {type(key).__name__}")
            parts.append(f"{_json_string(key)}: {dumps(item)}")
        return "{" + ", ".join(parts) + "}"
    raise TypeError(f"{type(value).__name__} cannot go in a result file")


def write_result(path: str, **fields: object) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as handle:
        handle.write(dumps(fields))
    os.replace(tmp, path)
