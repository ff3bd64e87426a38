"""The organization's certificate authority, device certificates and mutual-TLS contexts.

Every organization has one CA (an Ed25519 key and a self-signed certificate). A device's
certificate carries the device's own Ed25519 key (the key that signs its events), and binds it
to organization, branch, role and device id:

    subject  O=<org>, OU=<branch>, CN=<device>, title=<role>
    SAN      URI urn:smartq:device:<org>:<branch>:<role>:<device>

HQ's link listener gets a certificate of the same CA with the URI ``urn:smartq:hq:<org>`` and
the DNS name ``<org>.link.smartq`` (the SNI a device asks for). Certificates are short-lived
(days) and renewed over the link; revocation is a CRL signed by the CA, carried in the log.

TLS contexts (`tls_context`) trust the org CA only (no system store), require the peer's
certificate (CERT_REQUIRED, both ways), TLS 1.3 only, and check every leaf against the CRL.
Who the peer is (`identity`) is checked after the handshake by the caller.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import re
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from sync.keys import write_private

URI_DEVICE = "urn:smartq:device:"
URI_HQ = "urn:smartq:hq:"
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
LINK_SNI = "{org}.link.smartq"
CRL_BACKDATE_S = 600


class CertError(Exception):
    """A certificate, CRL or key that cannot be used; the message says why."""


@dataclass(frozen=True)
class Identity:
    """Who a certificate says its holder is. `role` is "hq" for HQ's link certificate."""

    org: str
    branch: str
    role: str
    device: str
    serial: int
    fingerprint: str
    not_after: float  # unix seconds


def _utc(seconds: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(seconds, dt.timezone.utc)


def _check_names(**names: str) -> None:
    for what, value in names.items():
        if not isinstance(value, str) or not NAME_RE.match(value):
            raise CertError(f"{what} {value!r} is not a valid id (lowercase letters, digits, - and _)")


def fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 of the certificate's DER, hex (what mDNS announces as `fp`)."""
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def der_fingerprint(der: bytes) -> str:
    return hashlib.sha256(der).hexdigest()


def cert_pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode("ascii")


def crl_pem(crl: x509.CertificateRevocationList) -> str:
    return crl.public_bytes(serialization.Encoding.PEM).decode("ascii")


def load_cert(pem: str | bytes) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(pem.encode("ascii") if isinstance(pem, str) else pem)
    except ValueError as err:
        raise CertError(f"not a PEM certificate: {err}") from err


def load_crl(pem: str | bytes) -> x509.CertificateRevocationList:
    try:
        return x509.load_pem_x509_crl(pem.encode("ascii") if isinstance(pem, str) else pem)
    except ValueError as err:
        raise CertError(f"not a PEM CRL: {err}") from err


def identity(cert: x509.Certificate) -> Identity:
    """Parse the SmartQ identity out of a certificate (raises CertError when it has none)."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound as err:
        raise CertError("certificate has no subjectAltName") from err
    not_after = cert.not_valid_after_utc.timestamp()
    for uri in san.get_values_for_type(x509.UniformResourceIdentifier):
        if uri.startswith(URI_DEVICE):
            parts = uri[len(URI_DEVICE):].split(":")
            if len(parts) == 4:
                org, branch, role, device = parts
                return Identity(org, branch, role, device, cert.serial_number, fingerprint(cert), not_after)
        if uri.startswith(URI_HQ):
            org = uri[len(URI_HQ):]
            return Identity(org, "", "hq", "hq", cert.serial_number, fingerprint(cert), not_after)
    raise CertError("certificate carries no SmartQ identity (urn:smartq:...)")


def identity_der(der: bytes) -> Identity:
    try:
        return identity(x509.load_der_x509_certificate(der))
    except ValueError as err:
        raise CertError(f"unreadable peer certificate: {err}") from err


class CertAuthority:
    """One organization's CA: issues device and HQ-link certificates and signs CRLs."""

    def __init__(self, key: Ed25519PrivateKey, cert: x509.Certificate) -> None:
        self.key = key
        self.cert = cert
        orgs = cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
        if not orgs:
            raise CertError("CA certificate has no organization (O=)")
        self.org = str(orgs[0].value)

    @classmethod
    def create(cls, org: str, *, now: float, days: int = 3650) -> CertAuthority:
        _check_names(org=org)
        key = Ed25519PrivateKey.generate()
        name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, org),
                          x509.NameAttribute(NameOID.COMMON_NAME, f"SmartQ CA {org}")])
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(_utc(now - 300)).not_valid_after(_utc(now + days * 86400))
                .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                             data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                             crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
                .sign(key, None))
        return cls(key, cert)

    # -- files -----------------------------------------------------------------------------
    @classmethod
    def load(cls, directory: Path) -> CertAuthority:
        try:
            key = serialization.load_pem_private_key((directory / "ca.key").read_bytes(), password=None)
            cert = load_cert((directory / "ca.pem").read_bytes())
        except (OSError, ValueError) as err:
            raise CertError(f"cannot read the CA in {directory}: {err}") from err
        if not isinstance(key, Ed25519PrivateKey):
            raise CertError(f"{directory}/ca.key is not an Ed25519 key")
        return cls(key, cert)

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        pem = self.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption())
        write_private(directory / "ca.key", pem)
        write_file(directory / "ca.pem", cert_pem(self.cert).encode("ascii"))

    @property
    def pem(self) -> str:
        return cert_pem(self.cert)

    # -- issuing ---------------------------------------------------------------------------
    def _leaf(self, subject: x509.Name, public_key: Ed25519PublicKey, san: list[x509.GeneralName], *, now: float,
              valid_s: float, serial: int | None, server: bool) -> x509.Certificate:
        usages = [ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH]
        return (x509.CertificateBuilder().subject_name(subject).issuer_name(self.cert.subject)
                .public_key(public_key).serial_number(serial or x509.random_serial_number())
                .not_valid_before(_utc(now - 300)).not_valid_after(_utc(now + valid_s))
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                             data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                             crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
                .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
                .add_extension(x509.SubjectAlternativeName(san), critical=False)
                .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False)
                .sign(self.key, None))

    def issue_device(self, public_key: Ed25519PublicKey, *, branch: str, role: str, device: str, now: float,
                     valid_s: float, serial: int | None = None) -> x509.Certificate:
        """A device certificate for `public_key` (the device's own event-signing key)."""
        _check_names(branch=branch, role=role, device=device)
        subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, self.org),
                             x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, branch),
                             x509.NameAttribute(NameOID.COMMON_NAME, device),
                             x509.NameAttribute(NameOID.TITLE, role)])
        uri = f"{URI_DEVICE}{self.org}:{branch}:{role}:{device}"
        return self._leaf(subject, public_key, [x509.UniformResourceIdentifier(uri)], now=now, valid_s=valid_s,
                          serial=serial, server=False)

    def issue_hq(self, public_key: Ed25519PublicKey, *, now: float, valid_s: float) -> x509.Certificate:
        """HQ's link certificate for this organization (SNI name `<org>.link.smartq`)."""
        subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, self.org),
                             x509.NameAttribute(NameOID.COMMON_NAME, LINK_SNI.format(org=self.org))])
        san = [x509.UniformResourceIdentifier(f"{URI_HQ}{self.org}"), x509.DNSName(LINK_SNI.format(org=self.org))]
        return self._leaf(subject, public_key, san, now=now, valid_s=valid_s, serial=None, server=True)

    def crl(self, revoked: list[tuple[int, float]], *, now: float, next_update_s: float = 400 * 86400,
            previous: x509.CertificateRevocationList | None = None) -> x509.CertificateRevocationList:
        """A CRL of `revoked` (serial, unix time). Its lastUpdate is later than `previous`'s,
        so a TLS store that holds both picks this one (OpenSSL prefers the newest CRL that is
        already valid); it is backdated by `CRL_BACKDATE_S` so a peer whose clock lags ours
        still takes it at once."""
        last = now - CRL_BACKDATE_S
        if previous is not None:
            last = max(now, previous.last_update_utc.timestamp() + 1)
        builder = (x509.CertificateRevocationListBuilder().issuer_name(self.cert.subject)
                   .last_update(_utc(last)).next_update(_utc(last + next_update_s)))
        for serial, when in revoked:
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(_utc(when)).build())
        return builder.sign(self.key, None)


