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

import structlog

from c2d.common.v1 import job_pb2
from c2d_common.errors import FailedPrecondition, InvalidArgument, NotFound, PermissionDenied
from c2d_common.file_urls import FileUrlPolicy, FileUrlRefused

log = structlog.get_logger(__name__)

MAX_DDO_BYTES = 256 * 1024
MAX_FILES = 100
SHA256_PATTERN = re.compile(r"[0-9a-f]{64}")
DID_PATTERN = re.compile(r"did:op:[0-9a-f]{64}")
ADDRESS_PATTERN = re.compile(r"0x[0-9a-fA-F]{40}")
CID_PATTERN = re.compile(r"[A-Za-z0-9]{32,128}")
HEADER_NAME_PATTERN = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]{1,128}")
MAX_HEADERS = 32
FILE_TYPES = ("url", "s3", "ipfs")
# The compute options a dataset's compute service may set (Ocean v4), and what each must be.
COMPUTE_FLAGS = ("allowRawAlgorithm", "allowNetworkAccess")
RUNTIME_PATTERN = re.compile(r"[a-z0-9][a-z0-9._:/-]{0,127}")
MAX_ENTRYPOINT_ARGS = 64
MAX_INT64 = 2**63 - 1
ASSET_TYPES = ("dataset", "algorithm")
SERVICE_TYPES = ("access", "compute")
# Files the suite reads with its own access rather than the public's: file:// from this machine,
# s3:// with the suite's S3 credentials. A DDO naming one lets whoever may run raw algorithms on it
# read what the provider can read, so only publishers the provider's operator lists may name them.
PROVIDER_SIDE_SCHEMES = ("file", "s3")
ANYONE = "*"


@dataclass(frozen=True)
class PublisherPolicy:
    """Who may publish (C2D_PUBLISHERS).

    No list (the default): anyone may publish assets whose files are public (http(s), ipfs), and
    nobody may name provider-side files (file://, s3://). A list of addresses: only they may publish,
    and they may name provider-side files (within C2D_FILE_URL_ROOTS and C2D_S3_INPUT_BUCKETS).
    `*`: anyone may publish anything, for a machine with a single user.
    """

    listed: frozenset[str] = frozenset()
    anyone: bool = False

    @classmethod
    def of(cls, publishers: tuple[str, ...]) -> PublisherPolicy:
        return cls(
            listed=frozenset(p.lower() for p in publishers if p != ANYONE), anyone=ANYONE in publishers
        )

    def check_publisher(self, publisher: str) -> bool:
        """Raises PermissionDenied if `publisher` may not publish here; answers whether it may name
        provider-side files."""
        if self.anyone:
            return True
        if not self.listed:
            return False
        if publisher.lower() not in self.listed:
            raise PermissionDenied(
                f"{publisher} may not publish on this provider: only the addresses in its "
                "C2D_PUBLISHERS may; ask the provider's operator to add yours"
            )
        return True


def provider_side_file(ddo: dict[str, Any]) -> tuple[str, str] | None:
    """The first file of a validated DDO that the suite would read with its own access, as
    (where, scheme), or None."""
    for index, service in enumerate(ddo["services"]):
        for file_index, item in enumerate(service["files"]):
            kind = item.get("type", "url")
            if kind == "ipfs":
                continue
            scheme = "s3" if kind == "s3" and "url" not in item else urlparse(item["url"]).scheme
            if scheme in PROVIDER_SIDE_SCHEMES:
                return f"services[{index}].files[{file_index}]", scheme
    return None


@dataclass(frozen=True)
class Asset:
    did: str
    publisher: str
    ddo: dict[str, Any]

    @property
    def type(self) -> str:
        return str(self.ddo["metadata"]["type"])

    def compute_service(self) -> tuple[int, dict[str, Any]] | None:
        """The first compute service and its index (startOrder's serviceIndex)."""
        for index, service in enumerate(self.ddo.get("services", [])):
            if service.get("type") == "compute":
                return index, dict(service)
        return None

    def algorithm_service(self) -> tuple[int, dict[str, Any]]:
        """The service whose files are an algorithm asset's code: its compute service if it has
        one, else its first."""
        return self.compute_service() or (0, dict(self.ddo["services"][0]))

    def checksums(self) -> AlgorithmChecksums:
        return algorithm_checksums(self.ddo)

    def public_ddo(self) -> dict[str, Any]:
        ddo = copy.deepcopy(self.ddo)
        for service in ddo.get("services", []):
            service.pop("files", None)
        return ddo


