"""The image's first-boot set-up (images/rootfs/usr/lib/smartq/bin/firstboot) choosing the
device configuration, on this host with its paths moved into a temp dir: a configuration the
node cannot load is never used; it is kept aside with a one-line error and the device comes up
unenrolled, showing its fingerprint. The booted image checks the same (test_image.py)."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
from pathlib import Path

import pytest

from tests.images.conftest import REPO

GOOD = """[branch]
id = "b1"
name = "Branch one"

[device]
id = "kiosk-1"
role = "kiosk"
data_dir = "data"

[[services]]
id = "general"
letter = "A"
names = { en = "General" }
"""


@pytest.fixture
def firstboot(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    path = REPO / "images/rootfs/usr/lib/smartq/bin/firstboot"
    loader = importlib.machinery.SourceFileLoader("smartq_firstboot", str(path))
    spec = importlib.util.spec_from_loader("smartq_firstboot", loader)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    loader.exec_module(module)
    for name, sub in (("BOOT", "boot/smartq"), ("DATA", "data"), ("ETC", "etc")):
        (tmp_path / sub).mkdir(parents=True)
        monkeypatch.setattr(module, name, tmp_path / sub)
    monkeypatch.setattr(module, "CONFIG", tmp_path / "etc/device.toml")
    monkeypatch.setattr(module, "PROVISIONAL", tmp_path / "data/provisional")
    monkeypatch.setattr(module, "ROOT_UID", os.getuid())
    return module


def install(fb) -> str:  # type: ignore[no-untyped-def]
    return fb.install_config("kiosk", "0123ABCD" * 8, os.getuid(), os.getgid())


def test_a_valid_config_from_the_boot_partition_is_installed(firstboot) -> None:  # type: ignore[no-untyped-def]
    (firstboot.BOOT / "device.toml").write_text(GOOD)
    assert install(firstboot) == "kiosk-1"
    assert 'data_dir = "/var/lib/smartq"' in firstboot.CONFIG.read_text()
    assert not firstboot.PROVISIONAL.exists() and not firstboot.REJECTED


@pytest.mark.parametrize("garbage", [b"[branch\nid = ", b"\xff\xfe not text", GOOD.replace('id = "kiosk-1"\n', "").encode()])
def test_an_unusable_boot_partition_config_is_kept_aside_and_the_device_starts_unenrolled(
        firstboot, garbage: bytes, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    (firstboot.BOOT / "device.toml").write_bytes(garbage)
    assert install(firstboot) == "kiosk-0123abcd"
    assert 'id = "unenrolled"' in firstboot.CONFIG.read_text() and firstboot.PROVISIONAL.exists()
    [aside] = firstboot.ETC.glob("device.toml.bad-*")
    assert aside.read_bytes() == garbage
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "ERROR: the boot partition's configuration is unusable:" in err and aside.name in err
    assert firstboot.REJECTED == [f"device.toml was unusable (kept as {aside.name}): enroll again"]


def test_a_corrupt_installed_config_is_kept_aside_and_replaced_by_a_provisional_one(
        firstboot, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    firstboot.CONFIG.write_text(GOOD[:40])  # cut short, e.g. by a card going bad
    for name in ("device.crt", "ca.pem", "crl.pem"):  # what its enrollment left
        (firstboot.DATA / name).write_text(name)
    (firstboot.DATA / "store.db").write_text("the branch's events")
    assert install(firstboot) == "kiosk-0123abcd"
    # The certificate names the old device id (the node would refuse it): moved aside, not lost.
    [old] = firstboot.DATA.glob("enrollment.bad-*")
    assert sorted(p.name for p in old.iterdir()) == ["ca.pem", "crl.pem", "device.crt"]
    assert not (firstboot.DATA / "device.crt").exists() and (firstboot.DATA / "store.db").exists()
    assert 'id = "unenrolled"' in firstboot.CONFIG.read_text() and firstboot.PROVISIONAL.exists()
    [aside] = firstboot.ETC.glob("device.toml.bad-*")
    assert aside.read_text() == GOOD[:40]
    assert "ERROR: the installed configuration is unusable:" in capsys.readouterr().err
    # The next boot keeps the provisional configuration and logs nothing more.
    firstboot.REJECTED.clear()
    assert install(firstboot) == "kiosk-0123abcd" and not firstboot.REJECTED
    assert capsys.readouterr().err == ""


def test_both_bad_the_installed_and_the_boot_partition_config_are_both_kept(firstboot) -> None:  # type: ignore[no-untyped-def]
    """The installed config went bad; the boot partition's copy (tried next) is bad too: two
    files kept aside, neither overwriting the other, and the device starts unenrolled."""
    firstboot.CONFIG.write_text("[device\n")
    (firstboot.BOOT / "device.toml").write_text("[branch\n")
    assert install(firstboot) == "kiosk-0123abcd"
    kept = sorted(p.read_text() for p in firstboot.ETC.glob("device.toml.bad-*"))
    assert kept == ["[branch\n", "[device\n"]
    assert len(firstboot.REJECTED) == 2
