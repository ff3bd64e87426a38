"""HQ's mutual-TLS branch link listener (`link_tls_port`): one TLS context per organization.

A device asks for `<org>.link.smartq` by SNI; HQ answers with its link certificate from that
organization's CA (its own HQ key, certified by the org CA) and accepts only client
certificates of that CA that are not on its CRL. So a device trusts HQ only as its own
organization's CA vouches for it, and HQ never lets one organization's device in with
another's context. Who the device is (branch, device id) is checked per request in hq/link.py.
"""

from __future__ import annotations

import logging
import ssl
import threading
import time
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from hq.trust import ca_dir, org_ca
from sync.certs import NAME_RE, cert_pem, tls_context, write_file

logger = logging.getLogger(__name__)
SUFFIX = ".link.smartq"
HQ_CERT_DAYS = 30


class LinkTLS:
    """Builds and caches each organization's server context; reloads it when the CRL changes."""

    def __init__(self, data_dir: Path | str, key: Ed25519PrivateKey, key_file: Path) -> None:
        self._data_dir, self._key, self._key_file = data_dir, key, key_file
        self._cache: dict[str, tuple[float, float, ssl.SSLContext]] = {}  # org -> (crl mtime, expires, ctx)
        self._lock = threading.Lock()

    def context_for(self, org: str) -> ssl.SSLContext | None:
        directory = ca_dir(self._data_dir, org)
        if not NAME_RE.match(org) or not (directory / "ca.key").exists():
            return None
        crl = directory / "crl.pem"
        mtime = crl.stat().st_mtime
        with self._lock:
            cached = self._cache.get(org)
            if cached is not None and cached[0] == mtime and cached[1] > time.time():
                return cached[2]
            ca = org_ca(self._data_dir, org)
            cert = ca.issue_hq(self._key.public_key(), now=time.time(), valid_s=HQ_CERT_DAYS * 86400)
            cert_file = directory / "hq-link.pem"
            write_file(cert_file, cert_pem(cert).encode("ascii"))
            ctx = tls_context(server=True, cert_file=cert_file, key_file=self._key_file, ca_pem=ca.pem, crl_file=crl)
            self._cache[org] = (mtime, time.time() + HQ_CERT_DAYS * 86400 / 2, ctx)
            return ctx

    def server_context(self) -> ssl.SSLContext:
        base = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        base.minimum_version = ssl.TLSVersion.TLSv1_3

        def pick(sock: ssl.SSLObject, name: str | None, _: ssl.SSLContext) -> int | None:
            org = name[: -len(SUFFIX)] if name and name.endswith(SUFFIX) else None
            ctx = self.context_for(org) if org else None
            if ctx is None:
                logger.warning("link TLS: no organization for SNI %r", name)
                return ssl.ALERT_DESCRIPTION_UNRECOGNIZED_NAME
            sock.context = ctx
            return None

        base.sni_callback = pick
        return base
