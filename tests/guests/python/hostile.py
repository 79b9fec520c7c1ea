"""A Python test guest: well-behaved and hostile behaviours in one component, chosen by the request path.

One component keeps the test suite to one componentize-py build. Every path answers on any trigger
through the generic `handler(event)`.
"""

import errno
import os
import sys
import time

from edgefn_guest import FetchError, Response, env, fetch, log

COUNT = 0  # module state: survives between requests only on a reused instance
INITS = 0
HOARD = []


def init():
    global INITS
    INITS += 1


def _echo(request):
    headers = {f"x-echo-{name}": request.headers.get_all(name) for name in request.headers}
    return Response(200, request.body or b"", headers=headers)


def _spin():
    n = 0
    while True:
        n += 1


def _bomb():
    chunks = []
    while True:
        chunks.append(bytearray(1 << 20))


def _hoard():
    # grows module state by 4 MiB per request: with a reused instance it hits the cap after a few requests
    HOARD.append(bytearray(4 << 20))
    return Response(200, str(len(HOARD)))


def _write_kb(kb):
    """Append kb KiB to /tmp/data in 4 KiB unbuffered writes, as tests/guests/c/scratch.c does."""
    written, err = 0, 0
    try:
        with open("/tmp/data", "ab", buffering=0) as f:
            for _ in range(kb // 4):
                written += f.write(b"x" * 4096)
    except OSError as exc:
        err = exc.errno or -1
    return f"written={written}\nerrno={err}\nenospc={int(err == errno.ENOSPC)}\n"


def _tried(path):
    try:
        with open(path, "rb"):
            return "opened"
    except OSError:
        return "refused"


def _tmp(op, kb):
    """/tmp, the instance's scratch directory: the ops of tests/guests/c/scratch.c."""
    if op == "write":
        return _write_kb(kb)
    if op == "size":
        return f"size={os.path.getsize('/tmp/data') if os.path.exists('/tmp/data') else -1}\n"
    if op == "escape":
        for target, link in (("/etc/passwd", "/tmp/abs-link"), ("../../../../../../etc/passwd", "/tmp/rel-link"), ("..", "/tmp/up")):
            try:
                os.symlink(target, link)
            except OSError:
                pass
        try:
            os.mkdir("/tmp/../escaped")
            made = "made"
        except OSError:
            made = "refused"
        tried = [_tried(p) for p in ("/tmp/../etc/passwd", "/etc/passwd", "/tmp/abs-link", "/tmp/rel-link", "/tmp/up/etc/passwd")]
        return "dotdot={}\nabsolute={}\nabs-link={}\nrel-link={}\nup-dir={}\nmkdir-up={}\n".format(*tried, made)
    if op == "fill-then-fail":
        _write_kb(64 * 1024)
        raise OSError(errno.ENOSPC, "the guest failed after filling /tmp")
    return "unknown op\n"


def _recurse(n):
    return _recurse(n + 1) + 1


def handler(event):
    global COUNT
    request = event.request
    path = request.uri
    COUNT += 1
    if path == "/count":
        return Response(200, str(COUNT), headers={"x-count": str(COUNT), "x-inits": str(INITS)})
    if path == "/echo":
        return _echo(request)
    if path == "/env":
        return Response(200, f"GREETING={env('GREETING')}\nMISSING={env('MISSING', '(unset)')}\n", headers={"x-greeting": env("GREETING", "")})
    if path == "/log":
        log("debug line", "debug")
        log("info line")
        log("warn line", "warn")
        log("error line", "error")
        print("printed to stdout")
        print("printed to stderr", file=sys.stderr)
        query = request.query
        if "long" in query:
            log("x" * int(query["long"][0]))
        for i in range(int(query.get("flood", ["0"])[0])):
            log(f"flood line {i} " + "y" * 100)
        return Response(200, "logged")
    if path == "/loop":
        _spin()
    if path == "/bomb":
        _bomb()
    if path == "/hoard":
        return _hoard()
    if path == "/raise":
        raise ValueError("the guest failed on purpose")
    if path == "/recurse":
        _recurse(0)  # RecursionError at Python's default limit
    if path == "/exit":
        sys.exit(3)
    if path == "/sleep":
        time.sleep(float(request.query.get("s", ["1"])[0]))
        return Response(200, "slept")
    if path == "/fs":
        out = []
        for target in ("/etc/passwd", "/", "."):
            try:
                with open(target) as f:
                    out.append(f"{target}: read {len(f.read())}")
            except Exception as exc:  # noqa: BLE001
                out.append(f"{target}: {type(exc).__name__}")
        return Response(200, "\n".join(out))
    if path == "/tmp":
        return Response(200, _tmp(request.query["op"][0], int(request.query.get("kb", ["0"])[0])))
    if path == "/socket":
        try:
            import socket

            socket.create_connection(("127.0.0.1", int(request.query.get("port", ["80"])[0])), timeout=1)
            return Response(200, "connected")
        except Exception as exc:  # noqa: BLE001
            return Response(200, f"refused: {type(exc).__name__}")
    if path == "/fetch":
        try:
            got = fetch(request.query["url"][0])
        except FetchError as exc:
            return Response(502, str(exc))
        return Response(200, got.body, headers={"x-fetched-status": str(got.status)})
    if path == "/big":
        return Response(200, b"z" * int(request.query["n"][0]))
    if path == "/wrong":
        return 42
    if event.response is not None:
        event.response.headers["x-seen-by"] = "hostile"
        return event.response
    return request
