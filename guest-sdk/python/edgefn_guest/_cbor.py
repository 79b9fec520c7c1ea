"""The CBOR subset of guest ABI v1, in pure Python (no dependencies, runs in the component and on a host).

Definite lengths only; unsigned and negative integers, byte and text strings, arrays, maps, false, true
and null. Floats, tags and indefinite lengths are refused: ABI v1 documents never contain them.
"""

from __future__ import annotations

from typing import Any


class CBORError(ValueError):
    """The bytes are not one well-formed CBOR item of the ABI v1 subset."""


def _head(major: int, n: int, out: bytearray) -> None:
    m = major << 5
    if n < 24:
        out.append(m | n)
    elif n < 0x100:
        out.append(m | 24)
        out.append(n)
    elif n < 0x10000:
        out.append(m | 25)
        out += n.to_bytes(2, "big")
    elif n < 0x100000000:
        out.append(m | 26)
        out += n.to_bytes(4, "big")
    else:
        out.append(m | 27)
        out += n.to_bytes(8, "big")


def _encode(obj: Any, out: bytearray) -> None:
    if obj is None:
        out.append(0xF6)
    elif obj is True:
        out.append(0xF5)
    elif obj is False:
        out.append(0xF4)
    elif isinstance(obj, str):
        data = obj.encode("utf-8")
        _head(3, len(data), out)
        out += data
    elif isinstance(obj, (bytes, bytearray, memoryview)):
        _head(2, len(obj), out)
        out += obj
    elif isinstance(obj, int):
        if obj >= 0:
            if obj >= 1 << 64:
                raise CBORError(f"integer {obj} does not fit in 64 bits")
            _head(0, obj, out)
        else:
            if -obj - 1 >= 1 << 64:
                raise CBORError(f"integer {obj} does not fit in 64 bits")
            _head(1, -obj - 1, out)
    elif isinstance(obj, dict):
        _head(5, len(obj), out)
        for key, value in obj.items():
            _encode(key, out)
            _encode(value, out)
    elif isinstance(obj, (list, tuple)):
        _head(4, len(obj), out)
        for item in obj:
            _encode(item, out)
    else:
        raise CBORError(f"cannot encode a {type(obj).__name__} (ABI v1 documents hold maps, arrays, text, bytes, integers and booleans)")


def dumps(obj: Any) -> bytes:
    out = bytearray()
    _encode(obj, out)
    return bytes(out)


class _Reader:
    __slots__ = ("data", "pos", "depth")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0
        self.depth = 0

    def _take(self, n: int) -> bytes:
        end = self.pos + n
        if end > len(self.data):
            raise CBORError(f"truncated: needs {n} bytes at offset {self.pos}, has {len(self.data) - self.pos}")
        chunk = self.data[self.pos : end]
        self.pos = end
        return chunk

    def _arg(self, info: int) -> int:
        if info < 24:
            return info
        if info == 24:
            return self._take(1)[0]
        if info == 25:
            return int.from_bytes(self._take(2), "big")
        if info == 26:
            return int.from_bytes(self._take(4), "big")
        if info == 27:
            return int.from_bytes(self._take(8), "big")
        raise CBORError(f"indefinite lengths and reserved values are not allowed (offset {self.pos - 1})")

    def item(self) -> Any:
        if self.pos >= len(self.data):
            raise CBORError("truncated: no item")
        initial = self.data[self.pos]
        self.pos += 1
        major, info = initial >> 5, initial & 0x1F
        if major == 0:
            return self._arg(info)
        if major == 1:
            return -1 - self._arg(info)
        if major == 2:
            return bytes(self._take(self._arg(info)))
        if major == 3:
            raw = self._take(self._arg(info))
            try:
                return bytes(raw).decode("utf-8")
            except UnicodeDecodeError as exc:
                raise CBORError(f"text string is not UTF-8 ({exc})") from None
        if major in (4, 5):
            n = self._arg(info)
            if n > len(self.data) - self.pos:  # every element takes at least one byte
                raise CBORError(f"truncated: {n} elements announced at offset {self.pos}")
            self.depth += 1
            if self.depth > 64:
                raise CBORError("nested deeper than 64 levels")
            if major == 4:
                value: Any = [self.item() for _ in range(n)]
            else:
                value = {}
                for _ in range(n):
                    key = self.item()
                    if not isinstance(key, (str, int)):
                        raise CBORError(f"map keys must be text or integers, got {type(key).__name__}")
                    value[key] = self.item()
            self.depth -= 1
            return value
        if major == 7:
            if info == 20:
                return False
            if info == 21:
                return True
            if info == 22:
                return None
            raise CBORError(f"simple value or float {info} is not allowed (offset {self.pos - 1})")
        raise CBORError(f"tags are not allowed (offset {self.pos - 1})")


def loads(data: bytes) -> Any:
    """One CBOR item, with no trailing bytes."""
    reader = _Reader(data)
    value = reader.item()
    if reader.pos != len(data):
        raise CBORError(f"{len(data) - reader.pos} trailing bytes after the first item")
    return value
