"""Start one baseline server (used by bench/servers.py; edgefn itself is started with the real `edgefn serve`).

    python bench/serve.py starlette-hypercorn --port P [--workers N] [--tls-port T --tls-dir D]
    python bench/serve.py starlette-uvicorn   --port P [--workers N]
    python bench/serve.py edgefn-nostore      --port P --config edgefn.toml

starlette-hypercorn  edgefn/benchmark/baseline.py (`edgefn bench`'s baseline) on edgefn.server.hypercorn_config: the same Hypercorn settings
                     (and, with --tls-port, the same TLS + HTTP/3 listeners) as `edgefn serve`
starlette-uvicorn    the same app on uvicorn with httptools and uvloop, access log off
edgefn-nostore       the real `edgefn serve`, except that ModuleStore.load compiles the wasm on every call
                     (no memory cache, no artifact): what edgefn would cost without its module store
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))


def starlette_hypercorn(port: int, workers: int, tls_port: int, tls_dir: str | None) -> int:
    from hypercorn.run import run

    from edgefn.server import hypercorn_config

    certfile = keyfile = None
    if tls_port and tls_dir:
        from edgefn.tls import ensure_self_signed

        certfile, keyfile = ensure_self_signed(Path(tls_dir))
    config = hypercorn_config("127.0.0.1", port, workers, tls_port=tls_port, certfile=certfile, keyfile=keyfile)
    config.application_path = "edgefn.benchmark.baseline:worker_app()"
    return run(config)


def starlette_uvicorn(port: int, workers: int) -> int:
    import uvicorn

    uvicorn.run(
        "edgefn.benchmark.baseline:app", host="127.0.0.1", port=port, workers=workers if workers > 1 else None,
        loop="uvloop", http="httptools", access_log=False, log_level="warning", lifespan="off",
    )
    return 0


def edgefn_nostore(config: Path, port: int) -> int:
    import wasmtime

    from edgefn.runtime import module_store
    from edgefn.runtime.linking import inspect_module
    from edgefn.server import serve

    wasm_by_digest: dict[str, bytes] = {}

    def compile_every_time(self: module_store.ModuleStore, digest: str, function: str, *args: object, **kwargs: object) -> tuple[module_store.LoadedModule, bool]:
        start = time.perf_counter()
        wasm = wasm_by_digest.get(digest)
        if wasm is None:  # the wasm bytes stay in memory: only the compile is repeated
            wasm = wasm_by_digest[digest] = self.wasm_path(digest).read_bytes()
        module = wasmtime.Module(self._engine, wasm)
        info = inspect_module(module, function)
        pre = self._linker.instantiate_pre(module)
        return module_store.LoadedModule(digest, pre, info, 0, "compiled", (time.perf_counter() - start) * 1000), True

    module_store.ModuleStore.load = compile_every_time  # type: ignore[method-assign]
    return serve(config, port=port, tls_port=0, workers=1, admin_port=0)  # several servers run at once: no admin listener


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("kind", choices=("starlette-hypercorn", "starlette-uvicorn", "edgefn-nostore"))
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--tls-port", type=int, default=0)
    p.add_argument("--tls-dir")
    p.add_argument("--config", type=Path)
    a = p.parse_args()
    if a.kind == "starlette-hypercorn":
        return starlette_hypercorn(a.port, a.workers, a.tls_port, a.tls_dir)
    if a.kind == "starlette-uvicorn":
        return starlette_uvicorn(a.port, a.workers)
    if a.kind == "edgefn-nostore":
        return edgefn_nostore(a.config, a.port)
    return 2


if __name__ == "__main__":
    sys.exit(main())
