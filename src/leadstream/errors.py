"""One error family for every room; the API renders each as RFC 9457 problem+json."""

from __future__ import annotations


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
