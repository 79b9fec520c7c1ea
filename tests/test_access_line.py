"""The access-log line (edgefn/edge/app.py access_line) is what json.dumps writes for the same fields."""

from __future__ import annotations

import json
import random

from edgefn.core.events import XCache
from edgefn.edge.app import access_line

TEXTS = ["", "/", "/a b", '/"quoted"', "/back\\slash", "/caf\u00e9", "/\u2603", "/tab\t", "/\x01ctl", "*", "/api/*", "GET", "PURGE"]


def _fields(rng: random.Random) -> dict[str, object]:
    stages = ["viewer-request", "origin-request", "origin", "origin-response", "viewer-response"]
    picked = rng.sample(stages, rng.randint(0, len(stages)))
    return {
        "request_id": f"{rng.getrandbits(128):032x}", "method": rng.choice(TEXTS), "path": rng.choice(TEXTS),
        "status": rng.choice([200, 204, 304, 404, 502, 599]), "behavior": rng.choice(TEXTS), "cache": rng.choice(list(XCache)),
        "duration_ms": round(rng.random() * 10 ** rng.randint(-3, 4), 3),
        "timings_ms": {s: round(rng.random() * 100, 3) for s in picked},
        "functions": {s: rng.choice(["ok", "CpuBudgetExhausted", "Unhandled"]) for s in picked},
        "trace_id": rng.choice([None, f"{rng.getrandbits(128):032x}"]),
    }


def test_the_access_line_is_byte_for_byte_what_json_dumps_writes() -> None:
    rng = random.Random(7)
    for _ in range(3000):
        fields = _fields(rng)
        line = access_line(*fields.values())  # type: ignore[arg-type]
        assert line == json.dumps(fields), fields
        assert json.loads(line) == json.loads(json.dumps(fields))
