from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# What the image tests need on the host. `make test` installs them (the Makefile's
# APT_PACKAGES); the tests install what is still missing, so that pytest alone works too.
IMAGE_TOOLS = ["mmdebstrap", "qemu-system-x86", "ovmf", "grub-efi-amd64-bin", "mtools", "dosfstools",
               "fdisk", "e2fsprogs"]
ARM64_TOOLS = ["qemu-user-static", "binfmt-support", "arch-test"]
CACHE = Path(os.environ.get("SMARTQ_IMAGE_CACHE", "/var/cache/smartq-images"))


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "image: builds an appliance image and boots it in QEMU "
                            "(root on Debian; SMARTQ_IMAGE_TESTS=0 skips it, SMARTQ_IMAGE_ARM64=1 adds arm64)")


def need_image_host(extra: list[str] | None = None) -> None:
    """Skip where this host cannot build images (with the reason); install the Debian tools the
    build needs; fail, not skip, when a host that should manage cannot."""
    if os.environ.get("SMARTQ_IMAGE_TESTS") == "0":
        pytest.skip("SMARTQ_IMAGE_TESTS=0: image build and QEMU boot skipped on request")
    if not shutil.which("apt-get") or not shutil.which("dpkg"):
        pytest.skip("not a Debian host (no apt-get/dpkg): images are built with mmdebstrap from Debian's packages")
    if os.geteuid() != 0:
        pytest.skip("not root: mmdebstrap --mode=root and the image's device files need root "
                    "(run as root, or SMARTQ_IMAGE_TESTS=0 to skip)")
    subprocess.run(["bash", str(REPO / "scripts/system-deps.sh"), *IMAGE_TOOLS, *(extra or [])], check=True)
    missing = [t for t in ("mmdebstrap", "qemu-system-x86_64", "mcopy", "mkfs.vfat", "sfdisk", "grub-mkstandalone")
               if not shutil.which(t)]
    if missing:
        pytest.fail(f"image tools still missing after installing {IMAGE_TOOLS}: {missing}")
    CACHE.mkdir(parents=True, exist_ok=True)
    CACHE.chmod(0o700)  # it holds the test update key's private half
