"""The baselines' app: a plain Starlette handler answering what the hello function answers (18-byte text).

Served by bench/serve.py on edgefn's own Hypercorn settings (the ceiling of edgefn's stack) and on uvicorn
with httptools and uvloop (the fastest Python ASGI stack at hand).
"""

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

BODY = b"Hello from edgefn!"


async def hello(request: Request) -> Response:
    return Response(BODY, 200, media_type="text/plain; charset=utf-8")


app = Starlette(routes=[Route("/{path:path}", hello, methods=["GET", "HEAD"])])
