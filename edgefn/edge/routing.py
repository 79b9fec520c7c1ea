"""Pick the behavior for a request: ordered host/path patterns with `*` and `?`, then the default."""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..core.app import ResolvedBehavior
from .paths import normalize_host


def pattern_regex(pattern: str, case_sensitive: bool = True) -> re.Pattern[str]:
    """CloudFront pattern semantics: `*` matches any run of characters (also '/'), `?` exactly one."""
    body = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.compile(body, 0 if case_sensitive else re.IGNORECASE)


@dataclass(frozen=True)
class _Compiled:
    behavior: ResolvedBehavior
    host: re.Pattern[str]
    path: re.Pattern[str]


class BehaviorRouter:
    """Behaviors in manifest order; the first whose host and path patterns both match wins."""

    def __init__(self, behaviors: list[ResolvedBehavior]) -> None:
        self._compiled = [
            _Compiled(b, pattern_regex(b.host_pattern, case_sensitive=False), pattern_regex(b.path_pattern)) for b in behaviors
        ]

    def match(self, host: str, path: str) -> ResolvedBehavior | None:
        host = normalize_host(host)
        for c in self._compiled:
            if c.host.fullmatch(host) and c.path.fullmatch(path):
                return c.behavior
        return None
