"""Validation against the Kubernetes OpenAPI schemas that `kubernetes-validate` ships.

`kubernetes_validate.validate` reads the schema files on every call (1.4 MB of definitions);
the emulated API server validates every object it is given, so it keeps one validator per kind.
The manifest tests use the package's own `validate` as well.
"""

from __future__ import annotations

import functools
import re
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import kubernetes_validate  # type: ignore[import-untyped]
from kubernetes_validate import utils as kv_utils
from referencing import Registry, Resource

# The version the emulated API server reports and validates against: the oldest of the recent
# releases the package ships schemas for, so a field a newer release added is caught.
KUBERNETES_VERSION = "1.33.0"
LATEST_VERSION = kubernetes_validate.latest_version()


@functools.cache
def _validator(kind: str, api_version: str, version: str) -> jsonschema.protocols.Validator:
    schema_dir = f"v{version}-local-strict"
    group_version = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
    schema = kv_utils.schema_contents(
        f"kubernetes-json-schema/{schema_dir}/{kind.lower()}-{group_version}.json", version
    )
    definitions = kv_utils.schema_contents(f"kubernetes-json-schema/{schema_dir}/_definitions.json", version)
    registry: Registry[Any] = Resource.from_contents(schema) @ Registry()
    registry = Resource.from_contents(definitions) @ registry
    return jsonschema.validators.Draft202012Validator(schema, registry=registry)


def schema_errors(manifest: dict[str, Any], version: str = KUBERNETES_VERSION) -> list[str]:
    """What the strict schema finds wrong with the manifest (empty: valid)."""
    validator = _validator(manifest["kind"], manifest["apiVersion"], version)
    return [
        f"{'.'.join(str(p) for p in error.absolute_path) or '<root>'}: {error.message}"
        for error in validator.iter_errors(manifest)
    ]
