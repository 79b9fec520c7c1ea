"""The shared edge cache: keys, CloudFront TTL rules, Vary, LRU by bytes, Age, coalescing, revalidation."""

from __future__ import annotations

import asyncio
from typing import Awaitable, Callable

from edgefn.core.app import CachePolicy
from edgefn.core.events import (
    Body,
    EdgeRequest,
    EdgeResponse,
    Headers,
    XCache,
    title_case,
)
from edgefn.edge.cache import (
    ENTRY_OVERHEAD,
    ERROR_CACHING_MIN_TTL,
    CacheEntry,
    EdgeCache,
    Freshness,
    cache_key,
    conditional_headers,
    ttl_for,
)

POLICY = CachePolicy()
DATE = "Tue, 15 Nov 1994 08:12:31 GMT"
DATE_EPOCH = 784887151.0


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def headers(*pairs: tuple[str, str]) -> Headers:
    out: Headers = {}
    for key, value in pairs:
        out.setdefault(key.lower(), []).append((title_case(key.lower()), value))
    return out


def req(method: str = "GET", uri: str = "/a", qs: str = "", *pairs: tuple[str, str]) -> EdgeRequest:
    return EdgeRequest(method=method, uri=uri, querystring=qs, headers=headers(*pairs))


def resp(status: int = 200, body: bytes = b"hello", *pairs: tuple[str, str]) -> EdgeResponse:
    return EdgeResponse(status, "", headers(*pairs), Body(body))


def key_of(request: EdgeRequest, policy: CachePolicy = POLICY, host: str = "example.com") -> str:
    return cache_key(policy, "b0", host, request)


def new_cache(max_bytes: int = 1 << 20) -> tuple[EdgeCache, FakeClock]:
    clock = FakeClock()
    return EdgeCache(max_bytes, clock, wall_clock=lambda: DATE_EPOCH), clock


def run(coro: Awaitable[object], timeout: float = 2.0) -> object:
    async def bounded() -> object:
        async with asyncio.timeout(timeout):  # a coalescing bug fails fast instead of hanging the suite
            return await coro

    return asyncio.run(bounded())


# --- cache key ----------------------------------------------------------------------------------------


def test_get_and_head_share_a_key_other_methods_do_not() -> None:
    assert key_of(req("GET")) == key_of(req("HEAD"))
    assert key_of(req("POST")) != key_of(req("GET"))


def test_host_is_case_insensitive_and_path_and_behavior_matter() -> None:
    assert key_of(req(), host="Example.COM") == key_of(req(), host="example.com")
    assert key_of(req(), host="other.com") != key_of(req())
    assert key_of(req(uri="/b")) != key_of(req(uri="/a"))
    assert key_of(req(uri="/A")) != key_of(req(uri="/a"))  # paths are case-sensitive, as in CloudFront
    assert cache_key(POLICY, "b1", "h", req()) != cache_key(POLICY, "b2", "h", req())


def test_query_strings_only_allowlisted_sorted_and_canonical() -> None:
    none = CachePolicy()
    assert key_of(req(qs="a=1"), none) == key_of(req(qs="a=2&utm=x"), none)

    some = CachePolicy(query_strings=("a", "b"))
    assert key_of(req(qs="a=1&b=2&utm=x"), some) == key_of(req(qs="utm=y&b=2&a=1"), some)
    assert key_of(req(qs="a=1"), some) != key_of(req(qs="a=2"), some)
    assert key_of(req(qs="a=%41"), some) == key_of(req(qs="a=A"), some)  # one canonical encoding
    assert key_of(req(qs="a=x+y"), some) == key_of(req(qs="a=x%20y"), some)
    assert key_of(req(qs="a=x%2By"), some) != key_of(req(qs="a=x+y"), some)
    assert key_of(req(qs="A=1"), some) == key_of(req(qs=""), some)  # names are case-sensitive
    assert key_of(req(qs="a=1&a=2"), some) == key_of(req(qs="a=2&a=1"), some)
    assert key_of(req(qs="a=1&a=2"), some) != key_of(req(qs="a=1"), some)

    every = CachePolicy(query_strings=("*",))
    assert key_of(req(qs="utm=x"), every) != key_of(req(qs="utm=y"), every)
    assert key_of(req(qs="z=1&y=2"), every) == key_of(req(qs="y=2&z=1"), every)


