"""Fuzz the local API of a real node process: no input ever gets a 500 or changes state on a 4xx."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .conftest import copy_branch
from .procs import NodeProcess

pytestmark = pytest.mark.slow

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)
fields = st.sampled_from(["service", "priority", "language", "phone", "booking_code", "to_service",
                          "to_counter", "counter", "pin", "reason", "x"])
bodies = st.one_of(
    st.dictionaries(fields, json_values, max_size=4).map(lambda d: json.dumps(d).encode()),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=200),
)
segments = st.one_of(st.sampled_from(["c1", "c2", "nope", "20261118-A001", "..", "%00", "A" * 70, "%C3%A9"]),
                     st.text(alphabet="abcAZ09-_.:%", min_size=1, max_size=12))
paths = st.one_of(
    st.just("/api/v1/tickets"),
    st.builds("/api/v1/tickets/{}".format, segments),
    st.builds("/api/v1/tickets/{}/cancel".format, segments),
    st.builds("/api/v1/counters/{}/call-next".format, segments),
    st.builds("/api/v1/counters/{}/{}".format, segments, st.sampled_from(["open", "pause", "close", "x"])),
    st.builds("/api/v1/counters/{}/tickets/{}/{}".format, segments, segments,
              st.sampled_from(["recall", "start", "complete", "no-show", "requeue", "transfer", "call", "x"])),
    st.just("/api/v1/staff/login"),
    st.just("/api/v1/state"),
)


@pytest.fixture(scope="module")
def node(sample_template, tmp_path_factory):
    base = tmp_path_factory.mktemp("fuzz")
    paths = copy_branch(sample_template, base / "b")
    text = paths["kiosk"].read_text().replace("require_staff_login = true", "require_staff_login = false")
    paths["kiosk"].write_text(text)
    proc = NodeProcess(paths["kiosk"], log_path=base / "node.log")
    status, _ = proc.request("POST", "/api/v1/counters/c1/open")
    assert status == 200
    for _ in range(3):
        proc.request("POST", "/api/v1/tickets", {"service": "general"})
    yield proc
    proc.stop()
    assert "Traceback" not in (base / "node.log").read_text()


def state_hash(node) -> str:
    return node.request("GET", "/api/v1/state")[1]["state_hash"]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(method=st.sampled_from(["POST", "POST", "GET", "PUT", "DELETE"]), path=paths, body=bodies)
def test_no_request_gets_a_500_and_refused_ones_change_nothing(node, method, path, body):
    before = state_hash(node)
    status, reply = node.request(method, path, raw=body)
    assert status < 500, (method, path, body, reply)
    if status >= 400:
        assert isinstance(reply, dict) and set(reply["error"]) == {"code", "message"}, reply
        assert state_hash(node) == before
