"""The guest languages edgefn builds, in one list: a language is one entry here plus guest-sdk/<lang>/.

Each entry says which source suffixes it builds, which suffixes `edgefn dev` rebuilds on, how to build a
source into wasm (the toolchains beside this module), and what `edgefn init --lang` writes. The manifest's
`source` check, `edgefn build`, `edgefn dev` and `edgefn init` all read this table.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..core.exceptions import BuildError, LayerError
from .js import SDK_JS_DIR, build_js
from .layers import LocalLayer, link_wasm_layers
from .python import PythonSources, build_python, python_sources
from .toolchain import SDK_C_DIR, SDK_ZIG_DIR, compile_c, compile_zig

__all__ = ["LANGUAGES", "build_source", "SOURCE_SUFFIXES", "Language", "Scaffold", "language_named", "language_of", "DevSources"]

#: (source, out, target, zig_cache) -> wasm bytes
Builder = Callable[[Path, Path, str, Path], bytes]
#: `edgefn dev`'s build of an interpreted language: (source, cache root) -> a shared runtime and the sources
DevSources = Callable[[Path, Path], PythonSources]


@dataclass(frozen=True)
class Scaffold:
    """What `edgefn init --lang NAME` writes: the origin function, a hook per trigger, the limits they get, and
    files for editors and tests (path -> text; made when the project is written, as paths may be absolute)."""

    origin: str
    request_hook: str
    response_hook: str
    limits: str
    extra_files: Callable[[], dict[str, str]] = dict


@dataclass(frozen=True)
class Language:
    name: str
    suffixes: tuple[str, ...]
    #: what a save of which rebuilds in `edgefn dev` (sources and the headers they include)
    watched: tuple[str, ...]
    build: Builder
    scaffold: Scaffold | None = None
    #: in `edgefn dev`: run the sources on a runtime built once, instead of building them (a save re-reads them)
    dev_sources: DevSources | None = None
    #: in `edgefn dev`: a faster build with the same code, flags, behaviour and limits
    dev_build: Builder | None = None


def _c(source: Path, out: Path, target: str, zig_cache: Path) -> bytes:
    compile_c(source, out, target, zig_cache)
    return out.read_bytes()


def _c_dev(source: Path, out: Path, target: str, zig_cache: Path) -> bytes:
    compile_c(source, out, target, zig_cache, split=True)
    return out.read_bytes()


def _zig(source: Path, out: Path, target: str, zig_cache: Path) -> bytes:
    compile_zig(source, out, target, zig_cache)
    return out.read_bytes()


def _js(source: Path, out: Path, target: str, zig_cache: Path) -> bytes:
    return build_js(source, out)


def _python(source: Path, out: Path, target: str, zig_cache: Path) -> bytes:
    return build_python(source, out, zig_cache.parent)


def _prebuilt(source: Path, out: Path, target: str, zig_cache: Path) -> bytes:
    return source.read_bytes()


C_ORIGIN = """\
/* origin: a function acting as this app's origin (replace it with origin = "https://..." in edgefn.toml). */
#include "edgefn.h"

edgefn_result edgefn_main(const edgefn_event *ev) {
    edgefn_out res = edgefn_new_response(200, "OK");
    edgefn_set_header(&res, "Content-Type", "text/html; charset=utf-8");
    edgefn_set_header(&res, "Cache-Control", "max-age=10");
    edgefn_buf body = {0};
    edgefn_buf_add_cstr(&body, "<!doctype html><h1>Hello from edgefn</h1><p>You asked for ");
    edgefn_buf_add(&body, ev->request.uri);
    edgefn_buf_add_cstr(&body, "</p>\\n");
    edgefn_set_body_str(&res, edgefn_buf_str(&body));
    return edgefn_finish(&res);
}
"""

C_REQUEST_HOOK = """\
/* {trigger}: runs {when}. Return the request (changed or not) to continue, or a response to answer now. */
#include "edgefn.h"

