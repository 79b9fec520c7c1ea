"""TLS, HTTP/2 over ALPN and HTTP/3 over QUIC: a real `edgefn serve` on 127.0.0.1, certificates verified."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import json
import re
import socket
import ssl
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from edgefn.core.exceptions import ManifestError
from edgefn.manifest.schema import ServerConfig
from edgefn.server import hypercorn_config
from edgefn.tls import (
    CERT_FILE,
    DEFAULT_TLS_DIR,
    KEY_FILE,
    ensure_self_signed,
    fingerprint,
    generate_self_signed,
    tls_files,
)
from tests.h3client import h3_get, h3_request
from tests.servers import REPO, EdgeServer, edge_server, put_example_secrets

EXAMPLES = REPO / "examples" / "edgefn.toml"
REQUEST_ID = re.compile(r"[0-9a-f-]{36}")
H3_TIMEOUT = 10.0


@pytest.fixture(scope="module")
def examples() -> Iterator[EdgeServer]:
    put_example_secrets()
    with edge_server(EXAMPLES) as server:
        yield server


def trusting(cafile: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(cafile))


def served_fingerprint(server: EdgeServer) -> str:
    """The SHA-256 fingerprint of the certificate the TLS port presents (verified against the server's cafile)."""
    with socket.create_connection(("127.0.0.1", server.tls_port), timeout=5) as raw:
        with trusting(server.cafile).wrap_socket(raw, server_hostname="localhost") as tls:
            der = tls.getpeercert(binary_form=True)
    return ":".join(f"{b:02X}" for b in x509.load_der_x509_certificate(der).fingerprint(hashes.SHA256()))


def hello_manifest(directory: Path, http3: bool = True) -> Path:
    """A one-function app in its own directory, so its .edgefn/tls is the test's alone."""
    directory.mkdir(parents=True, exist_ok=True)
    manifest = directory / "edgefn.toml"
    manifest.write_text(
        f"""
[app]
name = "tls-test"

[server]
http3 = {str(http3).lower()}

[functions.hello]
source = {json.dumps(str(REPO / "examples" / "hello" / "src" / "hello.c"))}
memory_mb = 16
timeout_ms = 1000
fuel = 50_000_000
env = {{ GREETING = "Hello" }}

[default_behavior]
function = "hello"
"""
    )
    return manifest


# --- HTTP/3 over QUIC ------------------------------------------------------------------------------------


def test_http3_get_through_the_pipeline(examples):
    r = h3_get(f"{examples.https}/", cafile=examples.cafile, timeout=H3_TIMEOUT)
    assert (r.status, r.alpn, r.http_version) == (200, "h3", "HTTP/3")
    assert "Hello" in r.text
    assert REQUEST_ID.fullmatch(r.header("x-edgefn-request-id") or "")
    assert re.search(r"origin;dur=\d+\.\d+", r.header("server-timing") or "")

    s = h3_get(f"{examples.https}/secure/x", cafile=examples.cafile, timeout=H3_TIMEOUT)
    assert s.status == 200
    assert s.header("x-content-type-options") == "nosniff"
    assert s.header("x-frame-options") == "DENY"
    assert "max-age" in (s.header("strict-transport-security") or "")
    assert "viewer-response;dur=" in (s.header("server-timing") or "")
    rid = s.header("x-edgefn-request-id")
    assert REQUEST_ID.fullmatch(rid or "") and f'"request_id": "{rid}"' in examples.log.read_text()


def test_http3_request_headers_reach_the_guest_and_the_dns_name_verifies(examples):
    """The certificate verifies by its DNS name too (connecting to 127.0.0.1, checking 'localhost')."""
    r = h3_get(f"{examples.https}/private/report", cafile=examples.cafile, server_name="localhost",
               headers=[("authorization", "Bearer let-me-in")], timeout=H3_TIMEOUT)
    assert r.status == 200
    refused = h3_get(f"{examples.https}/private/report", cafile=examples.cafile, server_name="localhost", timeout=H3_TIMEOUT)
    assert refused.status == 401


def test_http3_refuses_a_certificate_it_does_not_trust(examples, tmp_path):
    other_ca, _ = ensure_self_signed(tmp_path / "other")
    with pytest.raises(ConnectionError, match="certificate"):
        h3_get(f"{examples.https}/", cafile=other_ca, timeout=H3_TIMEOUT)
    with pytest.raises(ConnectionError, match="(?i)hostname|doesn't match"):  # right CA, wrong name
        h3_get(f"{examples.https}/", cafile=examples.cafile, server_name="example.com", timeout=H3_TIMEOUT)


# --- TLS over TCP: HTTP/2 and HTTP/1.1 by ALPN -------------------------------------------------------------


def test_https_negotiates_http2_by_alpn(examples):
    with httpx.Client(http2=True, verify=trusting(examples.cafile)) as client:
        r = client.get(f"{examples.https}/secure/x")
    assert (r.status_code, r.http_version) == (200, "HTTP/2")
    assert r.headers["x-frame-options"] == "DENY"
    assert REQUEST_ID.fullmatch(r.headers["x-edgefn-request-id"])
    with httpx.Client(verify=trusting(examples.cafile)) as client:  # a client offering only http/1.1
        r1 = client.get(f"{examples.https}/")
    assert (r1.status_code, r1.http_version) == (200, "HTTP/1.1") and "Hello" in r1.text


def test_https_is_refused_by_a_client_that_does_not_trust_the_certificate(examples):
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(f"{examples.https}/", verify=ssl.create_default_context())  # system CAs only


# --- Alt-Svc -----------------------------------------------------------------------------------------------


def test_alt_svc_advertises_h3_on_the_tls_port(examples):
    """Every response names the QUIC port. Over TLS that is what lets a browser switch to HTTP/3; on cleartext
    responses it is harmless (browsers act on Alt-Svc only for https:// origins), and Hypercorn sets it per server."""
    expected = f'h3=":{examples.tls_port}"; ma=86400'
    ctx = trusting(examples.cafile)
    with httpx.Client(http2=True, verify=ctx) as h2, httpx.Client(verify=ctx) as h1:
        responses = {
            "https h2": h2.get(f"{examples.https}/"),
            "https h1": h1.get(f"{examples.https}/secure/x"),
            "http h1": h1.get(f"{examples.base}/"),
        }
    with httpx.Client(http1=False, http2=True) as h2c:
        responses["http h2c"] = h2c.get(f"{examples.base}/")
    for name, r in responses.items():
        assert r.headers.get_list("alt-svc") == [expected], name
    assert h3_get(f"{examples.https}/", cafile=examples.cafile, timeout=H3_TIMEOUT).header("alt-svc") == expected


def test_http3_off_means_no_quic_listener_and_no_alt_svc(tmp_path):
    with edge_server(hello_manifest(tmp_path / "app", http3=False)) as server:
        r = httpx.get(f"{server.https}/", verify=trusting(server.cafile))
        assert r.status_code == 200 and "alt-svc" not in r.headers
        assert "alt-svc" not in httpx.get(f"{server.base}/").headers
        assert "HTTP/3" not in server.log.read_text()
        with pytest.raises((ConnectionError, asyncio.TimeoutError)):
            h3_get(f"{server.https}/", cafile=server.cafile, timeout=2.0)


# --- the self-signed certificate across restarts ------------------------------------------------------------


def test_self_signed_certificate_is_reused_across_restarts_and_regenerated_when_deleted(tmp_path):
    manifest = hello_manifest(tmp_path / "app")
    tls_dir = manifest.parent / DEFAULT_TLS_DIR
    with edge_server(manifest) as first:
        assert first.cafile == tls_dir / CERT_FILE
        served = served_fingerprint(first)
        assert served == fingerprint(first.cafile) and served in first.log.read_text()
        assert h3_get(f"{first.https}/", cafile=first.cafile, timeout=H3_TIMEOUT).status == 200
    assert stat.S_IMODE((tls_dir / KEY_FILE).stat().st_mode) == 0o600
    assert first.stopped_in is not None and first.stopped_in < 5  # QUIC does not hold shutdown for graceful_timeout

    with edge_server(manifest) as second:
        assert served_fingerprint(second) == served  # reused: trusted once, trusted after a restart

    (tls_dir / CERT_FILE).unlink()
    (tls_dir / KEY_FILE).unlink()
    with edge_server(manifest) as third:
        renewed = served_fingerprint(third)
        assert renewed != served and renewed == fingerprint(tls_dir / CERT_FILE)
        assert h3_get(f"{third.https}/", cafile=third.cafile, timeout=H3_TIMEOUT).status == 200


def test_http3_with_several_workers(tmp_path):
    """Each worker binds its own SO_REUSEPORT UDP socket; with one shared socket each datagram would go to
    whichever worker read first, and most of these connections (each from a new client port) would stall."""
    with edge_server(hello_manifest(tmp_path / "app"), "--workers", "3") as server:
        # every worker in the port's SO_REUSEPORT group first: one joining later re-spreads client addresses,
        # and a connection open at that moment may have to wait for retransmissions
        deadline = time.monotonic() + 120
        while server.log.read_text().count("serves HTTP/3 on") < 3 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert server.log.read_text().count("serves HTTP/3 on") == 3, server.log.read_text()
        started = time.monotonic()
        for _ in range(12):
            assert h3_get(f"{server.https}/", cafile=server.cafile, timeout=H3_TIMEOUT).status == 200
        assert time.monotonic() - started < 10  # no handshake waited for retransmissions to find its worker
        with httpx.Client(http2=True, verify=trusting(server.cafile)) as client:
            assert client.get(f"{server.https}/").http_version == "HTTP/2"
    assert server.log.read_text().count("edgefn.access") == 13  # workers log too
    assert server.stopped_in is not None and server.stopped_in < 5  # every worker's QUIC loop is woken


def test_concurrent_http3_connections(examples):
    async def burst() -> list[int]:
        rs = await asyncio.gather(*(h3_request(f"{examples.https}/", cafile=examples.cafile, timeout=H3_TIMEOUT) for _ in range(4)))
        return [r.status for r in rs]

    assert asyncio.run(burst()) == [200] * 4


# --- the certificate itself (no server) ----------------------------------------------------------------------


def test_self_signed_certificate_profile(tmp_path):
    cert_path, key_path = ensure_self_signed(tmp_path)
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    key = serialization.load_pem_private_key(key_path.read_bytes(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp256r1"
    assert cert.issuer == cert.subject
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")]
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert dt.timedelta(days=360) < lifetime < dt.timedelta(days=370)
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600


def test_self_signed_certificate_is_reused_and_regenerated_when_unusable(tmp_path):
    cert, key = ensure_self_signed(tmp_path)
    original = fingerprint(cert)
    assert ensure_self_signed(tmp_path) == (cert, key) and fingerprint(cert) == original

    cert.write_text("not a certificate")
    ensure_self_signed(tmp_path)
    garbled_fixed = fingerprint(cert)
    assert garbled_fixed != original

    expired_cert, expired_key = generate_self_signed(now=dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=366))
    cert.write_bytes(expired_cert)
    key.write_bytes(expired_key)
    ensure_self_signed(tmp_path)
    assert fingerprint(cert) not in (garbled_fixed, fingerprint_of(expired_cert))

    other_cert, _ = generate_self_signed()
    cert.write_bytes(other_cert)  # a certificate that does not belong to the key
    ensure_self_signed(tmp_path)
    assert fingerprint(cert) != fingerprint_of(other_cert)
    ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert, key)  # a matching pair again
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def fingerprint_of(pem: bytes) -> str:
    return ":".join(f"{b:02X}" for b in x509.load_pem_x509_certificate(pem).fingerprint(hashes.SHA256()))


def test_processes_racing_to_create_the_certificate_agree(tmp_path):
    start_at = time.time() + 1.5  # every process imports first, then all generate at once
    script = (
        "import sys, time; from pathlib import Path; from edgefn.tls import ensure_self_signed, fingerprint\n"
        f"time.sleep(max(0.0, {start_at} - time.time()))\n"
        "cert, key = ensure_self_signed(Path(sys.argv[1]))\n"
        "import ssl; ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert, key)\n"
        "print(fingerprint(cert))\n"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", script, str(tmp_path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO, text=True)
        for _ in range(6)
    ]
    outputs = [p.communicate(timeout=60) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err for _, err in outputs]
    assert len({out.strip() for out, _ in outputs}) == 1
    assert fingerprint(tmp_path / CERT_FILE) == outputs[0][0].strip()


def test_a_leaked_key_cannot_vouch_for_other_sites(tmp_path):
    """The self-signed certificate is a CA (so it can be trusted directly), constrained to localhost names."""
    cert_path, key_path = ensure_self_signed(tmp_path)
    ca = x509.load_pem_x509_certificate(cert_path.read_bytes())
    ca_key = serialization.load_pem_private_key(key_path.read_bytes(), None)

    def leaf(name: str) -> x509.Certificate:
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.timezone.utc)
        return (
            x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, name)]))
            .issuer_name(ca.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([x509.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256())
        )

    verifier = lambda name: PolicyBuilder().store(Store([ca])).build_server_verifier(x509.DNSName(name))  # noqa: E731
    verifier("localhost").verify(leaf("localhost"), [])  # the constraint allows localhost ...
    with pytest.raises(VerificationError):
        verifier("example.com").verify(leaf("example.com"), [])  # ... and nothing else


def test_explicit_certificate_files_must_exist_and_load(tmp_path):
    manifest = tmp_path / "edgefn.toml"
    manifest.write_text("")
    cert_pem, key_pem = generate_self_signed()
    (tmp_path / "cert.pem").write_bytes(cert_pem)
    (tmp_path / "key.pem").write_bytes(key_pem)

    cert, key, self_signed = tls_files(manifest, ServerConfig(tls_cert="cert.pem", tls_key="key.pem"))
    assert (cert, key, self_signed) == (tmp_path / "cert.pem", tmp_path / "key.pem", False)

    with pytest.raises(ManifestError) as missing:
        tls_files(manifest, ServerConfig(tls_cert="nope.pem", tls_key="key.pem"))
    assert missing.value.key == "server.tls_cert" and "nope.pem" in str(missing.value)
    with pytest.raises(ManifestError) as half:
        tls_files(manifest, ServerConfig(tls_cert="cert.pem"))
    assert half.value.key == "server.tls_key"
    _, other_key = generate_self_signed()
    (tmp_path / "other-key.pem").write_bytes(other_key)
    with pytest.raises(ManifestError) as mismatch:
        tls_files(manifest, ServerConfig(tls_cert="cert.pem", tls_key="other-key.pem"))
    assert mismatch.value.key == "server.tls_cert"

    cert, key, self_signed = tls_files(manifest, ServerConfig())
    assert self_signed and cert == tmp_path / DEFAULT_TLS_DIR / CERT_FILE and key.exists()


def test_hypercorn_config_listeners():
    tls = hypercorn_config("127.0.0.1", 8787, 1, tls_port=8443, certfile=Path("c.pem"), keyfile=Path("k.pem"))
    assert tls.insecure_bind == ["127.0.0.1:8787"] and tls.bind == ["127.0.0.1:8443"] and tls.quic_bind == ["127.0.0.1:8443"]
    assert (tls.certfile, tls.keyfile, tls.workers) == ("c.pem", "k.pem", 0)
    assert tls.alt_svc_headers == ['h3=":8443"; ma=86400']
    assert tls.response_headers("h11")[-1] == (b"alt-svc", b'h3=":8443"; ma=86400')

    no_h3 = hypercorn_config("::1", 8787, 4, tls_port=8443, certfile=Path("c.pem"), keyfile=Path("k.pem"), http3=False)
    assert no_h3.bind == ["[::1]:8443"] and no_h3.quic_bind == [] and no_h3.alt_svc_headers == [] and no_h3.workers == 4

    plain = hypercorn_config("127.0.0.1", 0, 1, tls_port=0)
    assert plain.bind == ["127.0.0.1:0"] and not plain.ssl_enabled and plain.quic_bind == []
