"""The dependency direction of docs/architecture.md holds: sync <- appliance <- UIs and hq.

Read from the source with `ast` (every import, including ones inside functions and under
TYPE_CHECKING), so an upward import cannot hide."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def imports_of(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_the_device_packages_never_import_the_server():
    offenders = {str(p.relative_to(ROOT)): sorted(n for n in imports_of(p) if n == "hq" or n.startswith("hq."))
                 for package in ("sync", "appliance", "hardware") for p in (ROOT / package).rglob("*.py")}
    assert not {k: v for k, v in offenders.items() if v}


def test_the_nightly_job_and_the_hq_link_do_not_import_each_other():
    assert "appliance.nightly" in imports_of(ROOT / "appliance" / "uplink.py")
    assert "appliance.uplink" not in imports_of(ROOT / "appliance" / "nightly.py")


def test_hq_loads_no_device_node_or_store():
    """HQ shares the event contract, the fold and the day digests, never the node (DESIGN §3)."""
    code = ("import sys, hq.app, hq.link, hq.ingest; "
            "print(sorted(m for m in sys.modules if m in ('appliance.node', 'appliance.server', 'appliance.lan',"
            " 'appliance.devices', 'appliance.uplink')))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_the_smartq_command_has_no_hq_subcommand_and_hq_has_its_own_entry_point():
    proc = subprocess.run([sys.executable, "-m", "appliance.cli", "hq", "--config", "x.toml"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "invalid choice: 'hq'" in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "hq", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "smartq-hq" in proc.stdout
    setup = (ROOT / "setup.cfg").read_text(encoding="utf-8")
    assert "smartq-hq = hq.__main__:main" in setup