edgefn_result edgefn_main(const edgefn_event *ev) {{
    if (edgefn_str_eq(ev->request.uri, "/blocked"))
        return edgefn_respond(403, "text/plain", "blocked at {trigger}\\n");
    edgefn_out req = edgefn_edit_request(ev);
    edgefn_set_header(&req, "x-{trigger}", "seen");
    return edgefn_finish(&req);
}}
"""

C_RESPONSE_HOOK = """\
/* {trigger}: runs {when}. Return the (changed) response. */
#include "edgefn.h"

edgefn_result edgefn_main(const edgefn_event *ev) {{
    edgefn_out res = edgefn_edit_response(ev);
    edgefn_set_header(&res, "x-{trigger}", "seen");
    return edgefn_finish(&res);
}}
"""

PY_ORIGIN = """\
\"\"\"origin: a function acting as this app's origin (replace it with origin = "https://..." in edgefn.toml).\"\"\"

from edgefn_guest import Request, Response


def handler(event):
    request: Request = event.request
    html = f"<!doctype html><h1>Hello from edgefn</h1><p>You asked for {request.uri}</p>\\n"
    return Response(200, html, headers={"Content-Type": "text/html; charset=utf-8", "Cache-Control": "max-age=10"})
"""

PY_REQUEST_HOOK = """\
\"\"\"{trigger}: runs {when}. Return the request (changed or not) to continue, or a Response to answer now.\"\"\"

from edgefn_guest import Request, Response


def {handler}(request: Request):
    if request.uri == "/blocked":
        return Response(403, "blocked at {trigger}\\n", headers={{"Content-Type": "text/plain"}})
    request.headers["x-{trigger}"] = "seen"
    return request
"""

PY_RESPONSE_HOOK = """\
\"\"\"{trigger}: runs {when}. Return the (changed) response.\"\"\"

from edgefn_guest import Response


def {handler}(response: Response):
    response.headers["x-{trigger}"] = "seen"
    return response
"""


JS_ORIGIN = """\
// origin: a function acting as this app's origin (replace it with origin = "https://..." in edgefn.toml).
// Written like a Worker: Request, Response, Headers, URL and fetch are the Web's.
export default {
  async fetch(request, env, ctx) {
    const url = new URL(request.url);
    const html = `<!doctype html><h1>Hello from edgefn</h1><p>You asked for ${url.pathname}</p>\\n`;
    return new Response(html, { headers: { "content-type": "text/html; charset=utf-8", "cache-control": "max-age=10" } });
  },
};
"""

JS_REQUEST_HOOK = """\
// {trigger}: runs {when}. Return the request (changed or not) to continue, or a Response to answer now.
export function {export}(request, ctx) {{
  if (new URL(request.url).pathname === "/blocked") {{
    return new Response("blocked at {trigger}\\n", {{ status: 403, headers: {{ "content-type": "text/plain" }} }});
  }}
  request.headers.set("x-{trigger}", "seen");
  return request;
}}
"""

JS_RESPONSE_HOOK = """\
// {trigger}: runs {when}. Return the (changed) response.
export function {export}(response, request, ctx) {{
  response.headers.set("x-{trigger}", "seen");
  return response;
}}
"""

TS_ORIGIN = """\
// origin: a function acting as this app's origin (replace it with origin = "https://..." in edgefn.toml).
// Written like a Worker: Request, Response, Headers, URL and fetch are the Web's; types: guest-sdk/js/edgefn.d.ts.
import type { Context, Env, Worker } from "edgefn";

const origin: Worker = {
  async fetch(request: Request, env: Env, ctx: Context): Promise<Response> {
    const url = new URL(request.url);
    return Response.json({ path: url.pathname, requestId: ctx.requestId }, { headers: { "cache-control": "max-age=10" } });
  },
};

export default origin;
"""

TS_REQUEST_HOOK = """\
// {trigger}: runs {when}. Return the request (changed or not) to continue, or a Response to answer now.
import type {{ Context }} from "edgefn";

