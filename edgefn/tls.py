"""TLS material for `edgefn serve`: the manifest's certificate, or a self-signed one for localhost.

The self-signed certificate is generated once per project (`<manifest dir>/.edgefn/tls/`) and reused, so
it can be trusted once (curl --cacert, the system store, a browser; see docs/tls.md). It is regenerated
only when it is missing, unparseable, does not match its key, or is about to expire.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import getpass
import ipaddress
import socket
import ssl
from pathlib import Path
from typing import Iterator

from .core.exceptions import ManifestError
from .core.files import write_atomic
from .manifest.schema import ServerConfig

DEFAULT_TLS_DIR = Path(".edgefn") / "tls"  # relative to the manifest
CERT_FILE = "localhost.crt"
KEY_FILE = "localhost.key"
VALIDITY = dt.timedelta(days=365)
RENEW_BEFORE = dt.timedelta(days=1)  # regenerate a certificate that expires within this
SKEW = dt.timedelta(hours=1)  # backdate not_valid_before, for clients whose clock is slightly behind

DNS_NAMES = ("localhost",)
IP_ADDRESSES = (ipaddress.IPv4Address("127.0.0.1"), ipaddress.IPv6Address("::1"))


def ensure_self_signed(directory: Path) -> tuple[Path, Path]:
    """Return (certificate, key) of the self-signed localhost certificate in `directory`, creating it once.

    Safe when several processes call it at once: generation is serialized by a lock file (where the OS
    has flock), every file is written to a temporary name and renamed into place, and a certificate that
    does not match its key counts as absent.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / CERT_FILE, directory / KEY_FILE
    if _usable(cert, key):
        return cert, key
    with _locked(directory / ".lock"):
        if not _usable(cert, key):  # another process may have made it while we waited
            cert_pem, key_pem = generate_self_signed()
            write_atomic(key, key_pem, 0o600)  # the key first: a new cert never pairs with an old key for long
            write_atomic(cert, cert_pem, 0o644)
    return cert, key


def generate_self_signed(now: dt.datetime | None = None) -> tuple[bytes, bytes]:
    """A fresh (certificate PEM, PKCS#8 key PEM) for localhost, 127.0.0.1 and ::1, with an EC P-256 key.

    The certificate is its own issuer and is marked as a CA, so a client can trust this one file directly.
    Name constraints limit what it could vouch for to the names above: were the key to leak from a machine
    that trusts the certificate, it still could not be used to impersonate any other site.
    """
    from cryptography import x509  # each function imports cryptography: a cleartext-only server never does (~30 ms)
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = now or dt.datetime.now(dt.timezone.utc)
    key = ec.generate_private_key(ec.SECP256R1())
    try:
        owner = f"{getpass.getuser()}@{socket.gethostname()}"
    except Exception:  # no user name (e.g. a container with an unknown uid)
        owner = socket.gethostname()
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, "localhost"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "edgefn development certificate"),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, owner[:64]),
        ]
    )
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in DNS_NAMES] + [x509.IPAddress(ip) for ip in IP_ADDRESSES]
    permitted: list[x509.GeneralName] = [x509.DNSName(n) for n in DNS_NAMES] + [
        x509.IPAddress(ipaddress.ip_network(ip)) for ip in IP_ADDRESSES
    ]
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - SKEW)
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False, data_encipherment=False,
                key_agreement=False, key_cert_sign=True, crl_sign=False, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.NameConstraints(permitted_subtrees=permitted, excluded_subtrees=None), critical=True)
        .add_extension(ski, critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def fingerprint(cert: Path) -> str:
    """SHA-256 fingerprint of the first certificate in a PEM file, as colon-separated hex (as browsers show it)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    digest = x509.load_pem_x509_certificate(Path(cert).read_bytes()).fingerprint(hashes.SHA256())
    return ":".join(f"{b:02X}" for b in digest)


def tls_files(manifest_path: Path, server: ServerConfig) -> tuple[Path, Path, bool]:
    """(certificate, key, self_signed) to serve TLS with, per the manifest's `server` table.

    Explicit `tls_cert`/`tls_key` are taken relative to the manifest and must both exist and load;
    without them, the project's self-signed localhost certificate is used (made on first use).
    """
    manifest_path = Path(manifest_path).resolve()
    root = manifest_path.parent
    if server.tls_cert is None and server.tls_key is None:
        cert, key = ensure_self_signed(root / DEFAULT_TLS_DIR)
        return cert, key, True
    if server.tls_cert is None or server.tls_key is None:
        given, missing = ("tls_cert", "tls_key") if server.tls_key is None else ("tls_key", "tls_cert")
        raise ManifestError(
            manifest_path, f"server.{missing}", f"server.{given} is set but server.{missing} is not",
            "set both server.tls_cert and server.tls_key, or neither to use a self-signed localhost certificate",
        )
    cert, key = (root / server.tls_cert).resolve(), (root / server.tls_key).resolve()
    for manifest_key, path in (("server.tls_cert", cert), ("server.tls_key", key)):
        if not path.is_file():
            raise ManifestError(
                manifest_path, manifest_key, f"no such file: {path}",
                "give a PEM file path relative to the manifest, or remove server.tls_cert and server.tls_key "
                "to use a self-signed localhost certificate",
            )
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert, key)
    except (ssl.SSLError, ValueError, OSError) as exc:
        raise ManifestError(
            manifest_path, "server.tls_cert", f"cannot use {cert} with the key {key}: {exc}",
            "tls_cert must be a PEM certificate chain (leaf first) and tls_key its unencrypted PEM private key",
        ) from None
    return cert, key, False


# --- helpers ------------------------------------------------------------------------------------------


def _usable(cert: Path, key: Path) -> bool:
    """True when both files parse, belong together, and the certificate is valid now and tomorrow."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    try:
        certificate = x509.load_pem_x509_certificate(cert.read_bytes())
        private_key = serialization.load_pem_private_key(key.read_bytes(), password=None)
    except (OSError, ValueError, TypeError):
        return False
    now = dt.datetime.now(dt.timezone.utc)
    if not certificate.not_valid_before_utc <= now or certificate.not_valid_after_utc <= now + RENEW_BEFORE:
        return False
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    return certificate.public_key().public_bytes(serialization.Encoding.DER, spki) == private_key.public_key().public_bytes(
        serialization.Encoding.DER, spki
    )



@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    try:
        import fcntl
    except ImportError:  # Windows: no flock; the pair check in _usable still catches a mixed-up pair
        yield
        return
    with open(path, "a") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)
