"""Shared fixtures. Stores first (one suite, both backends); add other fixtures below."""

from __future__ import annotations

import asyncio
import functools
import os
import secrets
import urllib.parse
from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest

from leadstream.store import Store, open_store

# -- stores ------------------------------------------------------------------------------------

PG_DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
PG_BASE_URL = os.environ.get("LEADSTREAM_TEST_DATABASE_URL", PG_DEFAULT_URL)
IN_CI = os.environ.get("CI") == "true"


def with_database(url: str, database: str, **query: str) -> str:
    """``url`` pointing at another database, with extra query parameters (asyncpg passes unknown
    ones, such as ``search_path``, to the server as settings)."""
    parts = urllib.parse.urlsplit(url)
    params = dict(urllib.parse.parse_qsl(parts.query)) | query
    return urllib.parse.urlunsplit(parts._replace(path="/" + database, query=urllib.parse.urlencode(params)))


async def _pg_admin(sql: str) -> None:
    conn = await asyncpg.connect(PG_BASE_URL, timeout=3)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@functools.cache
def postgres_unreachable() -> str | None:
    """Why the PostgreSQL tests cannot run here, in one line; None when they can."""
    try:
        asyncio.run(_pg_admin("SELECT 1"))
    except (TimeoutError, OSError, asyncpg.PostgresError) as exc:
        where = urllib.parse.urlsplit(PG_BASE_URL)  # shown without user or password
        return (
            f"no PostgreSQL at {where.hostname}:{where.port or 5432} ({type(exc).__name__}: {exc}); "
            "set LEADSTREAM_TEST_DATABASE_URL=postgresql://user@host:port/db to run the PostgreSQL tests"
        )
    return None


def _needs_postgres(item: pytest.Item) -> bool:
    callspec = getattr(item, "callspec", None)
    return "postgres_url" in getattr(item, "fixturenames", ()) or (
        callspec is not None and callspec.params.get("store_url") == "postgres"
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Without PostgreSQL its tests skip, folded into one summary line per file; in CI
    (CI=true) they run and fail instead (see ``postgres_url``)."""
    wanted = [item for item in items if _needs_postgres(item)]
    if wanted and not IN_CI and (reason := postgres_unreachable()):
        for item in wanted:
            item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh database for this test run, dropped at the end."""
    if reason := postgres_unreachable():
        pytest.fail(f"PostgreSQL is required here (CI=true): {reason}", pytrace=False)
    name = f"leadstream_test_{secrets.token_hex(4)}"
    asyncio.run(_pg_admin(f'CREATE DATABASE "{name}"'))
    yield with_database(PG_BASE_URL, name)
    asyncio.run(_pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
async def pg_url(postgres_url: str) -> AsyncIterator[str]:
    """The test run's database, seen through a schema of this test's own (dropped after it)."""
    database = postgres_url
    schema = f"t_{secrets.token_hex(6)}"
    conn = await asyncpg.connect(database)
    try:
        await conn.execute(f"CREATE SCHEMA {schema}")
        yield with_database(database, urllib.parse.urlsplit(database).path.lstrip("/"), search_path=schema)
        await conn.execute(f"DROP SCHEMA {schema} CASCADE")
    finally:
        await conn.close()


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    """Where a store lives: a data directory, or a PostgreSQL URL. ``open_store(store_url)`` again
    reopens the same store."""
    if request.param == "sqlite":
        return str(tmp_path_factory.mktemp("data"))
    return request.getfixturevalue("pg_url")


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[Store]:
    """An opened store of each backend, closed after the test."""
    opened = open_store(store_url, node_id="test-node")
    await opened.open()
    yield opened
    await opened.close()


# -- a real server on loopback, and an HTTP client, for the API tests --------------------------


@pytest.fixture
async def server(tmp_path):
    """The app under uvicorn on 127.0.0.1, on a fresh embedded store in tmp_path."""
    from helpers import running_server

    async with running_server(data_dir=tmp_path / "data") as running:
        yield running


@pytest.fixture
async def http():
    import aiohttp

    async with aiohttp.ClientSession() as session:
        yield session
