"""edgefn command line: argument parsing only."""

from __future__ import annotations

import argparse
import difflib
import os
import re
import sys
from pathlib import Path
from typing import Callable, NoReturn

from .. import __version__
from ..core.exceptions import EdgefnError
from ..dev.scaffold import SCAFFOLD_LANGUAGES

_INVALID_CHOICE = re.compile(r"argument ([^:]+): invalid choice: '([^']*)' \(choose from (.*)\)")


class _Parser(argparse.ArgumentParser):
    """argparse, plus "did you mean" for a mistyped command (`edgefn sever`)."""

    def error(self, message: str) -> NoReturn:
        found = _INVALID_CHOICE.search(message)
        if found:
            argument, given, listed = found.groups()
            choices = re.findall(r"'([^']*)'", listed)
            close = difflib.get_close_matches(given, choices, n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]!r}?" if close else f" (choose from {', '.join(choices)})"
            what = "unknown command" if argument.endswith("command") else f"{argument}: unknown choice"
            message = f"{what} {given!r}{hint}"
        self.exit(2, f"{self.prog}: {message}\n")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="edgefn", description="WebAssembly-sandboxed edge functions.")
    p.add_argument("--version", action="version", version=f"edgefn {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    def with_config(sp: argparse.ArgumentParser) -> argparse.ArgumentParser:
        sp.add_argument("--config", "-c", type=Path, default=Path("edgefn.toml"), help="the app manifest (default: ./edgefn.toml)")
        return sp

    b = with_config(sub.add_parser("build", help="compile every function (or one source) to wasm and precompile it"))
    b.add_argument("source", nargs="?", type=Path, help="build only this .c/.zig file instead of the manifest")
    b.add_argument("-o", "--out", type=Path, help="output .wasm for a single source")
    b.add_argument("--target", choices=("freestanding", "wasi"), default="freestanding")

    i = with_config(sub.add_parser("invoke", help="run one invocation and print the result and the REPORT line"))
    i.add_argument("function", metavar="NAME[:QUALIFIER]", help="a manifest function (as just built), or NAME:VERSION / NAME:ALIAS / NAME:$LATEST from the registry")
    i.add_argument("--event", "-e", type=Path, help="the event as JSON (bodies as text or base64)")
    i.add_argument("--async", dest="async_", action="store_true", help="queue the event in the registry database and print its request id; a running server delivers it")
    i.add_argument("--invocation-id", help="with --async: repeated submissions with this id within queue.idempotency_window_s queue one event")

    init = sub.add_parser("init", help="scaffold a new project")
    init.add_argument("directory", type=Path)
    init.add_argument("--lang", choices=SCAFFOLD_LANGUAGES, default="c")
    init.add_argument("--triggers", default="viewer-request,viewer-response", help="comma-separated event types to write a function for")

    ev = sub.add_parser("events", help="sample events for `edgefn invoke`")
    ev_sub = ev.add_subparsers(dest="events_command", required=True)
    sample = ev_sub.add_parser("sample", help="print a valid sample event as JSON")
    sample.add_argument("event_type", choices=("viewer-request", "origin-request", "origin-response", "viewer-response"))

    def with_listeners(sp: argparse.ArgumentParser) -> argparse.ArgumentParser:
        sp.add_argument("--host", help="override server.host")
        sp.add_argument("--port", type=int, help="override server.port (cleartext HTTP/1.1 + h2c)")
        sp.add_argument("--tls-port", type=int, help="override server.tls_port (TLS HTTP/1.1 + HTTP/2, HTTP/3 over QUIC; 0 = off)")
        sp.add_argument("--admin-port", type=int, help="override admin.port (the admin/invoke API; 0 = off)")
        sp.add_argument("--admin-no-token", action="store_true", help="serve the admin API without a bearer token (loopback addresses only)")
        return sp

    s = with_listeners(with_config(sub.add_parser("serve", help="run the edge server")))
    s.add_argument("--workers", type=int, help="override server.workers")

    d = with_listeners(with_config(sub.add_parser("dev", help="serve with hot reload: rebuild and swap functions on save")))
    d.add_argument("--record", type=Path, help="save every event that reaches a function into this directory")

    lg = with_config(sub.add_parser("logs", help="print a function's log stream (every server process, in time order)"))
    lg.add_argument("function")
    lg.add_argument("--follow", "-f", action="store_true", help="keep printing new lines until Ctrl-C")
    lg.add_argument("--since", metavar="10m|1h|ISO-8601", help="only lines from this long ago (s, m, h, d) or since this time (UTC unless it says)")
    adm = sub.add_parser("admin", help="the admin/invoke API's credentials")
    adm_sub = adm.add_subparsers(dest="admin_command", required=True)
    with_config(adm_sub.add_parser("token", help="print the admin API's bearer token ($EDGEFN_ADMIN_TOKEN or admin.token_file)"))
    _control_parsers(sub, with_config)
    _dlq_parsers(sub, with_config)
    ca = sub.add_parser("cache", help="edgefn's cache of built guests and an app's module store: where, how big, prune")
    ca_sub = ca.add_subparsers(dest="cache_command", required=True)
    ca_sub.add_parser("dir", help="print the cache directory ($EDGEFN_CACHE_DIR, else ~/.cache/edgefn)")
    with_config(ca_sub.add_parser("info", help="the size of the cache and of the app's module store"))
    cp = with_config(ca_sub.add_parser("prune", help="remove built guests unused for a while, and code the app's registry no longer runs"))
    cp.add_argument("--older-than", type=float, default=30, metavar="DAYS", help="cached builds unused for this many days go (default 30)")
    cp.add_argument("--dry-run", action="store_true", help="say what would be removed, remove nothing")
    sch = sub.add_parser("schedules", help="the manifest's schedules: last and next fire times (UTC)")
    sch_sub = sch.add_subparsers(dest="schedules_command", required=True)
    sch_list = with_config(sch_sub.add_parser("list", help="each schedule, its expression, the last tick fired and the next one"))
    sch_list.add_argument("--json", action="store_true", help="print JSON")
    return p


#: the control-plane commands (edgefn.control.commands): they change the registry, no server needed
CONTROL_COMMANDS = ("deploy", "publish", "alias", "rollback", "functions", "concurrency")


def _control_parsers(sub: "argparse._SubParsersAction[_Parser]", with_config: Callable[[argparse.ArgumentParser], argparse.ArgumentParser]) -> None:
    with_config(sub.add_parser("deploy", help="build every function and make it $LATEST in the registry"))
    pub = with_config(sub.add_parser("publish", help="freeze $LATEST of a function into its next version"))
    pub.add_argument("function")
    pub.add_argument("--description", default="", help="a note kept with the version")

    al = sub.add_parser("alias", help="named pointers to versions, with an optional weighted canary")
    al_sub = al.add_subparsers(dest="alias_command", required=True)
    al_set = with_config(al_sub.add_parser("set", help="create or move an alias"))
    al_set.add_argument("alias", metavar="NAME:ALIAS")
    al_set.add_argument("version", type=int, metavar="VERSION")
    al_set.add_argument("--weight", metavar="VERSION2=WEIGHT", help="also route this share (0 < WEIGHT < 1) of invocations to VERSION2 (a canary)")
    al_set.add_argument("--description", help="a note kept with the alias")
    al_list = with_config(al_sub.add_parser("list", help="the aliases of a function and their routing"))
    al_list.add_argument("function")
    al_list.add_argument("--json", action="store_true", help="print JSON")
    al_del = with_config(al_sub.add_parser("delete", help="remove an alias"))
    al_del.add_argument("alias", metavar="NAME:ALIAS")

    rb = with_config(sub.add_parser("rollback", help="point an alias back at its previous routing (or at --to VERSION)"))
    rb.add_argument("alias", metavar="NAME:ALIAS")
    rb.add_argument("--to", type=int, metavar="VERSION", help="route every invocation to this version")

    fn = sub.add_parser("functions", help="what the registry holds")
    fn_sub = fn.add_subparsers(dest="functions_command", required=True)
    fn_list = with_config(fn_sub.add_parser("list", help="every function: $LATEST digest, versions, aliases, reserved concurrency"))
    fn_list.add_argument("--json", action="store_true", help="print JSON")
    fn_show = with_config(fn_sub.add_parser("show", help="configuration, code, aliases and history of a function, version or alias"))
    fn_show.add_argument("function", metavar="NAME[:QUALIFIER]")
    fn_show.add_argument("--json", action="store_true", help="print JSON")

    cc = with_config(sub.add_parser("concurrency", help="reserved concurrency of a function, provisioned concurrency of a version or alias"))
    cc.add_argument("function", metavar="NAME[:QUALIFIER]")
    which = cc.add_mutually_exclusive_group(required=True)
    which.add_argument("--reserved", metavar="N|none", help="in-flight invocations reserved for (and capping) the function; none removes it")
    which.add_argument("--provisioned", type=int, metavar="N", help="instances of NAME:QUALIFIER to keep initialised (0 removes it)")


def _run_control(args: argparse.Namespace) -> int:
    from . import control

    out = sys.stdout
    if args.command == "deploy":
        return control.deploy_command(args.config, out)
    if args.command == "publish":
        return control.publish_command(args.config, args.function, args.description, out)
    if args.command == "alias" and args.alias_command == "set":
        return control.alias_set_command(args.config, args.alias, args.version, args.weight, args.description, out)
    if args.command == "alias" and args.alias_command == "list":
        return control.alias_list_command(args.config, args.function, args.json, out)
    if args.command == "alias":
        return control.alias_delete_command(args.config, args.alias, out)
    if args.command == "rollback":
        return control.rollback_command(args.config, args.alias, args.to, out)
    if args.command == "functions" and args.functions_command == "list":
        return control.functions_list_command(args.config, args.json, out)
    if args.command == "functions":
        return control.functions_show_command(args.config, args.function, args.json, out)
    return control.concurrency_command(args.config, args.function, args.reserved, args.provisioned, out)


def _dlq_parsers(sub: "argparse._SubParsersAction[_Parser]", with_config: Callable[[argparse.ArgumentParser], argparse.ArgumentParser]) -> None:
    dlq = sub.add_parser("dlq", help="the dead-letter store of asynchronous invocations")
    dlq_sub = dlq.add_subparsers(dest="dlq_command", required=True)
    dl = with_config(dlq_sub.add_parser("list", help="events that failed or expired, with their records"))
    dl.add_argument("function", nargs="?", metavar="NAME")
    dl.add_argument("--json", action="store_true", help="print JSON, with each Lambda-shaped record")
    dr = with_config(dlq_sub.add_parser("replay", help="queue dead letters again: ID [NAME] or --all [NAME]"))
    dr.add_argument("args", nargs="*", metavar="ID|NAME")
    dr.add_argument("--all", action="store_true", help="every dead letter (of NAME, if given)")


def _run_async(args: argparse.Namespace) -> int:
    from . import async_commands

    if args.command == "invoke":
        return async_commands.invoke_async(args.config, args.function, args.event, args.invocation_id, sys.stdout)
    if args.dlq_command == "list":
        return async_commands.dlq_list(args.config, args.function, args.json, sys.stdout)
    return async_commands.dlq_replay(args.config, args.args, args.all, sys.stdout)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        code = _run(args)
        sys.stdout.flush()  # a reader that went away shows here, where it is handled, not in the exit's flush
        return code
    except EdgefnError as exc:
        print(f"edgefn: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader went away (`edgefn functions list | head`): nothing left to say it to
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the exit's flush cannot fail again
        return 141  # what a shell reports for a command ended by SIGPIPE
    except KeyboardInterrupt:
        return 130


def _run(args: argparse.Namespace) -> int:
    from . import app_commands as commands

    if args.command == "dlq" or (args.command == "invoke" and args.async_):
        return _run_async(args)
    if args.command in CONTROL_COMMANDS:
        return _run_control(args)
    if args.command == "admin":
        from .observe import admin_token_command

        return admin_token_command(args.config, sys.stdout)
    if args.command == "schedules":
        from .observe import schedules_list_command

        return schedules_list_command(args.config, args.json, sys.stdout)
    if args.command == "cache":
        from .cache import cache_command

        return cache_command(args.cache_command, args.config if args.cache_command != "dir" else Path(), getattr(args, "older_than", 30), getattr(args, "dry_run", False), sys.stdout)
    if args.command == "logs":
        from .observe import logs_command

        return logs_command(args.config, args.function, args.since, args.follow, sys.stdout)
    if args.command == "build":
        return commands.build(args.config, args.source, args.out, args.target, sys.stdout)
    if args.command == "init":
        return commands.init(args.directory, args.lang, [t for t in args.triggers.split(",") if t], sys.stdout)
    if args.command == "events":
        return commands.events_sample(args.event_type, sys.stdout)
    if args.command == "invoke":
        return commands.invoke(args.config, args.function, args.event, sys.stdout)
    if args.command == "serve":
        from ..server import serve

        return serve(args.config, host=args.host, port=args.port, tls_port=args.tls_port, workers=args.workers, admin_port=args.admin_port, admin_no_token=args.admin_no_token)
    if args.command == "dev":
        from ..server import serve

        return serve(args.config, host=args.host, port=args.port, tls_port=args.tls_port, workers=1, dev=True, record=args.record, admin_port=args.admin_port, admin_no_token=args.admin_no_token)
    return 2


if __name__ == "__main__":
    sys.exit(main())
