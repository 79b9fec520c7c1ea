"""What tracing costs a request (`python bench/tracing.py`; docs/tracing.md).

The same app twice, in interleaved rounds on the server core with wrk (c=16) on the other:
- **off**: no `[tracing]` endpoint. Trace contexts still propagate: the viewer's is continued, the origin gets
  one, and the REPORT line and the access log carry the trace id.
- **on**: every span exported over OTLP/HTTP to a receiver in this process, which decodes each export. Per
  request that is the request span, the viewer-request hook, and the origin function's invocation.

The app is examples/redirect: `redirect` as the viewer-request hook, `page` as the origin. Each request carries a
traceparent. The figures are req/s, p50, and server CPU per request, as on / off. The exporter's own thread is in
the server's CPU; the receiver's is not. Writes bench/results/tracing.json.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import PYTHON, REPO, RESULTS, cpu_sets, log, machine, write_json  # noqa: E402
from servers import Server, free_port  # noqa: E402

from edgefn.benchmark.load import run_load  # noqa: E402
from tests.servers import OtlpReceiver  # noqa: E402

SRC = REPO / "examples" / "redirect" / "src"
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def _app(directory: Path, endpoint: str | None) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    manifest = directory / "edgefn.toml"
    tracing = f'\n[tracing]\notlp_endpoint = "{endpoint}"\n' if endpoint else ""
    manifest.write_text(f"""
[app]
name = "tracing-bench"
{tracing}
[functions.redirect]
source = "{SRC / 'redirect.c'}"

[functions.page]
source = "{SRC / 'page.c'}"

[default_behavior]
function = "page"
viewer_request = {{ function = "redirect" }}
""")
    return manifest


def run(rounds: int = 5, seconds: float = 5.0) -> dict[str, Any]:
    client_cpus, server_cpus = cpu_sets()
    receiver = OtlpReceiver()
    runs: dict[str, list[dict[str, float]]] = {"off": [], "on": []}
    with tempfile.TemporaryDirectory(prefix="edgefn-tracing-bench-") as tmp_dir:
        tmp = Path(tmp_dir)
        servers = {}
        for kind, endpoint in (("off", None), ("on", receiver.url)):
            port = free_port()
            cmd = [PYTHON, "-m", "edgefn.cli", "serve", "--config", str(_app(tmp / kind, endpoint)), "--port", str(port), "--tls-port", "0",
                   "--admin-port", "0"]
            servers[kind] = Server(f"tracing-{kind}", cmd, port, server_cpus)
        for s in servers.values():
            s.start()
        try:
            headers = (("traceparent", TRACEPARENT),)
            for s in servers.values():  # warm-up
                run_load(s.base + "/", 16, 1, cpus=client_cpus, headers=headers)
            for r in range(rounds):
                for kind in (("off", "on") if r % 2 == 0 else ("on", "off")):
                    s = servers[kind]
                    cpu0 = s.cpu_seconds()
                    load = run_load(s.base + "/", 16, seconds, cpus=client_cpus, headers=headers)
                    cpu = s.cpu_seconds() - cpu0
                    runs[kind].append({"rps": load.rps, "p50_us": load.p50_us, "p99_us": load.p99_us, "cpu_us": cpu / max(load.requests, 1) * 1e6,
                                       "failed": load.failed})
                    log(f"tracing {kind}: {load.rps:.0f} req/s, p50 {load.p50_us:.0f} us, CPU {cpu / max(load.requests, 1) * 1e6:.0f} us/request")
        finally:
            for s in servers.values():
                s.stop()
    receiver.close()  # the servers flushed their last spans as they stopped
    med = {k: {m: statistics.median(x[m] for x in v) for m in ("rps", "p50_us", "p99_us", "cpu_us")} for k, v in runs.items()}
    return {
        "machine": machine(), "runs": runs, "median": med, "on_over_off": {m: med["on"][m] / med["off"][m] for m in med["on"]},
        "cpu_us_added_per_request": med["on"]["cpu_us"] - med["off"]["cpu_us"], "spans_received": len(receiver.spans),
        "failed": sum(x["failed"] for v in runs.values() for x in v),
    }


def table(result: dict[str, Any]) -> str:
    m, r = result["median"], result["on_over_off"]
    rows = [("req/s", "rps"), ("p50 µs", "p50_us"), ("p99 µs", "p99_us"), ("server CPU µs / request", "cpu_us")]
    return "\n".join([
        "| c=16, hook + origin function | tracing off | tracing on (OTLP export) | on / off |", "|---|---:|---:|---:|",
        *(f"| {label} | {m['off'][k]:,.0f} | {m['on'][k]:,.0f} | {r[k]:.3f}x |" for label, k in rows),
        "", f"Tracing adds {result['cpu_us_added_per_request']:.0f} µs of server CPU per request (3 spans); "
        f"{result['spans_received']:,} spans reached the receiver; {result['failed']} requests failed.",
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter runs, to check the harness")
    args = parser.parse_args()
    result = run(2, 1.0) if args.quick else run()
    path = (RESULTS / "tmp" / "results" if args.quick else RESULTS) / "tracing.json"
    write_json(path, result)
    print(table(result))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
