#!/usr/bin/env python3
"""Signed update bundles for SmartQ devices: build, verify, apply with rollback.

A bundle (NAME.smartq-update) is an uncompressed tar of
  manifest.json   {"format": 1, "version", "arch", "requirement", "created", "files": {name: sha256}}
  manifest.sig    Ed25519 signature of manifest.json's bytes, base64url (the update key)
  wheels/*.whl    the project and every dependency (cp311 wheels for the arch)

`apply` verifies the signature with the public key baked into the image, checks every file
against the manifest, builds a new venv offline in /data/app/versions/VERSION (a copy of the
running venv with only the changed wheels installed; a fresh venv when there is none), swaps the
/data/app/current symlink atomically, restarts the node and waits for its /healthz. A node
that does not answer is rolled back: the symlink goes back to the previous venv, the node is
restarted, the version is recorded as failed and never tried again. A node that keeps exiting
(systemd restarted it 3 times) is judged at once, without waiting out the health timeout.

  update.py keygen PRIVATE.pem                     (prints the public key: bake it into images)
  update.py build --key PRIVATE.pem --version V --arch ARCH --wheelhouse DIR OUT.smartq-update
  update.py verify BUNDLE [--pubkey FILE]
  update.py apply BUNDLE [--pubkey FILE] [--app-dir /data/app] [--health-timeout 180]
  update.py status [--app-dir /data/app]

Only the standard library and `cryptography` (in every SmartQ venv) are needed.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
import tomllib
import urllib.error
import urllib.request
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

FORMAT = 1
PUBKEY = Path("/usr/share/smartq/update-key.pub")
APP_DIR = Path("/data/app")
CONFIG = Path("/etc/smartq/device.toml")
REQUIREMENT = "smartq[lan,hardware,ui]"
MAX_MANIFEST = 1 << 20
WHEEL_RE = re.compile(r"^wheels/[A-Za-z0-9_.+-]+\.whl$")
VERSION_RE = re.compile(r"^[0-9][0-9A-Za-z.+_-]{0,63}$")


class UpdateError(Exception):
    """The bundle cannot be installed; the message says why (one line)."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text.strip() + "=" * (-len(text.strip()) % 4))


def load_public_key(path: Path) -> Ed25519PublicKey:
    try:
        return Ed25519PublicKey.from_public_bytes(_unb64(path.read_text(encoding="ascii")))
    except (OSError, ValueError) as err:
        raise UpdateError(f"update key {path}: {err}") from err


def version_key(version: str) -> tuple[tuple[int, ...], str]:
    """Orders versions by their numeric release part (0.1.10 > 0.1.9); the rest breaks ties."""
    public = version.split("+", 1)[0]
    return tuple(int(n) for n in re.findall(r"\d+", public)), version


# --- keys and bundles ----------------------------------------------------------------------------

def keygen(path: Path) -> str:
    if path.exists():
        raise UpdateError(f"{path} exists; not overwriting an update key")
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    return _b64(key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))


def build(key_path: Path, version: str, arch: str, wheelhouse: Path, out: Path) -> Path:
    if not VERSION_RE.match(version):
        raise UpdateError(f"version {version!r}: letters, digits and . + _ - only")
    key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise UpdateError(f"{key_path} is not an Ed25519 private key")
    wheels = sorted(wheelhouse.glob("*.whl"))
    if not any(w.name.startswith("smartq-") for w in wheels):
        raise UpdateError(f"{wheelhouse} has no smartq-*.whl")
    files = {f"wheels/{w.name}": hashlib.sha256(w.read_bytes()).hexdigest() for w in wheels}
    manifest = json.dumps({
        "format": FORMAT, "version": version, "arch": arch, "requirement": REQUIREMENT,
        "created": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), "files": files,
    }, indent=1, sort_keys=True).encode()
    tmp = out.with_name(out.name + ".tmp")
    with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in (("manifest.json", manifest), ("manifest.sig", _b64(key.sign(manifest)).encode())):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, int(time.time())
            tar.addfile(info, io.BytesIO(data))
        for w in wheels:
            tar.add(w, arcname=f"wheels/{w.name}", recursive=False)
    os.replace(tmp, out)
    return out


