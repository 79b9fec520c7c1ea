"""The real services some tests talk to, reached on loopback; never mocked.

PostgreSQL: the one this project's machines run (127.0.0.1:5432, user postgres, database test), or where none
answers (a contributor's own machine), a throwaway server started from the installed PostgreSQL binaries in a
temporary directory on a free port, stopped afterwards. No PostgreSQL at all is a failure naming what to install,
never a skip.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Iterator

DEFAULT_POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"


def _answers(host: str, port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=2):
        return True
    return False


def _pg_bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return candidates[-1] if candidates else None


@contextlib.contextmanager
def postgres_url() -> Iterator[str]:
    """A URL of a running PostgreSQL: $EDGEFN_TEST_POSTGRES, the machine's own, or a throwaway one."""
    url = os.environ.get("EDGEFN_TEST_POSTGRES")
    if url:
        yield url
        return
    if _answers("127.0.0.1", 5432):
        yield DEFAULT_POSTGRES
        return
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    if initdb is None or pg_ctl is None:
        raise RuntimeError("no PostgreSQL answers on 127.0.0.1:5432 and none is installed to start: install PostgreSQL (e.g. apt install postgresql)")
    data = Path(tempfile.mkdtemp(prefix="edgefn-pg-"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    subprocess.run([initdb, "-D", str(data / "db"), "-U", "postgres", "-A", "trust"], check=True, capture_output=True, timeout=120)
    log = data / "server.log"
    subprocess.run([pg_ctl, "-D", str(data / "db"), "-l", str(log), "-o", f"-h 127.0.0.1 -p {port} -k {data}", "start"], check=True, capture_output=True, timeout=120)
    try:
        deadline = time.monotonic() + 60
        while not _answers("127.0.0.1", port):
            if time.monotonic() > deadline:
                raise RuntimeError(f"the throwaway PostgreSQL did not start:\n{log.read_text()}")
            time.sleep(0.1)
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([pg_ctl, "-D", str(data / "db"), "-m", "immediate", "stop"], capture_output=True, timeout=60)
        shutil.rmtree(data, ignore_errors=True)
