"""The edge node's shared response cache: cache keys, CloudFront TTL rules, Vary, LRU by bytes, coalescing.

One `EdgeCache` per server process sits between viewer-request and origin-request. The pipeline computes
`cache_key(...)` and calls `get_or_fetch(...)` with a callback that runs origin-request → origin →
origin-response; the cache answers fresh hits itself, collapses concurrent misses into one fetch, and
revalidates stale entries with If-None-Match / If-Modified-Since.

CloudFront behaviour mirrored (Developer Guide: "Manage how long content stays in the cache",
"How CloudFront processes HTTP 3xx / 4xx and 5xx status codes", CachePolicyConfig):

* Only GET and HEAD are cached; they share cache keys.
* `s-maxage` wins over `max-age`; either is clamped to [min_ttl, max_ttl]. Without either, `Expires`
  (relative to `Date`, else to now) is clamped the same way, else `default_ttl` is used.
* `no-store` / `private` → not stored; `no-cache` → stored with TTL 0 (every use revalidates). When the
  policy's min_ttl > 0 all three are overridden and the response is kept for min_ttl, as CloudFront does.
* Statuses: 200 203 204 300 301 302 303 use the rules above; 307 308 are cached only with an explicit
  max-age/s-maxage. Errors use the Error Caching Minimum TTL (10 s): 404 405 410 414 501 are cached for
  max(10 s, header lifetime capped at max_ttl), 400 403 412 415 only when max-age/s-maxage is present;
  no-store/no-cache/private keep any error out. A behavior with max_ttl == 0 caches no errors.

Choices where CloudFront is silent or where we deliberately differ:

* 500/502/503/504 are never stored (CloudFront caches them 10 s): our pipeline makes 502/504 itself for
  transient origin failures. Concurrent waiters do share the leader's 5xx, so a dead origin sees one
  fetch per wave rather than one per request, unless it carries Set-Cookie: then each fetches its own.
* The pipeline forwards to the origin only what the key names (pipeline.forwarded_request), so a
  response can vary only on what is in its key (or in its Vary, which the cache honours).
* 206 is never stored (ranges are not part of the key).
* A response carrying Set-Cookie is never stored (a shared cache must not hand one viewer's cookie to the
  next); `no-cache="set-cookie"` / `private="set-cookie"` lets an origin opt in: the named fields are
  dropped from the stored copy instead.
* A request with Authorization that is not in the key is stored only if the response says public,
  s-maxage or must-revalidate (RFC 9111 §3.5), since the pipeline forwards Authorization to the origin.
* Freshness follows RFC 9111: an entry is fresh while (seconds since stored + origin Age) < TTL.
* Vary is honoured for any header (CloudFront only really supports Accept-Encoding): each key holds up to
  MAX_VARIANTS entries, matched on the request's values of the Vary headers. `Vary: *` is not stored.
* A HEAD response is stored body-less and only ever answers HEAD; a GET entry answers both.
* Query-string and cookie names match the allowlist case-sensitively (as in CloudFront); header names are
  lowercase. Query parameters are decoded, sorted and re-encoded, so `a=1&b=2` and `b=2&a=1` share a key.
* Coalescing (`get_or_fetch`): a waiter gets the leader's response when it is storable with a TTL > 0
  (even if it did not fit the budget) and its Vary matches the waiter (X-Cache Hit, or RefreshHit after a
  revalidation), or when it is a 5xx (X-Cache Miss). If it is not storable, has TTL 0, or the leader
  raised, every waiter fetches for itself, in parallel and uncoalesced. If the leader was cancelled, the
  waiters elect a new leader. A waiter whose Vary variant differs coalesces again on its own variant.
* Hit/miss counters are kept by `get_or_fetch` only; the lower-level `lookup`/`store`/`refresh` do not
  count, so a pipeline using them directly owns its counting.

Not thread-safe: every method is synchronous except `get_or_fetch`, and all must run on one event loop.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import time
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from datetime import timezone
from email.utils import parsedate_to_datetime
from enum import Enum
from typing import Awaitable, Callable
from urllib.parse import parse_qsl, quote

from ..core.app import CachePolicy
from ..core.events import Body, EdgeRequest, EdgeResponse, Headers, XCache

CACHEABLE_METHODS = frozenset({"GET", "HEAD"})
#: cached under the policy's TTL rules
CACHEABLE_STATUSES = frozenset({200, 203, 204, 300, 301, 302, 303})
#: cached only when the origin gives an explicit max-age / s-maxage (CloudFront: 307 and 308)
EXPLICIT_ONLY_STATUSES = frozenset({307, 308})
#: errors cached for the Error Caching Minimum TTL, or longer if the origin says so
ERROR_STATUSES = frozenset({404, 405, 410, 414, 501})
#: errors cached only when the origin sends max-age / s-maxage
ERROR_STATUSES_IF_MAX_AGE = frozenset({400, 403, 412, 415})
ERROR_CACHING_MIN_TTL = 10.0  # CloudFront's default Error Caching Minimum TTL, seconds

ENTRY_OVERHEAD = 256  # bytes charged per entry for its bookkeeping, so tiny entries still cost something
MAX_VARIANTS = 64  # per cache key; bounds a Vary on a high-cardinality header like User-Agent
MAX_COALESCE_ROUNDS = 8  # waits on successive leaders before a waiter gives up and fetches alone

# fields a 304 must not overwrite in the stored response (RFC 9111 §3.2), plus ones we never store
_NOT_UPDATED_BY_304 = frozenset({"content-length", "set-cookie", "transfer-encoding", "connection", "keep-alive", "age"})


class Freshness(Enum):
    FRESH = "fresh"
    STALE = "stale"  # expired, but has validators: revalidate with Lookup.conditional
    MISS = "miss"


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    refresh_hits: int = 0
    coalesced: int = 0  # requests answered by another request's fetch (also counted as hit/refresh hit, or miss for a 5xx)
    stores: int = 0
    evictions: int = 0  # entries dropped to stay within the byte budget
    bytes: int = 0
    entries: int = 0


@dataclass(eq=False)  # identity equality: two entries with equal contents are still two entries
class CacheEntry:
    key: str
    response: EdgeResponse  # the stored copy; never handed out directly (see EdgeCache.serve)
    vary: tuple[tuple[str, str | None], ...]  # (request header, value when stored; None = absent)
    stored_at: float  # EdgeCache clock
    ttl: float
    origin_age: float  # Age the origin sent, seconds
    head_only: bool  # stored from a HEAD: no body, answers HEAD only
    size: int
    id: int = 0
    #: the functions that made or shaped this response (origin-request, origin, origin-response): a deploy of
    #: any of them drops it (drop_made_by)
    made_by: frozenset[str] = frozenset()
    #: the request path it answers (any query string) and its surrogate keys: what a purge names (purge)
    path: str = ""
    tags: frozenset[str] = frozenset()

    def matches(self, request: EdgeRequest) -> bool:
        if self.head_only and request.method != "HEAD":
            return False
        return all(_vary_value(request, name) == value for name, value in self.vary)

    @property
    def has_validators(self) -> bool:
        return "etag" in self.response.headers or "last-modified" in self.response.headers


@dataclass
class Lookup:
    state: Freshness
    entry: CacheEntry | None = None
    conditional: Headers = field(default_factory=dict)  # for STALE: headers to add to the origin request


@dataclass
class CacheResult:
    response: EdgeResponse  # safe to modify: a copy, or the fetched response itself on a miss
    x_cache: XCache
    entry: CacheEntry | None = None  # the entry now in the cache for this request, if any


Fetch = Callable[[Headers], Awaitable[EdgeResponse]]


# --- cache key --------------------------------------------------------------------------------------


#: response headers an origin tags a response with (Cloudflare's Cache-Tag: comma-separated; Fastly's
#: Surrogate-Key: space-separated); stored as the entry's tags and removed from what viewers get
SURROGATE_KEY_HEADERS = ("cache-tag", "surrogate-key")


def surrogate_keys(headers: Headers) -> frozenset[str]:
    tags: set[str] = set()
    for _, value in headers.get("cache-tag", ()):
        tags.update(t.strip() for t in value.split(",") if t.strip())
    for _, value in headers.get("surrogate-key", ()):
        tags.update(value.split())
    return frozenset(tags)


def is_cacheable_method(method: str) -> bool:
    return method in CACHEABLE_METHODS


def cache_key(policy: CachePolicy, behavior_id: str, host: str, request: EdgeRequest) -> str:
    """The key of `request` under `policy`: behavior, method class, host, path and the allowlisted parts."""
    method = "GET" if request.method in CACHEABLE_METHODS else request.method  # GET and HEAD share
    params = allowlisted(parse_qsl(request.querystring, keep_blank_values=True, errors="surrogateescape"), policy.query_strings)
    query = "&".join(f"{_q(n)}={_q(v)}" for n, v in sorted(params))
    headers = "&".join(
        _q(name) if (value := _vary_value(request, name)) is None else f"{_q(name)}={_q(value)}"
        for name in sorted({h.lower() for h in policy.headers})
    )
    cookies = "&".join(f"{_q(n)}={_q(v)}" for n, v in sorted(allowlisted(request_cookies(request), policy.cookies)))
    path = quote(request.uri, safe="/", errors="surrogateescape")
    return f"{_q(behavior_id)}|{method}|{_q(host.lower())}|{path}|q:{query}|h:{headers}|c:{cookies}"


def _q(text: str) -> str:
    # percent-encode everything outside the unreserved set, so '|', '&', '=' and ':' only ever delimit
    return quote(text, safe="", errors="surrogateescape")


def allowlisted(pairs: list[tuple[str, str]], allow: tuple[str, ...]) -> list[tuple[str, str]]:
    if "*" in allow:
        return list(pairs)
    names = set(allow)
    return [(n, v) for n, v in pairs if n in names]


def request_cookies(request: EdgeRequest) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for _, value in request.headers.get("cookie", []):
        for part in value.split(";"):
            name, sep, val = part.strip().partition("=")
            if sep and name.strip():
                out.append((name.strip(), val.strip()))
    return out


def _vary_value(request: EdgeRequest, name: str) -> str | None:
    entries = request.headers.get(name)
    if not entries:
        return None
    return ",".join(" ".join(v.split()) for _, v in entries)  # whitespace-insensitive, order kept


# --- TTL ----------------------------------------------------------------------------------------------


def ttl_for(policy: CachePolicy, response: EdgeResponse, *, now: float | None = None) -> float | None:
    """Seconds `response` may be served from cache under `policy`; None = do not store.

    `now` (Unix time) anchors an Expires header when the response has no Date; default time.time().
    """
    status = response.status
    cc = _cache_control(response.headers)
    explicit = _explicit_lifetime(cc)
    forbidden = "no-store" in cc or cc.get("private", "") is None
    no_cache = cc.get("no-cache", "") is None  # the qualified form no-cache="field" only strips fields
    if status in ERROR_STATUSES or status in ERROR_STATUSES_IF_MAX_AGE:
        if forbidden or no_cache or policy.max_ttl <= 0:
            return None
        if explicit is None and status in ERROR_STATUSES_IF_MAX_AGE:
            return None
        lifetime = explicit if explicit is not None else _expires_lifetime(response.headers, now)
        if lifetime is None:
            return ERROR_CACHING_MIN_TTL
        return max(ERROR_CACHING_MIN_TTL, min(lifetime, float(policy.max_ttl)))
    if status not in CACHEABLE_STATUSES and status not in EXPLICIT_ONLY_STATUSES:
        return None
    if forbidden or no_cache:
        if policy.min_ttl > 0:
            return _clamp(policy, float(policy.min_ttl))  # CloudFront: min TTL overrides these directives
        return None if forbidden else 0.0
    if explicit is not None:
        return _clamp(policy, explicit)
    if status in EXPLICIT_ONLY_STATUSES:
        return None
    expires = _expires_lifetime(response.headers, now)
    return _clamp(policy, expires if expires is not None else float(policy.default_ttl))


def _clamp(policy: CachePolicy, seconds: float) -> float:
    return float(max(policy.min_ttl, min(max(seconds, 0.0), policy.max_ttl)))


def _explicit_lifetime(cc: dict[str, str | None]) -> float | None:
    for name in ("s-maxage", "max-age"):  # s-maxage is for shared caches like us, so it wins
        if name in cc:
            value = (cc[name] or "").strip()
            # RFC 9111 §4.2.1: treat an unparseable lifetime as already stale
            return float(min(int(value), 2**31)) if value.isdigit() else 0.0
    return None


def _expires_lifetime(headers: Headers, now: float | None) -> float | None:
    if "expires" not in headers:
        return None
    expires = _http_date(headers["expires"][0][1])
    if expires is None:
        return 0.0  # an invalid Expires (e.g. "0") means already expired
    date = _http_date(headers["date"][0][1]) if "date" in headers else None
    base = date if date is not None else (time.time() if now is None else now)
    return max(expires - base, 0.0)


def _http_date(value: str) -> float | None:
    try:
        parsed = parsedate_to_datetime(value.strip())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if parsed.tzinfo is None:  # asctime and RFC 850 forms carry no zone; HTTP dates are GMT
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.timestamp()


def _cache_control(headers: Headers) -> dict[str, str | None]:
    """Directive (lowercase) -> value (unquoted) or None; the first occurrence of a directive wins."""
    out: dict[str, str | None] = {}
    for _, value in headers.get("cache-control", []):
        for item in _split_commas(value):
            name, sep, raw = item.partition("=")
            name = name.strip().lower()
            if not name or name in out:
                continue
            raw = raw.strip()
            if raw.startswith('"') and raw.endswith('"') and len(raw) >= 2:
                raw = raw[1:-1].replace('\\"', '"').replace("\\\\", "\\")
            out[name] = raw if sep else None
    return out


def _split_commas(value: str) -> list[str]:
    items: list[str] = []
    current: list[str] = []
    quoted, escaped = False, False
    for ch in value:
        if escaped:
            escaped = False
        elif ch == "\\" and quoted:
            escaped = True
        elif ch == '"':
            quoted = not quoted
        elif ch == "," and not quoted:
            items.append("".join(current))
            current = []
            continue
        current.append(ch)
    items.append("".join(current))
    return [item.strip() for item in items if item.strip()]


def _field_list(value: str | None) -> set[str]:
    return {name.strip().lower() for name in (value or "").split(",") if name.strip()}


# --- revalidation helpers -----------------------------------------------------------------------------


def conditional_headers(response: EdgeResponse) -> Headers:
    """If-None-Match / If-Modified-Since built from a stored response's ETag / Last-Modified."""
    out: Headers = {}
    if "etag" in response.headers:
        out["if-none-match"] = [("If-None-Match", ", ".join(v for _, v in response.headers["etag"]))]
    if "last-modified" in response.headers:
        out["if-modified-since"] = [("If-Modified-Since", response.headers["last-modified"][0][1])]
    return out


