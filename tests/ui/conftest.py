"""Fixtures for the UI tests: Kivy without a window or config, a contract-shaped node."""

from __future__ import annotations

import os

# Must be set before anything imports kivy: no argv parsing, no ~/.kivy config, plain logging.
os.environ.setdefault("KIVY_NO_ARGS", "1")
os.environ.setdefault("KIVY_NO_CONFIG", "1")
os.environ.setdefault("KIVY_LOG_MODE", "PYTHON")
os.environ.setdefault("KIVY_NO_FILELOG", "1")

import socket
from collections.abc import AsyncIterator

import pytest

from appliance.client import NodeClient

from .contract_node import ContractNode, serve


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def node() -> ContractNode:
    return ContractNode()


@pytest.fixture
async def node_url(node: ContractNode) -> AsyncIterator[str]:
    runner, url = await serve(node)
    try:
        yield url
    finally:
        await runner.cleanup()


@pytest.fixture
async def client(node_url: str) -> AsyncIterator[NodeClient]:
    c = NodeClient(node_url, timeout=2.0)
    try:
        yield c
    finally:
        await c.close()


@pytest.fixture
async def dead_client() -> AsyncIterator[NodeClient]:
    """A client of a port nobody listens on."""
    c = NodeClient(f"http://127.0.0.1:{free_port()}", timeout=1.0)
    try:
        yield c
    finally:
        await c.close()
