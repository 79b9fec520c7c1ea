"""The guests the benches run, built or generated reproducibly (no binaries in git).

small   examples/hello/src/hello.c built with edgefn's own toolchain (zig cc, -Oz): ~9 KB, one env_get call
medium  a generated ~1 MB core module: a ~700 KB data segment and ~2,400 functions (~300 KB of code); its
        handler touches the data and calls 64 of the functions, then returns the same kind of response
floor   the smallest v1 guest (WAT, no imports, a canned 10-byte result): what the sandbox costs by itself
passthrough  bench/guests/passthrough.c, a hook that changes nothing (used on all four hooks)

The Python component size (componentize-py) is not here: the runtime cannot run components yet.
"""

from __future__ import annotations

import functools
import random
from dataclasses import dataclass
from pathlib import Path

import cbor2
import wasmtime
from common import REPO, TMP

from edgefn.build.languages import build_source
from edgefn.build.toolchain import cache_dir

HELLO_C = REPO / "examples" / "hello" / "src" / "hello.c"
PASSTHROUGH_C = Path(__file__).resolve().parent / "guests" / "passthrough.c"

MEDIUM_DATA_BYTES = 700 * 1024
MEDIUM_FUNCTIONS = 2400
MEDIUM_CALLED = 64


@dataclass
class Guest:
    name: str
    wasm: bytes
    env: dict[str, str]
    describe: str


def build_c(source: Path, name: str) -> bytes:
    out = TMP / "build" / f"{name}.wasm"
    return build_source(source, out, "freestanding", cache_dir())


@functools.cache
def small() -> Guest:
    wasm = build_c(HELLO_C, "hello")
    return Guest("small", wasm, {"GREETING": "Hello"}, f"examples/hello (C, zig cc -Oz), {len(wasm):,} bytes")


@functools.cache
def floor() -> Guest:
    wat = r"""
    (module
      (memory (export "memory") 1)
      (data (i32.const 16) "\a1\66status\18\c8")
      (func (export "edgefn_abi_v1"))
      (func (export "edgefn_alloc") (param i32) (result i32) (i32.const 1024))
      (func (export "edgefn_handle") (param i32 i32) (result i64)
        (i64.or (i64.shl (i64.const 16) (i64.const 32)) (i64.const 10))))
    """
    wasm = wasmtime.wat2wasm(wat)
    return Guest("floor", wasm, {}, f"tiny WAT guest, no imports, canned result, {len(wasm)} bytes")


def _escape(data: bytes) -> str:
    return "".join(f"\\{b:02x}" for b in data)


@functools.cache
def medium() -> Guest:
    """~1 MB: a large data segment plus many functions, so both compile and deserialize have real work."""
    rng = random.Random(20261123)
    result = cbor2.dumps(
        {
            "status": 200,
            "headers": {"content-type": [{"key": "Content-Type", "value": "text/plain; charset=utf-8"}]},
            "body": "Hello from the medium guest!",
        }
    )
    filler = rng.randbytes(MEDIUM_DATA_BYTES)
    data_at, result_at = 65536, 1024
    heap = ((data_at + len(filler)) // 65536 + 1) * 65536
    pages = heap // 65536 + 2
    funcs = []
    for i in range(MEDIUM_FUNCTIONS):
        k1, k2, k3 = rng.getrandbits(16), rng.getrandbits(31), rng.randrange(1, 31)
        funcs.append(
            f"""(func $f{i} (param $x i32) (result i32) (local $a i32) (local $b i32) (local $j i32)
  (local.set $a (i32.add (local.get $x) (i32.const {k1})))
  (loop $l
    (local.set $b (i32.load8_u (i32.add (i32.const {data_at}) (i32.rem_u (i32.mul (local.get $a) (i32.const {k2})) (i32.const {len(filler)})))))
    (if (i32.gt_u (local.get $b) (i32.const 127))
      (then (local.set $a (i32.xor (local.get $a) (i32.shl (local.get $b) (i32.const {k3})))))
      (else (local.set $a (i32.rotl (i32.add (local.get $a) (local.get $b)) (i32.const {k3})))))
    (local.set $j (i32.add (local.get $j) (i32.const 1)))
    (br_if $l (i32.lt_u (local.get $j) (i32.const 4))))
  (i32.add (local.get $a) (i32.mul (local.get $b) (i32.const {k1 | 1}))))"""
        )
    calls = "\n".join(
        f"(local.set $acc (i32.add (local.get $acc) (call $f{(i * 37) % MEDIUM_FUNCTIONS} (local.get $acc))))" for i in range(MEDIUM_CALLED)
    )
    wat = f"""(module
  (memory (export "memory") {pages})
  (global $top (mut i32) (i32.const {heap}))
  (data (i32.const {result_at}) "{_escape(result)}")
  (data (i32.const {data_at}) "{_escape(filler)}")
  (func (export "edgefn_abi_v1"))
  (func (export "edgefn_alloc") (param $n i32) (result i32)
    (local $need i32)
    (local.set $need (i32.sub (i32.shr_u (i32.add (i32.add (i32.const {heap}) (local.get $n)) (i32.const 65535)) (i32.const 16)) (memory.size)))
    (if (i32.gt_s (local.get $need) (i32.const 0))
      (then (if (i32.eq (memory.grow (local.get $need)) (i32.const -1)) (then (return (i32.const 0))))))
    (i32.const {heap}))
  (func (export "edgefn_handle") (param $ptr i32) (param $len i32) (result i64) (local $acc i32)
    (local.set $acc (local.get $len))
    {calls}
    (i32.store (i32.const 512) (local.get $acc))
    (i64.or (i64.shl (i64.const {result_at}) (i64.const 32)) (i64.const {len(result)})))
  {chr(10).join(funcs)}
)"""
    wasm = wasmtime.wat2wasm(wat)
    return Guest(
        "medium",
        wasm,
        {},
        f"generated WAT: {len(filler) // 1024} KiB data segment + {MEDIUM_FUNCTIONS:,} functions, {len(wasm):,} bytes",
    )


@functools.cache
def passthrough() -> bytes:
    return build_c(PASSTHROUGH_C, "passthrough")


def variants(wasm: bytes, marker: bytes, n: int) -> list[bytes]:
    """`n` distinct modules from one: the same code with a different same-length string in its data.

    Used to deploy many different functions (distinct digests, so nothing is shared) without n compiles
    of C. `marker` must occur exactly once in the wasm, inside a data segment.
    """
    assert wasm.count(marker) == 1, f"{marker!r} must occur once"
    out = []
    for i in range(n):
        tag = f"{i:0{len(marker)}d}".encode()[-len(marker) :]
        out.append(wasm.replace(marker, tag))
    return out
