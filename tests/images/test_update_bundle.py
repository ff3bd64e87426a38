"""Signed update bundles (images/update.py) on this host: only the update key's signature and
files that match the manifest get installed, and an install swaps the venv symlink atomically.
The rollback of an unhealthy node is proven on a booted image (test_image.py)."""

from __future__ import annotations

import importlib.util
import io
import json
import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from tests.images.conftest import REPO

spec = importlib.util.spec_from_file_location("smartq_update", REPO / "images" / "update.py")
update = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
spec.loader.exec_module(update)  # type: ignore[union-attr]


def tiny_wheel(directory: Path, version: str, name: str = "smartq", requires: str = "") -> Path:
    """A minimal pure-Python wheel (a real wheel pip installs, without dependencies); 'smartq'
    by default, whose module smartq_probe tells its version."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}-{version}-py3-none-any.whl"
    dist = f"{name}-{version}.dist-info"
    files = {
        f"{name}_probe.py": f"VERSION = {version!r}\n",
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
                            "Provides-Extra: lan\nProvides-Extra: hardware\nProvides-Extra: ui\n"
                            + (f"Requires-Dist: {requires}\n" if requires else ""),
        f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = "".join(f"{name},,\n" for name in files) + f"{dist}/RECORD,,\n"
    with zipfile.ZipFile(path, "w") as z:
        for name, text in files.items():
            z.writestr(name, text)
        z.writestr(f"{dist}/RECORD", record)
    return path


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, Path]:
    private = tmp_path / "update.pem"
    public = tmp_path / "update.pub"
    public.write_text(update.keygen(private))
    assert private.stat().st_mode & 0o077 == 0
    return private, public


def bundle_of(tmp_path: Path, private: Path, version: str) -> Path:
    wheels = tmp_path / f"wh-{version}"
    tiny_wheel(wheels, version)
    return update.build(private, version, "amd64", wheels, tmp_path / f"smartq-{version}.smartq-update")


def test_bundle_signed_by_the_update_key_verifies(tmp_path: Path, keys: tuple[Path, Path]) -> None:
    manifest = update.verify(bundle_of(tmp_path, keys[0], "0.2.0"), keys[1])
    assert manifest["version"] == "0.2.0" and list(manifest["files"]) == ["wheels/smartq-0.2.0-py3-none-any.whl"]


def test_bundle_signed_by_another_key_is_refused(tmp_path: Path, keys: tuple[Path, Path]) -> None:
    other = tmp_path / "other.pem"
    update.keygen(other)
    bundle = bundle_of(tmp_path, other, "0.2.0")
    with pytest.raises(update.UpdateError, match="bad signature"):
        update.verify(bundle, keys[1])


def _rewrite(bundle: Path, out: Path, change: dict[str, bytes]) -> Path:
    with tarfile.open(bundle) as src, tarfile.open(out, "w") as dst:
        for m in src.getmembers():
            data = change.pop(m.name, None) if m.name in change else src.extractfile(m).read()  # type: ignore[union-attr]
            m.size = len(data)
            dst.addfile(m, io.BytesIO(data))
        for name, data in change.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            dst.addfile(info, io.BytesIO(data))
    return out


def test_a_wheel_changed_after_signing_is_refused(tmp_path: Path, keys: tuple[Path, Path]) -> None:
    bundle = bundle_of(tmp_path, keys[0], "0.2.0")
    bad = _rewrite(bundle, tmp_path / "bad.smartq-update",
                   {"wheels/smartq-0.2.0-py3-none-any.whl": b"PK not the signed wheel"})
    with pytest.raises(update.UpdateError, match="does not match its hash"):
        update.verify(bad, keys[1])


def test_a_changed_manifest_is_refused(tmp_path: Path, keys: tuple[Path, Path]) -> None:
    bundle = bundle_of(tmp_path, keys[0], "0.2.0")
    with tarfile.open(bundle) as t:
        manifest = json.loads(t.extractfile("manifest.json").read())  # type: ignore[union-attr]
    manifest["version"] = "9.9.9"
    bad = _rewrite(bundle, tmp_path / "bad.smartq-update", {"manifest.json": json.dumps(manifest).encode()})
    with pytest.raises(update.UpdateError, match="bad signature"):
        update.verify(bad, keys[1])


def test_garbage_is_refused_with_one_line(tmp_path: Path, keys: tuple[Path, Path]) -> None:
    junk = tmp_path / "junk.smartq-update"
    junk.write_bytes(os.urandom(4096))
    proc = subprocess.run([sys.executable, str(REPO / "images/update.py"), "verify", str(junk), "--pubkey", str(keys[1])],
                          capture_output=True, text=True)
    assert proc.returncode == 1
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("smartq-update: ")


@pytest.mark.slow  # builds a venv (ensurepip) on the host
def test_install_swaps_the_venv_and_refuses_going_back(tmp_path: Path, keys: tuple[Path, Path]) -> None:
    app = tmp_path / "app"
    (app / "versions").mkdir(parents=True)
    builtin = tmp_path / "builtin" / "0.1.0"
    builtin.mkdir(parents=True)
    os.symlink(builtin, app / "current")
    report = update.apply(bundle_of(tmp_path, keys[0], "0.2.0"), keys[1], app, restart=False, python=sys.executable)
    assert "installed 0.2.0 (was 0.1.0; new venv, 1 wheels)" in report
    assert os.readlink(app / "current") == str(app / "versions" / "0.2.0")
    probe = subprocess.run([str(app / "current/bin/python"), "-c", "import smartq_probe; print(smartq_probe.VERSION)"],
                           capture_output=True, text=True, check=True)
    assert probe.stdout.strip() == "0.2.0"
    assert not list((app / "versions").glob(".*"))  # no staging or partial venv left behind
    with pytest.raises(update.UpdateError, match="not newer"):
        update.apply(bundle_of(tmp_path, keys[0], "0.1.9"), keys[1], app, restart=False, python=sys.executable)
    assert os.readlink(app / "current") == str(app / "versions" / "0.2.0")


def test_versions_order_by_their_numbers() -> None:
    assert update.version_key("0.1.10") > update.version_key("0.1.9")
    assert update.version_key("0.2.0") > update.version_key("0.1.0+abc1234")


@pytest.mark.slow  # builds a venv (ensurepip) on the host
def test_the_next_update_copies_the_running_venv_and_installs_only_changed_wheels(
        tmp_path: Path, keys: tuple[Path, Path]) -> None:
    app = tmp_path / "app"
    (app / "versions").mkdir(parents=True)
    os.symlink(tmp_path / "builtin-not-a-venv", app / "current")

    def bundle(version: str, dep: str) -> Path:
        wheels = tmp_path / f"wh-{version}"
        tiny_wheel(wheels, version, requires="smartq_dep")
        tiny_wheel(wheels, dep, name="smartq_dep")
        return update.build(keys[0], version, "amd64", wheels, tmp_path / f"smartq-{version}.smartq-update")

    first = update.apply(bundle("0.2.0", "1.0"), keys[1], app, restart=False, python=sys.executable)
    assert "new venv, 2 wheels" in first  # nothing to copy: a fresh venv
    report = update.apply(bundle("0.3.0", "1.0"), keys[1], app, restart=False, python=sys.executable)
    assert "copied 0.2.0, 1 of 2 wheels changed" in report
    new = app / "versions" / "0.3.0"
    probe = subprocess.run([str(new / "bin/python"), "-c", "import smartq_probe, smartq_dep_probe; "
                            "print(smartq_probe.VERSION, smartq_dep_probe.VERSION)"],
                           capture_output=True, text=True, check=True)
    assert probe.stdout.split() == ["0.3.0", "1.0"]
    # The copy names its own folder, not the one it was copied from (activate, #! lines).
    assert str(new) in (new / "bin/activate").read_text()
    assert not [p for p in (new / "bin").iterdir() if p.is_file() and b"versions/0.2.0" in p.read_bytes()]
    # A changed dependency is installed too; one the bundle no longer has is removed.
    wheels = tmp_path / "wh-0.4.0"
    tiny_wheel(wheels, "0.4.0")
    tiny_wheel(wheels, "2.0", name="smartq_extra")
    report = update.apply(update.build(keys[0], "0.4.0", "amd64", wheels, tmp_path / "b4.smartq-update"), keys[1], app,
                          restart=False, python=sys.executable)
    assert "copied 0.3.0, 2 of 2 wheels changed" in report
    assert set(update._installed(app / "versions/0.4.0")) - {"pip", "setuptools"} == {"smartq", "smartq-extra"}