@dataclass(frozen=True)
class AlgorithmChecksums:
    """What a dataset's publisherTrustedAlgorithms entry pins of an algorithm.

    files: sha256 of the concatenated sha256 (lowercase hex) of the algorithm's files, in order;
    empty when a file declares no checksum (then no entry can trust it by DID: its content is not
    pinned). container: sha256 of "<entrypoint>\n<image:tag or empty>\n<runtime>\n<image checksum>":
    the runtime is what the local backend runs and what a cluster maps to its image, so it is
    pinned whether or not the DDO also names an image.
    The engine checks each file's sha256 as it fetches it, so the code that runs is the code
    that was trusted.
    """

    files: str
    container: str


def algorithm_checksums(ddo: dict[str, Any]) -> AlgorithmChecksums:
    services = ddo.get("services") or []
    service = next((s for s in services if s.get("type") == "compute"), services[0] if services else {})
    checksums = [str(f.get("checksum", "")) for f in service.get("files", [])]
    files = hashlib.sha256("".join(checksums).encode()).hexdigest() if checksums and all(checksums) else ""
    container = ((ddo.get("metadata") or {}).get("algorithm") or {}).get("container") or {}
    image = container.get("image", "")
    image_tag = f"{image}:{container.get('tag', 'latest')}" if image else ""
    runtime = container.get("runtime", "python3")
    entrypoint = container.get("entrypoint", "python3 $ALGO")
    text = f"{entrypoint}\n{image_tag}\n{runtime}\n{container.get('checksum', '')}"
    return AlgorithmChecksums(files=files, container=hashlib.sha256(text.encode()).hexdigest())


def file_location(item: dict[str, Any]) -> job_pb2.FileLocation:
    """A validated DDO file object as the engine's FileLocation (url, expected sha256 and size,
    the publisher's method and headers)."""
    kind = item.get("type", "url")
    if kind == "ipfs":
        url = f"ipfs://{item['hash']}"
    elif kind == "s3" and "url" not in item:
        url = f"s3://{item['bucket']}/{item['objectPath']}"
    else:
        url = item["url"]
    location = job_pb2.FileLocation(
        url=url, sha256=item.get("checksum", ""), size=int(item.get("contentLength", 0))
    )
    headers = item.get("headers") or {}
    if headers:
        location.headers.update(headers)
    if str(item.get("method", "GET")).upper() == "POST":
        location.method = "POST"
    return location


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
        for key in ("image", "tag", "checksum"):
            if key in container:
                value = container[key]
                _require(
                    isinstance(value, str) and len(value) <= 512 and "\n" not in value,
                    f"metadata.algorithm.container.{key} must be text of at most 512 characters, one line",
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
            _check_file(item, f"{where}.files[{file_index}]", allowed_schemes, file_policy)
        _check_v4_service(service, where)
        _check_compute(service.get("compute", {}), where)
    if "chainId" in ddo:
        chain_id = ddo["chainId"]
        _require(_is_int(chain_id) and 0 < chain_id <= MAX_INT64, "chainId must be a positive integer")
    if "nftAddress" in ddo:
        _require(_is_address(ddo["nftAddress"]), "nftAddress must be an Ethereum address")


def _is_int(value: object) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value == int(value)
    )


def _is_address(value: object) -> bool:
    return isinstance(value, str) and bool(ADDRESS_PATTERN.fullmatch(value))


