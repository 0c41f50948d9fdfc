"""How routes reach the running service: ``Services`` is a typed FastAPI dependency."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends
from starlette.requests import HTTPConnection

from leadstream.errors import Unavailable
from leadstream.runtime import Runtime


def runtime_of(connection: HTTPConnection) -> Runtime:
    """The service the app's lifespan built (``leadstream.runtime``)."""
    runtime: Runtime | None = getattr(connection.app.state, "runtime", None)
    if runtime is None:
        raise Unavailable("the server is starting or stopping; retry")
    return runtime


Services = Annotated[Runtime, Depends(runtime_of)]
