"""podtools configure: provisions a job's sandbox (Ocean's pod-configuration).

    /data/inputs/<did>/0..N            each dataset's files, in DDO order
    /data/inputs/algoCustomData.json   the algorithm's parameters
    /data/transformations/algorithm    the algorithm (then 1..N for its further files)
    /data/ddos/<did>                   each dataset's DDO

Usage: python -m podtools.configure JOB_JSON RESULT_JSON. Exit 0 when everything is in place;
otherwise 2, with {"ok": false, "failed_input": "data"|"algorithm", "reason": ...} in RESULT_JSON.
"""

from __future__ import annotations

import base64
import json
import os
import re
import sys

from podtools.fetch import FetchError, fetch
from podtools.resultfile import write_result

INPUTS = "/data/inputs"
TRANSFORMATIONS = "/data/transformations"
DDOS = "/data/ddos"
_SAFE_DID = re.compile(r"did:[a-z0-9]+:[A-Za-z0-9._-]{1,128}")


class ProvisioningError(Exception):
    def __init__(self, failed_input: str, reason: str):
        super().__init__(reason)
        self.failed_input = failed_input


def _safe_did(did: str) -> str:
    # A DID becomes a folder name: it must never contain a separator or "..".
    if not _SAFE_DID.fullmatch(did) or ".." in did:
        raise ProvisioningError("data", f"DID {did!r} cannot be used as a folder name")
    return did


def provision(plan: dict) -> None:  # a JSON object (bare dict: no typing import, see __init__)
    public_only = not plan.get("allow_private_hosts", False)
    for dataset in plan["datasets"]:
        did = _safe_did(dataset["did"])
        folder = os.path.join(INPUTS, did)
        os.makedirs(folder, exist_ok=True)
        for index, location in enumerate(dataset["files"]):
            try:
                fetch(
                    location["url"],
                    os.path.join(folder, str(index)),
                    location.get("sha256", ""),
                    int(location.get("size") or 0),
                    public_only,
                )
            except FetchError as exc:
                raise ProvisioningError("data", f"dataset {did} file {index}: {exc}") from exc
        with open(os.path.join(DDOS, did), "w") as handle:
            json.dump(dataset.get("ddo") or {}, handle)

    with open(os.path.join(INPUTS, "algoCustomData.json"), "w") as handle:
        json.dump(plan.get("algorithm_parameters") or {}, handle)

    algorithm = plan["algorithm"]
    names = ["algorithm", *[str(i) for i in range(1, len(algorithm["files"]) + 1)]]
    raw = base64.b64decode(algorithm.get("raw_code") or "")
    if raw:
        with open(os.path.join(TRANSFORMATIONS, names.pop(0)), "wb") as handle:
            handle.write(raw)
    for name, location in zip(names, algorithm["files"], strict=False):
        try:
            fetch(
                location["url"],
                os.path.join(TRANSFORMATIONS, name),
                location.get("sha256", ""),
                int(location.get("size") or 0),
                public_only,
            )
        except FetchError as exc:
            raise ProvisioningError("algorithm", f"algorithm file {name}: {exc}") from exc
    if not os.path.exists(os.path.join(TRANSFORMATIONS, "algorithm")):
        raise ProvisioningError("algorithm", "the algorithm has no code")


def main(argv: list[str]) -> int:
    plan_path, result_path = argv[1], argv[2]
    try:
        with open(plan_path) as handle:
            plan = json.load(handle)
        provision(plan)
    except ProvisioningError as exc:
        print(f"configure: {exc}", file=sys.stderr)
        write_result(result_path, ok=False, failed_input=exc.failed_input, reason=str(exc))
        return 2
    except Exception as exc:
        # Anything else is ours to fix; its text may hold paths, so the consumer sees only its kind.
        print(f"configure: {exc!r}", file=sys.stderr)
        write_result(
            result_path, ok=False, failed_input="data", reason=f"configuration failed ({type(exc).__name__})"
        )
        return 2
    write_result(result_path, ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
