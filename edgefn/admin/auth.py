"""Who may use the admin API: the bearer token, as a bearer token or as the secret of an AWS SigV4 signature.

AWS's own clients (boto3, the AWS CLI, the SDKs) sign every request with Signature Version 4 instead of
sending a secret, so the admin token is also accepted as the secret access key: configure a client with
any access key id and `edgefn admin token` as the secret. The signature is checked as AWS checks it (the
canonical request, the scope's date, region and service, and the x-amz-date within 15 minutes), so the
token never travels and a captured request cannot be replayed later or changed.

Both checks happen before routing, and a refusal says nothing about the path.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from datetime import datetime, timedelta, timezone
from urllib.parse import quote

from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["AdminAuth", "SIGV4_MAX_SKEW", "UNAUTHORIZED_BODY"]

UNAUTHORIZED_BODY = json.dumps({"Type": "User", "Message": "Unauthorized"}).encode()
#: a signed request's x-amz-date may be this far from now (AWS's rule)
SIGV4_MAX_SKEW = timedelta(minutes=15)
#: the largest body a signed request may have: it is read whole to be hashed (Lambda's invoke limit and then some)
SIGNED_BODY_LIMIT = 7 * 1024 * 1024
_SIGV4 = re.compile(
    r"AWS4-HMAC-SHA256\s+Credential=(?P<key>[^/,\s]+)/(?P<date>\d{8})/(?P<region>[^/,\s]+)/(?P<service>[^/,\s]+)/aws4_request\s*,"
    r"\s*SignedHeaders=(?P<signed>[a-z0-9;\-]+)\s*,\s*Signature=(?P<signature>[0-9a-f]{64})\s*$"
)


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


def _canonical_uri(raw_path: bytes) -> str:
    """The path as signed: dot segments removed, then percent-encoded once more (SigV4 for services other than S3)."""
    segments: list[str] = []
    path = raw_path.decode("latin-1") or "/"
    for part in path.split("/"):
        if part == "..":
            if segments:
                segments.pop()
        elif part != ".":
            segments.append(part)
    normalized = "/".join(segments)
    if not normalized.startswith("/"):
        normalized = "/" + normalized
    return quote(normalized, safe="/~")


def _canonical_query(raw_query: bytes) -> str:
    pairs = [p.partition("=") for p in raw_query.decode("latin-1").split("&") if p]
    return "&".join(f"{k}={v}" for k, _, v in sorted(pairs))


def sigv4_valid(scope: Scope, authorization: str, body: bytes, secret: str, now: datetime | None = None) -> bool:
    """True if `authorization` is a SigV4 signature of this request made with `secret`."""
    found = _SIGV4.match(authorization)
    if found is None:
        return False
    headers: dict[str, list[str]] = {}
    for name, value in scope["headers"]:
        headers.setdefault(name.decode("latin-1").lower(), []).append(" ".join(value.decode("latin-1").split()))
    amz_date = (headers.get("x-amz-date") or [""])[0]
    try:
        when = datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=timezone.utc)
    except ValueError:
        return False
    if abs((now or datetime.now(timezone.utc)) - when) > SIGV4_MAX_SKEW or amz_date[:8] != found["date"]:
        return False
    signed = found["signed"].split(";")
    if "host" not in signed or any(name not in headers for name in signed):
        return False
    payload = (headers.get("x-amz-content-sha256") or [hashlib.sha256(body).hexdigest()])[0]
    canonical = "\n".join([
        scope["method"].upper(),
        _canonical_uri(scope.get("raw_path") or scope["path"].encode()),
        _canonical_query(scope.get("query_string", b"")),
        "".join(f"{name}:{','.join(headers[name])}\n" for name in signed),
        ";".join(signed),
        payload,
    ])
    credential_scope = f"{found['date']}/{found['region']}/{found['service']}/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, credential_scope, hashlib.sha256(canonical.encode()).hexdigest()])
    key = _hmac(_hmac(_hmac(_hmac(("AWS4" + secret).encode(), found["date"]), found["region"]), found["service"]), "aws4_request")
    return hmac.compare_digest(hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest(), found["signature"])


class AdminAuth:
    """Every request proves it holds the token: `Authorization: Bearer <token>`, or a SigV4 signature made with
    the token as the secret access key. `token` None admits everything (`--admin-no-token`, loopback only)."""

    def __init__(self, app: ASGIApp, token: str | None) -> None:
        self.app = app
        self.token = token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.token is None:
            await self.app(scope, receive, send)
            return
        authorization = ""
        for name, value in scope["headers"]:
            if name == b"authorization":
                authorization = value.decode("latin-1")
        scheme, _, credentials = authorization.partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(credentials.strip().encode(), self.token.encode()):
            await self.app(scope, receive, send)
            return
        if scheme == "AWS4-HMAC-SHA256":
            body = await _read_whole(receive, SIGNED_BODY_LIMIT)
            if body is not None and sigv4_valid(scope, authorization, body, self.token):
                await self.app(scope, _replay(body), send)
                return
        await _refuse(send)


async def _read_whole(receive: Receive, limit: int) -> bytes | None:
    """The request body (None: over `limit`, or the client went away)."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replay(body: bytes) -> Receive:
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return receive


async def _refuse(send: Send) -> None:
    headers = [
        (b"content-type", b"application/json"), (b"content-length", str(len(UNAUTHORIZED_BODY)).encode()),
        (b"www-authenticate", b'Bearer realm="edgefn-admin"'), (b"x-amzn-errortype", b"UnauthorizedException"),
    ]
    await send({"type": "http.response.start", "status": 401, "headers": headers})
    await send({"type": "http.response.body", "body": UNAUTHORIZED_BODY})