def test_headers_only_allowlisted() -> None:
    policy = CachePolicy(headers=("accept-language",))
    en = req("GET", "/a", "", ("Accept-Language", "en"), ("User-Agent", "x"))
    en_other_ua = req("GET", "/a", "", ("Accept-Language", "en"), ("User-Agent", "y"))
    fr = req("GET", "/a", "", ("Accept-Language", "fr"))
    assert key_of(en, policy) == key_of(en_other_ua, policy)
    assert key_of(en, policy) != key_of(fr, policy)
    assert key_of(req(), policy) != key_of(req("GET", "/a", "", ("Accept-Language", "")), policy)  # absent ≠ empty
    both = req("GET", "/a", "", ("Accept-Language", "en"), ("Accept-Language", "fr"))
    assert key_of(both, policy) != key_of(en, policy)  # repeated values are joined, not dropped


def test_cookies_only_allowlisted() -> None:
    policy = CachePolicy(cookies=("country",))
    uk = req("GET", "/a", "", ("Cookie", "session=1; country=uk"))
    uk2 = req("GET", "/a", "", ("Cookie", "country=uk"), ("Cookie", "session=2"))
    fr = req("GET", "/a", "", ("Cookie", "session=1; country=fr"))
    assert key_of(uk, policy) == key_of(uk2, policy)
    assert key_of(uk, policy) != key_of(fr, policy)
    assert key_of(req(), policy) == key_of(req("GET", "/a", "", ("Cookie", "session=9")), policy)
    assert key_of(uk, CachePolicy()) == key_of(fr, CachePolicy())


def test_key_delimiters_cannot_be_forged() -> None:
    policy = CachePolicy(query_strings=("a",), headers=("x-h",))
    forged = req("GET", "/a", "a=1|h:x-h=2")
    honest = req("GET", "/a", "a=1", ("X-H", "2"))
    assert key_of(forged, policy) != key_of(honest, policy)


# --- TTL ----------------------------------------------------------------------------------------------


def ttl(*pairs: tuple[str, str], status: int = 200, policy: CachePolicy = POLICY) -> float | None:
    return ttl_for(policy, resp(status, b"", *pairs), now=DATE_EPOCH)


def test_ttl_default_max_age_and_s_maxage() -> None:
    assert ttl() == 86400
    assert ttl(("Cache-Control", "max-age=60")) == 60
    assert ttl(("Cache-Control", "public, max-age=60, s-maxage=600")) == 600
    assert ttl(("Cache-Control", "s-maxage=5"), ("Cache-Control", "max-age=60")) == 5  # across header lines
    assert ttl(("Cache-Control", 'max-age="30"')) == 30
    assert ttl(("Cache-Control", "max-age=abc")) == 0  # invalid lifetime: stale (RFC 9111 §4.2.1)


def test_ttl_is_clamped_to_the_policy() -> None:
    policy = CachePolicy(min_ttl=100, default_ttl=500, max_ttl=1000)
    assert ttl(("Cache-Control", "max-age=5"), policy=policy) == 100
    assert ttl(("Cache-Control", "max-age=50000"), policy=policy) == 1000
    assert ttl(("Cache-Control", "s-maxage=50000, max-age=10"), policy=policy) == 1000
    assert ttl(policy=policy) == 500


def test_no_store_private_and_no_cache() -> None:
    assert ttl(("Cache-Control", "no-store")) is None
    assert ttl(("Cache-Control", "private, max-age=600")) is None
    assert ttl(("Cache-Control", "no-cache")) == 0
    assert ttl(("Cache-Control", "no-cache, max-age=600")) == 0  # the most restrictive directive wins
    # the qualified forms only keep the named fields out of the stored copy
    assert ttl(("Cache-Control", 'no-cache="set-cookie", max-age=60')) == 60
    assert ttl(("Cache-Control", 'private="x-user, set-cookie", max-age=60')) == 60


def test_min_ttl_above_zero_overrides_no_store_like_cloudfront() -> None:
    policy = CachePolicy(min_ttl=30)
    for directive in ("no-store", "private", "no-cache"):
        assert ttl(("Cache-Control", directive), policy=policy) == 30


