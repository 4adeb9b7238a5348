"""Hostile JSON at every entry point: central's HTTP routes that read a JSON body and the edge's
local socket. Deep nesting, huge numbers, bad UTF-8 and wrong types get a clear error (400
``bad_json``/``bad_body``, an error reply on the socket), never a 500, never a traceback, and the
socket connection stays usable for the next pipelined request."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from central.db import open_db
from central.tokens import TokenStore
from edge.local_api import LocalApi
from tests.central_site import NODE1, V1, CentralSite, ThreadedCentral
from tests.processes import add_user
from wire import bounded_json
from wire.bounded_json import MAX_JSON_DEPTH, JsonError

DEEP = b"[" * 2000 + b"]" * 2000  # ~4 KB: RecursionError in json.loads
DEEP_OBJECT = b'{"a":' * 2000 + b"1" + b"}" * 2000


# -- the parser ---------------------------------------------------------------------------------


def test_deep_nesting_is_refused_before_parsing() -> None:
    for doc in (DEEP, DEEP_OBJECT, b"[" * 100_000):
        with pytest.raises(JsonError, match="deeper"):
            bounded_json.loads(doc)
    ok = b"[" * MAX_JSON_DEPTH + b"]" * MAX_JSON_DEPTH
    assert bounded_json.depth(ok) == MAX_JSON_DEPTH
    assert bounded_json.loads(ok) is not None


def test_brackets_inside_strings_are_not_nesting() -> None:
    doc = json.dumps({"s": "[" * 5000, "t": 'a\\"[[{{'}).encode()
    assert bounded_json.depth(doc) == 1
    assert bounded_json.loads(doc)["s"] == "[" * 5000


def test_what_python_accepts_but_json_is_not_is_refused() -> None:
    for doc in (b"NaN", b"[Infinity]", b"-Infinity", b"9" * 5000, b"\xff\xfe{}", b'"\xed\xa0\x80"'):
        with pytest.raises(JsonError):
            bounded_json.loads(doc)


scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@given(json_values)
def test_any_json_document_round_trips(value: Any) -> None:
    for raw in (json.dumps(value).encode(), json.dumps(value, ensure_ascii=False)):
        assert bounded_json.loads(raw) == json.loads(raw)


@given(st.binary(max_size=300) | st.text(alphabet='[]{}"\\,:0a ', max_size=300))
def test_any_input_gives_a_value_or_a_typed_error(raw: bytes | str) -> None:
    try:
        bounded_json.loads(raw)
    except JsonError as e:
        assert e.reason


# -- central's HTTP entry points ----------------------------------------------------------------


class Tracebacks(logging.Handler):
    """Every log record carrying a traceback, from any thread."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info or record.levelno >= logging.ERROR:
            self.records.append(record)


@pytest.fixture(scope="module")
def central(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[CentralSite, str, str]]:
    """(the site, an admin's bearer token, an enrolment token for NODE1)."""
    tmp = tmp_path_factory.mktemp("hostile")
    with ThreadedCentral(tmp) as site:
        password = add_user(site.db, "fuzzadmin", "admin")
        login = json.dumps({"user": "fuzzadmin", "password": password}).encode()
        status, body = _call("POST", site.base + "/api/v1/login", b"", None, login)
        assert status == 200, body
        conn = open_db(site.db)
        enrol_token = TokenStore(conn, time.time).create(NODE1, 3600)
        conn.close()
        yield site, body["token"], enrol_token


@pytest.fixture
def tracebacks() -> Iterator[Tracebacks]:
    h = Tracebacks()
    root = logging.getLogger()
    root.addHandler(h)
    try:
        yield h
    finally:
        root.removeHandler(h)


def _call(
    method: str, url: str, query: bytes, token: str | None, body: bytes
) -> tuple[int, dict[str, Any]]:
    req = urllib.request.Request(url, data=body, method=method)
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        raw = e.read()
        assert e.headers.get_content_type() == "application/json", (e.code, raw[:200])
        return e.code, json.loads(raw)


