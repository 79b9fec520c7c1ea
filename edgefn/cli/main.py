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
from ..benchmark.load import GENERATORS
from ..core.app import DATABASE_URL_SCHEMES
from ..core.exceptions import EdgefnError
from ..dev.console import COLOR_CHOICES
from ..dev.scaffold import SCAFFOLD_LANGUAGES
from ..manifest.resolve import CONTROL_URL_ENV
from ..observability.logs import LOG_FORMATS, LOG_LEVELS
from .bench import concurrency_list
from .bench import duration as bench_duration
from .bench import header as bench_header
from .terminal import apply_output_options

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
            what = "unknown command" if argument.lower().endswith("command") else f"{argument}: unknown choice"
            message = f"{what} {given!r}{hint}"
        self.exit(2, f"{self.prog}: {message}\n")


#: every command's terminal options (cli/terminal.py)
def _output_options() -> _Parser:
    o = _Parser(add_help=False)
    g = o.add_argument_group("output")
    g.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only (same as --log-level warning)")
    g.add_argument("--log-level", choices=LOG_LEVELS, help="the least severe log line shown (default: info)")
    g.add_argument("--log-format", choices=LOG_FORMATS, help="text (default), or json: one JSON object per line, access log included")
    g.add_argument("--color", choices=COLOR_CHOICES, default="auto", help="colour on a terminal (auto: unless $NO_COLOR is set)")
    return o


def _command(sub: "argparse._SubParsersAction[_Parser]", name: str, summary: str, *examples: str, output: _Parser | None = None) -> _Parser:
    """A subcommand whose --help has its summary as description and runnable examples after the options."""
    epilog = "examples:\n" + "\n".join(f"  {e}" for e in examples) if examples else None
    parser = sub.add_parser(
        name, help=summary, description=summary[:1].upper() + summary[1:] + ".", epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter, parents=[output] if output is not None else [],
    )
    assert isinstance(parser, _Parser)
    return parser