export function {export}(request: Request, ctx: Context): Request | Response {{
  if (new URL(request.url).pathname === "/blocked") {{
    return new Response("blocked at {trigger}\\n", {{ status: 403, headers: {{ "content-type": "text/plain" }} }});
  }}
  request.headers.set("x-{trigger}", "seen");
  return request;
}}
"""

TS_RESPONSE_HOOK = """\
// {trigger}: runs {when}. Return the (changed) response.
import type {{ Context }} from "edgefn";

export function {export}(response: Response, request: Request, ctx: Context): Response {{
  response.headers.set("x-{trigger}", "seen");
  return response;
}}
"""


def _js_editor_files(config: str) -> Callable[[], dict[str, str]]:
    """tsconfig.json / jsconfig.json: editors complete and check against the SDK's types (guest-sdk/js/edgefn.d.ts)."""

    def files() -> dict[str, str]:
        doc = {
            "compilerOptions": {
                "target": "es2022", "module": "es2022", "moduleResolution": "bundler", "strict": True, "noEmit": True,
                "lib": ["es2022"], "types": [], "paths": {"edgefn": [str(SDK_JS_DIR / "edgefn.d.ts")]},
                **({"checkJs": True} if config == "jsconfig.json" else {}),
            },
            "include": ["src", str(SDK_JS_DIR / "edgefn.d.ts")],
        }
        return {config: json.dumps(doc, indent=2) + "\n"}

    return files


ZIG_ORIGIN = """\
//! origin: a function acting as this app's origin (replace it with origin = "https://..." in edgefn.toml).
const edgefn = @import("edgefn");

pub fn handle(ev: *const edgefn.Event) !edgefn.Result {
    var res = edgefn.Response.init(200);
    try res.setHeader("Content-Type", "text/html; charset=utf-8");
    try res.setHeader("Cache-Control", "max-age=10");
    try res.setBody(try edgefn.fmt("<!doctype html><h1>Hello from edgefn</h1><p>You asked for {s}</p>\\n", .{ev.request.uri}));
    return res.finish();
}
"""

ZIG_REQUEST_HOOK = """\
//! {trigger}: runs {when}. Return the request (changed or not) to continue, or a response to answer now.
const std = @import("std");
const edgefn = @import("edgefn");

pub fn handle(ev: *const edgefn.Event) !edgefn.Result {{
    if (std.mem.eql(u8, ev.request.uri, "/blocked")) return edgefn.respond(403, "text/plain", "blocked at {trigger}\\n");
    var req = try edgefn.Request.edit(ev);
    try req.setHeader("x-{trigger}", "seen");
    return req.finish();
}}
"""

ZIG_RESPONSE_HOOK = """\
//! {trigger}: runs {when}. Return the (changed) response.
const edgefn = @import("edgefn");

pub fn handle(ev: *const edgefn.Event) !edgefn.Result {{
    var res = try edgefn.Response.edit(ev);
    try res.setHeader("x-{trigger}", "seen");
    return res.finish();
}}
"""


def _zig_editor_files() -> dict[str, str]:
    """zls finds the SDK as the module "edgefn", as `edgefn build` passes it."""
    return {"zls.json": json.dumps({"modules": {"edgefn": str(SDK_ZIG_DIR / "edgefn.zig")}}, indent=2) + "\n"}


def _c_editor_files() -> dict[str, str]:
    """clangd (and every editor on it) finds edgefn.h and builds for the wasm target, as `edgefn build` does."""
    return {"compile_flags.txt": f"--target=wasm32-freestanding\n-I{SDK_C_DIR}\n-std=c11\n-Wall\n-Werror=implicit-function-declaration\n"}


PY_TEST = """\
\"\"\"Unit tests of the functions, on the host: `pip install edgefn` puts edgefn_guest there too. Run: pytest\"\"\"

import sys
from pathlib import Path

from edgefn_guest import Context, Event, Request
from edgefn_guest.testing import local_host

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import origin  # noqa: E402 - the function modules live in src/


def test_origin_says_which_path_was_asked_for():
    with local_host() as host:
        response = origin.handler(Event(Context({"eventType": "origin-request"}), Request(uri="/hello"), None))
    assert response.status == 200 and "/hello" in response.text
    assert host.logs == []
"""


