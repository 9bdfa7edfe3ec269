"""The small JSON file a podtool leaves for the engine."""

from __future__ import annotations

import json
import os


def write_result(path: str, **fields: object) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as handle:
        json.dump(fields, handle)
    os.replace(tmp, path)
