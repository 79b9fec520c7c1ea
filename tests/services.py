"""The real services some tests talk to, reached on loopback; never mocked.

PostgreSQL: $EDGEFN_TEST_DATABASE_URL, else the one this project's machines run (127.0.0.1:5432, user postgres,
database test), or where none answers (a contributor's own machine), a throwaway server started from the
installed PostgreSQL binaries in a temporary directory on a free port, stopped afterwards. No PostgreSQL at all
is a failure naming what to install, never a skip. Each test that writes gets a schema of its own
(`own_schema`), dropped afterwards. `ThrowawayPostgres` is a server a test may stop and start again.

Redis and RabbitMQ (the event sources' brokers) the same way: $EDGEFN_TEST_REDIS_URL / $EDGEFN_TEST_AMQP_URL, else
the machine's own on 6379 / 5672, else a throwaway redis-server / rabbitmq-server of the installed binaries on free
ports. Each test uses stream keys and queue names of its own.
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
import uuid
from pathlib import Path
from typing import Iterator
from urllib.parse import quote

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
    """A URL of a running PostgreSQL: $EDGEFN_TEST_DATABASE_URL, the machine's own, or a throwaway one."""
    url = os.environ.get("EDGEFN_TEST_DATABASE_URL")
    if url:
        yield url
        return
    if _answers("127.0.0.1", 5432):
        yield DEFAULT_POSTGRES
        return
    with ThrowawayPostgres() as server:
        yield server.url


class ThrowawayPostgres:
    """A PostgreSQL server of the installed binaries in a temporary directory, on a free loopback port; `stop()`
    and `start()` take it away and bring it back on the same port with the same data."""

    def __init__(self) -> None:
        initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
        if initdb is None or pg_ctl is None:
            raise RuntimeError("no PostgreSQL is installed to start a throwaway server: install PostgreSQL (e.g. apt install postgresql)")
        self._pg_ctl = pg_ctl
        self.data = Path(tempfile.mkdtemp(prefix="edgefn-pg-"))
        # PostgreSQL refuses to run as root: as root (a container, CI) its programs run as the postgres user
        self._as: list[str] = []
        if os.geteuid() == 0:
            import pwd

            owner = pwd.getpwnam("postgres")
            os.chown(self.data, owner.pw_uid, owner.pw_gid)
            self._as = ["runuser", "-u", "postgres", "--"]
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        subprocess.run([*self._as, initdb, "-D", str(self.data / "db"), "-U", "postgres", "-A", "trust"], check=True, capture_output=True, timeout=120)
        self.log = self.data / "server.log"
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        subprocess.run(
            [*self._as, self._pg_ctl, "-D", str(self.data / "db"), "-l", str(self.log), "-o", f"-h 127.0.0.1 -p {self.port} -k {self.data}", "-w", "start"],
            check=True, capture_output=True, timeout=120,
        )
        deadline = time.monotonic() + 60
        while not _answers("127.0.0.1", self.port):
            if time.monotonic() > deadline:
                raise RuntimeError(f"the throwaway PostgreSQL did not start:\n{self.log.read_text()}")
            time.sleep(0.1)

    def stop(self) -> None:
        subprocess.run([*self._as, self._pg_ctl, "-D", str(self.data / "db"), "-m", "immediate", "-w", "stop"], capture_output=True, timeout=60)

    def __enter__(self) -> "ThrowawayPostgres":
        try:
            self.start()
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
        shutil.rmtree(self.data, ignore_errors=True)


@contextlib.contextmanager
def own_schema(url: str) -> Iterator[str]:
    """`url` with a search_path of a new, empty schema, dropped (with all it holds) afterwards."""
    import psycopg

    schema = f"edgefn_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    sep = "&" if "?" in url else "?"
    try:
        yield f"{url}{sep}options={quote(f'-csearch_path={schema}')}"
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


# --- the brokers of event sources (docs/event-sources.md) ------------------------------------------------------

DEFAULT_REDIS = "redis://127.0.0.1:6379/0"
DEFAULT_RABBITMQ = "amqp://guest:guest@127.0.0.1:5672/%2F"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _wait_until_answers(port: int, seconds: float, what: str, log: Path) -> None:
    deadline = time.monotonic() + seconds
    while not _answers("127.0.0.1", port):
        if time.monotonic() > deadline:
            raise RuntimeError(f"the throwaway {what} did not start:\n{log.read_text(errors='replace') if log.exists() else ''}")
        time.sleep(0.1)


@contextlib.contextmanager
def redis_url() -> Iterator[str]:
    """$EDGEFN_TEST_REDIS_URL, the machine's Redis on 6379, or a throwaway redis-server on a free port."""
    url = os.environ.get("EDGEFN_TEST_REDIS_URL")
    if url:
        yield url
        return
    if _answers("127.0.0.1", 6379):
        yield DEFAULT_REDIS
        return
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("no Redis is running or installed: install redis-server (e.g. apt install redis-server), or set EDGEFN_TEST_REDIS_URL")
    home = Path(tempfile.mkdtemp(prefix="edgefn-redis-"))
    port = _free_port()
    log = home / "redis.log"
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", str(home), "--logfile", str(log)],
                            start_new_session=True)
    try:
        _wait_until_answers(port, 60, "Redis", log)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.kill()
        proc.wait(30)
        shutil.rmtree(home, ignore_errors=True)


@contextlib.contextmanager
def rabbitmq_url() -> Iterator[str]:
    """$EDGEFN_TEST_AMQP_URL, the machine's RabbitMQ on 5672, or a throwaway rabbitmq-server on free ports."""
    url = os.environ.get("EDGEFN_TEST_AMQP_URL")
    if url:
        yield url
        return
    if _answers("127.0.0.1", 5672):
        yield DEFAULT_RABBITMQ
        return
    binary = shutil.which("rabbitmq-server") or ("/usr/sbin/rabbitmq-server" if os.path.exists("/usr/sbin/rabbitmq-server") else None)
    if binary is None:
        raise RuntimeError("no RabbitMQ is running or installed: install rabbitmq-server (e.g. apt install rabbitmq-server), or set EDGEFN_TEST_AMQP_URL")
    home = Path(tempfile.mkdtemp(prefix="edgefn-rabbitmq-"))
    port, dist = _free_port(), _free_port()
    env = {
        **os.environ, "RABBITMQ_NODE_PORT": str(port), "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1", "RABBITMQ_DIST_PORT": str(dist),
        "RABBITMQ_NODENAME": f"edgefn-{port}@localhost", "RABBITMQ_MNESIA_BASE": str(home / "mnesia"), "RABBITMQ_LOG_BASE": str(home / "log"),
        "RABBITMQ_ENABLED_PLUGINS_FILE": str(home / "enabled_plugins"), "RABBITMQ_PID_FILE": str(home / "pid"), "HOME": str(home),
    }
    (home / "enabled_plugins").write_text("[].\n")
    proc = subprocess.Popen([binary], env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        _wait_until_answers(port, 120, "RabbitMQ", home / "log")
        yield f"amqp://guest:guest@127.0.0.1:{port}/%2F"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, 9)
        proc.wait(30)
        shutil.rmtree(home, ignore_errors=True)