def test_expires_relative_to_date_or_now() -> None:
    assert ttl(("Date", DATE), ("Expires", "Tue, 15 Nov 1994 09:12:31 GMT")) == 3600
    assert ttl(("Expires", "Tue, 15 Nov 1994 08:13:31 GMT")) == 60  # no Date: relative to now
    assert ttl(("Date", DATE), ("Expires", "0")) == 0  # invalid Expires: already expired
    assert ttl(("Date", DATE), ("Expires", "Mon, 14 Nov 1994 08:12:31 GMT")) == 0
    assert ttl(("Date", DATE), ("Expires", "Tue, 15 Nov 1994 09:12:31 GMT"), policy=CachePolicy(max_ttl=100)) == 100
    assert ttl(("Date", DATE), ("Expires", "Tue, 15 Nov 1994 09:12:31 GMT"), ("Cache-Control", "max-age=5")) == 5


def test_cacheable_statuses() -> None:
    for status in (200, 203, 204, 300, 301, 302):
        assert ttl(status=status) == 86400, status
    for status in (206, 304, 500, 502, 503, 504, 401, 416):
        assert ttl(("Cache-Control", "max-age=60"), status=status) is None, status
    assert ttl(status=307) is None  # 307/308 only with an explicit lifetime
    assert ttl(("Cache-Control", "max-age=60"), status=308) == 60


def test_error_statuses_use_error_caching_min_ttl() -> None:
    assert ttl(status=404) == ERROR_CACHING_MIN_TTL
    assert ttl(("Cache-Control", "max-age=300"), status=404) == 300
    assert ttl(("Cache-Control", "max-age=1"), status=410) == ERROR_CACHING_MIN_TTL
    assert ttl(("Cache-Control", "max-age=300"), status=501, policy=CachePolicy(max_ttl=60)) == 60
    assert ttl(("Cache-Control", "no-store"), status=404) is None
    assert ttl(("Cache-Control", "no-cache"), status=414) is None
    assert ttl(status=403) is None  # 400/403/412/415 need max-age or s-maxage
    assert ttl(("Cache-Control", "s-maxage=120"), status=403) == 120
    assert ttl(status=404, policy=CachePolicy(min_ttl=0, default_ttl=0, max_ttl=0)) is None  # caching disabled


# --- store, lookup, Vary, Age -------------------------------------------------------------------------


def test_store_then_hit_with_age_and_stale_after_ttl() -> None:
    cache, clock = new_cache()
    request = req()
    key = key_of(request)
    assert cache.lookup(key, request).state is Freshness.MISS
    entry = cache.store(key, request, resp(200, b"body", ("Cache-Control", "max-age=60"), ("Age", "5")), POLICY)
    assert entry is not None
    clock.advance(10.7)
    found = cache.lookup(key, req("HEAD"))
    assert found.state is Freshness.FRESH and found.entry is entry
    assert cache.age_seconds(entry) == 15  # 10 s here + 5 s upstream
    served = cache.serve(entry)
    assert served.headers["age"] == [("Age", "15")] and served.body is not None and served.body.data == b"body"
    served.headers["x-mutated"] = [("X-Mutated", "1")]
    assert "x-mutated" not in entry.response.headers  # what we hand out is a copy
    clock.advance(44.3)  # 55 s since stored + 5 s upstream = 60 s old: no longer fresh
    assert cache.lookup(key, request).state is Freshness.MISS  # stale, no validators: a miss
    assert len(cache) == 0


def test_non_get_and_uncacheable_responses_are_not_stored() -> None:
    cache, _ = new_cache()
    assert cache.store(key_of(req("POST")), req("POST"), resp(), POLICY) is None
    request = req()
    assert cache.store(key_of(request), request, resp(200, b"", ("Cache-Control", "no-store")), POLICY) is None
    assert cache.store(key_of(request), request, resp(500), POLICY) is None
    assert cache.store(key_of(request), request, resp(200, b"", ("Cache-Control", "no-cache")), POLICY) is None  # TTL 0, no validators
    assert len(cache) == 0 and cache.stats.stores == 0


def test_set_cookie_responses_are_not_stored_unless_the_field_is_excluded() -> None:
    cache, _ = new_cache()
    request = req()
    key = key_of(request)
    assert cache.store(key, request, resp(200, b"x", ("Set-Cookie", "sid=1")), POLICY) is None
    entry = cache.store(key, request, resp(200, b"x", ("Set-Cookie", "sid=1"), ("Cache-Control", 'no-cache="Set-Cookie", max-age=60')), POLICY)
    assert entry is not None and "set-cookie" not in entry.response.headers


