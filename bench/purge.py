"""Cache purge propagation: from a purge logged in the control database (what `edgefn cache purge` and the admin API
do) to every worker process having dropped the response, against a real `edgefn serve --workers 2`.

    .venv/bin/python bench/purge.py [--purges 20]

Per purge: the client-side time from the commit to the first Miss on a new connection (the first worker that
applied it), and each worker's own lag as it logs it (`cache purge N (...): K responses dropped, M ms after
it was asked`). The baseline is the server's poll interval (control/catalog.POLL_INTERVAL_S), the floor of any
change that is followed by polling: a ratio near 0.5 means a purge waits on average half a poll.
"""

from __future__ import annotations

import argparse
import random
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import servers  # noqa: E402
from common import RESULTS, TMP, log, percentile, summarize, write_json  # noqa: E402

from edgefn.control.catalog import POLL_INTERVAL_S  # noqa: E402
from edgefn.control.deploy import control_store_of  # noqa: E402
from edgefn.manifest.load import load_manifest  # noqa: E402

APP = TMP / "purge-app"
MANIFEST = APP / "edgefn.toml"
_LAG = re.compile(r"cache purge (\d+) \(.*?\): (\d+) responses dropped, (\d+) ms after it was asked")


def run(server_cpus: str | None, purges: int = 20) -> dict:
    APP.mkdir(parents=True, exist_ok=True)
    MANIFEST.write_text(
        '[app]\nname = "purge-bench"\n\n' + servers.HELLO_FUNCTION.format(hello=servers.HELLO_C)
        + '\n[default_behavior]\nfunction = "hello"\ncache = { default_ttl = 3600, max_ttl = 3600 }\n'
    )
    server = servers.edgefn("purge", server_cpus, workers=2, manifest=MANIFEST)
    server.start(timeout=180)
    store = control_store_of(MANIFEST, load_manifest(MANIFEST))
    rng = random.Random(7)
    first_miss_ms: list[float] = []
    try:
        from edgefn.benchmark.rawhttp import Connection

        def x_cache() -> str:
            with Connection("127.0.0.1", server.port) as conn:  # a new connection: either worker
                return conn.get("/bench")[1].get("x-cache", "")

        def fill() -> None:
            streak = 0
            while streak < 8:
                streak = streak + 1 if x_cache().startswith("Hit") else 0

        for i in range(purges):
            fill()
            time.sleep(rng.uniform(0.0, POLL_INTERVAL_S))  # a random phase against the servers' polls
            t0 = time.perf_counter()
            store.purges.add("path", "/bench")
            while not x_cache().startswith("Miss"):
                if time.perf_counter() - t0 > 10:
                    raise RuntimeError(f"purge {i}: no Miss 10 s after the commit")
            first_miss_ms.append((time.perf_counter() - t0) * 1000)
        deadline = time.monotonic() + 10
        while len(_LAG.findall(server.log.read_text())) < 2 * purges and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        store.close()
        server.stop()
    lags = [float(ms) for _, _, ms in _LAG.findall(server.log.read_text())]
    poll_ms = POLL_INTERVAL_S * 1000
    first = sorted(first_miss_ms)
    return {
        "purges": purges, "workers": 2, "poll_interval_ms": poll_ms,
        "commit_to_first_miss_ms": summarize(first_miss_ms),
        "worker_logged_lag_ms": summarize(lags), "worker_lag_lines": len(lags),
        "first_miss_p50_over_poll_interval": percentile(first, 50) / poll_ms,
        "worker_lag_max_over_1s_target": (max(lags) if lags else float("nan")) / 1000,
    }


def table(res: dict) -> str:
    f, w = res["commit_to_first_miss_ms"], res["worker_logged_lag_ms"]
    return "\n".join([
        "| measure | p50 | max | ratio |", "|---|---:|---:|---|",
        f"| purge commit -> first Miss on a new connection (ms, n={res['purges']}) | {f['p50']:.0f} | {f['max']:.0f} | p50 {res['first_miss_p50_over_poll_interval']:.2f}x the poll interval ({res['poll_interval_ms']:.0f} ms) |",
        f"| purge commit -> each worker dropped it, as it logs (ms, n={res['worker_lag_lines']}) | {w['p50']:.0f} | {w['max']:.0f} | max {res['worker_lag_max_over_1s_target']:.2f}x the 1 s target |",
    ])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--purges", type=int, default=20)
    a = p.parse_args()
    res = run(None, a.purges)
    write_json(RESULTS / "purge.json", res)
    print(table(res))
    log("wrote bench/results/purge.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