def verify(bundle: Path, pubkey: Path, *, extract_to: Path | None = None) -> dict:
    """The bundle's manifest, once its signature and every file's hash check out. With
    `extract_to`, the listed files are written there (nothing else in the tar is ever read)."""
    key = load_public_key(pubkey)
    try:
        tar = tarfile.open(bundle, "r:")
    except (OSError, tarfile.TarError) as err:
        raise UpdateError(f"{bundle}: not a bundle ({err})") from err
    with tar:
        members = {m.name: m for m in tar.getmembers()}
        for name in ("manifest.json", "manifest.sig"):
            m = members.get(name)
            if m is None or not m.isfile() or m.size > MAX_MANIFEST:
                raise UpdateError(f"{bundle}: no {name}")
        manifest_bytes = tar.extractfile(members["manifest.json"]).read()  # type: ignore[union-attr]
        signature = tar.extractfile(members["manifest.sig"]).read()  # type: ignore[union-attr]
        try:
            key.verify(_unb64(signature.decode("ascii")), manifest_bytes)
        except (InvalidSignature, ValueError, UnicodeDecodeError) as err:
            raise UpdateError(f"{bundle}: bad signature (not signed by this device's update key)") from err
        manifest = json.loads(manifest_bytes)
        if manifest.get("format") != FORMAT or not VERSION_RE.match(str(manifest.get("version", ""))):
            raise UpdateError(f"{bundle}: unknown manifest format or version")
        files = manifest.get("files") or {}
        for name, digest in files.items():
            m = members.get(name)
            if not WHEEL_RE.match(name) or m is None or not m.isfile():
                raise UpdateError(f"{bundle}: {name} missing or not a plain wheel file")
            data = tar.extractfile(m).read()  # type: ignore[union-attr]
            if hashlib.sha256(data).hexdigest() != digest:
                raise UpdateError(f"{bundle}: {name} does not match its hash in the manifest")
            if extract_to is not None:
                target = extract_to / name
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data)
    return manifest


# --- installing ------------------------------------------------------------------------------------

def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _installed(venv: Path) -> dict[str, str]:
    """{canonical name: version} of the distributions in a venv (its *.dist-info folders)."""
    found: dict[str, str] = {}
    for info in venv.glob("lib/python3*/site-packages/*.dist-info"):
        name, _, ver = info.name[: -len(".dist-info")].rpartition("-")
        found[_canonical(name)] = ver
    return found


def _rename_in_bin(venv: Path, old: Path, new: Path) -> None:
    """The activate scripts and console scripts' #! lines name the venv's folder: `new`, not `old`."""
    was, now = str(old).encode(), str(new).encode()
    for path in (venv / "bin").iterdir():
        if path.is_file() and not path.is_symlink():
            data = path.read_bytes()
            if was in data:
                path.write_bytes(data.replace(was, now))


def _clone_venv(source: Path, partial: Path, final: Path, wheels: Path) -> str | None:
    """The new venv as a copy of the running one with only the wheels that changed installed
    (an update usually changes the project's wheel alone: seconds, where a fresh venv of every
    wheel takes minutes on a Pi). None when the running one is not a venv to copy (then the
    caller builds a fresh one)."""
    if not (source / "pyvenv.cfg").is_file() or not (source / "bin" / "python").exists():
        return None
    subprocess.run(["cp", "-a", str(source), str(partial)], check=True)
    _rename_in_bin(partial, source, final)
    have = _installed(partial)
    want = {}
    for wheel in sorted(wheels.glob("*.whl")):
        name, ver = wheel.name.split("-")[:2]
        want[_canonical(name)] = (ver.replace("_", "-"), wheel)
    changed = [str(wheel) for name, (ver, wheel) in want.items() if have.get(name) != ver]
    gone = sorted(set(have) - set(want) - {"pip", "setuptools", "wheel"})
    pip = [str(partial / "bin" / "python"), "-m", "pip"]
    if gone:
        subprocess.run([*pip, "uninstall", "--quiet", "--yes", *gone], check=True)
    if changed:
        subprocess.run([*pip, "install", "--quiet", "--no-index", "--no-deps", "--no-cache-dir", *changed], check=True)
    return f"copied {source.name}, {len(changed)} of {len(want)} wheels changed"


def swap_current(app_dir: Path, target: Path) -> None:
    """Point app_dir/current at target atomically (a new symlink renamed over the old one)."""
    tmp = app_dir / "current.new"
    tmp.unlink(missing_ok=True)
    os.symlink(target, tmp)
    os.replace(tmp, app_dir / "current")
    _fsync_dir(app_dir)


