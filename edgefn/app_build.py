"""Build every function of a manifest, add the code to the module store, and resolve the app.

`edgefn dev` builds for a fast save (build_dev_function): a C function against the SDK compiled once, a
Python function as a source bundle (the Python runtime component, built once per edgefn and SDK version,
plus the function's own files, imported when an instance starts), checked by starting one instance, so a
save costs a file copy and an import instead of a CPython bundle and a precompile.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Iterator

from .build.languages import build_source, language_of
from .build.layers import local_layers
from .build.toolchain import cache_dir, cache_root
from .core.app import ResolvedApp
from .core.exceptions import BuildError, Diagnostic, FunctionInitError
from .core.files import write_atomic
from .core.ports import InvocationObserver, KeyValueStore
from .manifest.load import load_manifest
from .manifest.resolve import limits_of, resolve, source_path
from .manifest.schema import FunctionConfig, Manifest
from .runtime.invoker import Invoker, Runtime, function_logger
from .runtime.module_store import ModuleStore
from .runtime.sandbox import Sandbox, log_level

log = logging.getLogger("edgefn.build")


def store_dir_of(manifest_path: Path, manifest: Manifest) -> Path:
    return (Path(manifest_path).resolve().parent / manifest.app.store_dir).resolve()


def _wasm_out(manifest_path: Path, manifest: Manifest, name: str) -> Path:
    return (Path(manifest_path).resolve().parent / manifest.app.build_dir / f"{name}.wasm").resolve()


def build_function(manifest_path: Path, manifest: Manifest, name: str) -> bytes:
    cfg: FunctionConfig = manifest.functions[name]
    with _step(f"building {name} ({cfg.source})"):
        layers = tuple(local_layers(local_dir_of(manifest_path, manifest), cfg.layers, name)) if cfg.layers else ()
        return build_source(source_path(manifest_path, cfg), _wasm_out(manifest_path, manifest, name), cfg.target, cache_dir(), layers)


def local_dir_of(manifest_path: Path, manifest: Manifest) -> Path:
    """The app's own state beside its control database (the locked app, the snapshot, the fetched layers' index)."""
    return (Path(manifest_path).resolve().parent / manifest.app.registry).resolve().parent


def build_dev_function(manifest_path: Path, manifest: Manifest, name: str, store: ModuleStore, sandbox: Sandbox) -> str:
    """`edgefn dev`'s build of one function, kept in `store`; returns its digest. A language with a dev build
    (C: the SDK compiled once, toolchain.split_sdk) uses it. One with dev sources (Python) becomes a source
    bundle, checked by starting one instance under the function's limits: an import that fails is a
    BuildError naming file:line:column. Others, and a function that imports a standard module the dev
    runtime does not hold, get the production build."""
    cfg: FunctionConfig = manifest.functions[name]
    source = source_path(manifest_path, cfg)
    language = language_of(source)
    if language is not None and language.dev_build is not None and source.exists():
        out = _wasm_out(manifest_path, manifest, name)
        out.parent.mkdir(parents=True, exist_ok=True)
        with _step(f"building {name} ({cfg.source})"):
            return store.add(language.dev_build(source, out, cfg.target, cache_dir()))
    if language is None or language.dev_sources is None or not source.exists() or cfg.layers:  # a layer's code is bundled: a full build
        return store.add(build_function(manifest_path, manifest, name))
    with _step(f"loading {name} ({cfg.source}) from its sources"):
        bundle = language.dev_sources(source, cache_root())
        digest = store.add_sources(store.add(bundle.runtime), bundle.module, bundle.files)
        loaded, _ = store.load(digest, name)
        flog = function_logger(name)
        try:
            sandbox.prewarm(loaded, function=name, limits=limits_of(cfg), env=dict(cfg.env), emit=lambda level, line: flog.log(log_level(level), "load\t%s", line))
        except FunctionInitError as exc:
            top = (exc.missing_module or "").partition(".")[0]
            if top and top in sys.stdlib_module_names:
                log.info("%s imports %s, which the dev runtime does not hold: building it in full", name, exc.missing_module)
                return store.add(build_function(manifest_path, manifest, name))
            file = Path(exc.file or source)
            if loaded.sources is not None and file.is_relative_to(loaded.sources.directory):  # the store's copy -> the user's file
                file = source.parent / file.relative_to(loaded.sources.directory)
            raise BuildError(source, [Diagnostic(str(file), exc.line, exc.column, "error", exc.init_message)], str(exc)) from None
    return digest


#: a step that took longer says so at INFO (one line per step), a quicker one at DEBUG
STEP_SHOWN_MS = 250.0


@contextlib.contextmanager
def _step(what: str) -> Iterator[None]:
    """A build step (a zig build, a Python component build, a precompile): its start and end as records with
    `step` and `phase` ("start", "done"), which a terminal shows as a live progress line (cli/terminal.py)."""
    start = time.perf_counter()
    log.debug("%s …", what, extra={"step": what, "phase": "start"})
    yield
    ms = (time.perf_counter() - start) * 1000
    log.log(logging.INFO if ms >= STEP_SHOWN_MS else logging.DEBUG, "%s: done in %.0f ms", what, ms, extra={"step": what, "phase": "done"})


def build_app(
    manifest_path: Path, manifest: Manifest, store: ModuleStore, precompile: bool = True, digests: dict[str, str] | None = None,
    invoker: Invoker | None = None, dev: Sandbox | None = None,
) -> ResolvedApp:
    """Build all functions in parallel, keep their code in `store`, precompile it, and resolve the app.

    `digests` (every function's code, already in `store`) skips the build: a server process whose parent
    has just built and deployed the app. With `invoker` (a process that will serve), functions with
    `reuse_instances` and `prewarm = N` get their N warm instances now. With `dev` (the sandbox that checks
    them), functions are built as `edgefn dev` builds them (build_dev_function)."""
    manifest_path = Path(manifest_path).resolve()
    if digests is None or not all(store.wasm_path(d).exists() for d in digests.values()):
        app, still = start_app_build(manifest_path, manifest, store, dev=dev)
        assert not still  # no ready_within_s: every build waited for
    else:
        app = resolve(manifest, manifest_path, digests)
    if precompile:
        load_app(app, store, invoker)
    return app


def start_app_build(
    manifest_path: Path, manifest: Manifest, store: ModuleStore, dev: Sandbox | None = None, ready_within_s: float | None = None,
) -> tuple[ResolvedApp, dict[str, Future[str]]]:
    """Build every function in parallel into `store`. With `ready_within_s`, return once that long has passed
    if some are still building: the app then has those as `pending`, and their futures (name -> digest,
    each precompiled) finish in the background (`serve` deploys each as it ends). Without it, wait for all."""
    manifest_path = Path(manifest_path).resolve()

    def one(name: str) -> str:
        if dev is not None:
            return build_dev_function(manifest_path, manifest, name, store, dev)
        digest = store.add(build_function(manifest_path, manifest, name))
        if ready_within_s is not None:
            with _step(f"loading {name} into the module store"):
                store.load(digest, name)  # the precompile, in the same task: a pending function is ready once deployed
        return digest

    pool = ThreadPoolExecutor(max_workers=os.cpu_count() or 2, thread_name_prefix="edgefn-build")
    futures = {name: pool.submit(one, name) for name in manifest.functions}
    pool.shutdown(wait=False)  # the threads end with their tasks
    done, _ = wait(futures.values(), timeout=ready_within_s)
    if ready_within_s is not None and len(done) < len(futures):
        # a failure among the first ones still fails the start, before anything listens
        for f in done:
            f.result()
    digests = {name: f.result() for name, f in futures.items() if f in done}
    still = {name: f for name, f in futures.items() if f not in done}
    return resolve(manifest, manifest_path, digests), still


def load_app(app: ResolvedApp, store: ModuleStore, invoker: Invoker | None = None) -> None:
    """Every function of `app` ready in `store` (precompiled artifacts loaded, compiled once if missing), and
    with `invoker`, the warm instances of functions with `reuse_instances` and `prewarm = N`."""
    for name, spec in app.functions.items():
        with _step(f"loading {name} into the module store"):
            store.load(spec.digest, name)
    for spec in app.functions.values():
        if invoker is not None and spec.reuse_instances and spec.prewarm > 0:
            invoker.prewarm(spec)


#: where `edgefn serve` leaves the locked app for its server processes (beside the control database)
LOCKED_APP_ENV = "EDGEFN_LOCKED_APP"


def write_locked_app(app: ResolvedApp) -> Path:
    """Keep `app` for the server processes `serve` starts: they serve it as is, never re-reading the manifest."""
    path = app.registry_path.parent / "locked-app.pickle"
    write_atomic(path, pickle.dumps(app), mode=0o600)
    return path


def read_locked_app(path: Path) -> ResolvedApp:
    """The app a parent `serve` locked (same edgefn version: it started this process from its own interpreter)."""
    app = pickle.loads(Path(path).read_bytes())
    assert isinstance(app, ResolvedApp)
    return app


def open_app(
    config: Path, workers: int | None = None, digests: dict[str, str] | None = None, observer: InvocationObserver | None = None,
    kv: KeyValueStore | None = None,
) -> tuple[ResolvedApp, Runtime]:
    """Load, build (unless `digests` has the built code) and precompile the app of `config`, in a Runtime
    ready to serve it (warm instances made), its guests reaching `kv`; the caller closes the Runtime (and so `kv`)."""
    manifest = load_manifest(config)
    runtime = Runtime(store_dir_of(config, manifest), workers=workers or manifest.server.guest_threads or None, observer=observer, kv=kv)
    try:
        app = build_app(config, manifest, runtime.store, digests=digests, invoker=runtime.invoker)
    except BaseException:
        runtime.close()
        raise
    return app, runtime.start()
