"""Bad requests, generated: schemathesis reads the server's OpenAPI schema and sends every
operation requests made from it (valid and invalid), signed in with the token. No answer may
be a 5xx, and every answer must match the schema it documents. A short run (20 requests an
operation, some 200 in all); `benchmarks/fuzz_api.py` sends thousands to a live server."""

from __future__ import annotations

import pytest

pytest.importorskip("fastapi", reason="the 'serve' extra is not installed")
schemathesis = pytest.importorskip("schemathesis", reason="schemathesis is not installed")

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.generation import GenerationMode  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance,
    response_schema_conformance,
)

from clipsearch.server.app import create_app  # noqa: E402
from clipsearch.server.auth import bearer_header  # noqa: E402
from clipsearch.server.config import LOOPBACK_NAMES, ServerConfig  # noqa: E402

from .serve_index import COLORS, build, color, write_image  # noqa: E402

TEST_CLIENT_HOST = "testserver"  # the Host schemathesis's ASGI client sends
EXAMPLES = 20  # requests per operation with parameters: some 200 in all
CHECKS = [not_a_server_error, response_schema_conformance, content_type_conformance]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz")
    for c, name in enumerate(COLORS):
        for i in range(3):
            write_image(root / "photos" / name / f"{name} {i}.png", color(name, i), 10 * c + i)
    index_dir = build(root / "photos", root / "index")
    config = ServerConfig(index_dir, allowed_hosts=(*LOOPBACK_NAMES, TEST_CLIENT_HOST))
    return create_app(config), config.token


@pytest.fixture(scope="module")
def api_schema(served):
    app, token = served
    return schemathesis.openapi.from_asgi("/openapi.json", app, headers=bearer_header(token))


def fuzz(operation, token: str) -> int:
    """Send EXAMPLES generated requests to one operation, each checked; how many were sent."""
    # Valid requests and invalid ones (wrong types, missing fields, out of range).
    requests = st.one_of(
        operation.as_strategy(GenerationMode.POSITIVE),
        operation.as_strategy(GenerationMode.NEGATIVE),
    )
    sent = 0

    @given(case=requests)
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,  # the same requests every run: a failure is reproducible
        suppress_health_check=list(HealthCheck),
        database=None,
    )
    def send(case) -> None:
        nonlocal sent
        sent += 1
        case.call_and_validate(headers=bearer_header(token), checks=CHECKS)

    send()
    return sent


def test_generated_requests_get_no_5xx_and_answers_match_the_schema(api_schema, served):
    _, token = served
    sent = {}
    for result in api_schema.get_all_operations():
        operation = result.ok()
        sent[operation.label] = fuzz(operation, token)
    assert len(sent) >= 13, sorted(sent)  # every operation was tried
    assert sum(sent.values()) >= 200, sent
