"""A device's trust material: its certificate from the org CA, the CA, the CRL; mutual TLS.

Files in the device's data dir (written by enrollment, `smartq enroll`, or `smartq init` for the
sample branch's local CA):

    device.key   the Ed25519 key (events, requests and TLS), mode 0600
    device.crt   its certificate, bound to org, branch, role and device id
    ca.pem       the organization's CA certificate: the only TLS trust anchor
    crl.pem      the CA's latest certificate revocation list

`NodeTLS.check_peer` is what both sides of a LAN connection run after the handshake: the
peer's certificate must name our organization and branch and the device that signed the
request (or answer), carry that device's roster key, and not be revoked.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from sync.certs import (CertError, Identity, add_crl, identity_der, load_cert, load_crl, revoked_serials, tls_context,
                        verify_issued, write_file)
from sync.keys import KEY_FILE
from sync.protocol import AuthError

from appliance.config import Config, ConfigError

logger = logging.getLogger(__name__)

CERT_FILE, CA_FILE, CRL_FILE = "device.crt", "ca.pem", "crl.pem"


def _raw(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def has_certificate(data_dir: Path) -> bool:
    return (data_dir / CERT_FILE).exists() and (data_dir / CA_FILE).exists()


class NodeTLS:
    """This device's certificate and contexts; checks peers' certificates."""

    def __init__(self, data_dir: Path, *, config: Config, key: Ed25519PrivateKey,
                 keyring: Callable[[str], Ed25519PublicKey | None], now: Callable[[], float] = time.time) -> None:
        self.data_dir = data_dir
        self._key = key
        self._keyring = keyring
        self._now = now
        try:
            self.ca = load_cert((data_dir / CA_FILE).read_bytes())
            cert = load_cert((data_dir / CERT_FILE).read_bytes())
            self.me = verify_issued(self.ca, cert, now=now())
        except (OSError, CertError) as err:
            raise ConfigError(f"device certificate in {data_dir}: {err} (enroll the device: smartq enroll)") from err
        if (self.me.branch, self.me.device, self.me.role) != (config.branch_id, config.device_id, config.role):
            raise ConfigError(f"{data_dir}/{CERT_FILE} is for {self.me.device} ({self.me.role}) of branch "
                              f"{self.me.branch}, not for this config's {config.device_id} of {config.branch_id}")
        if _raw(cert.public_key()) != _raw(key.public_key()):  # type: ignore[arg-type]
            raise ConfigError(f"{data_dir}/{CERT_FILE} certifies another key than {data_dir}/{KEY_FILE}")
        self.org = self.me.org
        self.branch = config.branch_id
        self.fingerprint = self.me.fingerprint
        self.revoked: set[int] = set()
        crl_path = data_dir / CRL_FILE
        if not crl_path.exists():
            raise ConfigError(f"{crl_path} is missing (enrollment writes it with the certificate)")
        self._load_crl(crl_path.read_bytes())
        key_file, cert_file = data_dir / KEY_FILE, data_dir / CERT_FILE
        ca_pem = self.ca.public_bytes(serialization.Encoding.PEM).decode("ascii")
        self.server = tls_context(server=True, cert_file=cert_file, key_file=key_file, ca_pem=ca_pem, crl_file=crl_path)
        self.client = tls_context(server=False, cert_file=cert_file, key_file=key_file, ca_pem=ca_pem, crl_file=crl_path)

    def _load_crl(self, pem: bytes) -> x509.CertificateRevocationList:
        crl = load_crl(pem)
        ca_key = self.ca.public_key()
        if not crl.is_signature_valid(ca_key):  # type: ignore[arg-type]
            raise CertError("CRL is not signed by the org CA")
        self.revoked |= revoked_serials(crl)
        return crl

    def apply_crl(self, pem: str) -> bool:
        """A newer CRL (from a revocation event): refuse its certificates from now on, for new
        handshakes (TLS) and requests on connections already open (check_peer)."""
        try:
            before = set(self.revoked)
            self._load_crl(pem.encode("ascii"))
        except CertError as err:
            logger.warning("ignoring a CRL: %s", err)
            return False
        path = self.data_dir / CRL_FILE
        write_file(path, pem.encode("ascii"))
        add_crl([self.server, self.client], path)
        if self.revoked != before:
            logger.warning("certificates revoked: %s", sorted(self.revoked - before))
        return True

    def due_for_renewal(self) -> bool:
        """Past half the certificate's life (it is renewed over the HQ link)."""
        cert = load_cert((self.data_dir / CERT_FILE).read_bytes())
        start, end = cert.not_valid_before_utc.timestamp(), cert.not_valid_after_utc.timestamp()
        return self._now() > start + (end - start) / 2

    def install_certificate(self, cert_pem_text: str, crl_pem_text: str) -> None:
        """A renewed certificate of the same key: check it, write it, use it for new handshakes."""
        try:
            cert = load_cert(cert_pem_text)
            me = verify_issued(self.ca, cert, now=self._now())
        except CertError as err:
            raise ConfigError(f"renewed certificate: {err}") from err
        if (me.org, me.branch, me.device, me.role) != (self.org, self.me.branch, self.me.device, self.me.role):
            raise ConfigError("renewed certificate is for another identity")
        if _raw(cert.public_key()) != _raw(self._key.public_key()):  # type: ignore[arg-type]
            raise ConfigError("renewed certificate certifies another key")
        write_file(self.data_dir / CERT_FILE, cert_pem_text.encode("ascii"))
        for ctx in (self.server, self.client):
            ctx.load_cert_chain(str(self.data_dir / CERT_FILE), str(self.data_dir / KEY_FILE))
        self.me = me
        self.fingerprint = me.fingerprint
        if crl_pem_text:
            self.apply_crl(crl_pem_text)
        logger.info("certificate renewed until %s", time.strftime("%Y-%m-%d %H:%M", time.gmtime(me.not_after)))

    def check_peer(self, der: bytes | None, device: str | None) -> Identity:
        """The identity of a TLS peer that signed as `device`; AuthError(403) when it must not
        be trusted."""
        if der is None:
            raise AuthError(403, "no client certificate (mutual TLS required)")
        try:
            peer = identity_der(der)
        except CertError as err:
            raise AuthError(403, str(err)) from err
        if peer.org != self.org:
            raise AuthError(403, f"certificate of organization {peer.org!r}")
        if peer.serial in self.revoked:
            raise AuthError(403, f"certificate of {peer.device!r} is revoked")
        if peer.role == "hq":  # HQ's link certificate: only HQ itself may present it
            if device is not None and device != f"hq:{self.branch}":
                raise AuthError(403, f"HQ's certificate, the request is signed by {device!r}")
            return peer
        if peer.branch != self.branch:
            raise AuthError(403, f"certificate of branch {peer.branch!r}")
        if device is not None and peer.device != device:
            raise AuthError(403, f"certificate is {peer.device!r}'s, the request is signed by {device!r}")
        roster_key = self._keyring(peer.device)
        cert_key = x509.load_der_x509_certificate(der).public_key()
        if roster_key is None or _raw(roster_key) != _raw(cert_key):  # type: ignore[arg-type]
            raise AuthError(403, f"certificate key of {peer.device!r} is not its roster key")
        return peer


__all__ = ["CA_FILE", "CERT_FILE", "CRL_FILE", "NodeTLS", "has_certificate"]
