from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from appliance.config import Config, load_config
from appliance.errors import DomainError
from appliance.node import Node
from appliance.sample import write_sample
from sync.log import all_events

START_MS = 1_795_000_000_000  # 2026-11-18, a Wednesday morning in Kigali


class ManualClock:
    """Injected wall clock (unix ms) shared by simulated devices; skew per device optional."""

    def __init__(self, ms: int = START_MS) -> None:
        self.ms = ms

    def __call__(self) -> int:
        return self.ms

    def skewed(self, offset_ms: int):
        return lambda: self.ms + offset_ms


@pytest.fixture(scope="session")
def sample_template(tmp_path_factory) -> Path:
    """One `smartq init` for the whole session (keys and PIN hashes are slow to make)."""
    path = tmp_path_factory.mktemp("sample")
    write_sample(path)
    return path


def copy_branch(template: Path, dest: Path) -> dict[str, Path]:
    shutil.copytree(template, dest)
    return {p.stem: p for p in dest.glob("*.toml")}


def config_with(path: Path, **overrides) -> Config:
    """Load a device config, replacing top-level sections' keys, e.g. security={...}."""
    import dataclasses

    config = load_config(path)
    for name, value in overrides.items():
        current = getattr(config, name)
        config = dataclasses.replace(config, **{name: dataclasses.replace(current, **value)
                                                if dataclasses.is_dataclass(current) else value})
    return config


class Device:
    """A real node (SQLite file, writer thread) driven without HTTP."""

    def __init__(self, config: Config, clock) -> None:
        self.node = Node(config, clock=clock)
        self.node.open()
        self.id = config.device_id

    def do(self, fn):
        return self.node.writer.call(fn)

    def try_do(self, fn):
        try:
            return self.do(fn)
        except DomainError:
            return None

    def events(self):
        return self.do(all_events)

    def ingest(self, events):
        return self.do(lambda c: self.node.log.ingest(c, events))

    def close(self) -> None:
        self.node.close()


@pytest.fixture
def branch(sample_template, tmp_path) -> Iterator[dict]:
    """Every sample device as an open Device sharing one manual clock."""
    paths = copy_branch(sample_template, tmp_path / "branch")
    clock = ManualClock()
    devices = {name: Device(load_config(p), clock) for name, p in paths.items()}
    devices["clock"] = clock
    yield devices
    for name, d in devices.items():
        if isinstance(d, Device):
            d.close()
