"""visits: a function acting as the origin that counts visits per path in the key-value store.

Each request reads the path's count from the `visits` namespace, adds one, writes it back and answers JSON
{"path": ..., "visits": N}. `GET /_top` answers the ten most visited paths instead (a list of the namespace).
The read and the write are two operations, not one atomic increment: two requests for one path at the same
instant may both count the same number (as with Workers KV); use it for statistics, not for money.
"""

import json

from edgefn_guest import Request, Response, kv

visits = kv.namespace("visits")


def top(limit: int = 10) -> list[dict]:
    counts = [(int(visits.get_text(key) or 0), key.decode("utf-8", "replace")) for key in visits.keys()]
    counts.sort(key=lambda c: (-c[0], c[1]))
    return [{"path": path, "visits": n} for n, path in counts[:limit]]


def handler(event) -> Response:
    request: Request = event.request
    if request.uri == "/_top":
        body = {"top": top()}
    else:
        count = int(visits.get_text(request.uri) or 0) + 1
        visits.put(request.uri, str(count))
        body = {"path": request.uri, "visits": count}
    return Response(200, json.dumps(body) + "\n", headers={"Content-Type": "application/json", "Cache-Control": "no-store"})