def _state(app_dir: Path) -> dict:
    try:
        return json.loads((app_dir / "state.json").read_text())
    except (OSError, ValueError):
        return {"failed": [], "history": []}


def _save_state(app_dir: Path, state: dict) -> None:
    tmp = app_dir / "state.json.tmp"
    with open(tmp, "w") as fh:
        json.dump(state, fh, indent=1)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, app_dir / "state.json")
    _fsync_dir(app_dir)


def current_version(app_dir: Path) -> str:
    return Path(os.readlink(app_dir / "current")).name


def health_url(config: Path) -> str:
    listen = "127.0.0.1:8401"
    try:
        listen = tomllib.loads(config.read_text(encoding="utf-8")).get("device", {}).get("listen", listen)
    except (OSError, tomllib.TOMLDecodeError):
        pass
    port = listen.rpartition(":")[2]
    return f"http://127.0.0.1:{port}/healthz"


NODE_UNIT = "smartq-node.service"
CRASH_LOOP_RESTARTS = 3


def node_restarts() -> int | None:
    """How many times systemd restarted the node (None where there is no systemd)."""
    try:
        out = subprocess.run(["systemctl", "show", "-p", "NRestarts", "--value", NODE_UNIT],
                             capture_output=True, text=True, timeout=30).stdout.strip()
        return int(out)
    except (OSError, ValueError, subprocess.TimeoutExpired):
        return None


def wait_healthy(url: str, timeout: float, *, settle: float = 5.0, crash_loop: bool = False) -> bool:
    """True once the node answers 200 and still does `settle` seconds later (not a crash loop).
    `crash_loop`: False as soon as systemd has restarted the node CRASH_LOOP_RESTARTS times
    (a node that exits at start: no need to wait out the timeout)."""
    deadline = time.monotonic() + timeout
    first_ok = None
    restarts = node_restarts() if crash_loop else None
    while time.monotonic() < deadline:
        if restarts is not None and (node_restarts() or 0) - restarts >= CRASH_LOOP_RESTARTS:
            return False
        try:
            with urllib.request.urlopen(url, timeout=3) as resp:
                ok = resp.status == 200
        except (urllib.error.URLError, OSError):
            ok = False
        if ok:
            first_ok = first_ok or time.monotonic()
            if time.monotonic() - first_ok >= settle:
                return True
        else:
            first_ok = None
        time.sleep(1)
    return False


def _systemctl(*args: str) -> None:
    subprocess.run(["systemctl", *args], check=False)


def apply(bundle: Path, pubkey: Path, app_dir: Path, *, config: Path = CONFIG, health_timeout: float = 180,
          restart: bool = True, python: str = "/usr/bin/python3", force: bool = False) -> str:
    """Install the bundle; returns a one-line report. Raises UpdateError when it was refused
    or rolled back (the device then runs what it ran before)."""
    versions = app_dir / "versions"
    versions.mkdir(parents=True, exist_ok=True)
    staging = versions / ".staging"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        manifest = verify(bundle, pubkey, extract_to=staging)
        version = manifest["version"]
        state = _state(app_dir)
        previous = current_version(app_dir)
        if not force:
            if version in state.get("failed", []):
                raise UpdateError(f"version {version} failed its health check before; not trying it again")
            if version_key(version) <= version_key(previous):
                raise UpdateError(f"version {version} is not newer than the running {previous}")
        target = versions / version
        partial = versions / f".{version}.partial"
        shutil.rmtree(partial, ignore_errors=True)
        # Built beside its final place and renamed when complete.
        how = _clone_venv(Path(os.path.realpath(app_dir / "current")), partial, target, staging / "wheels")
        if how is None:
            shutil.rmtree(partial, ignore_errors=True)
            subprocess.run([python, "-m", "venv", str(partial)], check=True)
            subprocess.run([str(partial / "bin" / "python"), "-m", "pip", "install", "--quiet", "--no-index",
                            "--no-cache-dir", "--find-links", str(staging / "wheels"),
                            manifest.get("requirement", REQUIREMENT)], check=True)
            _rename_in_bin(partial, partial, target)
            how = f"new venv, {len(manifest['files'])} wheels"
        subprocess.run(["sync"], check=False)
        shutil.rmtree(target, ignore_errors=True)
        os.rename(partial, target)
        _fsync_dir(versions)
    except subprocess.CalledProcessError as err:
        raise UpdateError(f"{bundle}: installing it failed ({err})") from err
    finally:
        shutil.rmtree(staging, ignore_errors=True)

    swap_current(app_dir, target)
    if not restart:
        return f"installed {version} (was {previous}; {how}); node not restarted"
    _systemctl("restart", NODE_UNIT)
    if wait_healthy(health_url(config), health_timeout, crash_loop=True):
        state["history"] = (state.get("history", []) + [{"version": version, "from": previous, "result": "ok"}])[-20:]
        _save_state(app_dir, state)
        _systemctl("restart", "smartq-ui@*.service")
        _prune(app_dir, keep={version, previous})
        return f"updated {previous} -> {version} ({how}); node healthy"
    # Roll back: the previous venv is untouched, so this is one symlink and a restart.
    builtin = Path("/usr/lib/smartq/venvs") / previous
    swap_current(app_dir, versions / previous if (versions / previous).exists() else builtin)
    state["failed"] = sorted(set(state.get("failed", [])) | {version})
    state["history"] = (state.get("history", []) + [{"version": version, "from": previous, "result": "rolled back"}])[-20:]
    _save_state(app_dir, state)
    _systemctl("reset-failed", "smartq-node.service")
    _systemctl("restart", "smartq-node.service")
    healthy = wait_healthy(health_url(config), health_timeout)
    shutil.rmtree(target, ignore_errors=True)
    raise UpdateError(f"version {version}: the node did not become healthy; rolled back to {previous}"
                      + ("" if healthy else " (which is not healthy either: check the node's log)"))


