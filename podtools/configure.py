"""podtools configure: provisions a job's sandbox or pod (Ocean's pod-configuration).

    /data/inputs/<did>/0..N            each dataset's files, in DDO order
    /data/inputs/algoCustomData.json   the algorithm's parameters
    /data/transformations/algorithm    the algorithm (then 1..N for its further files)
    /data/ddos/<did>                   each dataset's DDO

Usage: python -m podtools.configure JOB_JSON RESULT_JSON

JOB_JSON (written by the engine):
    {"datasets": [{"did": "did:op:…", "files": [FILE, …], "ddo": {…}}, …],
     "algorithm": {"did": "…", "files": [FILE, …], "raw_code": "<base64>"},
     "algorithm_parameters": {…},
     "allow_private_hosts": false,      http(s) inputs from loopback/private addresses too
     "parallel_fetches": 4,             files fetched at once
     "stall_seconds": 60,               a connection silent this long is broken (then resumed)
     "max_input_bytes": 0}              all inputs together at most (0: no limit): the
                                        environment's disk, or C2D_MAX_INPUT_BYTES if smaller
    FILE: {"url": "https://…" | "s3://bucket/key" | "ipfs://CID" | "file:///…",
           "sha256": "<hex>" (optional), "size": <bytes> (optional, 0: unknown),
           "method": "GET"|"POST" (http), "headers": {…} (http, the publisher's)}
          or {"provided": true}: the engine has put this file in place itself (file:// inputs of
          the local backend); it keeps its index, and nothing is fetched for it
    "inline": false                    the engine has written the DDOs, parameters and raw code
S3 and IPFS come from the environment: C2D_S3_* and C2D_IPFS_* (docs/storage.md).

Exit 0 when everything is in place; otherwise 2, with {"ok": false, "failed_input": "data" |
"algorithm", "reason": ...} in RESULT_JSON. All files are fetched in parallel; the first failure
stops the others. A DID becomes a folder name only if it is a plain DID; nothing is ever written
through a symbolic link.
"""

from __future__ import annotations

import base64
import json
import os
import sys

from podtools.fetch import FetchError, Options, fetch, inputs_too_large
from podtools.resultfile import write_result
from podtools.safepath import UnsafeName, did_folder_name, open_folder, write_new

INPUTS = "/data/inputs"
TRANSFORMATIONS = "/data/transformations"
DDOS = "/data/ddos"


class ProvisioningError(Exception):
    def __init__(self, failed_input: str, reason: str):
        super().__init__(reason)
        self.failed_input = failed_input


def _safe_did(did: str) -> str:
    try:
        return did_folder_name(did)
    except UnsafeName as exc:
        raise ProvisioningError("data", str(exc)) from None


class _Task:
    __slots__ = ("failed_input", "folder_fd", "label", "location", "name")

    def __init__(self, failed_input: str, label: str, location: dict, folder_fd: int, name: str):
        self.failed_input = failed_input
        self.label = label
        self.location = location
        self.folder_fd = folder_fd
        self.name = name


def provision(
    plan: dict, inputs: str = INPUTS, transformations: str = TRANSFORMATIONS, ddos: str = DDOS
) -> None:  # plan: a JSON object (a bare dict: no typing import, see __init__)
    options = Options(
        public_only=not plan.get("allow_private_hosts", False),
        stall_seconds=float(plan.get("stall_seconds") or 60),
        max_total_bytes=int(plan.get("max_input_bytes") or 0),
    )
    folders: list[int] = []
    try:
        tasks = _plan_tasks(plan, inputs, transformations, ddos, folders)
        declared = sum(int(task.location.get("size") or 0) for task in tasks)
        if options.max_total_bytes and declared > options.max_total_bytes:
            # Known before a byte is fetched: fail at once rather than after filling the disk.
            raise ProvisioningError("data", inputs_too_large(options.max_total_bytes))
        _fetch_all(tasks, options, int(plan.get("parallel_fetches") or 4))
        algorithm_fd = folders[0]
        try:
            os.stat("algorithm", dir_fd=algorithm_fd, follow_symlinks=False)
        except FileNotFoundError:
            raise ProvisioningError("algorithm", "the algorithm has no code") from None
    finally:
        for fd in folders:
            os.close(fd)


def _plan_tasks(plan: dict, inputs: str, transformations: str, ddos: str, folders: list[int]) -> list[_Task]:
    """Makes the folders, writes what the plan holds inline, and lists the files to fetch."""
    tasks: list[_Task] = []
    # False: the engine has written the DDOs, parameters and raw code itself (the local backend).
    inline = plan.get("inline", True)
    algorithm = plan["algorithm"]
    algorithm_fd = open_folder(transformations)
    folders.append(algorithm_fd)
    try:
        inputs_fd = open_folder(inputs)
        folders.append(inputs_fd)
        ddos_fd = open_folder(ddos)
        folders.append(ddos_fd)
        for dataset in plan["datasets"]:
            did = _safe_did(dataset["did"])
            folder_fd = open_folder(inputs, did)
            folders.append(folder_fd)
            for index, location in enumerate(dataset["files"]):
                if not location.get("provided"):
                    tasks.append(
                        _Task("data", f"dataset {did} file {index}", location, folder_fd, str(index))
                    )
            if inline:
                write_new(ddos_fd, did, json.dumps(dataset.get("ddo") or {}).encode())
        if inline:
            write_new(
                inputs_fd, "algoCustomData.json", json.dumps(plan.get("algorithm_parameters") or {}).encode()
            )
    except UnsafeName as exc:
        # A name twice (two datasets with one DID) or a link where a folder should be.
        raise ProvisioningError("data", f"the inputs cannot be laid out: {exc}") from None

    names = ["algorithm", *[str(i) for i in range(1, len(algorithm["files"]) + 1)]]
    raw = base64.b64decode(algorithm.get("raw_code") or "")
    if raw and not inline:
        names.pop(0)  # the engine wrote it
    elif raw:
        try:
            write_new(algorithm_fd, names.pop(0), raw)
        except UnsafeName as exc:
            raise ProvisioningError("algorithm", f"the algorithm cannot be written: {exc}") from None
    for name, location in zip(names, algorithm["files"], strict=False):
        if location.get("provided"):
            continue
        tasks.append(_Task("algorithm", f"algorithm file {name}", location, algorithm_fd, name))
    return tasks


def _fetch_all(tasks: list[_Task], options: Options, parallel: int) -> None:
    """Fetches every file, several at once; the first failure stops the rest and is raised."""

    def run(task: _Task) -> None:
        try:
            fetch(task.location, task.folder_fd, task.name, options)
        except FetchError as exc:
            options.cancel.set()
            raise ProvisioningError(task.failed_input, f"{task.label}: {exc}") from None
        except BaseException:
            options.cancel.set()
            raise

    if len(tasks) <= 1 or parallel <= 1:
        for task in tasks:
            run(task)
        return
    from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait

    with ThreadPoolExecutor(max_workers=min(parallel, len(tasks))) as pool:
        futures = [pool.submit(run, task) for task in tasks]
        wait(futures, return_when=FIRST_EXCEPTION)
        for future in futures:
            future.cancel()
    failures = [e for f in futures if not f.cancelled() and (e := f.exception()) is not None]
    # The failure that stopped the others, not a "cancelled" it caused.
    failures.sort(key=lambda e: "cancelled: another input failed" in str(e))
    if failures:
        raise failures[0]


def main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[1] in ("-h", "--help"):
        print(__doc__, file=sys.stderr)
        return 64
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
