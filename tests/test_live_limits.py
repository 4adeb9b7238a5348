"""Live streams (``GET /api/v1/live``) over real HTTP: a stream ends when its session ends
(logout, or the user disabled from the command line as ``shilian central user disable`` does),
and one user cannot take every stream slot."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from central.accounts import AccountStore
from central.dashboard import SESSION_RECHECK_S
from central.live import MAX_STREAMS_PER_USER
from tests.central_site import CentralSite, central_site


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[CentralSite]:
    async with central_site(tmp_path) as s:
        s.user("watcher", "viewer")
        s.user("boss", "admin")
        yield s


async def _ends(stream: aiohttp.ClientResponse) -> None:
    """Read the stream to its end; fails if it is still open after a recheck and some."""
    async with asyncio.timeout(SESSION_RECHECK_S * 3):
        while await stream.content.readline():
            pass


@pytest.mark.parametrize("how", ["disabled", "logout"])
async def test_a_stream_ends_when_its_session_ends(site: CentralSite, how: str) -> None:
    http = await site.session("watcher")
    async with http, http.get("/api/v1/live") as stream:
        assert stream.status == 200
        assert (await stream.content.readline()).startswith(b"retry:")
        if how == "disabled":
            store = AccountStore(site.db)
            store.set_disabled("watcher", True, time.time())
            store.close()
        else:
            async with http.post("/api/v1/logout", json={}) as r:
                assert r.status == 200
        await _ends(stream)


async def test_one_user_cannot_take_every_stream(site: CentralSite) -> None:
    http = await site.session("watcher")
    boss = await site.session("boss")
    async with http, boss:
        streams = [await http.get("/api/v1/live") for _ in range(MAX_STREAMS_PER_USER)]
        try:
            assert all(s.status == 200 for s in streams)
            async with http.get("/api/v1/live") as r:
                assert r.status == 429
                err = (await r.json())["error"]
                assert err["code"] == "too_many_streams" and " / " in err["message"]
            async with boss.get("/api/v1/live") as r:
                assert r.status == 200
        finally:
            for s in streams:
                s.close()


async def test_a_closed_page_frees_its_stream_place_before_the_keepalive(site: CentralSite) -> None:
    """A duty officer reloading the page: each closed stream's place is free again within a
    couple of seconds, not only at the next keepalive write (15 s)."""
    http = await site.session("watcher")
    async with http:
        streams = [await http.get("/api/v1/live") for _ in range(MAX_STREAMS_PER_USER)]
        assert all(s.status == 200 for s in streams)
        for s in streams:
            s.close()  # the browser drops the connection; central has written nothing since

        async def reopened() -> None:
            while True:
                async with http.get("/api/v1/live") as r:
                    if r.status == 200:
                        return
                    assert r.status == 429
                await asyncio.sleep(0.2)

        async with asyncio.timeout(SESSION_RECHECK_S):  # well before KEEPALIVE_S
            for _ in range(MAX_STREAMS_PER_USER):
                await reopened()
