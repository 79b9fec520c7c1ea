"""headers: an origin-response function in Python that rewrites the origin's response headers.

- Adds the usual security headers (a header of the same name from the origin is replaced).
- Removes headers that leak the origin's software: Server, X-Powered-By, X-AspNet-Version.
- Error responses (4xx/5xx) get `Cache-Control: no-store`; successful ones without a Cache-Control get
  `Cache-Control: public, max-age=<DEFAULT_MAX_AGE>` (env, default 300).
- Status and body are left as they came (the body never crosses into the function and back).
"""

from edgefn_guest import Request, Response, env

SECURITY_HEADERS = {
    "Strict-Transport-Security": "max-age=63072000; includeSubDomains; preload",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "strict-origin-when-cross-origin",
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'self'; frame-ancestors 'none'",
}
LEAKY = ("server", "x-powered-by", "x-aspnet-version")


def origin_response(response: Response, request: Request) -> Response:
    for name, value in SECURITY_HEADERS.items():
        response.headers[name] = value
    for name in LEAKY:
        response.headers.pop(name)
    if response.status >= 400:
        response.headers["Cache-Control"] = "no-store"
    elif "cache-control" not in response.headers:
        response.headers["Cache-Control"] = f"public, max-age={env('DEFAULT_MAX_AGE', '300')}"
    return response
