"""An API server for tests that speaks the REST and watch protocol the official client uses.

A subclass of kmock's KubernetesEmulator (kmock 0.8): kmock serves it over real HTTP on
127.0.0.1 (kmock.Server), answers discovery, and keeps unknown paths as Kubernetes errors. The
resources a job uses are served by this class itself, closing kmock's gaps (see FINDINGS.md):

- namespaces (the path's namespace fills metadata.namespace; a missing namespace is 404),
  and kmock's path parser, which cannot parse /api/v1/namespaces at all;
- uid, resourceVersion (one counter for everything, as etcd's revision), creationTimestamp;
- 201 on create, 409 AlreadyExists, 404 NotFound, 422 Invalid (every object is validated against
  the strict OpenAPI schema), 403 Forbidden from Pod Security admission ("restricted") in a
  namespace labelled for it;
- labelSelector (=, ==, !=, exists, !exists, in, notin) and fieldSelector on list, watch and
  deletecollection (which answers the objects it deleted, as the real one does);
- watch from a resourceVersion (the kept history is replayed), timeoutSeconds, bookmarks, and
  410 Gone for a version older than the kept history (compact() forgets it, as etcd does);
- the pod log subresource (follow, tailLines, sinceSeconds, limitBytes), served from a log
  source (the test kubelet).

Pods never change by themselves here: tests/k8s/kubelet.py runs them and writes their status.
There is no garbage collector: deleting an owner leaves the objects whose ownerReferences name it.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import json
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import aiohttp.web
import attrs
import kmock

from tests.k8s.schemas import KUBERNETES_VERSION, schema_errors

# (group, version, plural) -> (kind, namespaced)
RESOURCES: dict[tuple[str, str, str], tuple[str, bool]] = {
    ("", "v1", "namespaces"): ("Namespace", False),
    ("", "v1", "pods"): ("Pod", True),
    ("", "v1", "persistentvolumeclaims"): ("PersistentVolumeClaim", True),
    ("", "v1", "secrets"): ("Secret", True),
    ("", "v1", "configmaps"): ("ConfigMap", True),
    ("networking.k8s.io", "v1", "networkpolicies"): ("NetworkPolicy", True),
}
# Deleting these answers the object itself; the others answer a Status.
_DELETE_ANSWERS_OBJECT = frozenset({"pods", "persistentvolumeclaims", "namespaces"})
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?")
_LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")
HISTORY_LIMIT = 10_000

Key = tuple[str, str, str]  # (plural, namespace or "", name)


@dataclass(frozen=True)
class Route:
    group: str
    version: str
    plural: str
    namespace: str | None
    name: str | None
    subresource: str | None

    @property
    def kind(self) -> str:
        return RESOURCES[(self.group, self.version, self.plural)][0]

    @property
    def namespaced(self) -> bool:
        return RESOURCES[(self.group, self.version, self.plural)][1]

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version


def parse_route(path: str) -> Route | None:
    parts = [p for p in path.split("/") if p]
    if len(parts) >= 3 and parts[0] == "api":
        group, version, rest = "", parts[1], parts[2:]
    elif len(parts) >= 4 and parts[0] == "apis":
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        return None
    namespace = None
    if rest[0] == "namespaces" and len(rest) >= 3:
        namespace, rest = rest[1], rest[2:]
    plural = rest[0]
    if (group, version, plural) not in RESOURCES:
        return None
    name = rest[1] if len(rest) > 1 else None
    subresource = "/".join(rest[2:]) or None
    return Route(group, version, plural, namespace, name, subresource)


# --- selectors ------------------------------------------------------------------------------------


def _split_selector(selector: str) -> list[str]:
    terms, depth, current = [], 0, ""
    for char in selector:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            terms.append(current.strip())
            current = ""
        else:
            current += char
    if current.strip():
        terms.append(current.strip())
    return terms


class BadSelector(ValueError):
    pass


def _label_test(key: str, op: str, values: frozenset[str] = frozenset()) -> Callable[[dict[str, str]], bool]:
    def test(labels: dict[str, str]) -> bool:
        if op == "in":
            return labels.get(key) in values
        if op == "notin":
            return labels.get(key) not in values
        if op == "=":
            return labels.get(key) in values
        if op == "!=":
            return labels.get(key) not in values
        if op == "exists":
            return key in labels
        return key not in labels  # "!exists"

    return test


def label_matcher(selector: str) -> Callable[[dict[str, str]], bool]:
    tests: list[Callable[[dict[str, str]], bool]] = []
    for term in _split_selector(selector):
        if match := re.fullmatch(r"([^\s!=]+)\s+(in|notin)\s+\(([^)]*)\)", term):
            tests.append(_label_test(match[1], match[2], frozenset(v.strip() for v in match[3].split(","))))
        elif match := re.fullmatch(r"([^\s!=]+)\s*!=\s*([^\s,]*)", term):
            tests.append(_label_test(match[1], "!=", frozenset({match[2]})))
        elif match := re.fullmatch(r"([^\s!=]+)\s*==?\s*([^\s,]*)", term):
            tests.append(_label_test(match[1], "=", frozenset({match[2]})))
        elif match := re.fullmatch(r"!([^\s!=]+)", term):
            tests.append(_label_test(match[1], "!exists"))
        elif re.fullmatch(r"[^\s!=(),]+", term):
            tests.append(_label_test(term, "exists"))
        else:
            raise BadSelector(f"unable to parse requirement: {term!r}")
    return lambda labels: all(test(labels) for test in tests)


_FIELDS: dict[str, Callable[[dict[str, Any]], str]] = {
    "metadata.name": lambda o: o["metadata"].get("name", ""),
    "metadata.namespace": lambda o: o["metadata"].get("namespace", ""),
    "status.phase": lambda o: (o.get("status") or {}).get("phase", ""),
    "spec.nodeName": lambda o: (o.get("spec") or {}).get("nodeName", ""),
}


def _field_test(
    read: Callable[[dict[str, Any]], str], negate: bool, value: str
) -> Callable[[dict[str, Any]], bool]:
    return lambda obj: (read(obj) == value) != negate


def field_matcher(selector: str) -> Callable[[dict[str, Any]], bool]:
    tests: list[Callable[[dict[str, Any]], bool]] = []
    for term in _split_selector(selector):
        match = re.fullmatch(r"([a-zA-Z.]+)\s*(!=|==|=)\s*(.*)", term)
        if match is None or match[1] not in _FIELDS:
            raise BadSelector(f"field label not supported: {term!r}")
        tests.append(_field_test(_FIELDS[match[1]], match[2] == "!=", match[3]))
    return lambda obj: all(test(obj) for test in tests)


# --- Pod Security admission -----------------------------------------------------------------------

_RESTRICTED_VOLUMES = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
}


def restricted_violations(pod: dict[str, Any]) -> list[str]:
    """The Pod Security Standards' "restricted" profile, as its admission plugin checks it."""
    spec = pod.get("spec", {})
    pod_security = spec.get("securityContext") or {}
    found = []
    for host in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(host):
            found.append(f"{host}=true")
    for volume in spec.get("volumes", []):
        kinds = set(volume) - {"name"}
        if not kinds <= _RESTRICTED_VOLUMES:
            found.append(f"restricted volume types (volume {volume['name']!r} uses {sorted(kinds)})")
    containers = [*spec.get("initContainers", []), *spec.get("containers", [])]
    for container in containers:
        security = container.get("securityContext") or {}
        name = container["name"]
        if security.get("privileged"):
            found.append(f"privileged (container {name!r})")
        if security.get("allowPrivilegeEscalation") is not False:
            found.append(f"allowPrivilegeEscalation != false (container {name!r})")
        capabilities = security.get("capabilities") or {}
        if "ALL" not in capabilities.get("drop", []):
            found.append(f"unrestricted capabilities (container {name!r} must drop ALL)")
        if set(capabilities.get("add", [])) - {"NET_BIND_SERVICE"}:
            found.append(f"unrestricted capabilities (container {name!r} adds some)")
        if not security.get("runAsNonRoot", pod_security.get("runAsNonRoot")):
            found.append(f"runAsNonRoot != true (container {name!r})")
        if security.get("runAsUser", pod_security.get("runAsUser")) == 0:
            found.append(f"runAsUser=0 (container {name!r})")
        seccomp = (security.get("seccompProfile") or pod_security.get("seccompProfile") or {}).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            found.append(f"seccompProfile (container {name!r} must use RuntimeDefault or Localhost)")
        if any(p.get("hostPort") for p in container.get("ports", [])):
            found.append(f"hostPort (container {name!r})")
    return found