def _check_file(
    item: object, at: str, allowed_schemes: tuple[str, ...], file_policy: FileUrlPolicy | None
) -> None:
    _require(isinstance(item, dict), f"{at} must be an object")
    assert isinstance(item, dict)
    kind = item.get("type", "url")
    _require(kind in FILE_TYPES, f"{at}.type must be one of {', '.join(FILE_TYPES)}")
    if kind == "ipfs":
        cid = item.get("hash")
        _require(isinstance(cid, str) and bool(CID_PATTERN.fullmatch(cid)), f"{at}.hash must be an IPFS CID")
        _require("ipfs" in allowed_schemes, f"{at}: this provider does not take ipfs files")
    elif kind == "s3" and "url" not in item:
        bucket, path = item.get("bucket"), item.get("objectPath")
        _require(
            isinstance(bucket, str)
            and 0 < len(bucket) <= 63
            and isinstance(path, str)
            and 0 < len(path) <= 1024,
            f"{at} needs bucket and objectPath (or an s3:// url)",
        )
    else:
        _require(isinstance(item.get("url"), str), f"{at}.url is missing")
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
        if kind == "s3":
            _require(scheme == "s3", f"{at}.url must be s3://bucket/key for a file of type s3")
        if scheme == "file" and file_policy is not None:
            try:
                file_policy.check(url)
            except FileUrlRefused as exc:
                raise InvalidArgument(f"invalid DDO: {at}.url: {exc}") from None
        method = item.get("method", "GET")
        _require(
            isinstance(method, str) and method.upper() in ("GET", "POST"), f"{at}.method must be GET or POST"
        )
        _require(
            method.upper() == "GET" or scheme in ("http", "https"),
            f"{at}.method POST is for http(s) files only",
        )
        headers = item.get("headers", {})
        _require(isinstance(headers, dict) and len(headers) <= MAX_HEADERS, f"{at}.headers must be an object")
        for name, value in headers.items():
            _require(
                bool(HEADER_NAME_PATTERN.fullmatch(name))
                and isinstance(value, str)
                and len(value) <= 8192
                and not any(c in value for c in "\r\n\0"),
                f"{at}.headers has an invalid header {_shown(name)!r}",
            )
        _require(not headers or scheme in ("http", "https"), f"{at}.headers are for http(s) files only")
    checksum = item.get("checksum", "")
    _require(
        isinstance(checksum, str) and (checksum == "" or bool(SHA256_PATTERN.fullmatch(checksum))),
        f"{at}.checksum must be a lowercase hex sha256",
    )
    size = item.get("contentLength", 0)
    _require(_is_int(size) and 0 <= size <= MAX_INT64, f"{at}.contentLength must be a byte count")


def _check_v4_service(service: dict[str, Any], where: str) -> None:
    if "id" in service:
        _require(
            isinstance(service["id"], str) and 0 < len(service["id"]) <= 128, f"{where}.id must be a string"
        )
    if "datatokenAddress" in service:
        _require(_is_address(service["datatokenAddress"]), f"{where}.datatokenAddress must be an address")
    if "serviceEndpoint" in service:
        endpoint = service["serviceEndpoint"]
        _require(
            isinstance(endpoint, str) and 0 < len(endpoint) <= 2048, f"{where}.serviceEndpoint must be a URL"
        )
    if "timeout" in service:
        timeout = service["timeout"]
        _require(
            _is_int(timeout) and 0 <= timeout <= MAX_INT64,
            f"{where}.timeout must be a number of seconds (0: orders never expire)",
        )


def _check_compute(compute: object, where: str) -> None:
    _require(isinstance(compute, dict), f"{where}.compute must be an object")
    assert isinstance(compute, dict)
    for flag in COMPUTE_FLAGS:
        _require(isinstance(compute.get(flag, False), bool), f"{where}.compute.{flag} must be true or false")
    trusted = compute.get("publisherTrustedAlgorithms", [])
    _require(
        isinstance(trusted, list) and len(trusted) <= 256,
        f"{where}.compute.publisherTrustedAlgorithms must be a list",
    )
    for index, entry in enumerate(trusted):
        at = f"{where}.compute.publisherTrustedAlgorithms[{index}]"
        _require(isinstance(entry, dict), f"{at} must be an object")
        _require(
            isinstance(entry.get("did"), str) and bool(DID_PATTERN.fullmatch(entry["did"])),
            f"{at}.did must be an algorithm DID",
        )
        for key in ("filesChecksum", "containerSectionChecksum"):
            _require(
                isinstance(entry.get(key), str) and bool(SHA256_PATTERN.fullmatch(entry[key])),
                f"{at}.{key} must be a lowercase hex sha256 (see `c2d checksums`)",
            )
    publishers = compute.get("publisherTrustedAlgorithmPublishers", [])
    _require(
        isinstance(publishers, list) and len(publishers) <= 256,
        f"{where}.compute.publisherTrustedAlgorithmPublishers must be a list",
    )
    for index, publisher in enumerate(publishers):
        _require(
            _is_address(publisher),
            f"{where}.compute.publisherTrustedAlgorithmPublishers[{index}] must be an Ethereum address",
        )