def _python_test_files() -> dict[str, str]:
    return {"tests/test_origin.py": PY_TEST}


#: a JS or TS save rebuilds on its sources and on package manifests (an npm dependency added)
_JS_WATCHED = (".js", ".mjs", ".cjs", ".ts", ".mts", ".json")

LANGUAGES: tuple[Language, ...] = (
    Language("c", (".c",), (".c", ".h"), _c, Scaffold(C_ORIGIN, C_REQUEST_HOOK, C_RESPONSE_HOOK, "memory_mb = 16\n", _c_editor_files), dev_build=_c_dev),
    Language("zig", (".zig",), (".zig",), _zig, Scaffold(ZIG_ORIGIN, ZIG_REQUEST_HOOK, ZIG_RESPONSE_HOOK, "memory_mb = 16\n", _zig_editor_files)),
    # a Python instance starts at ~13 MB of linear memory and a request costs ~1 M fuel
    Language(
        "python", (".py",), (".py",), _python,
        Scaffold(PY_ORIGIN, PY_REQUEST_HOOK, PY_RESPONSE_HOOK, "memory_mb = 64\nfuel = 200_000_000\nreuse_instances = true\n", _python_test_files),
        dev_sources=python_sources,
    ),
    # a QuickJS instance starts at ~1.4 MB of linear memory; the SDK's Promise runs async handlers within the call
    Language(
        "js", (".js", ".mjs"), _JS_WATCHED, _js,
        Scaffold(JS_ORIGIN, JS_REQUEST_HOOK, JS_RESPONSE_HOOK, "memory_mb = 32\nfuel = 100_000_000\n", _js_editor_files("jsconfig.json")),
    ),
    Language(
        "ts", (".ts", ".mts"), _JS_WATCHED, _js,
        Scaffold(TS_ORIGIN, TS_REQUEST_HOOK, TS_RESPONSE_HOOK, "memory_mb = 32\nfuel = 100_000_000\n", _js_editor_files("tsconfig.json")),
    ),
    Language("wasm", (".wasm",), (".wasm",), _prebuilt),
)

#: every suffix a function's `source` may have
SOURCE_SUFFIXES: tuple[str, ...] = tuple(s for lang in LANGUAGES for s in lang.suffixes)


def language_of(source: Path | str) -> Language | None:
    suffix = Path(source).suffix
    return next((lang for lang in LANGUAGES if suffix in lang.suffixes), None)


def language_named(name: str) -> Language | None:
    return next((lang for lang in LANGUAGES if lang.name == name), None)


def build_source(source: Path, out: Path, target: str, zig_cache: Path, layers: tuple[LocalLayer, ...] = ()) -> bytes:
    """Build `source` (any suffix of build/languages.py: .c, .zig, .py, .js, .ts, a prebuilt .wasm) and return the wasm bytes.

    `zig_cache` is the toolchain cache (cache_dir()); Python builds are cached in its sibling directory. `layers`
    (the unpacked layers of functions.NAME.layers) go on a Python function's import path.
    """
    if not source.exists():
        raise BuildError(source, [], f"{source}: no such file")
    language = language_of(source)
    if language is None:
        allowed = ", ".join(SOURCE_SUFFIXES)
        raise BuildError(source, [], f"{source}: unsupported source type {source.suffix!r} (use {allowed})")
    out.parent.mkdir(parents=True, exist_ok=True)
    wanted = "python" if language.name == "python" else "wasm" if language.name in ("c", "zig", "wasm") else None
    for layer in layers:
        if layer.kind != wanted:
            what = "pure-Python packages, for Python functions" if layer.kind == "python" else "a wasm module, for C and Zig functions"
            raise LayerError(f"{source}: layer {layer.ref} is {what}; a {language.name} function cannot use it")
    if layers and wanted == "python":
        return build_python(source, out, zig_cache.parent, tuple(layer.path for layer in layers))
    wasm = language.build(source, out, target, zig_cache)
    # the linked module is the function's code; `out` keeps what the compiler made (its build record names it)
    return link_wasm_layers(wasm, list(layers), source) if layers else wasm