def test_authorization_requests_need_an_explicit_shared_cache_permission() -> None:
    cache, _ = new_cache()
    request = req("GET", "/a", "", ("Authorization", "Bearer t"))
    key = key_of(request)
    assert cache.store(key, request, resp(200, b"x", ("Cache-Control", "max-age=60")), POLICY) is None
    assert cache.store(key, request, resp(200, b"x", ("Cache-Control", "public, max-age=60")), POLICY) is not None
    keyed = CachePolicy(headers=("authorization",))  # the credential is in the key: safe to store
    assert cache.store(key_of(request, keyed), request, resp(), keyed) is not None


def test_head_entries_answer_head_only_and_get_entries_answer_both() -> None:
    cache, _ = new_cache()
    key = key_of(req())
    assert cache.store(key, req("HEAD"), resp(200, b""), POLICY) is not None
    assert cache.lookup(key, req("GET")).state is Freshness.MISS
    assert cache.lookup(key, req("HEAD")).state is Freshness.FRESH
    entry = cache.store(key, req("GET"), resp(200, b"full"), POLICY)
    assert len(cache) == 1  # the GET answer superseded the HEAD one
    assert cache.lookup(key, req("HEAD")).entry is entry
    assert cache.lookup(key, req("GET")).entry is entry


def test_vary_keeps_one_variant_per_request_value() -> None:
    cache, _ = new_cache()
    gzip = req("GET", "/a", "", ("Accept-Encoding", "gzip"))
    br = req("GET", "/a", "", ("Accept-Encoding", "br"))
    bare = req()
    key = key_of(gzip)
    assert key == key_of(br) == key_of(bare)
    g = cache.store(key, gzip, resp(200, b"G", ("Vary", "Accept-Encoding")), POLICY)
    assert cache.lookup(key, gzip).entry is g
    assert cache.lookup(key, br).state is Freshness.MISS
    assert cache.lookup(key, bare).state is Freshness.MISS
    b = cache.store(key, br, resp(200, b"B", ("Vary", "accept-encoding, Accept-Encoding")), POLICY)
    n = cache.store(key, bare, resp(200, b"N", ("Vary", "Accept-Encoding")), POLICY)
    assert len(cache) == 3
    assert cache.lookup(key, gzip).entry is g and cache.lookup(key, br).entry is b and cache.lookup(key, bare).entry is n
    spaced = req("GET", "/a", "", ("Accept-Encoding", "  gzip "))
    assert cache.lookup(key, spaced).entry is g  # whitespace does not make a new variant
    g2 = cache.store(key, gzip, resp(200, b"G2", ("Vary", "Accept-Encoding")), POLICY)
    assert len(cache) == 3 and cache.lookup(key, gzip).entry is g2  # same variant: replaced


def test_vary_star_is_not_stored() -> None:
    cache, _ = new_cache()
    request = req()
    assert cache.store(key_of(request), request, resp(200, b"x", ("Vary", "Accept-Encoding, *")), POLICY) is None


# --- LRU by bytes -------------------------------------------------------------------------------------


def test_lru_evicts_least_recently_used_by_bytes() -> None:
    body = b"x" * 1000
    probe_key = key_of(req(uri="/0"))
    one = len(body) + ENTRY_OVERHEAD + len(probe_key) + 2 * len("content-length") + 4  # headers below
    cache, _ = new_cache(max_bytes=3 * one)
    entries = {}
    for name in ("/0", "/1", "/2"):
        request = req(uri=name)
        entries[name] = cache.store(key_of(request), request, resp(200, body, ("Content-Length", "1000")), POLICY)
        assert entries[name] is not None and entries[name].size == one
    assert cache.stats.bytes == 3 * one and cache.stats.evictions == 0
    assert cache.lookup(key_of(req(uri="/0")), req(uri="/0")).state is Freshness.FRESH  # /0 is now most recent
    request = req(uri="/3")
    cache.store(key_of(request), request, resp(200, body, ("Content-Length", "1000")), POLICY)
    assert cache.stats.evictions == 1 and cache.stats.bytes == 3 * one
    assert entries["/1"] not in cache  # the least recently used
    assert entries["/0"] in cache and entries["/2"] in cache