def verify_issued(ca: x509.Certificate, cert: x509.Certificate, *, now: float) -> Identity:
    """Check that `cert` was issued by `ca` and is valid at `now`; its identity (CertError)."""
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, Exception) as err:  # InvalidSignature has no common base
        raise CertError(f"certificate not issued by the org CA: {err}") from err
    if not cert.not_valid_before_utc.timestamp() <= now <= cert.not_valid_after_utc.timestamp():
        raise CertError("certificate is expired or not yet valid")
    return identity(cert)


def revoked_serials(crl: x509.CertificateRevocationList) -> set[int]:
    return {r.serial_number for r in crl}


def write_file(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def tls_context(*, server: bool, cert_file: Path, key_file: Path, ca_pem: str, crl_file: Path | None) -> ssl.SSLContext:
    """A mutual-TLS context: TLS 1.3, our certificate, the org CA as the only trust anchor, the
    peer's certificate required and checked against the CRL. The peer's identity is checked by
    the caller after the handshake (`identity_der` of `getpeercert(binary_form=True)`)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if server else ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.check_hostname = False  # identity comes from the SmartQ URI, checked by the caller
    ctx.verify_mode = ssl.CERT_REQUIRED
    try:
        ctx.load_verify_locations(cadata=ca_pem)
        if crl_file is not None:
            ctx.load_verify_locations(cafile=str(crl_file))
            ctx.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF
        ctx.load_cert_chain(str(cert_file), str(key_file))
    except (ssl.SSLError, OSError) as err:
        raise CertError(f"cannot set up TLS with {cert_file}: {err}") from err
    return ctx


def add_crl(contexts: list[ssl.SSLContext], crl_file: Path) -> None:
    """Load a newer CRL into live contexts (new handshakes use the latest one)."""
    for ctx in contexts:
        ctx.load_verify_locations(cafile=str(crl_file))


def peer_der(transport: object) -> bytes | None:
    """The DER certificate the TLS peer of an asyncio transport presented (None: not TLS)."""
    get = getattr(transport, "get_extra_info", None)
    ssl_object = get("ssl_object") if get is not None else None
    if ssl_object is None:
        return None
    return ssl_object.getpeercert(binary_form=True)


__all__ = ["CertAuthority", "CertError", "Identity", "add_crl", "cert_pem", "crl_pem", "der_fingerprint",
           "fingerprint", "identity", "identity_der", "load_cert", "load_crl", "peer_der", "revoked_serials",
           "tls_context", "verify_issued", "write_file", "write_private"]
