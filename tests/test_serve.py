"""`leadstream serve` as a user runs it: the generated admin key."""

from __future__ import annotations

import os
import stat

import aiohttp

from helpers import ServerProcess


async def test_generated_admin_key_is_stored_0600_and_printed_once(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "LEADSTREAM_ADMIN_KEY"}
    data_dir = tmp_path / "data"
    server = ServerProcess(data_dir)
    server.env = env
    await server.start()
    server.stop()
    key_file = data_dir / "admin.key"
    key = key_file.read_text().strip()
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert key in server.log.read_text()

    server.log.unlink()
    server = ServerProcess(data_dir, port=server.port)
    server.env = env
    await server.start()
    try:
        assert key not in server.log.read_text()  # shown once only
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{server.url}/v1/catalog/audit", headers={"Authorization": f"Bearer {key}"}) as r:
                assert r.status == 200
            async with session.get(f"{server.url}/v1/catalog/audit", headers={"Authorization": "Bearer nope"}) as r:
                assert r.status == 401
    finally:
        server.stop()
