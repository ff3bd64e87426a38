"""A whole sample branch: four real `smartq node` processes, one per namespace."""

from __future__ import annotations

import pytest

from .nodes import http_json, init_branch, spawn_node

pytestmark = [pytest.mark.netns, pytest.mark.slow]


def test_sample_branch_nodes_run_each_in_its_own_namespace(lan, python, python_env, tmp_path) -> None:
    configs = init_branch(tmp_path / "branch", branch_id="b1")
    assert set(configs) == {"kiosk", "display", "counter-1", "counter-2"}
    nodes = {}
    for index, (device, config) in enumerate(sorted(configs.items()), start=1):
        host = lan.add_host(f"n{index}")
        # Same local API port everywhere: each namespace has its own 127.0.0.1.
        nodes[device] = spawn_node(lan, host, config, python=python, env=python_env, listen="127.0.0.1:8401")

    for device, node in nodes.items():
        status, state = http_json(lan, node.host, node.url + "/api/v1/state", python=python)
        assert status == 200, state
        assert state["device"]["id"] == device
        assert state["branch"]["id"] == "b1"
