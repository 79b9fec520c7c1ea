"""Hypercorn configuration and `edgefn serve`."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from hypercorn.config import Config
from hypercorn.run import run

from .build.app import build_app, store_dir_of
from .manifest.load import load_manifest
from .runtime.invoker import Runtime


def hypercorn_config(host: str, port: int, workers: int) -> Config:
    config = Config()
    config.bind = [f"{host}:{port}"]
    config.application_path = "edgefn.app:app_from_env()"
    config.workers = 0 if workers == 1 else workers  # 0: serve in this process
    config.graceful_timeout = 10.0
    config.accesslog = None  # edgefn writes its own structured access log
    return config


def serve(config_path: Path, host: str | None = None, port: int | None = None, workers: int | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    config_path = config_path.resolve()
    manifest = load_manifest(config_path)
    # build and precompile once here, so workers start from a warm store and a broken build never binds a port
    with Runtime(store_dir_of(config_path, manifest)) as runtime:
        app = build_app(config_path, manifest, runtime.store)
    host = host or manifest.server.host
    port = manifest.server.port if port is None else port
    workers = workers or manifest.server.workers
    os.environ["EDGEFN_CONFIG"] = str(config_path)
    print(f"edgefn: serving {app.name} ({len(app.functions)} functions) on http://{host}:{port}/", file=sys.stderr, flush=True)
    return run(hypercorn_config(host, port, workers))
