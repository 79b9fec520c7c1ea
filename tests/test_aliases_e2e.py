"""Aliases through a real `edgefn serve`: a flip under load drops nothing and lands within a second; a weighted
alias splits real HTTP traffic as configured.

The app: one function (tests/guests/c/env.c, answering its GREETING env var as `x-greeting`) published
twice — version 1 with GREETING=one, version 2 with GREETING=two — served by a behavior on `fn:live`.
"""

from __future__ import annotations

import math
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx

from edgefn.cli import main
from edgefn.edge.app import EXECUTED_VERSION_HEADER
from tests.servers import REPO, edge_server

ENV_GUEST = REPO / "tests" / "guests" / "c" / "env.c"
GREETING_OF = {"fn:1": "one", "fn:2": "two"}
CLIENTS = 12


def versioned_app(root: Path, *alias_args: str) -> Path:
    """Versions 1 and 2 of fn published in the manifest's own registry, fn:live set with `alias_args`."""
    manifest = root / "edgefn.toml"
    for greeting in ("one", "two"):
        manifest.write_text(
            f'[app]\nname = "aliases"\n\n[admin]\nport = 0\n\n'
            f'[functions.fn]\nsource = "{ENV_GUEST}"\nenv = {{ GREETING = "{greeting}" }}\n\n'
            f'[default_behavior]\nfunction = "fn:live"\n'
        )
        assert main(["deploy", "-c", str(manifest)]) == 0
        assert main(["publish", "fn", "-c", str(manifest)]) == 0
    assert main(["alias", "set", "fn:live", *alias_args, "-c", str(manifest)]) == 0
    return manifest


def edgefn(*args: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "edgefn.cli", *args], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 0, f"edgefn {' '.join(args)}:\n{proc.stdout}\n{proc.stderr}"


@dataclass(frozen=True)
class Answer:
    sent: float  # monotonic time the request started
    done: float  # ... and got its response
    status: int
    version: str | None
    greeting: str | None


def fetch(http: httpx.Client) -> Answer:
    sent = time.monotonic()
    r = http.get("/")
    return Answer(sent, time.monotonic(), r.status_code, r.headers.get(EXECUTED_VERSION_HEADER), r.headers.get("x-greeting"))


def test_alias_flip_under_load_drops_nothing_and_lands_within_a_second(tmp_path):
    manifest = versioned_app(tmp_path, "1")
    with edge_server(manifest, tls=False) as server:
        answers: list[Answer] = []
        failures: list[str] = []
        stop = threading.Event()

        def hammer() -> None:
            with httpx.Client(base_url=server.base, timeout=10.0) as http:
                while not stop.is_set():
                    try:
                        answers.append(fetch(http))
                    except httpx.HTTPError as exc:
                        failures.append(repr(exc))

        clients = [threading.Thread(target=hammer) for _ in range(CLIENTS)]
        for c in clients:
            c.start()
        try:
            deadline = time.monotonic() + 20
            while len(answers) < 4 * CLIENTS and time.monotonic() < deadline:  # the load is on before the flip
                time.sleep(0.05)
            flip_started = time.monotonic()
            edgefn("alias", "set", "fn:live", "2", "-c", str(manifest))
            flip_returned = time.monotonic()
            time.sleep(1.6)  # keep the load on past the 1 s the switch may take
        finally:
            stop.set()
            for c in clients:
                c.join(timeout=15)

    assert failures == []
    assert answers and {a.status for a in answers} == {200}
    assert {a.version for a in answers} == {"fn:1", "fn:2"}
    assert all(GREETING_OF[a.version] == a.greeting for a in answers)  # the header names the code that really ran

    before = [a for a in answers if a.done < flip_started]
    settled = [a for a in answers if a.sent > flip_returned + 1.0]
    assert before and {a.version for a in before} == {"fn:1"}
    assert settled and {a.version for a in settled} == {"fn:2"}, "the flip had not reached the server 1 s after the CLI returned"
    # and it stays switched: nothing sent after a version-2 answer came back ran version 1
    first_v2 = min(a.done for a in answers if a.version == "fn:2")
    assert {a.version for a in answers if a.sent > first_v2} == {"fn:2"}


def test_weighted_alias_splits_http_traffic_within_binomial_bounds(tmp_path):
    manifest = versioned_app(tmp_path, "1", "--weight", "2=0.25")
    requests, weight = 400, 0.25
    with edge_server(manifest, tls=False) as server:
        with httpx.Client(base_url=server.base, timeout=10.0, limits=httpx.Limits(max_connections=8)) as http:
            with ThreadPoolExecutor(8) as pool:
                answers = list(pool.map(lambda _: fetch(http), range(requests)))

    assert {a.status for a in answers} == {200}
    assert all(GREETING_OF[a.version] == a.greeting for a in answers)
    canary = sum(a.version == "fn:2" for a in answers)
    spread = 5 * math.sqrt(requests * weight * (1 - weight))  # 5 sigma: a false alarm about once in 1.7 million runs
    low, high = requests * weight - spread, requests * weight + spread
    assert low <= canary <= high, f"{canary} of {requests} requests ran the canary, expected {low:.0f}..{high:.0f}"
