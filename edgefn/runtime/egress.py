"""Where a guest may send a request: one rule for the fetch host call and for origin switching.

A guest names a URL; the edge makes the request. So every URL a guest chooses passes `EgressPolicy.check`:
- its host must be on the allowlist (the function's `allowed_hosts`; for an origin switch also the
  origins the app's behaviors declare): `host`, `host:port` or `*.domain`;
- loopback, link-local, unspecified and multicast addresses are reachable only when an allowlist entry
  names that address literally (`127.0.0.1:9000`, `[::1]`, `localhost`): a DNS name that resolves to one
  is refused, so a public-looking name cannot point a guest at the node's own machine;
- the node's own listeners (edge, TLS, admin/metrics ports on a local address) are never reachable.
Redirects are never followed for guests (both clients use follow_redirects=False): a 3xx goes back to
the guest, whose next request is checked again.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import os
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

#: how `edgefn serve` tells its server processes which ports are the node's own (comma-separated)
OWN_PORTS_ENV = "EDGEFN_OWN_PORTS"

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class EgressRefused(Exception):
    """A guest-chosen URL that the policy refuses; the message says why and how to allow it."""


def own_ports_from_env() -> frozenset[int]:
    raw = os.environ.get(OWN_PORTS_ENV, "")
    return frozenset(int(p) for p in raw.split(",") if p.strip().isdigit() and int(p) > 0)


def _internal(addr: IPAddress) -> bool:
    """Addresses of this machine or its link: never reached through a name, only through a literal entry."""
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return addr.is_loopback or addr.is_link_local or addr.is_unspecified or addr.is_multicast or addr.is_reserved


def _literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def _is_name(host: str) -> bool:
    """A host that must be resolved to know where it leads (not an address literal, not `localhost`)."""
    return _literal(host) is None and host != "localhost"


def _norm_host(host: str) -> str:
    return host.lower().rstrip(".").strip("[]")


@dataclass(frozen=True)
class AllowEntry:
    host: str  # lowercase, no trailing dot, no brackets; "*.example.com" for a wildcard
    port: int | None  # None: any port

    @classmethod
    def parse(cls, entry: str) -> "AllowEntry":
        entry = entry.strip().lower()
        if entry.startswith("["):  # [v6] or [v6]:port
            host, _, rest = entry[1:].partition("]")
            port = rest[1:] if rest.startswith(":") else ""
        elif entry.count(":") > 1:  # a bare IPv6 literal
            host, port = entry, ""
        else:
            host, _, port = entry.partition(":")
        return cls(_norm_host(host), int(port) if port.isdigit() else None)

    def matches(self, host: str, port: int) -> bool:
        if self.port is not None and self.port != port:
            return False
        if self.host.startswith("*."):
            return host.endswith(self.host[1:])
        return self.host == host


@dataclass(frozen=True)
class EgressPolicy:
    """The hosts one function may reach (see the module docstring), and the ports it never may."""

    allowed: tuple[AllowEntry, ...]
    own_ports: frozenset[int] = frozenset()

    @classmethod
    def of(cls, entries: tuple[str, ...] | list[str], own_ports: frozenset[int] = frozenset()) -> "EgressPolicy":
        return cls(tuple(AllowEntry.parse(e) for e in entries if e.strip()), own_ports)

    def describe(self) -> str:
        return ", ".join(f"{e.host}:{e.port}" if e.port else e.host for e in self.allowed) or "none"

    def check_url(self, url: str) -> tuple[str, int]:
        """The (host, port) of an allowed http(s) URL before resolution; raises EgressRefused otherwise."""
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as exc:
            raise EgressRefused(f"{url!r} is not a valid URL ({exc})") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise EgressRefused(f"{url!r} is not an http(s) URL")
        host = _norm_host(parts.hostname)
        port = port or (443 if parts.scheme == "https" else 80)
        entry = next((e for e in self.allowed if e.matches(host, port)), None)
        if entry is None:
            raise EgressRefused(
                f"host '{host}:{port}' is not in this function's allowed_hosts ({self.describe()}): add it there, or declare it as a behavior's origin"
            )
        if not _is_name(host):
            literal = _literal(host)
            addrs = [literal] if literal is not None else [ipaddress.ip_address("127.0.0.1")]
            explicit = entry.host == host  # a literal entry, not a wildcard
            self._check_addresses(host, port, addrs, explicit)
        return host, port

    def _check_addresses(self, host: str, port: int, addrs: list[IPAddress], explicit: bool) -> None:
        for addr in addrs:
            if _internal(addr) and port in self.own_ports:
                raise EgressRefused(f"{host}:{port} is this edge node's own listener: guests may never reach it")
            if _internal(addr) and not explicit:
                raise EgressRefused(
                    f"{host}:{port} resolves to {addr}, a loopback/link-local address: allow it only by writing the "
                    f"address itself in allowed_hosts (e.g. \"{addr}:{port}\")"
                )

    def check(self, url: str) -> None:
        """check_url, then resolve a name (blocking) and check every address: a name may not lead to an
        internal address (the fetch host call's thread)."""
        host, port = self.check_url(url)
        if _is_name(host):
            self._check_addresses(host, port, resolve(host, port), explicit=False)

    async def check_async(self, url: str) -> None:
        """The same as `check`, resolving on a worker thread (origin switching, on the event loop)."""
        host, port = self.check_url(url)
        if _is_name(host):
            self._check_addresses(host, port, await asyncio.to_thread(resolve, host, port), explicit=False)


@functools.lru_cache(maxsize=1024)
def policy_for(allowed: tuple[str, ...]) -> EgressPolicy:
    """The policy of an allowlist on this node (its own ports from `edgefn serve`), parsed once per allowlist."""
    return EgressPolicy.of(allowed, own_ports_from_env())


def resolve(host: str, port: int) -> list[IPAddress]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise EgressRefused(f"{host}: cannot resolve ({exc.strerror or exc})") from None
    return [ipaddress.ip_address(str(i[4][0]).split("%")[0]) for i in infos]
