"""Published assets (datasets and algorithms), described by DDOs in Ocean's v4 shape.

The files' locations are private to the provider: a DDO is stored whole, and shown without them.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import re
import shlex
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from c2d_common.errors import InvalidArgument, NotFound
from c2d_common.file_urls import FileUrlPolicy, FileUrlRefused

MAX_DDO_BYTES = 256 * 1024
MAX_FILES = 100
SHA256_PATTERN = re.compile(r"[0-9a-f]{64}")
DID_PATTERN = re.compile(r"did:op:[0-9a-f]{64}")
RUNTIME_PATTERN = re.compile(r"[a-z0-9][a-z0-9._:/-]{0,127}")
MAX_ENTRYPOINT_ARGS = 64
MAX_INT64 = 2**63 - 1
ASSET_TYPES = ("dataset", "algorithm")
SERVICE_TYPES = ("access", "compute")


@dataclass(frozen=True)
class Asset:
    did: str
    publisher: str
    ddo: dict[str, Any]

    @property
    def type(self) -> str:
        return str(self.ddo["metadata"]["type"])

    def compute_service(self) -> dict[str, Any] | None:
        for service in self.ddo.get("services", []):
            if service.get("type") == "compute":
                return dict(service)
        return None

    def public_ddo(self) -> dict[str, Any]:
        ddo = copy.deepcopy(self.ddo)
        for service in ddo.get("services", []):
            service.pop("files", None)
        return ddo


def check_did(did: str, field: str = "did") -> str:
    if not DID_PATTERN.fullmatch(did):
        shown = did if len(did) <= 80 else did[:80] + "…"
        raise InvalidArgument(f"{field} {shown!r} is not a DID of this provider (did:op: and 64 hex digits)")
    return did


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise InvalidArgument(f"invalid DDO: {message}")


def _shown(value: str, limit: int = 64) -> str:
    return value if len(value) <= limit else value[:limit] + "…"


def parse_entrypoint(entrypoint: object) -> list[str]:
    """An algorithm's command line as an argument vector, or InvalidArgument."""
    if not isinstance(entrypoint, str) or not 0 < len(entrypoint) <= 1024 or "\0" in entrypoint:
        raise InvalidArgument("invalid DDO: metadata.algorithm.container.entrypoint must be a command line")
    try:
        argv = shlex.split(entrypoint)
    except ValueError as exc:
        raise InvalidArgument(
            f"invalid DDO: metadata.algorithm.container.entrypoint does not parse: {exc}"
        ) from None
    if not argv or len(argv) > MAX_ENTRYPOINT_ARGS:
        raise InvalidArgument(
            "invalid DDO: metadata.algorithm.container.entrypoint must have "
            f"1 to {MAX_ENTRYPOINT_ARGS} arguments"
        )
    return argv


def check_runtime(runtime: object, field: str) -> str:
    if not isinstance(runtime, str) or not RUNTIME_PATTERN.fullmatch(runtime):
        shown = _shown(runtime) if isinstance(runtime, str) else type(runtime).__name__
        raise InvalidArgument(f"{field} {shown!r} is not a runtime name (such as python3)")
    return runtime