class AssetStore:
    """One JSON file per asset under a folder; writes are atomic."""

    def __init__(
        self,
        folder: Path,
        file_policy: FileUrlPolicy,
        provider_url: str = "",
        chain_id: int = 0,
        publishers: PublisherPolicy | None = None,
    ):
        self.folder = folder
        self.file_policy = file_policy
        # What a service's serviceEndpoint defaults to, and the chain a DDO's chainId must name
        # (0: this provider checks no chain, and any chainId is kept as the publisher wrote it).
        self.provider_url = provider_url
        self.chain_id = chain_id
        self.publishers = publishers or PublisherPolicy()
        self.folder.mkdir(parents=True, exist_ok=True)
        self.allowed_schemes: tuple[str, ...] = ("http", "https", "s3", "ipfs") + (
            ("file",) if file_policy.enabled else ()
        )

    def publish(self, publisher: str, ddo: dict[str, Any], *, own_results: bool = False) -> Asset:
        """Checks that `publisher` may publish it, validates and stores a DDO. With own_results
        (the provider's own result assets of the publisher's job, never a publisher's DDO), its
        files may name this provider's result store, which publishers' file:// URLs never may."""
        if own_results:
            validate_ddo(ddo, (*self.allowed_schemes, "file"), None)
        else:
            may_name_provider_files = self.publishers.check_publisher(publisher)
            # Without that right the file:// paths are not even checked against the roots: the
            # answer must not tell a stranger which of this machine's folders hold data.
            validate_ddo(ddo, self.allowed_schemes, self.file_policy if may_name_provider_files else None)
            found = None if may_name_provider_files else provider_side_file(ddo)
            if found is not None:
                where, scheme = found
                raise PermissionDenied(
                    f"{where} is a file this provider reads with its own access ({scheme}://): "
                    "only publishers listed in its C2D_PUBLISHERS may name file:// or s3:// files, and "
                    "it lists none; publish the data over https or ipfs, or ask the provider's operator "
                    f"to add {publisher} to C2D_PUBLISHERS"
                )
        self._check_chain(ddo)
        ddo = copy.deepcopy(ddo)
        body = json.dumps(ddo, sort_keys=True)
        did = "did:op:" + hashlib.sha256(f"{publisher}:{uuid.uuid4().hex}:{body}".encode()).hexdigest()
        ddo["id"] = did
        ddo.setdefault("version", "4.1.0")
        if self.chain_id:
            ddo["chainId"] = self.chain_id
        elif "chainId" in ddo:
            ddo["chainId"] = int(ddo["chainId"])  # a Struct carries every number as a double
        for index, service in enumerate(ddo["services"]):
            service.setdefault("id", str(index))
            service.setdefault("timeout", 0)
            if self.provider_url:
                service.setdefault("serviceEndpoint", self.provider_url)
        asset = Asset(did=did, publisher=publisher, ddo=ddo)
        path = self.folder / f"{did.removeprefix('did:op:')}.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"publisher": publisher, "ddo": ddo}))
        os.replace(tmp, path)
        return asset

    def _check_chain(self, ddo: dict[str, Any]) -> None:
        """A DDO for another chain names datatokens this provider cannot see: its orders could
        never be checked here."""
        if self.chain_id and "chainId" in ddo and int(ddo["chainId"]) != self.chain_id:
            raise FailedPrecondition(
                f"the DDO is for chain {int(ddo['chainId'])}, but this provider checks orders on chain "
                f"{self.chain_id} (its C2D_CHAIN_ID): publish it with chainId {self.chain_id} (or none), "
                f"or to a provider of chain {int(ddo['chainId'])}"
            )

    def get(self, did: str) -> Asset:
        check_did(did)
        path = self.folder / f"{did.removeprefix('did:op:')}.json"
        try:
            stored = json.loads(path.read_text())
            publisher, ddo = stored["publisher"], stored["ddo"]
            if not isinstance(publisher, str) or not isinstance(ddo, dict):
                raise TypeError("publisher or ddo of the wrong type")
        except FileNotFoundError:
            raise NotFound(f"no asset {did} is published on this provider") from None
        except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
            # A record damaged on disk (by hand, or a full disk before this store wrote atomically):
            # the consumer can do nothing about it but tell the publisher.
            log.error("asset record unreadable", did=did, error=str(exc))
            raise FailedPrecondition(
                f"asset {did}'s record on this provider is damaged; ask its publisher to publish it again"
            ) from None
        return Asset(did=did, publisher=publisher, ddo=ddo)
