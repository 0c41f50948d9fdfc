"""What /openapi.json says beyond what FastAPI infers: the real error bodies, and helpers for the
answers' schemas and examples.

Every route gives its success answer with ``ok(schema, example)`` (``responses={200: ok(…)}``)
and its request body with ``body(schema, example)`` (``openapi_extra=body(…)``). ``finish``, run
once over the whole document, adds the errors every operation shares — problem+json for 400
(a body that is not JSON), 401 and 403 (key and scope), 404 (a path naming something), 409 (a
change to a subscription or source that is deprovisioned or busy), 422 (fields), 429 (ingest
rate), 503 (store unavailable) — and replaces FastAPI's ``{"detail": […]}`` 422, which the server
never answers. tests/test_openapi.py walks the
document and fails on an operation without a request or response schema or an example: a new
route needs only ``ok`` (and ``body`` if it takes one).
"""

from __future__ import annotations

import copy
from typing import Any

import msgspec

from leadstream.tenants import MUNCHKIN_RE

MUNCHKIN_PATTERN = f"^{MUNCHKIN_RE.pattern}$"
URL_PATTERN = r"^https?://[A-Za-z0-9\[]"  # http(s) with a host, as the endpoint checks want
_B64 = "[A-Za-z0-9+/]"
# A whsec_ secret of 24 to 64 key bytes, as security.signing checks it
HMAC_SECRET_PATTERN = (
    f"^whsec_(?:(?:{_B64}{{4}}){{8,20}}(?:{_B64}{{2}}==|{_B64}{{3}}=)?|(?:{_B64}{{4}}){{21}}(?:{_B64}{{2}}==)?)$"
)


def signing_rules(signing: dict[str, Any]) -> None:
    """A signing object's rules, in its schema: a valid ``hmacSecret``, or ``hmac: true``."""
    signing["properties"]["hmacSecret"] = {"type": "string", "pattern": HMAC_SECRET_PATTERN}
    signing["anyOf"] = [{"required": ["hmacSecret"]}, {"required": ["hmac"], "properties": {"hmac": {"const": True}}}]


PROBLEM_TYPE = "application/problem+json"
PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}
PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "RFC 9457 problem details, as every error of this API is answered",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string", "example": "about:blank"},
        "title": {"type": "string", "description": "the HTTP status phrase"},
        "status": {"type": "integer"},
        "detail": {"type": "string", "description": "what is wrong and how to fix it, in one sentence or several"},
        "field": {"type": "string", "description": "the first field (or parameter) at fault, when there is one"},
        "errors": {
            "type": "array",
            "description": "422: one entry per wrong field",
            "items": {
                "type": "object",
                "required": ["field", "detail"],
                "properties": {"field": {"type": "string"}, "detail": {"type": "string"}},
            },
        },
    },
    "additionalProperties": True,
}

_ERRORS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "400": ("Bad Request", "The request cannot be read (the body is not JSON, or not an object)",
            {"detail": "the body is not valid JSON: Expecting ',' delimiter", "field": "body"}),
    "401": ("Unauthorized", "No API key, or one that is unknown or revoked",
            {"detail": "missing Authorization: Bearer <key>"}),
    "403": ("Forbidden", "The key lacks the scope this needs", {"detail": "this key has no 'subscriptions' scope"}),
    "404": ("Not Found", "Nothing of that id that this key may see",
            {"detail": "no subscription 6f1c0d2e-…"}),
    "409": ("Conflict", "Not in this state (deprovisioned: it cannot change any more), or being changed by another "
            "request at this moment (retry)",
            {"detail": "the subscription is deprovisioned"}),
    "410": ("Gone", "The position has left retention", {"detail": "since: position 2000000000000000a has expired"}),
    "422": ("Unprocessable Content", "Fields that are not valid: each one named",
            {"detail": "batchSize: expected `int` <= 500, got 900", "field": "batchSize",
             "errors": [{"field": "batchSize", "detail": "batchSize: expected `int` <= 500, got 900"}]}),
    "429": ("Too Many Requests", "Over this key's ingest rate; see Retry-After",
            {"detail": "this API key is over its ingest rate (100 requests/s); retry after 1 s"}),
    "503": ("Service Unavailable", "The store cannot take the request now; retry",
            {"detail": "the server is starting or stopping; retry"}),
}  # fmt: skip


# A change to one of these is 409 when it is deprovisioned, or while other requests change it.
CHANGING_STATE = ("/v1/subscriptions/{", "/v1/sources/{")


def problem_response(status: str, description: str | None = None) -> dict[str, Any]:
    title, default_description, example = _ERRORS.get(status, ("Error", "An error", {"detail": "…"}))
    return {
        "description": description or default_description,
        "content": {
            PROBLEM_TYPE: {
                "schema": PROBLEM_REF,
                "example": {"type": "about:blank", "title": title, "status": int(status), **example},
            }
        },
    }


def ok(schema: dict[str, Any], example: Any, description: str = "OK", **extra: Any) -> dict[str, Any]:
    """A success answer for ``responses={200: ok(…)}``: its JSON schema and an example."""
    return {
        "description": description,
        "content": {"application/json": {"schema": schema, "example": example}},
        **extra,
    }


