"""One error family for every room; the API renders each as RFC 9457 problem+json."""

from __future__ import annotations

import re
from typing import Any

import msgspec


class LeadstreamError(Exception):
    """An error a client can act on: carries the HTTP status and a sentence that names the problem."""

    status = 400
    title = "Bad Request"

    def __init__(self, detail: str, *, status: int | None = None, **extra: object) -> None:
        super().__init__(detail)
        self.detail = detail
        if status is not None:
            self.status = status
        self.extra = extra


class NotFound(LeadstreamError):
    status = 404
    title = "Not Found"


class Conflict(LeadstreamError):
    status = 409
    title = "Conflict"


class Invalid(LeadstreamError):
    """A request that parsed but says something impossible (a validation error)."""

    status = 422
    title = "Unprocessable Content"


class Unauthorized(LeadstreamError):
    status = 401
    title = "Unauthorized"


class Gone(LeadstreamError):
    status = 410
    title = "Gone"


class Unavailable(LeadstreamError):
    """The store cannot take the request now (for example PostgreSQL is restarting); retry later."""

    status = 503
    title = "Service Unavailable"


class CatalogError(Invalid):
    """A catalog document (Get Activity Types response, custom type) that cannot be loaded."""


# -- msgspec's validation messages, said with the field and the value ------------------------------

_FIELD_MISSING_OR_UNKNOWN = re.compile(
    r"Object (missing required|contains unknown) field `([^`]+)`(?: - at `\$\.?([^`]*)`)?"
)


def describe_invalid(exc: msgspec.ValidationError, document: Any) -> tuple[str, str]:
    """msgspec's "Expected `int` >= 1 - at `$.batchSize`" → ("batchSize", "batchSize: expected `int` >= 1, got 0").

    ``document`` is what was decoded (a dict, a list…), for quoting the bad value. The field is
    "" when msgspec names none.
    """
    message = str(exc)
    found = _FIELD_MISSING_OR_UNKNOWN.match(message)
    if found:
        field = ".".join(part for part in (found.group(3), found.group(2)) if part)
        what = "required field is missing" if found.group(1) == "missing required" else "unknown field"
        return field, f"{field}: {what}"
    if " - at `$" in message:
        text, path = message.rsplit(" - at `", 1)
        field = path.rstrip("`").removeprefix("$").removeprefix(".")
        expected = text.split(", got ")[0]
        expected = expected[0].lower() + expected[1:]
        if expected.startswith("invalid"):  # msgspec quoted the value already
            return field, f"{field}: {expected}"
        return field, f"{field}: {expected}, got {value_at(document, field)!r}"
    return "", message[0].lower() + message[1:]


def value_at(document: Any, path: str) -> Any:
    """The value at ``attributes[0].name`` in ``document`` (None where there is none)."""
    for name, index in re.findall(r"([^.\[\]]+)|\[(\d+)\]", path):
        try:
            document = document[name] if name else document[int(index)]
        except (KeyError, IndexError, TypeError):
            return None
    return document


# -- every wrong field of a document, not only the first ---------------------------------------------


def every_invalid(document: dict[str, Any], struct_type: type) -> list[tuple[str, str]]:
    """(field, sentence) for each field of ``document`` that ``struct_type`` refuses: unknown,
    missing or of the wrong kind. msgspec stops at the first problem, so each field is converted
    on its own; a choice (an enum, a tagged union) lists the values it allows."""
    fields = {f.encode_name: f for f in msgspec.structs.fields(struct_type)}
    problems = [(name, f"{name}: unknown field") for name in document if name not in fields]
    for name, spec in fields.items():
        if name not in document:
            if spec.required:
                problems.append((name, f"{name}: required field is missing"))
            continue
        value = document[name]
        try:
            msgspec.convert(value, spec.type)
        except msgspec.ValidationError as exc:
            inner, sentence = describe_invalid(exc, value)
            field = f"{name}.{inner}" if inner and not inner.startswith("[") else name + inner
            sentence = sentence.removeprefix(f"{inner}: ") if inner else sentence
            if not inner and "got" not in sentence and not sentence.startswith("invalid"):
                sentence += f", got {value!r}"
            allowed = _choices(spec.type, inner)
            if allowed is not None:
                sentence = f"expected one of {', '.join(allowed)}, got {value_at(value, inner) if inner else value!r}"
            problems.append((field, f"{field}: {sentence}"))
    return problems


def _choices(field_type: Any, inner: str) -> list[str] | None:
    """The values a field allows when it is a choice: a Literal (``inner`` empty), or the tag of a
    tagged union (``inner`` is its tag field)."""
    info = msgspec.inspect.type_info(field_type)
    members = info.types if isinstance(info, msgspec.inspect.UnionType) else (info,)
    if not inner:
        values = [v for m in members if isinstance(m, msgspec.inspect.LiteralType) for v in m.values]
        return [str(v) for v in values] or None
    tags = [m.tag for m in members if isinstance(m, msgspec.inspect.StructType) and m.tag_field == inner]
    return [str(t) for t in tags] or None


def invalid_fields(problems: list[tuple[str, str]]) -> Invalid:
    """One 422 for several wrong fields: ``detail`` says them all, ``errors`` has one entry each."""
    return Invalid(
        "; ".join(sentence for _, sentence in problems),
        field=problems[0][0],
        errors=[{"field": field, "detail": sentence} for field, sentence in problems],
    )
