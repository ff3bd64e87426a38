"""schemathesis against the HQ OpenAPI document on a real server: no input produces a 500."""

from __future__ import annotations

import requests
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from hq.routes import openapi_document

schema = schemathesis.openapi.from_dict(openapi_document())


def test_openapi_is_served_and_covers_every_route(threaded_server):
    served = requests.get(f"{threaded_server.url}/api/v1/openapi.json", timeout=10).json()
    assert served == openapi_document()
    from hq.routes import ROUTES
    assert {(r.method.lower(), r.path) for r in ROUTES} == {
        (m, p) for p, ops in served["paths"].items() for m in ops}


@schema.parametrize()
@settings(max_examples=12, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
def test_no_server_errors(case, threaded_server):
    headers = threaded_server.h("super") if case.operation.definition.raw.get("security") else None
    response = case.call(base_url=threaded_server.url, headers=headers, timeout=10)
    case.validate_response(response, checks=[not_a_server_error])
