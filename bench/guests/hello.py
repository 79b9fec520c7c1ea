"""hello in Python, the bench's Python origin: the same answer as examples/hello (C)."""

from edgefn_guest import Request, Response, env


def origin_request(request: Request) -> Response:
    return Response(200, f"{env('GREETING', 'Hello')} from edgefn!", headers={"Content-Type": "text/plain; charset=utf-8"})