def test_entry_larger_than_the_budget_is_not_stored() -> None:
    cache, _ = new_cache(max_bytes=2000)
    small = req(uri="/small")
    assert cache.store(key_of(small), small, resp(200, b"s"), POLICY) is not None
    big = req(uri="/big")
    assert cache.store(key_of(big), big, resp(200, b"x" * 5000), POLICY) is None
    assert len(cache) == 1 and cache.stats.evictions == 0  # the oversized entry flushed nothing


def test_zero_budget_stores_nothing() -> None:
    cache, _ = new_cache(max_bytes=0)
    assert cache.store(key_of(req()), req(), resp(), POLICY) is None


# --- revalidation ---------------------------------------------------------------------------------------


def test_stale_entry_with_validators_gives_conditional_headers() -> None:
    cache, clock = new_cache()
    request = req()
    key = key_of(request)
    cache.store(key, request, resp(200, b"x", ("Cache-Control", "max-age=10"), ("ETag", '"v1"'), ("Last-Modified", DATE)), POLICY)
    clock.advance(11)
    found = cache.lookup(key, request)
    assert found.state is Freshness.STALE
    assert found.conditional == {
        "if-none-match": [("If-None-Match", '"v1"')],
        "if-modified-since": [("If-Modified-Since", DATE)],
    }
    assert conditional_headers(resp(200, b"", ("ETag", 'W/"a"'))) == {"if-none-match": [("If-None-Match", 'W/"a"')]}
    assert conditional_headers(resp()) == {}


def test_refresh_from_304_merges_headers_and_restarts_ttl() -> None:
    cache, clock = new_cache()
    request = req()
    key = key_of(request)
    old = cache.store(
        key, request,
        resp(200, b"body", ("Cache-Control", "max-age=10"), ("ETag", '"v1"'), ("Content-Length", "4"), ("X-Old", "1")),
        POLICY,
    )
    assert old is not None
    clock.advance(30)
    not_modified = resp(304, b"", ("Cache-Control", "max-age=100"), ("X-Old", "2"), ("Content-Length", "0"), ("Set-Cookie", "a=b"))
    new = cache.refresh(old, not_modified, POLICY)
    assert new.ttl == 100 and cache.age_seconds(new) == 0
    assert new in cache and old not in cache and len(cache) == 1
    assert new.response.headers["x-old"] == [("X-Old", "2")]
    assert new.response.headers["content-length"] == [("Content-Length", "4")]  # RFC 9111 §3.2
    assert "set-cookie" not in new.response.headers
    assert new.response.body is not None and new.response.body.data == b"body"
    clock.advance(99)
    assert cache.lookup(key, request).state is Freshness.FRESH


def test_refresh_keeps_the_stored_lifetime_when_the_304_has_none() -> None:
    cache, clock = new_cache()
    request = req()
    old = cache.store(key_of(request), request, resp(200, b"x", ("Cache-Control", "max-age=10"), ("ETag", '"v"')), POLICY)
    assert old is not None
    clock.advance(20)
    assert cache.refresh(old, resp(304, b""), POLICY).ttl == 10


def test_refresh_with_no_store_drops_the_entry() -> None:
    cache, clock = new_cache()
    request = req()
    old = cache.store(key_of(request), request, resp(200, b"x", ("Cache-Control", "max-age=10"), ("ETag", '"v"')), POLICY)
    assert old is not None
    clock.advance(20)
    new = cache.refresh(old, resp(304, b"", ("Cache-Control", "no-store")), POLICY)
    assert len(cache) == 0 and new.response.body is not None and new.response.body.data == b"x"


# --- get_or_fetch: hits, misses, revalidation -----------------------------------------------------------


class Origin:
    """A scripted origin: counts calls, records the conditional headers, can hold responses at a gate."""

    def __init__(self, make: Callable[[int], EdgeResponse] | None = None) -> None:
        self.calls = 0
        self.conditionals: list[Headers] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.make = make or (lambda n: resp(200, f"v{n}".encode(), ("Cache-Control", "max-age=60")))

    async def fetch(self, conditional: Headers) -> EdgeResponse:
        self.calls += 1
        n = self.calls
        self.conditionals.append(conditional)
        await self.gate.wait()
        return self.make(n)