def entry_points(site: CentralSite, admin: str, enrol: str) -> list[tuple[str, str, str]]:
    """(method, path, bearer token) of every route that reads a JSON body."""
    return [
        ("POST", "/api/v1/login", ""),
        ("POST", "/api/v1/enrol", ""),
        ("POST", f"/api/v1/nodes/{NODE1}/commissioning", enrol),
        ("POST", f"/api/v1/nodes/{NODE1}/commands", admin),
        ("POST", f"/api/v1/alarms/{site.alarms[V1]}/ack", admin),
        ("PUT", "/api/v1/alerts/rules", admin),
    ]


def test_deep_nesting_is_a_400_bad_json_everywhere(
    central: tuple[CentralSite, str, str], tracebacks: Tracebacks
) -> None:
    site, admin, enrol = central
    for method, path, token in entry_points(site, admin, enrol):
        for doc in (DEEP, DEEP_OBJECT):
            status, body = _call(method, site.base + path, b"", token, doc)
            assert (status, body["error"]["code"]) == (400, "bad_json"), (path, body)
            assert " / " in body["error"]["message"]
    assert tracebacks.records == []


KEYS = ("user", "password", "token", "csr_pem", "cmd", "args", "timeout_s", "by", "rules", "steps")
hostile_bodies = st.one_of(
    st.integers(MAX_JSON_DEPTH + 1, 3000).map(lambda n: b"[" * n + b"]" * n),
    st.integers(MAX_JSON_DEPTH + 1, 3000).map(lambda n: b'{"args":' * n + b"{}" + b"}" * n),
    st.integers(4300, 20_000).map(lambda n: b'{"timeout_s": ' + b"9" * n + b"}"),
    st.sampled_from([b"NaN", b'{"timeout_s": Infinity}', b'{"timeout_s": 1e999}', b""]),
    st.binary(max_size=200),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.dictionaries(st.sampled_from(KEYS), json_values, max_size=4).map(
        lambda d: json.dumps(d).encode()
    ),
)


@given(which=st.integers(0, 5), body=hostile_bodies)
def test_fuzzed_bodies_never_get_a_500(
    central: tuple[CentralSite, str, str], which: int, body: bytes
) -> None:
    site, admin, enrol = central
    method, path, token = entry_points(site, admin, enrol)[which]
    status, answer = _call(method, site.base + path, b"", token, body)
    assert status != 500, (path, body[:100], answer)
    if status >= 400:
        assert answer["error"]["code"] and " / " in answer["error"]["message"]


# -- the edge's local socket --------------------------------------------------------------------


class RefusingSink:
    """The socket's event sink for requests that must never reach it."""

    async def emit(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a refused request reached the outbox")

    async def set_device(self, *args: Any, **kwargs: Any) -> None:
        raise AssertionError("a refused request reached the outbox")

    async def remove_device(self, *args: Any, **kwargs: Any) -> None:
        raise AssertionError("a refused request reached the outbox")


async def test_the_local_socket_answers_deep_json_and_keeps_the_connection(
    tmp_path: Path, tracebacks: Tracebacks
) -> None:
    sock = tmp_path / "edge.sock"
    api = LocalApi(sock, RefusingSink(), lambda: {"node_id": NODE1})
    ready = asyncio.Event()
    server = asyncio.create_task(api.run(ready))
    try:
        await ready.wait()
        reader, writer = await asyncio.open_unix_connection(sock)
        lines = [
            DEEP + b"\n",
            b'{"op":"emit","priority":"info","kind":"x","data":' + DEEP + b"}\n",
            b'{"op":"status","n":' + b"9" * 5000 + b"}\n",
            b'{"op":"emit","data":NaN}\n',
            b'{"op":"status"}\n',
        ]
        writer.write(b"".join(lines))  # pipelined: all before the first reply
        await writer.drain()
        replies = [json.loads(await reader.readline()) for _ in lines]
        writer.close()
        await writer.wait_closed()
    finally:
        server.cancel()
        with pytest.raises(asyncio.CancelledError):
            await server
    assert [r["ok"] for r in replies] == [False, False, False, False, True]
    assert "deeper" in replies[0]["error"] and "deeper" in replies[1]["error"]
    assert replies[-1]["node_id"] == NODE1
    assert tracebacks.records == []
