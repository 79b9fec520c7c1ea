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
    kind = type(obj)  # exact types first (what documents hold), one comparison each
    if kind is str:
        data = obj.encode("utf-8")
        if len(data) < 24:
            out.append(0x60 | len(data))
        else:
            _head(3, len(data), out)
        out += data
    elif kind is dict:
        _head(5, len(obj), out)
        for key, value in obj.items():
            _encode(key, out)
            _encode(value, out)
    elif kind is list or kind is tuple:
        _head(4, len(obj), out)
        for item in obj:
            _encode(item, out)
    elif obj is None:
        out.append(0xF6)
    elif obj is True:
        out.append(0xF5)
    elif obj is False:
        out.append(0xF4)
    elif isinstance(obj, str):
        _encode(str(obj), out)
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
        _encode(dict(obj), out)
    elif isinstance(obj, (list, tuple)):
        _encode(list(obj), out)
    else:
        raise CBORError(f"cannot encode a {type(obj).__name__} (ABI v1 documents hold maps, arrays, text, bytes, integers and booleans)")


def dumps(obj: Any) -> bytes:
    out = bytearray()
    _encode(obj, out)
    return bytes(out)


def _item(data: bytes, pos: int, depth: int) -> tuple[Any, int]:
    """The item at `pos` and the offset after it. One function, locals only: in the component this runs on
    CPython inside wasm for every event, where each method call and attribute lookup costs ~10x native."""
    initial = data[pos]
    pos += 1
    major = initial >> 5
    info = initial & 0x1F
    if major == 7:
        if info == 20:
            return False, pos
        if info == 21:
            return True, pos
        if info == 22:
            return None, pos
        raise CBORError(f"simple value or float {info} is not allowed (offset {pos - 1})")
    if info < 24:
        n = info
    elif info == 24:
        n = data[pos]
        pos += 1
    elif info < 28:
        size = 1 << (info - 24)  # 25, 26, 27: 2, 4, 8 bytes
        if pos + size > len(data):
            raise CBORError(f"truncated: needs {size} bytes at offset {pos}, has {len(data) - pos}")
        n = int.from_bytes(data[pos : pos + size], "big")
        pos += size
    else:
        raise CBORError(f"indefinite lengths and reserved values are not allowed (offset {pos - 1})")
    if major == 3 or major == 2:
        end = pos + n
        if end > len(data):
            raise CBORError(f"truncated: needs {n} bytes at offset {pos}, has {len(data) - pos}")
        if major == 2:
            return data[pos:end], end
        try:
            return data[pos:end].decode("utf-8"), end
        except UnicodeDecodeError as exc:
            raise CBORError(f"text string is not UTF-8 ({exc})") from None
    if major == 0:
        return n, pos
    if major == 1:
        return -1 - n, pos
    if major == 6:
        raise CBORError(f"tags are not allowed (offset {pos - 1})")
    if n > len(data) - pos:  # every element takes at least one byte
        raise CBORError(f"truncated: {n} elements announced at offset {pos}")
    if depth >= 64:
        raise CBORError("nested deeper than 64 levels")
    depth += 1
    if major == 4:
        items = []
        for _ in range(n):
            value, pos = _item(data, pos, depth)
            items.append(value)
        return items, pos
    out: dict[Any, Any] = {}
    for _ in range(n):
        head = data[pos]
        if 0x60 <= head < 0x78:  # a text key shorter than 24 bytes: nearly every key of an event
            end = pos + 1 + head - 0x60
            if end > len(data):
                raise CBORError(f"truncated: needs {head - 0x60} bytes at offset {pos + 1}, has {len(data) - pos - 1}")
            try:
                key: Any = data[pos + 1 : end].decode("utf-8")
            except UnicodeDecodeError as exc:
                raise CBORError(f"text string is not UTF-8 ({exc})") from None
            pos = end
        else:
            key, pos = _item(data, pos, depth)
            if not isinstance(key, (str, int)) or isinstance(key, bool):
                raise CBORError(f"map keys must be text or integers, got {type(key).__name__}")
        out[key], pos = _item(data, pos, depth)
    return out, pos


def loads(data: bytes) -> Any:
    """One CBOR item, with no trailing bytes."""
    data = bytes(data)
    try:
        value, pos = _item(data, 0, 0)
    except IndexError:  # a head byte read past the end
        raise CBORError("truncated: the data ends inside an item") from None
    if pos != len(data):
        raise CBORError(f"{len(data) - pos} trailing bytes after the first item")
    return value