def test_get_or_fetch_miss_then_hit() -> None:
    cache, clock = new_cache()
    request = req()
    key = key_of(request)

    async def scenario() -> None:
        origin = Origin()
        first = await cache.get_or_fetch(key, request, POLICY, origin.fetch)
        assert first.x_cache is XCache.MISS and first.entry is not None and origin.conditionals == [{}]
        clock.advance(3)
        second = await cache.get_or_fetch(key, req("HEAD"), POLICY, origin.fetch)
        assert second.x_cache is XCache.HIT and second.response.headers["age"] == [("Age", "3")]
        assert second.response.body is not None and second.response.body.data == b"v1"
        assert origin.calls == 1

    run(scenario())
    assert (cache.stats.hits, cache.stats.misses, cache.stats.stores) == (1, 1, 1)


def test_get_or_fetch_revalidates_and_reports_refresh_hit() -> None:
    cache, clock = new_cache()
    request = req()
    key = key_of(request)

    def make(n: int) -> EdgeResponse:
        if n == 1:
            return resp(200, b"body", ("Cache-Control", "max-age=10"), ("ETag", '"v1"'))
        return resp(304, b"", ("Cache-Control", "max-age=60"), ("ETag", '"v1"'))

    async def scenario() -> None:
        origin = Origin(make)
        await cache.get_or_fetch(key, request, POLICY, origin.fetch)
        clock.advance(11)
        refreshed = await cache.get_or_fetch(key, request, POLICY, origin.fetch)
        assert refreshed.x_cache is XCache.REFRESH_HIT
        assert origin.conditionals[1] == {"if-none-match": [("If-None-Match", '"v1"')]}
        assert refreshed.response.status == 200 and refreshed.response.body is not None
        assert refreshed.response.body.data == b"body" and refreshed.response.headers["age"] == [("Age", "0")]
        clock.advance(30)
        assert (await cache.get_or_fetch(key, request, POLICY, origin.fetch)).x_cache is XCache.HIT
        assert origin.calls == 2

    run(scenario())
    assert cache.stats.refresh_hits == 1


def test_get_or_fetch_replaces_a_changed_representation() -> None:
    cache, clock = new_cache()
    request = req()
    key = key_of(request)

    async def scenario() -> None:
        origin = Origin(lambda n: resp(200, f"v{n}".encode(), ("Cache-Control", "max-age=10"), ("ETag", f'"v{n}"')))
        await cache.get_or_fetch(key, request, POLICY, origin.fetch)
        clock.advance(11)
        changed = await cache.get_or_fetch(key, request, POLICY, origin.fetch)
        assert changed.x_cache is XCache.MISS and changed.response.body is not None and changed.response.body.data == b"v2"
        assert len(cache) == 1
        hit = await cache.get_or_fetch(key, request, POLICY, origin.fetch)
        assert hit.x_cache is XCache.HIT and hit.response.body is not None and hit.response.body.data == b"v2"

    run(scenario())


def test_no_cache_entry_is_revalidated_on_every_use() -> None:
    cache, _ = new_cache()
    request = req()
    key = key_of(request)

    def make(n: int) -> EdgeResponse:
        if n == 1:
            return resp(200, b"body", ("Cache-Control", "no-cache"), ("ETag", '"v1"'))
        return resp(304, b"")

    async def scenario() -> None:
        origin = Origin(make)
        assert (await cache.get_or_fetch(key, request, POLICY, origin.fetch)).x_cache is XCache.MISS
        for _ in range(3):
            assert (await cache.get_or_fetch(key, request, POLICY, origin.fetch)).x_cache is XCache.REFRESH_HIT
        assert origin.calls == 4

    run(scenario())


def test_a_304_to_a_plain_miss_passes_through_uncached() -> None:
    cache, _ = new_cache()
    request = req()

    async def scenario() -> None:
        origin = Origin(lambda n: resp(304, b""))
        result = await cache.get_or_fetch(key_of(request), request, POLICY, origin.fetch)
        assert result.x_cache is XCache.MISS and result.response.status == 304 and result.entry is None

    run(scenario())
    assert len(cache) == 0


def test_other_methods_bypass_the_cache() -> None:
    cache, _ = new_cache()
    request = req("POST")

    async def scenario() -> None:
        origin = Origin()
        for _ in range(3):
            assert (await cache.get_or_fetch(key_of(request), request, POLICY, origin.fetch)).x_cache is XCache.MISS
        assert origin.calls == 3

    run(scenario())
    assert len(cache) == 0


# --- coalescing -----------------------------------------------------------------------------------------

N = 50


