"""Where inputs come from and results go: the storage settings the engine and the provider share.

- Inputs: `http(s)://` (any public host, with the publisher's headers), `s3://bucket/key` (from the
  buckets C2D_S3_INPUT_BUCKETS allows, with the suite's S3 endpoint and credentials),
  `ipfs://CID` (through C2D_IPFS_GATEWAY or C2D_IPFS_API), `file://` (the embedded default only).
- Results: C2D_RESULT_STORE = `local` (C2D_RESULTS_DIR, the default), `s3://bucket/prefix`, or
  `ipfs` (Kubo's HTTP RPC API at C2D_IPFS_API; each job's files kept in the node's MFS under
  /c2d-results/<job_id>, or `ipfs:/FOLDER/<job_id>`).

podtools read the same C2D_S3_* and C2D_IPFS_* variables inside their sandbox or pod (see
`podtools_env`): a Kubernetes pod gets them from a Secret, the local backend from the engine. Each
phase gets only what it uses: configuration the key that reads the datasets (C2D_S3_*), publishing
the result store's key (C2D_S3_RESULT_*, which must be set apart from it when both exist), never
the other. docs/storage.md documents every variable.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlparse

from c2d_common.env import ConfigError, env_int, env_str

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

MiB = 1024 * 1024
GiB = 1024 * MiB
# The MFS folder under which an IPFS result store keeps a folder per job.
IPFS_RESULTS_FOLDER = "/c2d-results"

# A bucket name as S3 allows it (3-63 lowercase letters, digits, dots, hyphens).
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
# A CID: CIDv0 (base58btc, "Qm…") or CIDv1 in a multibase of letters and digits ("bafy…").
_CID = re.compile(r"[A-Za-z0-9]{10,128}")
# A path below a CID: plain segments, none of them "." or "..".
_IPFS_SEGMENT = re.compile(r"[A-Za-z0-9._~!$&'()*+,;=:@%-]{1,255}")
# What follows an S3 result store's prefix in the key of a job's output, as podtools publish
# stores it: <job id>/<publish id>/outputs/<name, percent-encoded>. The publish id is random and
# only the suite ever learns it (see podtools/publish.py's S3Store).
_S3_RESULT_OUTPUT = re.compile(r"[0-9a-f]{32}/[0-9a-f]{32}/outputs/[A-Za-z0-9._~%-]+(?:/[A-Za-z0-9._~%-]+)*")


class StorageRefused(ValueError):
    """A location this suite will not read or write; the message names no location."""


def split_s3_location(location: str) -> tuple[str, str]:
    """(bucket, key) of s3://bucket/key, the key taken whole. Not urlparse: it would end the key
    at a "#" or "?", and result locations stored before names were percent-encoded in keys hold
    them as they are (podtools read s3:// inputs the same way)."""
    if not location.startswith("s3://"):
        return "", ""
    bucket, _, key = location[len("s3://") :].partition("/")
    return bucket, key


@dataclass(frozen=True)
class S3Settings:
    # Empty: AWS's own endpoint for the region.
    endpoint_url: str = ""
    region: str = "us-east-1"
    # Empty: boto3's default chain (instance roles, ~/.aws of the service's user).
    access_key_id: str = ""
    secret_access_key: str = ""
    session_token: str = ""
    # "path", "virtual" or "auto"; empty: path-style with an endpoint (MinIO, moto, Ceph), auto
    # without.
    addressing_style: str = ""
    # Buckets s3:// inputs may name ("*": any). None by default: the credentials are the
    # suite's, so a DDO must not be able to name every bucket they can read.
    input_buckets: tuple[str, ...] = ()
    # Multipart threshold and part size for uploads, and transfer threads.
    part_bytes: int = 16 * MiB
    concurrency: int = 8
    connect_timeout_seconds: int = 10
    read_timeout_seconds: int = 60

    def style(self) -> str:
        return self.addressing_style or ("path" if self.endpoint_url else "auto")

    def client(self) -> S3Client:
        """A boto3 S3 client with these settings (boto3 is imported here: it is slow to import)."""
        import boto3
        from botocore.config import Config

        config = Config(
            region_name=self.region,
            connect_timeout=self.connect_timeout_seconds,
            read_timeout=self.read_timeout_seconds,
            retries={"max_attempts": 3, "mode": "standard"},
            s3={"addressing_style": self.style()},  # type: ignore[arg-type]
            max_pool_connections=max(10, self.concurrency * 2),
        )
        credentials: dict[str, Any] = {}
        if self.access_key_id:
            credentials = {
                "aws_access_key_id": self.access_key_id,
                "aws_secret_access_key": self.secret_access_key,
                "aws_session_token": self.session_token or None,
            }
        return boto3.session.Session().client(
            "s3", endpoint_url=self.endpoint_url or None, config=config, **credentials
        )


@dataclass(frozen=True)
class IpfsSettings:
    # Kubo's HTTP RPC API (or js-ipfs's), e.g. http://127.0.0.1:5001: needed for the ipfs
    # result store; reads ipfs:// inputs when no gateway is set.
    api_url: str = ""
    # An HTTP gateway, e.g. http://127.0.0.1:8080: reads ipfs:// inputs (GET /ipfs/CID).
    gateway_url: str = ""
    # A CID the node cannot find makes `cat` wait for ever: every call has this limit.
    timeout_seconds: int = 60

    @property
    def readable(self) -> bool:
        return bool(self.api_url or self.gateway_url)


@dataclass(frozen=True)
class ResultStoreTarget:
    """C2D_RESULT_STORE, parsed."""

    kind: Literal["local", "s3", "ipfs"] = "local"
    bucket: str = ""
    # S3: "" or a key prefix ending in "/". IPFS: the MFS folder that holds a folder per job.
    prefix: str = ""

    @classmethod
    def parse(cls, raw: str) -> ResultStoreTarget:
        raw = raw.strip()
        if raw in ("", "local"):
            return cls("local")
        if raw == "ipfs" or raw.startswith("ipfs:/"):
            folder = raw[len("ipfs:") :].rstrip("/") or IPFS_RESULTS_FOLDER
            if not _plain_path(folder.strip("/")):
                raise ConfigError(f"C2D_RESULT_STORE={raw!r}: the MFS folder has an empty, . or .. segment")
            return cls("ipfs", prefix=folder)
        parsed = urlparse(raw)
        if parsed.scheme == "s3" and (parsed.query or parsed.fragment or raw.endswith(("?", "#"))):
            raise ConfigError(f"C2D_RESULT_STORE={raw!r}: the prefix may not hold ? or #")
        if parsed.scheme == "s3" and _BUCKET.fullmatch(parsed.netloc or ""):
            prefix = parsed.path.strip("/")
            if prefix and not _plain_path(prefix):
                raise ConfigError(f"C2D_RESULT_STORE={raw!r}: the prefix has an empty, . or .. segment")
            return cls("s3", parsed.netloc, prefix + "/" if prefix else "")
        raise ConfigError(
            f"C2D_RESULT_STORE={raw!r} is not a result store: use local, s3://bucket[/prefix] or ipfs"
        )

    @property
    def remote(self) -> bool:
        return self.kind != "local"

    def publish_argument(self, job_id: str, local_folder: str = "/results") -> str:
        """podtools publish's --store for one job (see podtools/publish.py)."""
        if self.kind == "s3":
            return f"s3://{self.bucket}/{self.prefix}{job_id}"
        if self.kind == "ipfs":
            return f"ipfs:{self.prefix}/{job_id}"
        return local_folder

    def holds_job_result(self, job_id: str, location: str) -> bool:
        """Whether podtools publish may have answered this location for this job."""
        if self.kind == "s3":
            return location.startswith(f"s3://{self.bucket}/{self.prefix}{job_id}/") and self.holds(location)
        return self.kind == "ipfs" and self.holds(location)

    def holds(self, location: str) -> bool:
        """Whether a result location lies in this store (an S3 store: under its prefix)."""
        if self.kind == "s3":
            bucket, key = split_s3_location(location)
            return bucket == self.bucket and key.startswith(self.prefix) and ".." not in key.split("/")
        parsed = urlparse(location)
        if self.kind == "ipfs":
            return parsed.scheme == "ipfs" and bool(_CID.fullmatch(parsed.netloc)) and parsed.path == ""
        return parsed.scheme == "file"


@dataclass(frozen=True)
class S3Credentials:
    access_key_id: str
    secret_access_key: str
    session_token: str = ""


Phase = Literal["configure", "publish"]


@dataclass(frozen=True)
class StorageSettings:
    result_store: ResultStoreTarget = field(default_factory=ResultStoreTarget)
    # The endpoint, and the key that reads s3:// inputs.
    s3: S3Settings = field(default_factory=S3Settings)
    # The key of an S3 result store (C2D_S3_RESULT_*), on the same endpoint. None: the result
    # store uses s3's key, allowed only when that key reads no inputs (see check()).
    result_credentials: S3Credentials | None = None
    ipfs: IpfsSettings = field(default_factory=IpfsSettings)
    # The most one job may publish (outputs and logs); 0: no limit beyond the environment's disk.
    result_quota_bytes: int = 0
    # Inputs: a connection silent this long is broken (the fetch then resumes where it stopped);
    # files fetched at once; all of one job's inputs together at most (0: no limit).
    input_stall_seconds: int = 60
    input_parallel_fetches: int = 4
    max_input_bytes: int = 0

    @classmethod
    def from_env(cls) -> StorageSettings:
        buckets = tuple(b.strip() for b in env_str("C2D_S3_INPUT_BUCKETS", "").split(",") if b.strip())
        for bucket in buckets:
            if bucket != "*" and not _BUCKET.fullmatch(bucket):
                raise ConfigError(f"C2D_S3_INPUT_BUCKETS: {bucket!r} is not a bucket name (or *)")
        style = env_str("C2D_S3_ADDRESSING_STYLE", "")
        if style not in ("", "path", "virtual", "auto"):
            raise ConfigError(f"C2D_S3_ADDRESSING_STYLE={style!r}: use path, virtual or auto")
        part_bytes = env_int("C2D_S3_PART_BYTES", S3Settings.part_bytes)
        if part_bytes < 5 * MiB:
            raise ConfigError("C2D_S3_PART_BYTES must be at least 5 MiB (5242880), S3's smallest part")
        result_key = env_str("C2D_S3_RESULT_ACCESS_KEY_ID", "")
        result_secret = env_str("C2D_S3_RESULT_SECRET_ACCESS_KEY", "")
        if bool(result_key) != bool(result_secret):
            raise ConfigError(
                "set both C2D_S3_RESULT_ACCESS_KEY_ID and C2D_S3_RESULT_SECRET_ACCESS_KEY, or neither"
            )
        settings = cls(
            result_credentials=(
                S3Credentials(result_key, result_secret, env_str("C2D_S3_RESULT_SESSION_TOKEN", ""))
                if result_key
                else None
            ),
            result_store=ResultStoreTarget.parse(env_str("C2D_RESULT_STORE", "local")),
            s3=S3Settings(
                endpoint_url=env_str("C2D_S3_ENDPOINT_URL", ""),
                region=env_str("C2D_S3_REGION", S3Settings.region) or S3Settings.region,
                access_key_id=env_str("C2D_S3_ACCESS_KEY_ID", ""),
                secret_access_key=env_str("C2D_S3_SECRET_ACCESS_KEY", ""),
                session_token=env_str("C2D_S3_SESSION_TOKEN", ""),
                addressing_style=style,
                input_buckets=buckets,
                part_bytes=part_bytes,
                concurrency=max(1, env_int("C2D_S3_CONCURRENCY", S3Settings.concurrency)),
            ),
            ipfs=IpfsSettings(
                api_url=env_str("C2D_IPFS_API", "").rstrip("/"),
                gateway_url=env_str("C2D_IPFS_GATEWAY", "").rstrip("/"),
                timeout_seconds=max(1, env_int("C2D_IPFS_TIMEOUT_SECONDS", IpfsSettings.timeout_seconds)),
            ),
            result_quota_bytes=max(0, env_int("C2D_RESULT_QUOTA_BYTES", 0)),
            input_stall_seconds=max(1, env_int("C2D_INPUT_STALL_SECONDS", cls.input_stall_seconds)),
            input_parallel_fetches=max(1, env_int("C2D_INPUT_PARALLEL_FETCHES", cls.input_parallel_fetches)),
            max_input_bytes=max(0, env_int("C2D_MAX_INPUT_BYTES", 0)),
        )
        settings.check()
        return settings

    def check(self) -> None:
        """What must hold at start-up; a ConfigError says what to set."""
        if self.result_store.kind == "ipfs" and not self.ipfs.api_url:
            raise ConfigError("C2D_RESULT_STORE=ipfs needs C2D_IPFS_API (the node's HTTP RPC API)")
        if bool(self.s3.access_key_id) != bool(self.s3.secret_access_key):
            raise ConfigError("set both C2D_S3_ACCESS_KEY_ID and C2D_S3_SECRET_ACCESS_KEY, or neither")
        if (
            self.result_store.kind == "s3"
            and self.s3.input_buckets
            and self.s3.access_key_id
            and self.result_credentials is None
        ):
            # Publishing would hold the key that reads every dataset, while only configuration may.
            raise ConfigError(
                "the S3 result store and the s3:// inputs (C2D_S3_INPUT_BUCKETS) would share one key: "
                "give the result store its own with C2D_S3_RESULT_ACCESS_KEY_ID and "
                "C2D_S3_RESULT_SECRET_ACCESS_KEY, so that publishing never holds the datasets' key"
            )

    @property
    def result_s3(self) -> S3Settings:
        """The S3 settings of the result store: the endpoint, with the result store's key."""
        credentials = self.result_credentials
        if credentials is None:
            return self.s3
        return replace(
            self.s3,
            access_key_id=credentials.access_key_id,
            secret_access_key=credentials.secret_access_key,
            session_token=credentials.session_token,
        )

    def input_limit(self, disk_bytes: int) -> int:
        """All of one job's inputs together at most (podtools configure's max_input_bytes): the
        job's environment's disk, or C2D_MAX_INPUT_BYTES when set and smaller; 0 for no limit.
        Without it, an input of unknown size that never ends would fill the disk."""
        limits = [limit for limit in (disk_bytes, self.max_input_bytes) if limit > 0]
        return min(limits) if limits else 0

    def podtools_env(self, phase: Phase, reads_results: bool = False) -> dict[str, str]:
        """The variables podtools read in one phase's sandbox (or pod), the same names as ours,
        with only the key that phase uses: configuration the inputs' (and, when the job reads a
        result asset from an S3 store with a key of its own, that key as C2D_S3_RESULT_* for the
        store's bucket alone), publishing the result store's. Never both keys in publishing."""
        values: dict[str, str] = {}
        if phase == "configure":
            values |= _s3_env(self.s3)
            values |= {
                "C2D_IPFS_API": self.ipfs.api_url,
                "C2D_IPFS_GATEWAY": self.ipfs.gateway_url,
                "C2D_IPFS_TIMEOUT_SECONDS": str(self.ipfs.timeout_seconds),
            }
            credentials = self.result_credentials
            if reads_results and self.result_store.kind == "s3" and credentials is not None:
                values |= {
                    "C2D_S3_RESULT_BUCKET": self.result_store.bucket,
                    "C2D_S3_RESULT_ACCESS_KEY_ID": credentials.access_key_id,
                    "C2D_S3_RESULT_SECRET_ACCESS_KEY": credentials.secret_access_key,
                    "C2D_S3_RESULT_SESSION_TOKEN": credentials.session_token,
                }
        elif self.result_store.kind == "s3":
            values |= _s3_env(self.result_s3)
        elif self.result_store.kind == "ipfs":
            values |= {
                "C2D_IPFS_API": self.ipfs.api_url,
                "C2D_IPFS_TIMEOUT_SECONDS": str(self.ipfs.timeout_seconds),
            }
        return {name: value for name, value in values.items() if value}

    def reads_result_store(self, urls: Iterable[str]) -> bool:
        """Whether some of these input URLs name the S3 result store (a result asset's files)."""
        store = self.result_store
        return store.kind == "s3" and any(split_s3_location(url)[0] == store.bucket for url in urls)

    # --- input locations --------------------------------------------------------------------------

    def check_s3_input(self, url: str) -> tuple[str, str]:
        """(bucket, key) of an s3:// input this suite may read, or StorageRefused.

        The result store holds every job's results: an input may name it only at a job's output
        stored by podtools publish, under its random publish id, which only the provider's own
        result assets can know (locations never reach consumers), whatever C2D_S3_INPUT_BUCKETS
        says (as file:// inputs may name the local result store, c2d_common/file_urls.py)."""
        store = self.result_store
        bucket, key = split_s3_location(url)
        if store.kind == "s3" and bucket == store.bucket:
            if not _plain_path(key):
                # "./", "../" or "//" could be normalised into the store's prefix on the way.
                raise StorageRefused("an s3:// key in the result store's bucket must be a plain path")
            if key.startswith(store.prefix):
                if _S3_RESULT_OUTPUT.fullmatch(key[len(store.prefix) :]):
                    return bucket, key
                raise StorageRefused("s3:// inputs may not name the result store")
        parsed = urlparse(url)
        bucket, key = parsed.netloc, parsed.path.lstrip("/")
        if not _BUCKET.fullmatch(bucket) or not key or parsed.query or parsed.fragment:
            raise StorageRefused("not an s3://bucket/key URL")
        allowed = self.s3.input_buckets
        if not allowed:
            raise StorageRefused("this provider serves no s3:// data (C2D_S3_INPUT_BUCKETS is not set)")
        if "*" not in allowed and bucket not in allowed:
            raise StorageRefused("s3:// inputs must come from the buckets in C2D_S3_INPUT_BUCKETS")
        return bucket, key

    def check_ipfs_input(self, url: str) -> str:
        """The CID (and path) of an ipfs:// input, or StorageRefused."""
        parsed = urlparse(url)
        if parsed.query or parsed.fragment or not _CID.fullmatch(parsed.netloc or ""):
            raise StorageRefused("not an ipfs://CID URL")
        segments = [s for s in parsed.path.split("/") if s]
        if any(s in (".", "..") or not _IPFS_SEGMENT.fullmatch(s) for s in segments):
            raise StorageRefused("the path after the CID is not a plain path")
        if not self.ipfs.readable:
            raise StorageRefused("this engine reads no ipfs:// data (set C2D_IPFS_GATEWAY or C2D_IPFS_API)")
        return "/".join([parsed.netloc, *segments])


def _s3_env(s3: S3Settings) -> dict[str, str]:
    return {
        "C2D_S3_ENDPOINT_URL": s3.endpoint_url,
        "C2D_S3_REGION": s3.region,
        "C2D_S3_ACCESS_KEY_ID": s3.access_key_id,
        "C2D_S3_SECRET_ACCESS_KEY": s3.secret_access_key,
        "C2D_S3_SESSION_TOKEN": s3.session_token,
        "C2D_S3_ADDRESSING_STYLE": s3.style(),
        "C2D_S3_PART_BYTES": str(s3.part_bytes),
        "C2D_S3_CONCURRENCY": str(s3.concurrency),
    }


def _plain_path(path: str) -> bool:
    return all(part not in ("", ".", "..") for part in path.split("/"))


def delete_job_results(settings: StorageSettings, job_id: str) -> None:
    """Removes whatever a job stored in a remote result store (an interrupted or failed publish,
    a stopped job). Blocking (run it in a thread); raises when the store cannot be reached."""
    store = settings.result_store
    if store.kind == "s3":
        client = settings.result_s3.client()
        prefix = f"{store.prefix}{job_id}/"
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=store.bucket, Prefix=prefix):
            keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
            if keys:
                client.delete_objects(Bucket=store.bucket, Delete={"Objects": keys, "Quiet": True})  # type: ignore[typeddict-item]
    elif store.kind == "ipfs":
        from urllib.parse import quote
        from urllib.request import Request, urlopen

        timeout = settings.ipfs.timeout_seconds
        url = (
            f"{settings.ipfs.api_url}/api/v0/files/rm?arg={quote(f'{store.prefix}/{job_id}', safe='/')}"
            f"&recursive=true&force=true&timeout={timeout}s"
        )
        try:
            with urlopen(Request(url, method="POST"), timeout=timeout + 5) as response:
                response.read()
        except OSError as exc:
            body = getattr(exc, "read", lambda: b"")()
            if b"not exist" not in body and b"not found" not in body.lower():
                raise
