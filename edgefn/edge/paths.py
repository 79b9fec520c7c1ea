"""One normalised path and host per request: what behaviors match, what functions see, what origins get.

A path is decoded and its dot segments removed once, at the edge (RFC 3986 §5.2.4); an encoded
separator (`%2F`, `%5C`), a backslash or a NUL cannot be normalised without guessing what the origin
would make of it, so such a request is refused with 400. The result is the event's `uri`, the string
behavior patterns match, and (re-encoded) the path sent to a URL origin, so `/public/../private/x`
and `/private/x` are one request everywhere. Hosts compare case-insensitively, without a trailing dot.
"""

from __future__ import annotations

import re
from urllib.parse import quote, unquote

_ENCODED_SEPARATOR = re.compile(r"%(2f|5c|00)", re.IGNORECASE)
#: what stays unescaped when the normalised path goes to the origin (RFC 3986 pchar plus '/')
_PATH_SAFE = "/:@!$&'()*+,;=-._~"


class BadPath(ValueError):
    """A request path edgefn refuses to normalise (answered 400)."""


def remove_dot_segments(path: str) -> str:
    """RFC 3986 §5.2.4 on a decoded path that starts with '/'."""
    out: list[str] = []
    segments = path.split("/")[1:]
    for i, seg in enumerate(segments):
        last = i == len(segments) - 1
        if seg == ".":
            if last:
                out.append("")
        elif seg == "..":
            if out:
                out.pop()
            if last:
                out.append("")
        else:
            out.append(seg)
    return "/" + "/".join(out)


def normalize_path(raw_path: bytes) -> str:
    """The decoded, dot-segment-free path of a request target; raises BadPath."""
    text = raw_path.decode("latin-1")
    if not text.startswith("/"):
        raise BadPath("the request path must start with '/'")
    if "%" not in text and "/." not in text and "\\" not in text and "\x00" not in text:
        return text  # nothing encoded and no dot segment: already normal (most requests)
    if _ENCODED_SEPARATOR.search(text) or "\\" in text or "\x00" in text:
        raise BadPath("the path holds an encoded '/' or '\\', a backslash or a NUL; send the path unencoded")
    try:
        decoded = unquote(text, encoding="utf-8", errors="strict")
    except UnicodeDecodeError:
        raise BadPath("the path's percent-encoding is not UTF-8") from None
    if "\\" in decoded or "\x00" in decoded:
        raise BadPath("the path holds an encoded '/' or '\\', a backslash or a NUL; send the path unencoded")
    return remove_dot_segments(decoded)


def origin_path(uri: str) -> str:
    """A (decoded) event uri as the path sent to a URL origin: normalised again, then percent-encoded once."""
    if not uri.startswith("/"):
        uri = "/" + uri
    return quote(remove_dot_segments(uri), safe=_PATH_SAFE)


def normalize_host(host: str) -> str:
    """A Host header as behaviors compare it: lowercase, no port, no trailing dot."""
    host = host.strip().lower()
    if host.startswith("["):  # [v6]:port
        end = host.find("]")
        host = host[: end + 1] if end != -1 else host
    elif host.count(":") == 1:
        host = host.rsplit(":", 1)[0]
    return host.rstrip(".")
