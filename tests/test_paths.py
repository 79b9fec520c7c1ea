"""The request path as the edge normalises it (edgefn/edge/paths.py): every path, the common ones on a shortcut."""

from __future__ import annotations

import random
from urllib.parse import unquote

import pytest

from edgefn.edge.paths import BadPath, normalize_path, remove_dot_segments


def _reference(path: str) -> str:
    """RFC 3986: percent-decoded (UTF-8), then dot segments removed."""
    return remove_dot_segments(unquote(path, encoding="utf-8", errors="strict"))


def test_every_path_normalises_as_decode_then_remove_dot_segments() -> None:
    """Random paths of the characters that matter (with and without '%' and dot segments) give the same result as
    the full algorithm, including those the shortcut answers (nothing encoded, no '/.')."""
    rng = random.Random(1234)
    parts = ["/", ".", "..", "a", "b.c", ".hidden", "%41", "%C3%A9", "é", "~", "-", "x"]
    for _ in range(5000):
        path = "/" + "".join(rng.choice(parts) for _ in range(rng.randint(0, 8)))
        assert normalize_path(path.encode("utf-8").decode("latin-1").encode("latin-1")) == _reference(path.encode("utf-8").decode("latin-1")), path


@pytest.mark.parametrize("raw", [b"/a%2fb", b"/a%5Cb", b"/a\\b", b"/a%00b", b"/a\x00b", b"relative", b"/%ff"])
def test_paths_that_cannot_be_normalised_are_refused(raw: bytes) -> None:
    with pytest.raises(BadPath):
        normalize_path(raw)