def body(schema: dict[str, Any], example: Any, description: str = "") -> dict[str, Any]:
    """A JSON request body for ``openapi_extra=body(…)``."""
    return {
        "requestBody": {
            "required": True,
            "description": description,
            "content": {"application/json": {"schema": schema, "example": example}},
        }
    }


def struct_schema(struct_type: Any) -> dict[str, Any]:
    """msgspec's JSON schema of a type with every ``$ref`` inlined (OpenAPI resolves refs against
    the whole document, not the schema)."""
    found = msgspec.json.schema(struct_type)
    return _inline(found, found.get("$defs", {}))


def _inline(schema: Any, defs: dict[str, Any]) -> Any:
    if isinstance(schema, dict):
        if "$ref" in schema:
            return _inline(defs[schema["$ref"].rsplit("/", 1)[1]], defs)
        return {k: _inline(v, defs) for k, v in schema.items() if k != "$defs"}
    if isinstance(schema, list):
        return [_inline(v, defs) for v in schema]
    return schema


def with_properties(schema: dict[str, Any], properties: dict[str, Any]) -> dict[str, Any]:
    """``schema`` (an object) with more properties: a stored thing's settings plus its status."""
    combined = copy.deepcopy(schema)
    combined.setdefault("properties", {}).update(properties)
    combined.pop("required", None)
    return combined


def list_of(name: str, item: dict[str, Any], paged: bool = True) -> dict[str, Any]:
    properties: dict[str, Any] = {name: {"type": "array", "items": item}}
    if paged:
        properties["next"] = {"type": ["string", "null"], "description": "the next page's path, absent at the end"}
    return {"type": "object", "required": [name], "properties": properties}


# -- ingest: the record shapes of each stream ---------------------------------------------------------


def ingest_body() -> dict[str, Any]:
    """The ingest request: an array (or NDJSON lines) of the records of the path's stream."""
    from leadstream.events import ActivityIn, AuditIn, CustomObjectIn, NotificationIn

    records = {
        "ActivityRecord": (ActivityIn, "stream activity: a lead activity (also lead changes, deleted leads)"),
        "CustomObjectRecord": (CustomObjectIn, 'stream activity, with "kind": "customObject": a custom-object change'),
        "AuditRecord": (AuditIn, "stream audit: a user audit event"),
        "NotificationRecord": (NotificationIn, "stream notification: a notification"),
    }
    schemas = {name: {**struct_schema(t), "title": name, "description": what} for name, (t, what) in records.items()}
    example = [
        {"munchkinId": "123-ABC-456", "marketoGUID": "3b2f0d1e", "id": 1234567890, "leadId": 1234,
         "activityDate": "2026-11-28T10:00:00Z", "activityTypeId": 10, "primaryAttributeValueId": 1234,
         "primaryAttributeValue": "Welcome Email", "campaignId": 55,
         "attributes": [{"name": "Device", "value": "iPhone"}]}
    ]  # fmt: skip
    return {
        "required": True,
        "description": "The records of the path's stream: activity takes ActivityRecord and CustomObjectRecord, "
        "audit AuditRecord, notification NotificationRecord.",
        "content": {
            "application/json": {
                "schema": {"type": "array", "maxItems": 10_000, "items": {"oneOf": list(schemas.values())}},
                "example": example,
            },
            "application/x-ndjson": {
                "schema": {"type": "string", "description": "one record (as above) per line"},
                "example": "\n".join(__import__("json").dumps(r) for r in example) + "\n",
            },
        },
    }


# -- the pass over the whole document -----------------------------------------------------------------


def finish(document: dict[str, Any]) -> dict[str, Any]:
    """Add the shared error answers to every operation, in problem+json (see the module doc)."""
    components = document.setdefault("components", {}).setdefault("schemas", {})
    components.pop("HTTPValidationError", None)
    components.pop("ValidationError", None)
    components["Problem"] = PROBLEM_SCHEMA
    for path, operations in document.get("paths", {}).items():
        for method, operation in operations.items():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            responses = operation["responses"]
            secured = operation.get("security", document.get("security")) != []
            shared: list[str] = []
            if secured:
                shared += ["401", "403", "503"]
            if "{" in path:
                shared.append("404")
            if method != "get" and path.startswith(CHANGING_STATE):
                shared.append("409")
            if operation.get("requestBody") and "application/json" in operation["requestBody"].get("content", {}):
                shared += ["400", "422"]
            elif any(p.get("in") == "query" for p in operation.get("parameters", [])):
                shared.append("422")
            for status in shared:
                responses.setdefault(status, {})
            for status, response in responses.items():
                media = response.get("content", {}).get(PROBLEM_TYPE, {})
                if status[0] in "45" and media.get("schema") != PROBLEM_REF:
                    if status == "422" and "rejected" in str(response.get("content", {})):
                        continue  # ingest: every record rejected, said record by record
                    description = response.get("description")
                    if description in (None, "Validation Error"):
                        description = None
                    responses[status] = problem_response(status, description)
    return document
