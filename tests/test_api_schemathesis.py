"""schemathesis against a running ``shilian central run`` process (every optional route mounted:
enrolment CA, firmware images), logged in as an admin with a bearer token: requests generated
from docs/openapi.json for every operation. No answer is a server error, and every answer
conforms to the document (status code, media type, JSON schema).

The short form (``make test``) sends a few examples per operation; ``make reliability``
(SHILIAN_RELIABILITY=1) sends many more, and requests that break the document on purpose."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from central import openapi
from firmware_bridge import image as fi
from pki.ca import CertificateAuthority
from shilian.broker import Mosquitto
from tests.processes import Central

pytestmark = pytest.mark.slow

LONG = bool(os.environ.get("SHILIAN_RELIABILITY"))
#: Examples per operation: ~60 operations, so the short form stays near a minute.
EXAMPLES = 100 if LONG else 6
MODES = [GenerationMode.POSITIVE, GenerationMode.NEGATIVE] if LONG else [GenerationMode.POSITIVE]
#: Not called: the live stream never ends (its limits: tests/test_live_limits.py), and logging
#: out would end the bearer session the run uses.
SKIPPED = {("GET", "/api/v1/live"), ("POST", "/api/v1/logout")}
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@pytest.fixture(scope="module")
def central(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Central]:
    tmp = tmp_path_factory.mktemp("schemathesis")
    (tmp / "mosquitto").mkdir()
    broker = Mosquitto(workdir=tmp / "mosquitto")
    broker.start()
    CertificateAuthority.create(tmp / "ca")
    (tmp / "fw.pub").write_text(fi.keygen()[1].hex())
    c = Central(
        tmp / "central",
        broker.port,
        extra_conf=f'[ca]\ndir = "{tmp / "ca"}"\nbroker_host = "mqtt.example"\n'
        f'[firmware]\ndir = "{tmp / "images"}"\npublic_key = "{tmp / "fw.pub"}"\n',
    )
    try:
        c.start()
        yield c
    finally:
        c.close()
        broker.stop()


def _operations() -> list[tuple[str, str]]:
    return sorted(
        (m.upper(), p)
        for p, ops in openapi.document()["paths"].items()
        for m in ops
        if (m.upper(), p) not in SKIPPED
    )


@pytest.mark.parametrize(("method", "path"), _operations())
def test_generated_requests_get_documented_answers(
    central: Central, method: str, path: str
) -> None:
    schema = schemathesis.openapi.from_dict(openapi.document())
    op = schema[path][method]
    headers = {"Authorization": f"Bearer {central.token}"}
    for mode in MODES:
        checks = CHECKS if mode is GenerationMode.POSITIVE else [not_a_server_error]

        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
            database=None,
        )
        @given(case=op.as_strategy(generation_mode=mode))
        def call(case: schemathesis.Case) -> None:
            response = case.call(base_url=central.api, headers=headers, timeout=30)
            case.validate_response(response, checks=checks, headers=headers)  # noqa: B023

        try:
            call()
        except Unsatisfiable:
            # No invalid request can be written for an operation without parameters or body
            # (or whose only one is a path segment): nothing to send in this mode.
            assert mode is GenerationMode.NEGATIVE, (method, path)
    central.ready(lambda: central.get("/healthz"), what="central still serving")


def test_an_expired_or_missing_login_is_a_documented_401(central: Central) -> None:
    schema = schemathesis.openapi.from_dict(openapi.document())
    case = schema["/api/v1/nodes"]["GET"].Case()
    response = case.call(base_url=central.api)
    assert response.status_code == 401
    case.validate_response(response, checks=CHECKS)


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/api/v1/meetings", b'{"node_id": "", "sdp": ""}'),  # once an assert: 500
        ("POST", "/api/v1/meetings", b'{"node_id":' * 3000 + b"1" + b"}" * 3000),
    ],
)
def test_what_the_generator_found_is_a_clear_400(
    central: Central, method: str, path: str, body: bytes
) -> None:
    schema = schemathesis.openapi.from_dict(openapi.document())
    case = schema[path][method].Case()
    response = case.call(
        base_url=central.api,
        headers={"Authorization": f"Bearer {central.token}", "Content-Type": "application/json"},
        data=body,
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] in ("bad_body", "bad_json")


def test_a_page_without_a_report_is_a_json_404(central: Central) -> None:
    schema = schemathesis.openapi.from_dict(openapi.document())
    case = schema["/dashboard/commissioning/{node_id}"]["GET"].Case(
        path_parameters={"node_id": "450102001003-a"}
    )
    response = case.call(base_url=central.api, headers={"Authorization": f"Bearer {central.token}"})
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "no_report"
    case.validate_response(response, checks=CHECKS)
