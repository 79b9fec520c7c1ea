"""auth: a viewer-request function in Python that guards the site with a bearer token.

- `Authorization: Bearer <token>` with the right token: the request continues to the origin without the
  Authorization header (the origin never sees the secret) and with `X-Auth-User: bearer`.
- No or a wrong token: a browser (it accepts text/html) is redirected to /login?next=<where it wanted to
  go>; any other client gets 401 with `WWW-Authenticate: Bearer`.
- /login itself and /public/* pass without a token.
"""

import hmac
from urllib.parse import quote

from edgefn_guest import Request, Response, env, warn, error

PUBLIC_PREFIXES = ("/login", "/public/")  # module level: runs once, at build time

TOKEN = ""


def init():
    # once per instance, before its first request: the manifest env is readable here (not at module level)
    global TOKEN
    TOKEN = env("AUTH_TOKEN", "")


def refuse(request: Request, why: str) -> Response:
    if "text/html" in request.headers.get("accept", ""):
        target = request.uri + ("?" + request.querystring if request.querystring else "")
        return Response(302, headers={"Location": "/login?next=" + quote(target, safe=""), "Cache-Control": "no-store"})
    return Response(
        401,
        why + "\n",
        headers={
            "WWW-Authenticate": 'Bearer realm="edgefn"',
            "Content-Type": "text/plain; charset=utf-8",
            "Cache-Control": "no-store",
        },
    )


def viewer_request(request: Request) -> Request | Response:
    if request.uri.startswith(PUBLIC_PREFIXES):
        return request
    if not TOKEN:
        error("auth: AUTH_TOKEN is not set; refusing every request")
        return refuse(request, "unauthorized")
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        return refuse(request, "missing bearer token")
    if not hmac.compare_digest(token.encode(), TOKEN.encode()):  # constant time
        warn("auth: invalid bearer token")
        return refuse(request, "invalid bearer token")
    del request.headers["authorization"]
    request.headers["X-Auth-User"] = "bearer"
    return request
