"""A small client of leadstream's HTTP API, for the CLI, the demo and the benchmark."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from leadstream.settings import Settings

_DEFAULTS = Settings.model_construct()  # the defaults alone: no environment read, nothing checked
DEFAULT_URL = f"http://{_DEFAULTS.host}:{_DEFAULTS.port}"  # where `leadstream serve` listens by default
LOCAL_KEY_FILE = _DEFAULTS.data_dir / "admin.key"  # where it keeps the operator key it generated


class ApiError(Exception):
    """An answer other than 2xx, or no answer: ``str()`` is one line a person can act on."""

    def __init__(self, message: str, status: int | None = None, body: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.body = body


def operator_key(given: str | None = None, key_file: Path = LOCAL_KEY_FILE) -> str | None:
    """The key to call the API with: ``given`` (``--key``), else LEADSTREAM_ADMIN_KEY, else the key a
    local `leadstream serve` generated in its default data directory; None when there is none."""
    key = given or os.environ.get("LEADSTREAM_ADMIN_KEY")
    if key:
        return key
    return key_file.read_text().strip() if key_file.exists() else None


class Client:
    def __init__(self, url: str = DEFAULT_URL, key: str | None = None, *, timeout: float = 60.0) -> None:
        self.url = url.rstrip("/")
        self.key = key
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Client:
        headers = {"Authorization": f"Bearer {self.key}"} if self.key else {}
        self._session = aiohttp.ClientSession(headers=headers, timeout=self._timeout)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._session is not None
        await self._session.close()

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        data: bytes | None = None,
        headers: dict[str, str] | None = None,
        ok: tuple[int, ...] = (),
        with_status: bool = False,
    ) -> Any:
        """The decoded answer; with ``with_status``, (status, headers, decoded answer) — for a 204 too."""
        assert self._session is not None, "use 'async with Client(…)'"
        if json is not None:
            data, headers = orjson.dumps(json), {"Content-Type": "application/json", **(headers or {})}
        try:
            async with self._session.request(method, self.url + path, data=data, headers=headers) as response:
                raw = await response.read()
                is_json = raw and "json" in (response.content_type or "")
                body = orjson.loads(raw) if is_json else raw.decode(errors="replace")
                if response.status >= 300 and response.status not in ok:
                    detail = body.get("detail") if isinstance(body, dict) else None
                    if detail is None and isinstance(body, dict) and "rejected" in body:
                        detail = f"every record was rejected ({len(body['rejected'])})"
                    message = f"{response.status} {response.reason}: {detail or body or 'no details'}"
                    raise ApiError(message, response.status, body)
                return (response.status, response.headers, body) if with_status else body
        except aiohttp.ClientConnectionError as exc:
            raise ApiError(f"cannot reach leadstream at {self.url}: {exc}") from None
        except TimeoutError:
            raise ApiError(f"leadstream at {self.url} did not answer within {self._timeout.total:g} s") from None
        except (aiohttp.ClientError, ValueError) as exc:  # a malformed answer, or a URL aiohttp refuses
            raise ApiError(f"cannot talk to leadstream at {self.url}: {exc}") from None

    async def publish(self, stream: str, body: bytes, *, ndjson: bool = False) -> dict[str, Any]:
        content_type = "application/x-ndjson" if ndjson else "application/json"
        return await self.request(
            "POST", f"/v1/streams/{stream}/events", data=body, headers={"Content-Type": content_type}, ok=(422,)
        )