async def crowd(cache: EdgeCache, origin: Origin, requests: list[EdgeRequest]) -> list[object]:
    """Start every request, let them all queue up behind the gate, then open it."""
    origin.gate.clear()
    tasks = [asyncio.create_task(cache.get_or_fetch(key_of(r), r, POLICY, origin.fetch)) for r in requests]
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    origin.gate.set()
    return await asyncio.gather(*tasks, return_exceptions=True)


def test_concurrent_misses_make_one_fetch() -> None:
    cache, _ = new_cache()

    async def scenario() -> None:
        origin = Origin()
        results = await crowd(cache, origin, [req() for _ in range(N)])
        assert origin.calls == 1
        kinds = [r.x_cache for r in results]  # type: ignore[union-attr]
        assert kinds.count(XCache.MISS) == 1 and kinds.count(XCache.HIT) == N - 1
        assert all(r.response.body.data == b"v1" for r in results)  # type: ignore[union-attr]

    run(scenario())
    assert (cache.stats.misses, cache.stats.hits, cache.stats.coalesced) == (1, N - 1, N - 1)


def test_get_and_head_coalesce_separately() -> None:
    cache, _ = new_cache()

    async def scenario() -> None:
        origin = Origin()
        results = await crowd(cache, origin, [req("HEAD")] * 5 + [req("GET")] * 5)
        assert origin.calls == 2  # a body-less HEAD answer cannot serve the GETs
        assert all(not isinstance(r, BaseException) for r in results)

    run(scenario())


def test_waiters_with_another_variant_coalesce_again() -> None:
    cache, _ = new_cache()
    gzip = [req("GET", "/a", "", ("Accept-Encoding", "gzip")) for _ in range(5)]
    br = [req("GET", "/a", "", ("Accept-Encoding", "br")) for _ in range(5)]

    async def scenario() -> None:
        origin = Origin(lambda n: resp(200, f"v{n}".encode(), ("Vary", "Accept-Encoding")))
        results = await crowd(cache, origin, gzip + br)
        assert origin.calls == 2  # one per variant
        bodies = {r.response.body.data for r in results[:5]}, {r.response.body.data for r in results[5:]}  # type: ignore[union-attr]
        assert bodies == ({b"v1"}, {b"v2"})

    run(scenario())


def test_leader_failure_does_not_hang_waiters_they_fetch_themselves() -> None:
    cache, _ = new_cache()
    request = req()
    key = key_of(request)

    async def scenario() -> None:
        leader_gate, waiters_gate = asyncio.Event(), asyncio.Event()
        calls = 0

        async def fetch(conditional: Headers) -> EdgeResponse:
            nonlocal calls
            calls += 1
            if calls == 1:
                await leader_gate.wait()
                raise RuntimeError("origin-request function crashed")
            await waiters_gate.wait()
            return resp(200, b"ok", ("Cache-Control", "max-age=60"))

        tasks = [asyncio.create_task(cache.get_or_fetch(key, req(), POLICY, fetch)) for _ in range(10)]
        await asyncio.sleep(0)
        assert calls == 1
        leader_gate.set()
        for _ in range(5):
            await asyncio.sleep(0)
        assert calls == 10  # every waiter went to the origin itself, without queueing behind another
        waiters_gate.set()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert isinstance(results[0], RuntimeError)
        assert all(r.response.status == 200 and r.x_cache is XCache.MISS for r in results[1:])  # type: ignore[union-attr]

    run(scenario())


def test_cancelled_leader_hands_over_to_a_new_leader() -> None:
    cache, _ = new_cache()
    request = req()
    key = key_of(request)

    async def scenario() -> None:
        origin = Origin()
        origin.gate.clear()
        leader = asyncio.create_task(cache.get_or_fetch(key, request, POLICY, origin.fetch))
        await asyncio.sleep(0)
        waiters = [asyncio.create_task(cache.get_or_fetch(key, req(), POLICY, origin.fetch)) for _ in range(10)]
        await asyncio.sleep(0)
        assert origin.calls == 1
        leader.cancel()
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        origin.gate.set()
        results = await asyncio.gather(*waiters)
        assert leader.cancelled()
        assert origin.calls == 2  # one waiter took over; the rest shared its answer
        assert [r.x_cache for r in results].count(XCache.MISS) == 1
        assert all(r.response.body is not None and r.response.body.data == b"v2" for r in results)

    run(scenario())