def _copy_response(response: EdgeResponse) -> EdgeResponse:
    body = None if response.body is None else Body(response.body.data, response.body.input_truncated)
    return EdgeResponse(response.status, response.status_description, {n: list(e) for n, e in response.headers.items()}, body)


def _age_header(headers: Headers) -> float:
    value = headers.get("age", [("", "")])[0][1].strip()
    return float(value) if value.isdigit() else 0.0


def _size(key: str, response: EdgeResponse) -> int:
    body = len(response.body.data) if response.body is not None else 0
    head = sum(len(name) + len(k) + len(v) for name, entries in response.headers.items() for k, v in entries)
    return body + head + len(key) + ENTRY_OVERHEAD


# --- the cache ----------------------------------------------------------------------------------------


class _Outcome(Enum):
    PENDING = "pending"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


@dataclass
class _Flight:
    """One origin fetch in progress for a (key, HEAD?) pair; waiters read its result once `done` is set."""

    done: asyncio.Event = field(default_factory=asyncio.Event)
    outcome: _Outcome = _Outcome.PENDING
    entry: CacheEntry | None = None  # a storable result (even if it did not fit the budget)
    kind: XCache = XCache.MISS
    error: EdgeResponse | None = None  # a 5xx to share with the waiters


class EdgeCache:
    """In-memory response cache of one edge node: LRU under a byte budget, Vary-aware, with coalescing."""

    def __init__(
        self, max_bytes: int, clock: Callable[[], float] = time.monotonic, *, wall_clock: Callable[[], float] = time.time
    ) -> None:
        self.max_bytes = max_bytes
        self._clock = clock  # ages and expiry
        self._wall_clock = wall_clock  # only to anchor Expires headers that come without a Date
        self._lru: OrderedDict[int, CacheEntry] = OrderedDict()  # oldest first
        self._by_key: dict[str, list[CacheEntry]] = {}
        self._flights: dict[tuple[str, bool], _Flight] = {}
        self._ids = itertools.count(1)
        self._stats = CacheStats()

    # -- inspection --

    @property
    def stats(self) -> CacheStats:
        return replace(self._stats, entries=len(self._lru))

    def __len__(self) -> int:
        return len(self._lru)

    def __contains__(self, entry: object) -> bool:
        return isinstance(entry, CacheEntry) and self._lru.get(entry.id) is entry

    def age_seconds(self, entry: CacheEntry) -> int:
        """The Age header value: whole seconds since stored (or refreshed), plus the Age the origin sent."""
        return max(0, math.floor(self._clock() - entry.stored_at + entry.origin_age))

    def is_fresh(self, entry: CacheEntry) -> bool:
        return self._clock() - entry.stored_at + entry.origin_age < entry.ttl

    # -- the low-level operations --

    def lookup(self, key: str, request: EdgeRequest) -> Lookup:
        """FRESH (serve it), STALE (revalidate with .conditional) or MISS. Does not count hits or misses."""
        if not is_cacheable_method(request.method):
            return Lookup(Freshness.MISS)
        fresh: CacheEntry | None = None
        stale: CacheEntry | None = None
        for entry in list(self._by_key.get(key, ())):
            if not entry.matches(request):
                continue
            if self.is_fresh(entry):
                if fresh is None or (fresh.head_only and not entry.head_only):  # a HEAD prefers a full entry
                    fresh = entry
            elif entry.has_validators:
                stale = stale or entry
            else:
                self._remove(entry)  # expired and cannot be revalidated: dead weight
        if fresh is not None:
            self._lru.move_to_end(fresh.id)
            return Lookup(Freshness.FRESH, fresh)
        if stale is not None:
            self._lru.move_to_end(stale.id)
            return Lookup(Freshness.STALE, stale, conditional_headers(stale.response))
        return Lookup(Freshness.MISS)

    def store(self, key: str, request: EdgeRequest, response: EdgeResponse, policy: CachePolicy) -> CacheEntry | None:
        """Keep a copy of `response` (the answer to `request`) if it may be cached and fits; returns the entry."""
        entry = self._build_entry(key, request, response, policy)
        if entry is None:
            return None
        return entry if self._insert(entry, superseding=request) else None

    def refresh(self, entry: CacheEntry, not_modified: EdgeResponse, policy: CachePolicy) -> CacheEntry:
        """Apply a 304 to a stale entry: merge its headers, new TTL from them, age restarts. Returns the new entry.

        If the merged headers now forbid caching, the entry leaves the cache but the returned entry can
        still answer the request that revalidated it.
        """
        headers = {n: list(e) for n, e in entry.response.headers.items()}
        for name, entries in not_modified.headers.items():
            if name not in _NOT_UPDATED_BY_304:
                headers[name] = list(entries)
        merged = replace(entry.response, headers=headers)
        # a 304 without Date leaves the old Date, which must not anchor Expires: use now instead
        basis = merged if "date" in not_modified.headers else replace(merged, headers={n: e for n, e in headers.items() if n != "date"})
        ttl = ttl_for(policy, basis, now=self._wall_clock())
        cc = _cache_control(headers)
        for name in _field_list(cc.get("no-cache")) | _field_list(cc.get("private")):
            headers.pop(name, None)
        fresh = replace(
            entry, response=merged, stored_at=self._clock(), ttl=ttl or 0.0, origin_age=_age_header(not_modified.headers),
            size=_size(entry.key, merged), id=next(self._ids),
        )
        self._remove(entry)
        if ttl is not None and (ttl > 0 or fresh.has_validators):
            self._insert(fresh, superseding=None)
        return fresh

    def serve(self, entry: CacheEntry) -> EdgeResponse:
        """A copy of the entry's response with Age set (for a HEAD too: the server drops the body itself)."""
        response = _copy_response(entry.response)
        response.headers["age"] = [("Age", str(self.age_seconds(entry)))]
        return response

    def purge(self, kind: str, value: str = "") -> int:
        """Drop what a purge names: `path` (that path, any query string; a trailing `*` makes it a prefix, as in
        CloudFront's invalidation paths), `prefix`, `tag` (a surrogate key) or `all`; how many were dropped."""
        if kind == "path" and value.endswith("*"):
            kind, value = "prefix", value[:-1]
        matches: Callable[[CacheEntry], bool] = {
            "path": lambda e: e.path == value, "prefix": lambda e: e.path.startswith(value), "tag": lambda e: value in e.tags,
            "all": lambda e: True,
        }[kind]
        return self._drop_where(matches)

    def drop_made_by(self, functions: set[str]) -> int:
        """Drop every entry one of `functions` made or shaped; how many were dropped."""
        return self._drop_where(lambda entry: bool(entry.made_by & functions))

    def _drop_where(self, matches: Callable[[CacheEntry], bool]) -> int:
        gone = [entry for entry in self._lru.values() if matches(entry)]
        for entry in gone:
            self._remove(entry)
        return len(gone)

    def clear(self) -> None:
        """Drop every entry (e.g. when the app is reloaded); fetches in flight are unaffected."""
        self._lru.clear()
        self._by_key.clear()
        self._stats.bytes = 0

    # -- the pipeline's entry point --

    async def get_or_fetch(self, key: str, request: EdgeRequest, policy: CachePolicy, fetch: Fetch) -> CacheResult:
        """Answer `request` from the cache, or call `fetch(conditional_headers)` — once per key across
        concurrent callers — and cache what it returns. `fetch` gets If-None-Match / If-Modified-Since to
        add to the origin request when revalidating a stale entry, and {} otherwise.
        """
        if not is_cacheable_method(request.method):
            self._stats.misses += 1
            return CacheResult(await fetch({}), XCache.MISS)
        flight_key = (key, request.method == "HEAD")  # a HEAD leader's body-less answer cannot serve a GET
        for _ in range(MAX_COALESCE_ROUNDS):
            found = self.lookup(key, request)
            if found.state is Freshness.FRESH:
                assert found.entry is not None
                self._stats.hits += 1
                return CacheResult(self.serve(found.entry), XCache.HIT, found.entry)
            flight = self._flights.get(flight_key)
            if flight is None:
                return await self._lead(flight_key, key, request, policy, fetch, found)
            await flight.done.wait()  # a waiter's own cancellation just propagates; it holds nothing
            shared = self._share(flight, request)
            if shared is not None:
                return shared
            if flight.outcome is _Outcome.CANCELLED or (flight.entry is not None and flight.entry.ttl > 0):
                continue  # the leader vanished, or stored a variant that is not ours: coalesce again
            # the leader failed, or its answer was not storable or had TTL 0 (queueing behind it would
            # serialize every waiter): fetch for ourselves, in parallel with the other waiters
            break
        found = self.lookup(key, request)
        if found.state is Freshness.FRESH:
            assert found.entry is not None
            self._stats.hits += 1
            return CacheResult(self.serve(found.entry), XCache.HIT, found.entry)
        return await self._fetch(key, request, policy, fetch, found, None)

    async def _lead(
        self, flight_key: tuple[str, bool], key: str, request: EdgeRequest, policy: CachePolicy, fetch: Fetch, found: Lookup
    ) -> CacheResult:
        flight = _Flight()
        self._flights[flight_key] = flight
        try:
            result = await self._fetch(key, request, policy, fetch, found, flight)
            flight.outcome = _Outcome.DONE
            return result
        except asyncio.CancelledError:
            flight.outcome = _Outcome.CANCELLED
            raise
        except BaseException:
            flight.outcome = _Outcome.FAILED
            raise
        finally:
            if self._flights.get(flight_key) is flight:
                del self._flights[flight_key]
            flight.done.set()  # always, so no waiter can be left behind

    async def _fetch(
        self, key: str, request: EdgeRequest, policy: CachePolicy, fetch: Fetch, found: Lookup, flight: _Flight | None
    ) -> CacheResult:
        stale = found.entry if found.state is Freshness.STALE else None
        response = await fetch(found.conditional if stale is not None else {})
        if stale is not None and response.status == 304:
            refreshed = self.refresh(stale, response, policy)
            self._stats.refresh_hits += 1
            if flight is not None:
                flight.entry, flight.kind = refreshed, XCache.REFRESH_HIT
            return CacheResult(self.serve(refreshed), XCache.REFRESH_HIT, refreshed if refreshed in self else None)
        if stale is not None:
            self._remove(stale)  # the origin sent a new representation; the old one is superseded
        self._stats.misses += 1
        entry = self._build_entry(key, request, response, policy)
        stored = entry is not None and self._insert(entry, superseding=request)
        if flight is not None:
            flight.entry = entry
            if entry is None and response.status >= 500 and "set-cookie" not in response.headers:
                flight.error = _copy_response(response)  # one viewer's cookie is never another's
        return CacheResult(response, XCache.MISS, entry if stored else None)

    def _share(self, flight: _Flight, request: EdgeRequest) -> CacheResult | None:
        if flight.outcome is not _Outcome.DONE:
            return None
        if flight.entry is not None and flight.entry.ttl > 0 and flight.entry.matches(request):
            kind = XCache.REFRESH_HIT if flight.kind is XCache.REFRESH_HIT else XCache.HIT
        elif flight.error is not None:
            self._stats.misses += 1
            self._stats.coalesced += 1
            return CacheResult(_copy_response(flight.error), XCache.MISS)
        else:
            return None
        if kind is XCache.HIT:
            self._stats.hits += 1
        else:
            self._stats.refresh_hits += 1
        self._stats.coalesced += 1
        entry = flight.entry
        return CacheResult(self.serve(entry), kind, entry if entry in self else None)

    # -- bookkeeping --

    def _build_entry(self, key: str, request: EdgeRequest, response: EdgeResponse, policy: CachePolicy) -> CacheEntry | None:
        """The entry `response` would become, or None if HTTP or our rules keep it out of a shared cache."""
        if not is_cacheable_method(request.method):
            return None
        cc = _cache_control(response.headers)
        vary = _field_list(", ".join(v for _, v in response.headers.get("vary", [])))
        if "*" in vary:
            return None
        if "authorization" in request.headers and "authorization" not in {h.lower() for h in policy.headers}:
            if not ({"public", "s-maxage", "must-revalidate"} & cc.keys()):
                return None  # RFC 9111 §3.5: the answer may be specific to these credentials
        ttl = ttl_for(policy, response, now=self._wall_clock())
        if ttl is None:
            return None
        stored = _copy_response(response)
        for name in _field_list(cc.get("no-cache")) | _field_list(cc.get("private")):
            stored.headers.pop(name, None)  # qualified no-cache/private: these fields must not be reused
        if "set-cookie" in stored.headers:
            return None
        head_only = request.method == "HEAD"
        if head_only:
            stored.body = None
        tags = surrogate_keys(stored.headers)
        for name in SURROGATE_KEY_HEADERS:
            stored.headers.pop(name, None)  # the edge's to act on, not the viewer's to see
        entry = CacheEntry(
            key=key, response=stored, vary=tuple((name, _vary_value(request, name)) for name in sorted(vary)),
            stored_at=self._clock(), ttl=ttl, origin_age=_age_header(response.headers), head_only=head_only,
            size=_size(key, stored), id=next(self._ids), path=request.uri, tags=tags,
        )
        if ttl <= 0 and not entry.has_validators:
            return None  # TTL 0 and nothing to revalidate with: it could never be used
        return entry

    def _insert(self, entry: CacheEntry, superseding: EdgeRequest | None) -> bool:
        if entry.size > self.max_bytes:
            return False  # larger than the whole budget: storing it would only flush everything else
        variants = self._by_key.setdefault(entry.key, [])
        if superseding is not None:
            probe = replace(superseding, method="HEAD")  # HEAD matches head-only and full entries alike
            for old in [v for v in variants if v.matches(probe)]:
                self._remove(old)
            variants = self._by_key.setdefault(entry.key, [])
        variants.append(entry)
        self._lru[entry.id] = entry
        self._stats.bytes += entry.size
        self._stats.stores += 1
        if len(variants) > MAX_VARIANTS:
            self._remove(variants[0])  # the key's oldest-stored variant
            self._stats.evictions += 1
        while self._stats.bytes > self.max_bytes and self._lru:
            _, victim = next(iter(self._lru.items()))
            self._remove(victim)
            self._stats.evictions += 1
        return True

    def _remove(self, entry: CacheEntry) -> None:
        if self._lru.pop(entry.id, None) is None:
            return
        self._stats.bytes -= entry.size
        variants = self._by_key.get(entry.key, [])
        if entry in variants:
            variants.remove(entry)
        if not variants:
            self._by_key.pop(entry.key, None)