# --- the server -----------------------------------------------------------------------------------


class LogSource(Protocol):
    """What serves pod logs (the test kubelet)."""

    def log_state(self, namespace: str, pod: str, container: str) -> str | None:
        """None when the container has started (its log can be read), else why not."""

    def log_chunks(
        self, namespace: str, pod: str, container: str, follow: bool, since: float | None
    ) -> AsyncIterator[bytes]:
        """The log's pieces; with follow, until the container has ended."""


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _status(code: int, reason: str, message: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Status",
        "metadata": {},
        "status": "Success" if code < 400 else "Failure",
        "message": message,
        "reason": reason,
        "details": details or {},
        "code": code,
    }


class ApiError(Exception):
    def __init__(self, code: int, reason: str, message: str):
        super().__init__(message)
        self.code, self.reason, self.message = code, reason, message


@attrs.define(kw_only=True)
class ApiServer(kmock.KubernetesEmulator):
    store: dict[Key, dict[str, Any]] = attrs.field(factory=dict, init=False)
    revision: int = attrs.field(default=1, init=False)
    # Watches from a resourceVersion older than this answer 410 Gone.
    compacted: int = attrs.field(default=0, init=False)
    history: list[tuple[int, str, dict[str, Any]]] = attrs.field(factory=list, init=False)
    log_source: LogSource | None = attrs.field(default=None, init=False)
    # Every request: (method, path, query) — for assertions on what a client did.
    calls: list[tuple[str, str, dict[str, str]]] = attrs.field(factory=list, init=False)
    # For each 410 Gone sent on a watch: how many requests had come by then (an index in calls).
    gone_at: list[int] = attrs.field(factory=list, init=False)
    # Admission hooks a test may add: called with (route, object); raise ApiError to refuse.
    admission: list[Callable[[Route, dict[str, Any]], None]] = attrs.field(factory=list, init=False)
    # Faults a test may inject: called with (verb, route) for every request RBAC allows, before
    # it is served; raise ApiError to fail it (the API server or etcd having a bad moment).
    faults: list[Callable[[str, Route], None]] = attrs.field(factory=list, init=False)
    storage_classes: set[str] = attrs.field(factory=lambda: {"standard"}, init=False)
    # RBAC as the client's ServiceAccount has it: a Role's namespace and rules (None: anything
    # goes). Every request it allows is recorded in rbac_used as (group, resource, verb).
    rbac: tuple[str, list[dict[str, Any]]] | None = attrs.field(default=None, init=False)
    rbac_used: set[tuple[str, str, str]] = attrs.field(factory=set, init=False)
    rbac_denied: list[str] = attrs.field(factory=list, init=False)
    _subscribers: set[asyncio.Queue[tuple[int, str, dict[str, Any]] | None]] = attrs.field(
        factory=set, init=False
    )
    _watch_stop: asyncio.Event = attrs.field(factory=asyncio.Event, init=False)

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        for (group, version, plural), (kind, namespaced) in RESOURCES.items():
            key = f"{group}/{version}/{plural}" if group else f"{version}/{plural}"
            self.resources[key] = kmock.ResourceInfo(
                kind=kind,
                namespaced=namespaced,
                verbs={"create", "get", "list", "watch", "delete", "deletecollection", "patch"},
                subresources={"log", "status"} if plural == "pods" else set(),
            )
        self.store[("namespaces", "", "default")] = self._stamp(
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}}
        )

    # --- state helpers (also used by the kubelet and by tests) ------------------------------------

    def _stamp(self, obj: dict[str, Any]) -> dict[str, Any]:
        self.revision += 1
        meta = obj.setdefault("metadata", {})
        meta.setdefault("uid", str(uuid.uuid4()))
        meta.setdefault("creationTimestamp", _now())
        meta["resourceVersion"] = str(self.revision)
        return obj

    def _publish(self, plural: str, kind: str, obj: dict[str, Any]) -> None:
        event = (self.revision, plural, {"type": kind, "object": copy.deepcopy(obj)})
        self.history.append(event)
        if len(self.history) > HISTORY_LIMIT:
            dropped = self.history[: len(self.history) - HISTORY_LIMIT]
            self.compacted = max(self.compacted, dropped[-1][0] + 1)
            del self.history[: len(dropped)]
        for queue in self._subscribers:
            queue.put_nowait(event)

    def subscribe(self) -> asyncio.Queue[tuple[int, str, dict[str, Any]] | None]:
        """Every change from now on, in order: (revision, plural, {"type", "object"})."""
        queue: asyncio.Queue[tuple[int, str, dict[str, Any]] | None] = asyncio.Queue()
        self._subscribers.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[Any]) -> None:
        self._subscribers.discard(queue)

    def read(self, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        obj = self.store.get((plural, namespace, name))
        return copy.deepcopy(obj) if obj is not None else None

    def select(
        self, plural: str, namespace: str | None = None, label_selector: str = ""
    ) -> list[dict[str, Any]]:
        matches = label_matcher(label_selector) if label_selector else (lambda labels: True)
        return [
            copy.deepcopy(obj)
            for (p, ns, _), obj in sorted(self.store.items())
            if p == plural
            and (namespace is None or ns == namespace)
            and matches(obj["metadata"].get("labels") or {})
        ]

    def write(self, plural: str, obj: dict[str, Any]) -> dict[str, Any]:
        """Creates or replaces an object directly (test set-up, the kubelet's status writes)."""
        meta = obj["metadata"]
        key = (plural, meta.get("namespace", ""), meta["name"])
        existed = key in self.store
        self.store[key] = self._stamp(copy.deepcopy(obj))
        self._publish(plural, "MODIFIED" if existed else "ADDED", self.store[key])
        return copy.deepcopy(self.store[key])

    def update_pod_status(
        self, namespace: str, name: str, status: dict[str, Any], spec: dict[str, Any] | None = None
    ) -> bool:
        """Writes a pod's status (and spec fields such as nodeName), as the kubelet's PATCH does.
        False when the pod is gone."""
        obj = self.store.get(("pods", namespace, name))
        if obj is None:
            return False
        obj["status"] = copy.deepcopy(status)
        if spec:
            obj["spec"].update(copy.deepcopy(spec))
        self._stamp(obj)
        self._publish("pods", "MODIFIED", obj)
        return True

    def remove(self, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        obj = self.store.pop((plural, namespace, name), None)
        if obj is None:
            return None
        obj["metadata"]["deletionTimestamp"] = _now()
        self._stamp(obj)
        self._publish(plural, "DELETED", obj)
        if plural == "namespaces":
            for key in [k for k in self.store if k[1] == name]:
                self.remove(key[0], key[1], key[2])
        return obj

    def compact(self) -> None:
        """Forgets the history, as etcd's compaction does, and ends every open watch: a client
        that watches again from the version it last saw is answered 410 Gone."""
        self.revision += 1
        self.compacted = self.revision
        self.history.clear()
        self._watch_stop.set()
        self._watch_stop = asyncio.Event()

    # --- HTTP -------------------------------------------------------------------------------------

    async def __call__(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        self.calls.append((raw_request.method, raw_request.path, dict(raw_request.query)))
        if raw_request.path.rstrip("/") == "/version":  # the client asks for /version/
            return aiohttp.web.json_response(self.version_info())
        route = parse_route(raw_request.path)
        if route is None:
            # Discovery, /version and unknown paths: kmock's own handling.
            return await super().__call__(raw_request)
        try:
            verb = self._verb(raw_request, route)
            self._authorize(verb, route)
            for fault in self.faults:
                fault(verb, route)
            return await self._serve(raw_request, route)
        except ApiError as exc:
            return aiohttp.web.json_response(_status(exc.code, exc.reason, exc.message), status=exc.code)
        except BadSelector as exc:
            return aiohttp.web.json_response(_status(400, "BadRequest", str(exc)), status=400)

    async def _serve_server_version(self, request: kmock.Request) -> dict[str, str]:
        return self.version_info()

    @staticmethod
    def version_info() -> dict[str, str]:
        major, minor, _ = KUBERNETES_VERSION.split(".")
        return {
            "major": major,
            "minor": minor,
            "gitVersion": f"v{KUBERNETES_VERSION}+c2d-test",
            "gitCommit": "0" * 40,
            "gitTreeState": "clean",
            "buildDate": "2026-01-01T00:00:00Z",
            "goVersion": "go1.24",
            "compiler": "gc",
            "platform": "linux/amd64",
        }

    @staticmethod
    def _verb(raw: aiohttp.web.BaseRequest, route: Route) -> str:
        """The request's verb, as RBAC names it."""
        if raw.method == "GET":
            return "get" if route.name else ("watch" if raw.query.get("watch") in ("true", "1") else "list")
        if raw.method == "DELETE":
            return "delete" if route.name else "deletecollection"
        return {"POST": "create", "PUT": "update", "PATCH": "patch"}.get(raw.method, "")

    def _authorize(self, verb: str, route: Route) -> None:
        if self.rbac is None:
            return
        resource = f"{route.plural}/{route.subresource}" if route.subresource else route.plural
        namespace, rules = self.rbac
        allowed = route.namespace == namespace and any(
            route.group in rule.get("apiGroups", [])
            and resource in rule.get("resources", [])
            and verb in rule.get("verbs", [])
            for rule in rules
        )
        if not allowed:
            self.rbac_denied.append(f"{verb} {resource} in {route.namespace}")
            raise ApiError(
                403,
                "Forbidden",
                f'{resource} is forbidden: User "system:serviceaccount:c2d:c2d-engine" cannot {verb} '
                f'resource "{resource}" in API group "{route.group}" in the namespace "{route.namespace}"',
            )
        self.rbac_used.add((route.group, resource, verb))

    async def _serve(self, raw: aiohttp.web.BaseRequest, route: Route) -> aiohttp.web.StreamResponse:
        query = raw.query
        if route.namespaced and route.namespace is None and raw.method != "GET":
            raise ApiError(
                405, "MethodNotAllowed", "the server does not allow this method on the requested resource"
            )
        if route.subresource == "log" and route.plural == "pods" and raw.method == "GET":
            return await self._stream_log(raw, route)
        if route.subresource is not None:
            raise ApiError(
                404, "NotFound", f"the server could not find the requested resource ({route.subresource})"
            )
        if raw.method == "GET" and route.name is None:
            if query.get("watch") in ("true", "1"):
                return await self._stream_watch(raw, route)
            return self._json(self._list_body(route, query))
        if raw.method == "GET":
            return self._json(self._fetch(route))
        if raw.method == "POST" and route.name is None:
            return self._json(self._create(route, await self._body(raw)), 201)
        if raw.method == "DELETE" and route.name is None:
            return self._json(self._delete_collection(route, query))
        if raw.method == "DELETE":
            return self._json(self._delete(route))
        if raw.method == "PATCH":
            return self._json(self._patch(route, await self._body(raw)))
        raise ApiError(405, "MethodNotAllowed", f"{raw.method} is not served here")

    @staticmethod
    def _json(body: dict[str, Any], status: int = 200) -> aiohttp.web.Response:
        return aiohttp.web.json_response(body, status=status)

    @staticmethod
    async def _body(raw: aiohttp.web.BaseRequest) -> dict[str, Any]:
        try:
            body = json.loads(await raw.read() or b"null")
        except ValueError:
            raise ApiError(400, "BadRequest", "the body is not JSON") from None
        if not isinstance(body, dict):
            raise ApiError(400, "BadRequest", "the body is not a JSON object")
        return body

    def _key(self, route: Route, name: str) -> Key:
        return (route.plural, route.namespace or "", name)

    def _require_namespace(self, route: Route) -> None:
        if route.namespaced and ("namespaces", "", route.namespace or "") not in self.store:
            raise ApiError(404, "NotFound", f'namespaces "{route.namespace}" not found')

    def _matcher(self, query: Any) -> Callable[[dict[str, Any]], bool]:
        labels = label_matcher(query["labelSelector"]) if query.get("labelSelector") else None
        fields = field_matcher(query["fieldSelector"]) if query.get("fieldSelector") else None

        def matches(obj: dict[str, Any]) -> bool:
            if labels is not None and not labels(obj["metadata"].get("labels") or {}):
                return False
            return fields is None or fields(obj)

        return matches

    def _in_scope(self, route: Route, key: Key) -> bool:
        return key[0] == route.plural and (route.namespace is None or key[1] == route.namespace)

    def _list_body(self, route: Route, query: Any) -> dict[str, Any]:
        matches = self._matcher(query)
        items = [
            copy.deepcopy(obj)
            for key, obj in sorted(self.store.items())
            if self._in_scope(route, key) and matches(obj)
        ]
        return {
            "apiVersion": route.api_version,
            "kind": f"{route.kind}List",
            "metadata": {"resourceVersion": str(self.revision)},
            "items": items,
        }

    def _fetch(self, route: Route) -> dict[str, Any]:
        assert route.name is not None
        obj = self.store.get(self._key(route, route.name))
        if obj is None:
            raise ApiError(404, "NotFound", f'{route.plural} "{route.name}" not found')
        return copy.deepcopy(obj)

    def _create(self, route: Route, obj: dict[str, Any]) -> dict[str, Any]:
        self._require_namespace(route)
        # The server knows both from the path; a client may leave them out, not contradict them.
        obj.setdefault("kind", route.kind)
        obj.setdefault("apiVersion", route.api_version)
        if obj.get("kind") != route.kind or obj.get("apiVersion") != route.api_version:
            raise ApiError(400, "BadRequest", f"the object is not a {route.api_version} {route.kind}")
        meta = obj.setdefault("metadata", {})
        if route.namespaced:
            if meta.get("namespace", route.namespace) != route.namespace:
                raise ApiError(
                    400,
                    "BadRequest",
                    "the namespace of the provided object does not match the namespace sent on the request",
                )
            meta["namespace"] = route.namespace
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
        name = meta.get("name", "")
        if (
            not _DNS_SUBDOMAIN.fullmatch(name)
            or len(name) > 253
            or (route.plural == "pods" and len(name) > 63)
        ):
            raise ApiError(422, "Invalid", f'{route.kind} "{name}" is invalid: metadata.name: Invalid value')
        for label, value in (meta.get("labels") or {}).items():
            if not _LABEL_VALUE.fullmatch(value) or len(value) > 63:
                raise ApiError(422, "Invalid", f"metadata.labels: Invalid value: {label}={value!r}")
        for field in ("uid", "resourceVersion", "creationTimestamp", "deletionTimestamp"):
            meta.pop(field, None)
        if route.kind == "Secret" and "stringData" in obj:
            data = obj.setdefault("data", {})
            for k, v in obj.pop("stringData").items():
                data[k] = base64.b64encode(v.encode()).decode()
        errors = schema_errors(obj)
        if errors:
            raise ApiError(422, "Invalid", f'{route.kind} "{name}" is invalid: ' + "; ".join(errors[:5]))
        if route.kind == "Pod":
            self._admit_pod(route, obj)
        for hook in self.admission:
            hook(route, obj)
        key = self._key(route, name)
        if key in self.store:
            raise ApiError(409, "AlreadyExists", f'{route.plural} "{name}" already exists')
        if route.kind == "Pod":
            obj["status"] = {"phase": "Pending", "qosClass": _qos_class(obj)}
        elif route.kind == "PersistentVolumeClaim":
            storage_class = obj["spec"].get("storageClassName") or "standard"
            bound = storage_class in self.storage_classes
            obj["spec"]["storageClassName"] = storage_class
            obj["status"] = {"phase": "Bound" if bound else "Pending"}
        elif route.kind == "Namespace":
            obj["status"] = {"phase": "Active"}
            meta.setdefault("labels", {})["kubernetes.io/metadata.name"] = name
        self.store[key] = self._stamp(obj)
        self._publish(route.plural, "ADDED", obj)
        return copy.deepcopy(obj)

    def _admit_pod(self, route: Route, pod: dict[str, Any]) -> None:
        namespace = self.store.get(("namespaces", "", route.namespace or ""), {})
        level = (namespace.get("metadata", {}).get("labels") or {}).get("pod-security.kubernetes.io/enforce")
        if level == "restricted":
            violations = restricted_violations(pod)
            if violations:
                raise ApiError(
                    403,
                    "Forbidden",
                    f'pods "{pod["metadata"]["name"]}" is forbidden: violates PodSecurity '
                    f'"restricted:latest": {", ".join(violations)}',
                )

    def _delete(self, route: Route) -> dict[str, Any]:
        assert route.name is not None
        obj = self.remove(route.plural, route.namespace or "", route.name)
        if obj is None:
            raise ApiError(404, "NotFound", f'{route.plural} "{route.name}" not found')
        if route.plural in _DELETE_ANSWERS_OBJECT:
            return obj
        return _status(200, "", "", {"name": route.name, "kind": route.plural, "uid": obj["metadata"]["uid"]})

    def _delete_collection(self, route: Route, query: Any) -> dict[str, Any]:
        """Answers the list of what it deleted, as a real API server does (for Secrets, their
        data: deletecollection on Secrets is a right to read them)."""
        matches = self._matcher(query)
        deleted = [
            self.remove(*key)
            for key in sorted(k for k, o in self.store.items() if self._in_scope(route, k) and matches(o))
        ]
        return {
            "apiVersion": route.api_version,
            "kind": f"{route.kind}List",
            "metadata": {"resourceVersion": str(self.revision)},
            "items": [obj for obj in deleted if obj is not None],
        }

    def _patch(self, route: Route, patch: dict[str, Any]) -> dict[str, Any]:
        assert route.name is not None
        key = self._key(route, route.name)
        obj = self.store.get(key)
        if obj is None:
            raise ApiError(404, "NotFound", f'{route.plural} "{route.name}" not found')
        merged = _merge_patch(copy.deepcopy(obj), patch)
        errors = schema_errors(merged)
        if errors:
            raise ApiError(422, "Invalid", "; ".join(errors[:5]))
        self.store[key] = self._stamp(merged)
        self._publish(route.plural, "MODIFIED", merged)
        return copy.deepcopy(merged)

    async def _stream_watch(self, raw: aiohttp.web.BaseRequest, route: Route) -> aiohttp.web.StreamResponse:
        query = raw.query
        matches = self._matcher(query)
        version = query.get("resourceVersion", "")
        timeout = float(query.get("timeoutSeconds") or 1800)
        bookmarks = query.get("allowWatchBookmarks") in ("true", "1")
        stop = self._watch_stop
        queue = self.subscribe()  # before the snapshot: nothing falls between the two
        response = aiohttp.web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(raw)

        async def send(event: dict[str, Any]) -> None:
            await response.write(json.dumps(event).encode() + b"\n")

        try:
            sent = 0
            if version in ("", "0"):
                for key, obj in sorted(self.store.items()):
                    if self._in_scope(route, key) and matches(obj):
                        await send({"type": "ADDED", "object": copy.deepcopy(obj)})
                sent = self.revision
            else:
                start = int(version) if version.isdigit() else -1
                if start < self.compacted:
                    self.gone_at.append(len(self.calls))
                    await send(
                        {
                            "type": "ERROR",
                            "object": _status(
                                410, "Expired", f"too old resource version: {version} ({self.compacted})"
                            ),
                        }
                    )
                    return response
                sent = start
                for revision, plural, event in list(self.history):
                    if (
                        revision > sent
                        and plural == route.plural
                        and self._event_matches(route, event, matches)
                    ):
                        await send(event)
                        sent = revision
            deadline = time.monotonic() + timeout
            stopped = asyncio.ensure_future(stop.wait())
            try:
                while (remaining := deadline - time.monotonic()) > 0:
                    getter = asyncio.ensure_future(queue.get())
                    done, _ = await asyncio.wait(
                        {getter, stopped}, timeout=remaining, return_when=asyncio.FIRST_COMPLETED
                    )
                    if getter not in done:
                        getter.cancel()
                        break
                    item = getter.result()
                    if item is None:
                        break
                    revision, plural, event = item
                    if (
                        revision <= sent
                        or plural != route.plural
                        or not self._event_matches(route, event, matches)
                    ):
                        continue
                    await send(event)
                    sent = revision
                if bookmarks and not stopped.done():
                    await send(
                        {
                            "type": "BOOKMARK",
                            "object": {
                                "apiVersion": route.api_version,
                                "kind": route.kind,
                                "metadata": {"resourceVersion": str(max(sent, self.revision))},
                            },
                        }
                    )
            finally:
                stopped.cancel()
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self.unsubscribe(queue)
        with contextlib.suppress(ConnectionResetError, RuntimeError):
            await response.write_eof()
        return response

    def _event_matches(
        self, route: Route, event: dict[str, Any], matches: Callable[[dict[str, Any]], bool]
    ) -> bool:
        obj = event["object"]
        namespace = obj["metadata"].get("namespace", "")
        return (route.namespace is None or namespace == route.namespace) and matches(obj)

    async def _stream_log(self, raw: aiohttp.web.BaseRequest, route: Route) -> aiohttp.web.StreamResponse:
        assert route.name is not None and route.namespace is not None
        pod = self._fetch(route)
        query = raw.query
        containers = [c["name"] for c in pod["spec"]["containers"]]
        all_containers = [c["name"] for c in pod["spec"].get("initContainers", [])] + containers
        container = query.get("container")
        if container is None:
            if len(containers) != 1:
                raise ApiError(400, "BadRequest", f"a container name must be specified for pod {route.name}")
            container = containers[0]
        if container not in all_containers:
            raise ApiError(400, "BadRequest", f"container {container} is not valid for pod {route.name}")
        source = self.log_source
        state = (
            "ContainerCreating"
            if source is None
            else source.log_state(route.namespace, route.name, container)
        )
        if state is not None:
            raise ApiError(
                400,
                "BadRequest",
                f'container "{container}" in pod "{route.name}" is waiting to start: {state}',
            )
        assert source is not None
        follow = query.get("follow") in ("true", "1")
        since = float(query["sinceSeconds"]) if query.get("sinceSeconds") else None
        tail = int(query["tailLines"]) if query.get("tailLines") else None
        limit = int(query["limitBytes"]) if query.get("limitBytes") else None
        response = aiohttp.web.StreamResponse(headers={"Content-Type": "text/plain"})
        await response.prepare(raw)
        chunks = source.log_chunks(route.namespace, route.name, container, follow, since)
        try:
            if tail is not None:
                data = b"".join([c async for c in chunks])
                lines = data.splitlines(keepends=True)
                await response.write(b"".join(lines[-tail:] if tail else [])[: limit or None])
            else:
                written = 0
                async for chunk in chunks:
                    if limit is not None:
                        chunk = chunk[: max(0, limit - written)]
                    if chunk:
                        await response.write(chunk)
                        written += len(chunk)
                    if limit is not None and written >= limit:
                        break
            await response.write_eof()
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        return response


def _qos_class(pod: dict[str, Any]) -> str:
    resources = [c.get("resources") or {} for c in pod["spec"]["containers"]]
    if all(r.get("limits") and r.get("requests") == r.get("limits") for r in resources):
        return "Guaranteed"
    if any(r.get("limits") or r.get("requests") for r in resources):
        return "Burstable"
    return "BestEffort"


def _merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch (strategic merge patches are taken as merge patches)."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if not isinstance(target, dict):
        target = {}
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        else:
            target[key] = _merge_patch(target.get(key), value)
    return target
