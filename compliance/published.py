"""What the deployment publishes about its policy: the public JSON, its schema, its signature.

The public policy is the loaded ``Policy`` as JSON, field for field, minus the fields
marked ``INTERNAL`` (the cloud region and the team's legal watch list, and the file it was
read from). Durations and deadlines appear as written (``"30d"``, ``"3bd"``). The OpenAPI
schema of that JSON is generated from the same dataclasses, so the two cannot drift.
"""

from __future__ import annotations

import functools
import types
from dataclasses import fields, is_dataclass
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

from compliance import policy as policy_module
from compliance.durations import Deadline, Duration
from compliance.policy import Policy
from compliance.signing import DeploymentKey, SignedDocument, deployment_key, sign_document


def _is_public(item: Any) -> bool:
    return bool(item.metadata.get("public", True))


def _to_json(value: Any) -> Any:
    if isinstance(value, (Duration, Deadline)):
        return str(value)
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: _to_json(getattr(value, f.name)) for f in fields(value) if _is_public(f)}
    if isinstance(value, tuple):
        return [_to_json(item) for item in value]
    return value


def public_policy(policy: Policy) -> dict[str, Any]:
    """The policy as published: JSON-ready, internal fields left out."""
    document: dict[str, Any] = _to_json(policy)
    return document


@functools.lru_cache(maxsize=8)
def _signed(policy: Policy, key: DeploymentKey) -> SignedDocument:
    return sign_document(public_policy(policy), key)


def signed_policy(policy: Policy) -> SignedDocument:
    """The public policy signed by the deployment key (computed once per policy)."""
    return _signed(policy, deployment_key())


# --- OpenAPI schema -------------------------------------------------------------------------

_DURATION_SCHEMA = {
    "type": "string",
    "pattern": r"^(0|[1-9][0-9]{0,5})(s|min|h|d|w|mo|y)$",
    "description": "a whole number and a unit: s, min, h, d, w, mo (calendar months), y",
    "example": "30d",
}
_DEADLINE_SCHEMA = {
    "type": "string",
    "pattern": r"^[1-9][0-9]{0,4}(h|d|bd|mo)$",
    "description": "a positive whole number and a unit: h, d, bd (business days), mo",
    "example": "72h",
}


def _schema_of(hint: Any) -> dict[str, Any]:
    if hint is Duration:
        return dict(_DURATION_SCHEMA)
    if hint is Deadline:
        return dict(_DEADLINE_SCHEMA)
    if hint is str:
        return {"type": "string"}
    if hint is bool:
        return {"type": "boolean"}
    if hint is int:
        return {"type": "integer"}
    origin = get_origin(hint)
    if origin is Literal:
        return {"type": "string", "enum": list(get_args(hint))}
    if origin is tuple:
        return {"type": "array", "items": _schema_of(get_args(hint)[0])}
    if origin in (Union, types.UnionType):
        options = [arg for arg in get_args(hint) if arg is not type(None)]
        if len(options) != 1:
            raise TypeError(f"no schema for {hint!r}")
        return {**_schema_of(options[0]), "nullable": True}
    if isinstance(hint, type) and is_dataclass(hint):
        return _object_schema(hint)
    raise TypeError(f"no schema for {hint!r}")


def _object_schema(cls: type) -> dict[str, Any]:
    hints = get_type_hints(cls, vars(policy_module))
    public = [f for f in fields(cls) if _is_public(f)]
    schema: dict[str, Any] = {
        "type": "object",
        "properties": {f.name: _schema_of(hints[f.name]) for f in public},
        "required": [f.name for f in public],
        "additionalProperties": False,
    }
    if cls.__doc__ and not cls.__doc__.startswith(f"{cls.__name__}("):
        schema["description"] = " ".join(cls.__doc__.split())
    return schema


def public_policy_schema() -> dict[str, Any]:
    """The OpenAPI (3.0) schema of ``public_policy``'s result."""
    return _object_schema(Policy)
