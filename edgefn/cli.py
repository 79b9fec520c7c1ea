"""edgefn command line: argument parsing only."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .runtime.errors import EdgefnError


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="edgefn", description="WebAssembly-sandboxed edge functions.")
    sub = p.add_subparsers(dest="command", required=True)

    def with_config(sp: argparse.ArgumentParser) -> argparse.ArgumentParser:
        sp.add_argument("--config", "-c", type=Path, default=Path("edgefn.toml"), help="the app manifest (default: ./edgefn.toml)")
        return sp

    b = with_config(sub.add_parser("build", help="compile every function (or one source) to wasm and precompile it"))
    b.add_argument("source", nargs="?", type=Path, help="build only this .c/.zig file instead of the manifest")
    b.add_argument("-o", "--out", type=Path, help="output .wasm for a single source")
    b.add_argument("--target", choices=("freestanding", "wasi"), default="freestanding")

    i = with_config(sub.add_parser("invoke", help="run one invocation and print the result and the REPORT line"))
    i.add_argument("function")
    i.add_argument("--event", "-e", type=Path, help="the event as JSON (bodies as text or base64)")

    init = sub.add_parser("init", help="scaffold a new project")
    init.add_argument("directory", type=Path)
    init.add_argument("--lang", choices=("c", "python"), default="c")
    init.add_argument("--triggers", default="viewer-request,viewer-response", help="comma-separated event types to write a function for")

    ev = sub.add_parser("events", help="sample events for `edgefn invoke`")
    ev_sub = ev.add_subparsers(dest="events_command", required=True)
    sample = ev_sub.add_parser("sample", help="print a valid sample event as JSON")
    sample.add_argument("event_type", choices=("viewer-request", "origin-request", "origin-response", "viewer-response"))

    s = with_config(sub.add_parser("serve", help="run the edge server"))
    s.add_argument("--host", help="override server.host")
    s.add_argument("--port", type=int, help="override server.port (cleartext HTTP/1.1 + h2c)")
    s.add_argument("--tls-port", type=int, help="override server.tls_port (TLS HTTP/1.1 + HTTP/2, HTTP/3 over QUIC; 0 = off)")
    s.add_argument("--workers", type=int, help="override server.workers")

    d = with_config(sub.add_parser("dev", help="serve with hot reload: rebuild and swap functions on save"))
    d.add_argument("--host", help="override server.host")
    d.add_argument("--port", type=int, help="override server.port")
    d.add_argument("--tls-port", type=int, help="override server.tls_port (0 = off)")
    d.add_argument("--record", type=Path, help="save every event that reaches a function into this directory")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from . import commands

    try:
        if args.command == "build":
            return commands.build(args.config, args.source, args.out, args.target, sys.stdout)
        if args.command == "init":
            return commands.init(args.directory, args.lang, [t for t in args.triggers.split(",") if t], sys.stdout)
        if args.command == "events":
            return commands.events_sample(args.event_type, sys.stdout)
        if args.command == "invoke":
            return commands.invoke(args.config, args.function, args.event, sys.stdout)
        if args.command == "serve":
            from .server import serve

            return serve(args.config, host=args.host, port=args.port, tls_port=args.tls_port, workers=args.workers)
        if args.command == "dev":
            from .server import serve

            return serve(args.config, host=args.host, port=args.port, tls_port=args.tls_port, workers=1, dev=True, record=args.record)
    except EdgefnError as exc:
        print(f"edgefn: {exc}", file=sys.stderr)
        return 2
    return 2


if __name__ == "__main__":
    sys.exit(main())