def _prune(app_dir: Path, keep: set[str]) -> None:
    """Keep the running and the previous venv; older ones only take the data partition's room."""
    for path in (app_dir / "versions").iterdir():
        if path.is_dir() and not path.name.startswith(".") and path.name not in keep:
            shutil.rmtree(path, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="smartq-update", description="SmartQ signed update bundles")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("keygen", help="create an update signing key; prints its public half")
    p.add_argument("private_key", type=Path)
    p = sub.add_parser("build", help="make a signed bundle from a wheelhouse")
    p.add_argument("--key", type=Path, required=True)
    p.add_argument("--version", required=True)
    p.add_argument("--arch", required=True, choices=("amd64", "arm64"))
    p.add_argument("--wheelhouse", type=Path, required=True)
    p.add_argument("out", type=Path)
    p = sub.add_parser("verify", help="check a bundle's signature and files")
    p.add_argument("bundle", type=Path)
    p.add_argument("--pubkey", type=Path, default=PUBKEY)
    p = sub.add_parser("apply", help="install a bundle (rolls back when the node is not healthy)")
    p.add_argument("bundle", type=Path)
    p.add_argument("--pubkey", type=Path, default=PUBKEY)
    p.add_argument("--app-dir", type=Path, default=APP_DIR)
    p.add_argument("--config", type=Path, default=CONFIG)
    p.add_argument("--health-timeout", type=float, default=180,
                   help="seconds the new node has to answer /healthz (a slow first start after an update)")
    p.add_argument("--force", action="store_true", help="also an older or once-failed version")
    p = sub.add_parser("status", help="running version and update history")
    p.add_argument("--app-dir", type=Path, default=APP_DIR)
    args = parser.parse_args(argv)
    try:
        if args.command == "keygen":
            print(keygen(args.private_key))
        elif args.command == "build":
            print(build(args.key, args.version, args.arch, args.wheelhouse, args.out))
        elif args.command == "verify":
            m = verify(args.bundle, args.pubkey)
            print(f"ok: version {m['version']} for {m['arch']}, {len(m['files'])} wheels, signed by the update key")
        elif args.command == "apply":
            arch = subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True).stdout.strip()
            m = verify(args.bundle, args.pubkey)
            if arch and m.get("arch") != arch:
                raise UpdateError(f"{args.bundle} is for {m.get('arch')}, this device is {arch}")
            print(f"smartq-update: {apply(args.bundle, args.pubkey, args.app_dir, config=args.config, health_timeout=args.health_timeout, force=args.force)}")
        elif args.command == "status":
            print(json.dumps({"current": current_version(args.app_dir), **_state(args.app_dir)}, indent=1))
    except UpdateError as err:
        print(f"smartq-update: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
