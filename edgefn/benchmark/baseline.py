"""The baseline every HTTP figure is divided by: a plain Starlette hello on Hypercorn, with `edgefn serve`'s own
Hypercorn settings (edgefn.server.hypercorn_config) and the same number of worker processes.

    python -m edgefn.benchmark.baseline --port 8080 [--workers N]
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

__all__ = ["BODY", "app", "main", "worker_app"]

BODY = b"Hello from edgefn!"


async def hello(request: Request) -> Response:
    return Response(BODY, 200, media_type="text/plain; charset=utf-8")


app = Starlette(routes=[Route("/{path:path}", hello, methods=["GET", "HEAD"])])


def worker_app() -> Starlette:
    """The app of a baseline server process (Hypercorn's application_path), on the event loop `edgefn serve`'s
    processes run on (edgefn.server.worker_app sets the same policy before Hypercorn makes the loop)."""
    from ..server import EdgeLoopPolicy

    asyncio.set_event_loop_policy(EdgeLoopPolicy())
    return app


def main(argv: list[str] | None = None) -> int:
    from hypercorn.run import run

    from ..server import hypercorn_config

    p = argparse.ArgumentParser(prog="python -m edgefn.benchmark.baseline", description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--workers", type=int, default=1)
    a = p.parse_args(argv)
    config = hypercorn_config(a.host, a.port, a.workers)
    config.application_path = "edgefn.benchmark.baseline:worker_app()"
    config.include_date_header = config.include_server_header = True  # the work edgefn does for them (edge/app.py)
    return int(run(config))


if __name__ == "__main__":
    sys.exit(main())