def validate_ddo(
    ddo: dict[str, Any], allowed_schemes: tuple[str, ...], file_policy: FileUrlPolicy | None = None
) -> None:
    _require(isinstance(ddo, dict), "it must be a JSON object")
    _require(len(json.dumps(ddo)) <= MAX_DDO_BYTES, f"it is larger than {MAX_DDO_BYTES} bytes")
    metadata = ddo.get("metadata")
    if not isinstance(metadata, dict):
        raise InvalidArgument("invalid DDO: metadata is missing")
    name = metadata.get("name")
    _require(isinstance(name, str) and 0 < len(name) <= 512, "metadata.name must be 1 to 512 characters")
    _require(metadata.get("type") in ASSET_TYPES, f"metadata.type must be one of {', '.join(ASSET_TYPES)}")
    if metadata["type"] == "algorithm":
        algorithm = metadata.get("algorithm", {})
        _require(isinstance(algorithm, dict), "metadata.algorithm must be an object")
        container = algorithm.get("container", {})
        _require(isinstance(container, dict), "metadata.algorithm.container must be an object")
        parse_entrypoint(container.get("entrypoint", "python3 $ALGO"))
        check_runtime(
            container.get("runtime", "python3"), "invalid DDO: metadata.algorithm.container.runtime"
        )
    services = ddo.get("services")
    if not isinstance(services, list) or not 0 < len(services) <= 16:
        raise InvalidArgument("invalid DDO: services must list 1 to 16 services")
    for index, service in enumerate(services):
        where = f"services[{index}]"
        _require(isinstance(service, dict), f"{where} must be an object")
        _require(
            service.get("type") in SERVICE_TYPES, f"{where}.type must be one of {', '.join(SERVICE_TYPES)}"
        )
        files = service.get("files")
        _require(
            isinstance(files, list) and 0 < len(files) <= MAX_FILES,
            f"{where}.files must list 1 to {MAX_FILES} files",
        )
        for file_index, item in enumerate(files):
            at = f"{where}.files[{file_index}]"
            _require(isinstance(item, dict) and isinstance(item.get("url"), str), f"{at}.url is missing")
            url = item["url"]
            _require(0 < len(url) <= 4096, f"{at}.url must be 1 to 4096 characters")
            try:
                scheme = urlparse(url).scheme
            except ValueError:
                raise InvalidArgument(f"invalid DDO: {at}.url is not a URL") from None
            _require(
                scheme in allowed_schemes,
                f"{at}.url has scheme {_shown(scheme)!r}; this provider accepts {', '.join(allowed_schemes)}",
            )
            if scheme == "file" and file_policy is not None:
                try:
                    file_policy.check(url)
                except FileUrlRefused as exc:
                    raise InvalidArgument(f"invalid DDO: {at}.url: {exc}") from None
            checksum = item.get("checksum", "")
            _require(
                isinstance(checksum, str) and (checksum == "" or bool(SHA256_PATTERN.fullmatch(checksum))),
                f"{at}.checksum must be a lowercase hex sha256",
            )
            size = item.get("contentLength", 0)
            _require(
                isinstance(size, int | float)
                and not isinstance(size, bool)
                and math.isfinite(size)
                and size == int(size)
                and 0 <= size <= MAX_INT64,
                f"{at}.contentLength must be a byte count",
            )
        compute = service.get("compute", {})
        _require(isinstance(compute, dict), f"{where}.compute must be an object")
        for key in ("publisherTrustedAlgorithms", "publisherTrustedAlgorithmPublishers"):
            _require(isinstance(compute.get(key, []), list), f"{where}.compute.{key} must be a list")


class AssetStore:
    """One JSON file per asset under a folder; writes are atomic."""

    def __init__(self, folder: Path, file_policy: FileUrlPolicy):
        self.folder = folder
        self.file_policy = file_policy
        self.folder.mkdir(parents=True, exist_ok=True)
        self.allowed_schemes: tuple[str, ...] = ("http", "https", "s3", "ipfs") + (
            ("file",) if file_policy.enabled else ()
        )

    def publish(self, publisher: str, ddo: dict[str, Any]) -> Asset:
        validate_ddo(ddo, self.allowed_schemes, self.file_policy)
        ddo = copy.deepcopy(ddo)
        body = json.dumps(ddo, sort_keys=True)
        did = "did:op:" + hashlib.sha256(f"{publisher}:{uuid.uuid4().hex}:{body}".encode()).hexdigest()
        ddo["id"] = did
        ddo.setdefault("version", "4.1.0")
        for index, service in enumerate(ddo["services"]):
            service.setdefault("id", str(index))
        asset = Asset(did=did, publisher=publisher, ddo=ddo)
        path = self.folder / f"{did.removeprefix('did:op:')}.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"publisher": publisher, "ddo": ddo}))
        os.replace(tmp, path)
        return asset

    def get(self, did: str) -> Asset:
        check_did(did)
        path = self.folder / f"{did.removeprefix('did:op:')}.json"
        try:
            stored = json.loads(path.read_text())
        except FileNotFoundError:
            raise NotFound(f"no asset {did} is published on this provider") from None
        return Asset(did=did, publisher=stored["publisher"], ddo=stored["ddo"])