def test_cancelled_waiter_does_not_disturb_the_others() -> None:
    cache, _ = new_cache()

    async def scenario() -> None:
        origin = Origin()
        origin.gate.clear()
        tasks = [asyncio.create_task(cache.get_or_fetch(key_of(req()), req(), POLICY, origin.fetch)) for _ in range(5)]
        await asyncio.sleep(0)
        tasks[3].cancel()
        origin.gate.set()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert isinstance(results[3], asyncio.CancelledError)
        assert origin.calls == 1 and all(not isinstance(r, BaseException) for i, r in enumerate(results) if i != 3)

    run(scenario())


def test_unstorable_answer_makes_each_waiter_fetch_for_itself() -> None:
    cache, _ = new_cache()

    async def scenario() -> None:
        origin = Origin(lambda n: resp(200, f"private {n}".encode(), ("Cache-Control", "private")))
        results = await crowd(cache, origin, [req() for _ in range(10)])
        assert origin.calls == 10
        assert len({r.response.body.data for r in results}) == 10  # type: ignore[union-attr]  # nobody saw another's

    run(scenario())
    assert len(cache) == 0


def test_a_5xx_is_shared_with_the_waiters_but_not_stored() -> None:
    cache, _ = new_cache()

    async def scenario() -> None:
        origin = Origin(lambda n: resp(502, b"origin unreachable"))
        results = await crowd(cache, origin, [req() for _ in range(10)])
        assert origin.calls == 1
        assert all(r.response.status == 502 and r.x_cache is XCache.MISS for r in results)  # type: ignore[union-attr]
        later = await cache.get_or_fetch(key_of(req()), req(), POLICY, origin.fetch)
        assert later.response.status == 502 and origin.calls == 2

    run(scenario())
    assert len(cache) == 0


def test_concurrent_revalidations_make_one_conditional_fetch() -> None:
    cache, clock = new_cache()
    request = req()

    def make(n: int) -> EdgeResponse:
        if n == 1:
            return resp(200, b"body", ("Cache-Control", "max-age=10"), ("ETag", '"v1"'))
        return resp(304, b"", ("Cache-Control", "max-age=60"))

    async def scenario() -> None:
        origin = Origin(make)
        await cache.get_or_fetch(key_of(request), request, POLICY, origin.fetch)
        clock.advance(20)
        results = await crowd(cache, origin, [req() for _ in range(N)])
        assert origin.calls == 2
        assert all(r.x_cache is XCache.REFRESH_HIT for r in results)  # type: ignore[union-attr]
        assert all(r.response.body.data == b"body" for r in results)  # type: ignore[union-attr]

    run(scenario())


def test_waiters_behind_a_ttl_zero_answer_do_not_queue_one_by_one() -> None:
    cache, _ = new_cache()
    request = req()
    key = key_of(request)

    async def scenario() -> None:
        first_gate, rest_gate = asyncio.Event(), asyncio.Event()
        calls = 0

        async def fetch(conditional: Headers) -> EdgeResponse:
            nonlocal calls
            calls += 1
            await (first_gate if calls == 1 else rest_gate).wait()
            return resp(200, b"body", ("Cache-Control", "no-cache"), ("ETag", '"v1"'))

        tasks = [asyncio.create_task(cache.get_or_fetch(key, req(), POLICY, fetch)) for _ in range(10)]
        await asyncio.sleep(0)
        first_gate.set()
        for _ in range(5):
            await asyncio.sleep(0)
        assert calls == 10  # no-cache may not be shared, and waiters revalidate side by side
        rest_gate.set()
        results = await asyncio.gather(*tasks)
        assert all(r.response.status == 200 for r in results)

    run(scenario())


def test_x_cache_header_values() -> None:
    assert XCache.HIT.header_value == "Hit from edgefn"
    assert XCache.REFRESH_HIT.header_value == "RefreshHit from edgefn"
    assert XCache.LAMBDA_GENERATED.header_value == "LambdaGeneratedResponse from edgefn"
    assert XCache.MISS == "Miss" and XCache.ERROR == "Error"


def test_entries_compare_by_identity() -> None:
    cache, _ = new_cache()
    a = cache.store("k", req(), resp(), POLICY)
    assert isinstance(a, CacheEntry) and a in cache
    assert cache.store("k", req(), resp(), POLICY) is not None
    assert a not in cache  # superseded by an equal-looking entry
