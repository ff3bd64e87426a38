"""The example nginx site (docs/deploy/nginx-smartq-hq.conf) in front of two real HQ processes:
nginx accepts it, terminates TLS, hides /metrics, redirects plain HTTP, and keeps answering when
one HQ process is killed. Only the addresses, ports and certificate paths are substituted."""

from __future__ import annotations

import datetime
import os
import pwd
import re
import shutil
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.ports import free_port

ROOT = Path(__file__).resolve().parents[2]
NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
pytestmark = [pytest.mark.slow, pytest.mark.skipif(NGINX is None, reason="nginx is installed by make (APT_PACKAGES)")]


def self_signed(folder: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hq.example.org")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("hq.example.org")]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    crt, pem = folder / "hq.crt", folder / "hq.key"
    crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pem.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))
    return crt, pem


def site(folder: Path, upstreams: list[int], http: int, https: int, crt: Path, key: Path) -> Path:
    """The example file with this test's addresses, ports and certificate, inside a minimal nginx.conf."""
    text = (ROOT / "docs" / "deploy" / "nginx-smartq-hq.conf").read_text(encoding="utf-8")
    servers = "".join(f"    server 127.0.0.1:{p} max_fails=2 fail_timeout=5s;\n" for p in upstreams)
    text, n = re.subn(r"(    server 10\.0\.0\.\d+:8400[^\n]*\n)+", servers, text)
    assert n == 1
    for old, new in (("listen 80;", f"listen 127.0.0.1:{http};"), ("listen 443 ssl http2;", f"listen 127.0.0.1:{https} ssl http2;"),
                     ("/etc/letsencrypt/live/hq.example.org/fullchain.pem", str(crt)),
                     ("/etc/letsencrypt/live/hq.example.org/privkey.pem", str(key))):
        assert old in text, old
        text = text.replace(old, new)
    text = re.sub(r"\n    listen \[::\][^\n]*", "", text)
    (folder / "smartq-hq.conf").write_text(text)
    user = f"user {pwd.getpwuid(os.geteuid()).pw_name};\n" if os.geteuid() == 0 else ""
    temp = "".join(f"    {d}_temp_path {folder / d};\n" for d in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    main = (f"{user}worker_processes 1;\npid {folder / 'nginx.pid'};\nerror_log {folder / 'error.log'} warn;\n"
            f"events {{ worker_connections 256; }}\nhttp {{\n    access_log off;\n{temp}"
            f"    include {folder / 'smartq-hq.conf'};\n}}\n")
    (folder / "nginx.conf").write_text(main)
    return folder / "nginx.conf"


def get(url: str, context: ssl.SSLContext | None = None, headers: dict[str, str] | None = None) -> tuple[int, str, dict]:
    req = urllib.request.Request(url, headers={"Host": "hq.example.org", **(headers or {})})
    opener = urllib.request.build_opener(urllib.request.HTTPSHandler(context=context), _NoRedirect)
    try:
        with opener.open(req, timeout=10) as r:
            return r.status, r.read().decode(), dict(r.headers)
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode(), dict(err.headers)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kw: object) -> None:
        return None


def start_hq(folder: Path, data: Path, port: int, scheduler: bool) -> subprocess.Popen[bytes]:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "hq.toml").write_text(f'port = {port}\ndata_dir = "{data}"\nlog_level = "WARNING"\n'
                                    f"trust_forwarded_for = true\nscheduler_enabled = {'true' if scheduler else 'false'}\n")
    log = (folder / "hq.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "hq", "--config", str(folder / "hq.toml")], cwd=ROOT,
                            stdout=log, stderr=subprocess.STDOUT)
    log.close()
    for _ in range(300):
        try:
            if get(f"http://127.0.0.1:{port}/healthz")[0] == 200:
                return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise AssertionError((folder / "hq.log").read_text()[-2000:])


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_the_example_proxy_terminates_tls_hides_metrics_and_survives_a_dead_hq(tmp_path):
    data = tmp_path / "data"
    ports = [free_port(), free_port()]
    first = start_hq(tmp_path / "hq1", data, ports[0], scheduler=True)  # migrates the shared database first
    hqs = [first, start_hq(tmp_path / "hq2", data, ports[1], scheduler=False)]
    crt, key = self_signed(tmp_path)
    http, https = free_port(), free_port()
    conf = site(tmp_path, ports, http, https, crt, key)
    check = subprocess.run([NGINX, "-t", "-p", str(tmp_path), "-c", str(conf)], capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stderr
    nginx = subprocess.Popen([NGINX, "-p", str(tmp_path), "-c", str(conf), "-g", "daemon off;"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    tls = ssl.create_default_context(cafile=str(crt))
    tls.check_hostname = False  # the certificate names hq.example.org; we connect to 127.0.0.1
    base = f"https://127.0.0.1:{https}"
    try:
        for _ in range(100):
            try:
                if get(f"{base}/healthz", tls)[0] == 200:
                    break
            except OSError:
                time.sleep(0.1)
        status, body, headers = get(f"{base}/healthz", tls)
        assert status == 200 and '"ok"' in body and "max-age=" in headers["Strict-Transport-Security"]
        assert get(f"http://127.0.0.1:{http}/healthz")[0] == 301
        # /metrics: never through the public site; each HQ answers its own loopback scraper.
        assert get(f"{base}/metrics", tls)[0] == 404
        assert all(get(f"http://127.0.0.1:{p}/metrics")[0] == 200 for p in ports)

        hqs[0].send_signal(signal.SIGKILL)
        hqs[0].wait(10)
        statuses = [get(f"{base}/healthz", tls)[0] for _ in range(30)]
        assert statuses == [200] * 30, statuses
    finally:
        nginx.send_signal(signal.SIGQUIT)
        try:
            nginx.wait(20)
        except subprocess.TimeoutExpired:
            nginx.kill()
            nginx.wait()
        for proc in hqs:
            stop(proc)