def _parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="edgefn", description="WebAssembly-sandboxed edge functions with the Lambda@Edge event model.",
        epilog="Run `edgefn COMMAND --help` for a command's options and examples.",
    )
    p.add_argument("--version", action="version", version=f"edgefn {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    output = _output_options()

    def cmd(s: "argparse._SubParsersAction[_Parser]", name: str, summary: str, *examples: str) -> _Parser:
        return _command(s, name, summary, *examples, output=output)

    def with_config(sp: argparse.ArgumentParser) -> argparse.ArgumentParser:
        sp.add_argument("--config", "-c", type=Path, default=Path("edgefn.toml"), help="the app manifest (default: ./edgefn.toml)")
        sp.add_argument("--control", metavar="URL", help="a fleet's control plane, postgresql://… (default: $EDGEFN_CONTROL_URL, else [app] control, else the app's SQLite file)")
        return sp

    def with_listeners(sp: argparse.ArgumentParser) -> argparse.ArgumentParser:
        sp.add_argument("--host", help="override server.host")
        sp.add_argument("--port", type=int, help="override server.port (cleartext HTTP/1.1 + h2c)")
        sp.add_argument("--tls-port", type=int, help="override server.tls_port (TLS HTTP/1.1 + HTTP/2, HTTP/3 over QUIC; 0 = off)")
        sp.add_argument("--admin-port", type=int, help="override admin.port (the admin/invoke API; 0 = off)")
        sp.add_argument("--admin-no-token", action="store_true", help="serve the admin API without a bearer token (loopback addresses only)")
        return sp

    init = cmd(sub, "init", "scaffold a new project: a manifest, an origin function and a hook per trigger",
               "edgefn init my-app", "edgefn init my-app --lang python --triggers viewer-request")
    init.add_argument("directory", type=Path)
    init.add_argument("--lang", choices=SCAFFOLD_LANGUAGES, default="c")
    init.add_argument("--triggers", default="viewer-request,viewer-response", help="comma-separated event types to write a function for")

    d = with_listeners(with_config(cmd(sub, "dev", "serve with hot reload: rebuild and swap functions on save",
                                       "edgefn dev", "edgefn dev --port 9000 --record events/")))
    d.add_argument("--record", type=Path, help="save every event that reaches a function into this directory")

    s = with_listeners(with_config(cmd(sub, "serve", "run the edge server", "edgefn serve", "edgefn serve -c site/edgefn.toml --workers 4 -q",
                                       "edgefn serve --log-format json | jq .")))
    s.add_argument("--workers", type=int, help="override server.workers")

    b = with_config(cmd(sub, "build", "compile every function (or one source) to wasm and precompile it",
                        "edgefn build", "edgefn build src/auth.c -o auth.wasm"))
    b.add_argument("source", nargs="?", type=Path, help="build only this .c/.zig file instead of the manifest")
    b.add_argument("-o", "--out", type=Path, help="output .wasm for a single source")
    b.add_argument("--target", choices=("freestanding", "wasi"), default="freestanding")

    bn = with_config(cmd(sub, "bench", "cold vs warm latency and throughput of the app's functions, each figure also a ratio to a baseline measured in the same run",
                         "edgefn bench", "edgefn bench hello auth --duration 5s --concurrency 1,32", "edgefn bench --json bench.json --html bench.html"))
    bn.add_argument("functions", nargs="*", metavar="FUNCTION", help="measure only these (default: every function of the manifest)")
    bn.add_argument("--duration", type=bench_duration, default=10.0, metavar="10s", help="each load run over HTTP (ms, s, m); an in-process series takes a quarter of it, up to 3 s")
    bn.add_argument("--concurrency", type=concurrency_list, default=(1, 16), metavar="1,16", help="connections of the HTTP load runs, comma-separated")
    bn.add_argument("--json", dest="json_out", type=Path, metavar="FILE", help="also write every figure as JSON")
    bn.add_argument("--html", type=Path, metavar="FILE", help="also write one self-contained HTML page with the latency distributions plotted")
    bn.add_argument("--load-generator", choices=GENERATORS, default="auto", help="auto: wrk when installed, else the built-in client (its own CPU use is shown)")
    bn.add_argument("-H", "--header", type=bench_header, action="append", default=[], metavar="'NAME: VALUE'", help="send this header with every HTTP request (repeatable; only its name is recorded)")
    bn.add_argument("--no-http", action="store_true", help="in-process figures only (no server is started)")
    bn.add_argument("--no-in-process", action="store_true", help="HTTP figures only")

    i = with_config(cmd(sub, "invoke", "run one invocation and print the result and the REPORT line",
                        "edgefn invoke origin", "edgefn invoke viewer-request --event event.json", "edgefn invoke auth:live --async"))
    i.add_argument("function", metavar="NAME[:QUALIFIER]", help="a manifest function (as just built), or NAME:VERSION / NAME:ALIAS / NAME:$LATEST from the registry")
    i.add_argument("--event", "-e", type=Path, help="the event as JSON (bodies as text or base64; bare, or Lambda@Edge's {\"Records\": [{\"cf\": ...}]})")
    i.add_argument("--async", dest="async_", action="store_true", help="queue the event in the registry database and print its request id; a running server delivers it")
    i.add_argument("--invocation-id", help="with --async: repeated submissions with this id within queue.idempotency_window_s queue one event")

    ev = _command(sub, "events", "sample events for `edgefn invoke`", "edgefn events sample viewer-request > event.json")
    ev_sub = ev.add_subparsers(dest="events_command", required=True, metavar="SUBCOMMAND")
    sample = cmd(ev_sub, "sample", "print a valid sample event as JSON", "edgefn events sample origin-response")
    sample.add_argument("event_type", choices=("viewer-request", "origin-request", "origin-response", "viewer-response"))

    lg = with_config(cmd(sub, "logs", "print a function's log stream (every server process, in time order)",
                         "edgefn logs origin --since 10m", "edgefn logs auth -f"))
    lg.add_argument("function")
    lg.add_argument("--follow", "-f", action="store_true", help="keep printing new lines until Ctrl-C")
    lg.add_argument("--since", metavar="10m|1h|ISO-8601", help="only lines from this long ago (s, m, h, d) or since this time (UTC unless it says)")

    adm = _command(sub, "admin", "the admin/invoke API's credentials", "edgefn admin token")
    adm_sub = adm.add_subparsers(dest="admin_command", required=True, metavar="SUBCOMMAND")
    with_config(cmd(adm_sub, "token", "print the admin API's bearer token ($EDGEFN_ADMIN_TOKEN or admin.token_file)",
                    'curl -H "Authorization: Bearer $(edgefn admin token)" http://127.0.0.1:8788/2015-03-31/functions/'))
    _control_parsers(sub, cmd, with_config)
    _dlq_parsers(sub, cmd, with_config)
    sch = _command(sub, "schedules", "the manifest's schedules: last and next fire times (UTC)", "edgefn schedules list")
    sch_sub = sch.add_subparsers(dest="schedules_command", required=True, metavar="SUBCOMMAND")
    sch_list = with_config(cmd(sch_sub, "list", "each schedule, its expression, the last tick fired and the next one", "edgefn schedules list --json"))
    sch_list.add_argument("--json", action="store_true", help="print JSON")

    ca = _command(sub, "cache", "edgefn's cache of built guests and an app's module store (where, how big, prune), and purging the edge's response cache",
                  "edgefn cache info", "edgefn cache prune", "edgefn cache purge '/images/*'")
    ca_sub = ca.add_subparsers(dest="cache_command", required=True, metavar="SUBCOMMAND")
    cmd(ca_sub, "dir", "print the cache directory ($EDGEFN_CACHE_DIR, else ~/.cache/edgefn)", "du -sh $(edgefn cache dir)")
    with_config(cmd(ca_sub, "info", "the size of the cache and of the app's module store", "edgefn cache info -c site/edgefn.toml"))
    cp = with_config(cmd(ca_sub, "prune", "remove built guests unused for a while, and code the app's registry no longer runs",
                         "edgefn cache prune --dry-run", "edgefn cache prune --older-than 7"))
    cp.add_argument("--older-than", type=float, default=30, metavar="DAYS", help="cached builds unused for this many days go (default 30)")
    cp.add_argument("--dry-run", action="store_true", help="say what would be removed, remove nothing")
    pg = with_config(cmd(ca_sub, "purge", "drop cached responses from every server of the app, within about a second",
                         "edgefn cache purge /index.html", "edgefn cache purge '/images/*'", "edgefn cache purge --tag product-42", "edgefn cache purge --all"))
    what = pg.add_mutually_exclusive_group(required=True)
    what.add_argument("path", nargs="?", help="a request path, any query string (a trailing * purges every path under it)")
    what.add_argument("--prefix", help="every path starting with this")
    what.add_argument("--tag", help="every response the origin tagged with this key (Cache-Tag / Surrogate-Key)")
    what.add_argument("--all", action="store_true", help="everything")

    nd = _command(sub, "nodes", "the server processes serving from this control plane (docs/fleet.md)", "edgefn nodes list", "edgefn nodes list --json")
    nd_sub = nd.add_subparsers(dest="nodes_command", required=True, metavar="SUBCOMMAND")
    nl = with_config(cmd(nd_sub, "list", "each node: its address, the registry revision and versions it serves, when it was last seen",
                         "edgefn nodes list --control postgresql://postgres@db.internal/edge"))
    nl.add_argument("--json", action="store_true", help="one JSON array")

    ly = _command(sub, "layer", "layers: code many functions share, published once per version (docs/layers.md)",
                  "edgefn layer publish textkit ./textkit-layer", "edgefn layer list")
    ly_sub = ly.add_subparsers(dest="layer_command", required=True, metavar="SUBCOMMAND")
    lp = with_config(cmd(ly_sub, "publish", "publish PATH (a directory of pure-Python packages) as the next version of layer NAME",
                         "edgefn layer publish textkit ./textkit-layer --description 'slugs and titles'"))
    lp.add_argument("name", metavar="NAME", help="the layer's name (lowercase letters, digits, '-')")
    lp.add_argument("path", metavar="PATH", type=Path, help="the directory whose packages functions import")
    lp.add_argument("--description", default="", help="a note kept with the version")
    ll = with_config(cmd(ly_sub, "list", "every version of every layer (or of NAME)", "edgefn layer list textkit --json"))
    ll.add_argument("name", metavar="NAME", nargs="?", help="only this layer's versions")
    ll.add_argument("--json", action="store_true", help="one JSON array (Lambda's LayerVersionsListItem fields)")

    es = _command(sub, "event-sources", "the app's polling event sources: queues and streams its functions read (docs/event-sources.md)",
                  "edgefn event-sources list", "edgefn event-sources disable 5f0c")
    es_sub = es.add_subparsers(dest="event_sources_command", required=True, metavar="SUBCOMMAND")
    esl = with_config(cmd(es_sub, "list", "each mapping: its function, broker and queue or streams, switch, counters and last result",
                          "edgefn event-sources list --json"))
    esl.add_argument("--json", action="store_true", help="one JSON array (Lambda's EventSourceMappingConfiguration)")
    for verb, purpose in (("enable", "start polling it on every node"), ("disable", "stop polling it on every node (records wait in the broker)")):
        sw = with_config(cmd(es_sub, verb, f"{purpose}, within a second", f"edgefn event-sources {verb} 5f0c2a1e"))
        sw.add_argument("uuid", metavar="UUID", help="the mapping's UUID (edgefn event-sources list), or a unique prefix of it")

    kv = _command(sub, "kv", "the app's key-value store: the namespaces its functions are granted (docs/kv.md)",
                  "edgefn kv put redirects /old /new", "edgefn kv get visits /", "edgefn kv list visits --prefix /blog/")
    kv_sub = kv.add_subparsers(dest="kv_command", required=True, metavar="SUBCOMMAND")
    kg = with_config(cmd(kv_sub, "get", "print the value of KEY (as stored, byte for byte)", "edgefn kv get visits /index.html"))
    kg.add_argument("namespace", metavar="NAMESPACE")
    kg.add_argument("key", metavar="KEY")
    kp = with_config(cmd(kv_sub, "put", "set KEY to VALUE, --file F or standard input", "edgefn kv put redirects /old /new",
                         "edgefn kv put flags beta --ttl 3600 < flag.json"))
    kp.add_argument("namespace", metavar="NAMESPACE")
    kp.add_argument("key", metavar="KEY")
    kp.add_argument("value", nargs="?", metavar="VALUE", help="the value (else --file, else standard input)")
    kp.add_argument("--file", type=Path, help="read the value from this file")
    kp.add_argument("--ttl", type=int, metavar="SECONDS", help="the key expires this many seconds from now")
    kd = with_config(cmd(kv_sub, "delete", "remove KEY", "edgefn kv delete redirects /old"))
    kd.add_argument("namespace", metavar="NAMESPACE")
    kd.add_argument("key", metavar="KEY")
    kl = with_config(cmd(kv_sub, "list", "keys in byte order, one page at a time", "edgefn kv list visits", "edgefn kv list visits --prefix /blog/ --json"))
    kl.add_argument("namespace", metavar="NAMESPACE")
    kl.add_argument("--prefix", default="", help="only keys starting with this")
    kl.add_argument("--cursor", help="the next page, as the previous one said")
    kl.add_argument("--limit", type=int, default=1000, help="most keys in one page (1-1000, default 1000)")
    kl.add_argument("--json", action="store_true", help="print JSON: keys and the next page's cursor")

    se = _command(sub, "secret", "secrets a function reads through its env API: encrypted at rest, never printed",
                  "edgefn secret put auth AUTH_TOKEN < token.txt", "edgefn secret list auth")
    se_sub = se.add_subparsers(dest="secret_command", required=True, metavar="SUBCOMMAND")
    sp = with_config(cmd(se_sub, "put", "set a secret from standard input or --file (never from the command line)",
                         "edgefn secret put auth AUTH_TOKEN < token.txt", "edgefn secret put auth TLS_KEY --file key.pem"))
    sp.add_argument("function", metavar="FUNCTION")
    sp.add_argument("name", metavar="NAME")
    sp.add_argument("--file", type=Path, help="read the value from this file (else standard input; a prompt on a terminal)")
    sp.add_argument("--if-missing", action="store_true", help="keep the value already set, if there is one (seeding a demo value, say)")
    sl = with_config(cmd(se_sub, "list", "the names of a function's secrets (never a value)", "edgefn secret list auth"))
    sl.add_argument("function", metavar="FUNCTION")
    sd = with_config(cmd(se_sub, "delete", "remove a secret from $LATEST", "edgefn secret delete auth AUTH_TOKEN"))
    sd.add_argument("function", metavar="FUNCTION")
    sd.add_argument("name", metavar="NAME")

    sc = cmd(sub, "schema", "print the JSON Schema of edgefn.toml (for editors: validation and completion)",
             "edgefn schema > edgefn.schema.json", "taplo check --schema file://$PWD/edgefn.schema.json edgefn.toml")
    sc.add_argument("--indent", type=int, default=2, help="spaces per level (default 2)")

    co = cmd(sub, "completion", "print a shell completion script", "edgefn completion bash > ~/.local/share/bash-completion/completions/edgefn",
             "edgefn completion zsh > \"${fpath[1]}/_edgefn\"")
    co.add_argument("shell", choices=("bash", "zsh", "tcsh"))
    return p


#: the control-plane commands (edgefn.control.commands): they change the registry, no server needed
CONTROL_COMMANDS = ("deploy", "publish", "alias", "rollback", "functions", "concurrency")

_Cmd = Callable[..., _Parser]
_WithConfig = Callable[[argparse.ArgumentParser], argparse.ArgumentParser]


def _control_parsers(sub: "argparse._SubParsersAction[_Parser]", cmd: _Cmd, with_config: _WithConfig) -> None:
    with_config(cmd(sub, "deploy", "build every function and make it $LATEST in the registry", "edgefn deploy"))
    pub = with_config(cmd(sub, "publish", "freeze $LATEST of a function into its next version", 'edgefn publish auth --description "new token check"'))
    pub.add_argument("function")
    pub.add_argument("--description", default="", help="a note kept with the version")

    al = _command(sub, "alias", "named pointers to versions, with an optional weighted canary", "edgefn alias set auth:live 3", "edgefn alias list auth")
    al_sub = al.add_subparsers(dest="alias_command", required=True, metavar="SUBCOMMAND")
    al_set = with_config(cmd(al_sub, "set", "create or move an alias", "edgefn alias set auth:live 3", "edgefn alias set auth:live 3 --weight 4=0.1"))
    al_set.add_argument("alias", metavar="NAME:ALIAS")
    al_set.add_argument("version", type=int, metavar="VERSION")
    al_set.add_argument("--weight", metavar="VERSION2=WEIGHT", help="also route this share (0 < WEIGHT < 1) of invocations to VERSION2 (a canary)")
    al_set.add_argument("--description", help="a note kept with the alias")
    al_list = with_config(cmd(al_sub, "list", "the aliases of a function and their routing", "edgefn alias list auth --json"))
    al_list.add_argument("function")
    al_list.add_argument("--json", action="store_true", help="print JSON")
    al_del = with_config(cmd(al_sub, "delete", "remove an alias", "edgefn alias delete auth:beta"))
    al_del.add_argument("alias", metavar="NAME:ALIAS")

    rb = with_config(cmd(sub, "rollback", "point an alias back at its previous routing (or at --to VERSION)", "edgefn rollback auth:live", "edgefn rollback auth:live --to 2"))
    rb.add_argument("alias", metavar="NAME:ALIAS")
    rb.add_argument("--to", type=int, metavar="VERSION", help="route every invocation to this version")

    fn = _command(sub, "functions", "what the registry holds", "edgefn functions list", "edgefn functions show auth:live")
    fn_sub = fn.add_subparsers(dest="functions_command", required=True, metavar="SUBCOMMAND")
    fn_list = with_config(cmd(fn_sub, "list", "every function: $LATEST digest, versions, aliases, reserved concurrency", "edgefn functions list --json"))
    fn_list.add_argument("--json", action="store_true", help="print JSON")
    fn_show = with_config(cmd(fn_sub, "show", "configuration, code, aliases and history of a function, version or alias", "edgefn functions show auth:3"))
    fn_show.add_argument("function", metavar="NAME[:QUALIFIER]")
    fn_show.add_argument("--json", action="store_true", help="print JSON")

    cc = with_config(cmd(sub, "concurrency", "reserved concurrency of a function, provisioned concurrency of a version or alias",
                         "edgefn concurrency auth --reserved 10", "edgefn concurrency auth:live --provisioned 2"))
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


def _dlq_parsers(sub: "argparse._SubParsersAction[_Parser]", cmd: _Cmd, with_config: _WithConfig) -> None:
    dlq = _command(sub, "dlq", "the dead-letter store of asynchronous invocations", "edgefn dlq list", "edgefn dlq replay --all auth")
    dlq_sub = dlq.add_subparsers(dest="dlq_command", required=True, metavar="SUBCOMMAND")
    dl = with_config(cmd(dlq_sub, "list", "events that failed or expired, with their records", "edgefn dlq list auth --json"))
    dl.add_argument("function", nargs="?", metavar="NAME")
    dl.add_argument("--json", action="store_true", help="print JSON, with each Lambda-shaped record")
    dr = with_config(cmd(dlq_sub, "replay", "queue dead letters again: ID [NAME] or --all [NAME]", "edgefn dlq replay 7f3c9a", "edgefn dlq replay --all auth"))
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
    apply_output_options(args, serving=args.command in ("serve", "dev"))
    if getattr(args, "control", None):
        if not args.control.startswith(DATABASE_URL_SCHEMES):
            print(f"edgefn: --control {args.control!r}: use a postgresql://USER@HOST:PORT/DATABASE URL", file=sys.stderr)
            return 2
        os.environ[CONTROL_URL_ENV] = args.control  # every part of this command, and the server processes it starts
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
    if args.command == "nodes":
        from .observe import nodes_list_command

        return nodes_list_command(args.config, args.json, sys.stdout)
    if args.command == "layer":
        from .layers import layer_list, layer_publish

        if args.layer_command == "publish":
            return layer_publish(args.config, args.name, args.path, args.description, sys.stdout)
        return layer_list(args.config, args.name, args.json, sys.stdout)
    if args.command == "event-sources":
        from .event_sources import event_sources_list, event_sources_switch

        if args.event_sources_command == "list":
            return event_sources_list(args.config, args.json, sys.stdout)
        return event_sources_switch(args.config, args.uuid, args.event_sources_command == "enable", sys.stdout)
    if args.command == "schedules":
        from .observe import schedules_list_command

        return schedules_list_command(args.config, args.json, sys.stdout)
    if args.command == "schema":
        import json

        from ..manifest.json_schema import manifest_schema

        print(json.dumps(manifest_schema(__version__), indent=args.indent or None), file=sys.stdout)
        return 0
    if args.command == "completion":
        import shtab

        print(shtab.complete(_parser(), shell=args.shell), file=sys.stdout)
        return 0
    if args.command == "cache":
        from .cache import cache_command, purge_command

        if args.cache_command == "purge":
            return purge_command(args.config, args.path, args.prefix, args.tag, args.all, sys.stdout)

        return cache_command(args.cache_command, args.config if args.cache_command != "dir" else Path(), getattr(args, "older_than", 30), getattr(args, "dry_run", False), sys.stdout)
    if args.command == "kv":
        from .kv import kv_command

        return kv_command(
            args.kv_command, args.config, args.namespace, getattr(args, "key", None), value=getattr(args, "value", None), file=getattr(args, "file", None),
            ttl=getattr(args, "ttl", None), prefix=getattr(args, "prefix", ""), cursor=getattr(args, "cursor", None), limit=getattr(args, "limit", 1000),
            as_json=getattr(args, "json", False), out=sys.stdout,
        )
    if args.command == "secret":
        from .secret import secret_command

        return secret_command(
            args.secret_command, args.config, args.function, getattr(args, "name", None), getattr(args, "file", None), sys.stdout,
            if_missing=getattr(args, "if_missing", False),
        )
    if args.command == "logs":
        from .observe import logs_command

        return logs_command(args.config, args.function, args.since, args.follow, sys.stdout)
    if args.command == "bench":
        from .bench import bench_command

        return bench_command(args, sys.stdout)
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
