"""Content-addressed store of wasm code and its precompiled artifacts, on disk and in memory.

Layout under the store root (safe to share between processes; every write is temp file + rename):

    wasm/<sha256>.wasm                          the code as deployed
    artifacts/<fingerprint[:16]>/<sha256>.cwasm  header + Module.serialize() for this engine

A cold start is a read + checksum + Module.deserialize, never a compile. The artifact header carries the
engine fingerprint, the wasm digest and a checksum of the payload, because wasmtime trusts serialized
bytes: a truncated or foreign file must be caught before it reaches `deserialize`.
"""

from __future__ import annotations

import hashlib
import logging
import os
import struct
import tempfile
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import wasmtime

from .engine import ARTIFACT_FORMAT
from .errors import InvalidModule
from .linking import GuestModuleInfo, inspect_module

log = logging.getLogger("edgefn.module_store")

_MAGIC = b"EDGEFNCW"
# magic, format, engine fingerprint, wasm sha256, payload sha256, payload length
_HEADER = struct.Struct("<8sI32s32s32sQ")


def wasm_digest(wasm: bytes) -> str:
    return hashlib.sha256(wasm).hexdigest()


@dataclass
class LoadedModule:
    """A module ready to instantiate: its InstancePre and the facts the sandbox needs."""

    digest: str
    pre: wasmtime.InstancePre
    info: GuestModuleInfo
    artifact_bytes: int
    #: how this process got it: "compiled", "disk" (deserialized artifact)
    source: str
    #: time spent making it ready (read + verify + deserialize + link), reported once as Init Duration
    load_ms: float


@dataclass
class StoreStats:
    memory_hits: int = 0
    disk_loads: int = 0
    compiles: int = 0
    rebuilt_artifacts: int = 0
    evictions: int = 0
    rejected: list[str] = field(default_factory=list)


class ModuleStore:
    def __init__(
        self,
        root: Path,
        engine: wasmtime.Engine,
        linker: wasmtime.Linker,
        fingerprint: str,
        max_entries: int = 256,
        max_bytes: int = 512 * 1024 * 1024,
    ) -> None:
        self.root = Path(root)
        self._engine = engine
        self._linker = linker
        self.fingerprint = fingerprint
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.stats = StoreStats()
        self._ready: OrderedDict[str, LoadedModule] = OrderedDict()
        self._ready_bytes = 0
        self._lock = threading.Lock()
        self._loading: dict[str, threading.Lock] = {}
        (self.root / "wasm").mkdir(parents=True, exist_ok=True)
        self._artifact_dir = self.root / "artifacts" / fingerprint[:16]
        self._artifact_dir.mkdir(parents=True, exist_ok=True)

    # --- code ------------------------------------------------------------------------------------

    def wasm_path(self, digest: str) -> Path:
        return self.root / "wasm" / f"{digest}.wasm"

    def artifact_path(self, digest: str) -> Path:
        return self._artifact_dir / f"{digest}.cwasm"

    def add(self, wasm: bytes) -> str:
        """Keep `wasm` in the store; returns its digest (the key of everything else)."""
        digest = wasm_digest(wasm)
        path = self.wasm_path(digest)
        if not path.exists():
            _write_atomic(path, wasm)
        return digest

    def has(self, digest: str) -> bool:
        return self.wasm_path(digest).exists()

    # --- artifacts -------------------------------------------------------------------------------

    def load(self, digest: str, function: str) -> tuple[LoadedModule, bool]:
        """The ready module for `digest` (memory, else disk artifact, else compile); True if loaded now."""
        with self._lock:
            ready = self._lookup(digest)
            if ready is not None:
                return ready, False
            gate = self._loading.setdefault(digest, threading.Lock())
        with gate:  # one loader per digest in this process; the others wait and then hit memory
            with self._lock:
                ready = self._lookup(digest)
                if ready is not None:
                    return ready, False
            try:
                ready = self._load_uncached(digest, function)
            finally:
                with self._lock:
                    self._loading.pop(digest, None)
            with self._lock:
                self._remember(ready)
            return ready, True

    def _lookup(self, digest: str) -> LoadedModule | None:
        ready = self._ready.get(digest)
        if ready is not None:
            self._ready.move_to_end(digest)
            self.stats.memory_hits += 1
        return ready

    def evict(self, digest: str) -> None:
        with self._lock:
            gone = self._ready.pop(digest, None)
            if gone is not None:
                self._ready_bytes -= gone.artifact_bytes

    def ready_digests(self) -> list[str]:
        with self._lock:
            return list(self._ready)

    def _remember(self, ready: LoadedModule) -> None:
        self._ready[ready.digest] = ready
        self._ready_bytes += ready.artifact_bytes
        while len(self._ready) > 1 and (len(self._ready) > self.max_entries or self._ready_bytes > self.max_bytes):
            _, old = self._ready.popitem(last=False)
            self._ready_bytes -= old.artifact_bytes
            self.stats.evictions += 1

    def _load_uncached(self, digest: str, function: str) -> LoadedModule:
        start = time.perf_counter()
        module, payload_len = self._read_artifact(digest)
        source = "disk"
        if module is None:
            module, payload_len = self._compile(digest, function)
            source = "compiled"
        info = inspect_module(module, function)
        pre = self._linker.instantiate_pre(module)
        load_ms = (time.perf_counter() - start) * 1000
        return LoadedModule(digest, pre, info, payload_len, source, load_ms)

    def _read_artifact(self, digest: str) -> tuple[wasmtime.Module | None, int]:
        path = self.artifact_path(digest)
        try:
            blob = path.read_bytes()
        except FileNotFoundError:
            return None, 0
        problem = self._artifact_problem(blob, digest)
        if problem is None:
            payload = blob[_HEADER.size :]
            try:
                module = wasmtime.Module.deserialize(self._engine, payload)
            except wasmtime.WasmtimeError as exc:
                problem = f"wasmtime refused it ({exc})"
            else:
                self.stats.disk_loads += 1
                return module, len(payload)
        log.warning("module store: artifact %s is unusable: %s; rebuilding it from the wasm", path, problem)
        self.stats.rebuilt_artifacts += 1
        return None, 0

    def _artifact_problem(self, blob: bytes, digest: str) -> str | None:
        if len(blob) < _HEADER.size:
            return f"truncated ({len(blob)} bytes, shorter than its header)"
        magic, fmt, fingerprint, wasm_sha, payload_sha, payload_len = _HEADER.unpack_from(blob)
        if magic != _MAGIC:
            return "not an edgefn artifact (bad magic)"
        if fmt != ARTIFACT_FORMAT:
            return f"artifact format {fmt}, expected {ARTIFACT_FORMAT}"
        if fingerprint.hex() != self.fingerprint:
            return "built by another engine (fingerprint differs)"
        if wasm_sha.hex() != digest:
            return "holds another module (wasm digest differs)"
        payload = memoryview(blob)[_HEADER.size :]
        if len(payload) != payload_len:
            return f"truncated (payload {len(payload)} of {payload_len} bytes)"
        if hashlib.sha256(payload).digest() != payload_sha:
            return "corrupted (payload checksum differs)"
        return None

    def _compile(self, digest: str, function: str) -> tuple[wasmtime.Module, int]:
        try:
            wasm = self.wasm_path(digest).read_bytes()
        except FileNotFoundError:
            raise InvalidModule(function, f"code {digest[:12]} is not in the module store at {self.root}") from None
        if wasm_digest(wasm) != digest:
            raise InvalidModule(function, f"stored wasm {self.wasm_path(digest)} does not match its digest; redeploy it")
        try:
            module = wasmtime.Module(self._engine, wasm)
        except wasmtime.WasmtimeError as exc:
            raise InvalidModule(function, f"is not a valid wasm module: {exc}") from None
        payload = module.serialize()
        header = _HEADER.pack(
            _MAGIC,
            ARTIFACT_FORMAT,
            bytes.fromhex(self.fingerprint),
            bytes.fromhex(digest),
            hashlib.sha256(payload).digest(),
            len(payload),
        )
        _write_atomic(self.artifact_path(digest), header + payload)
        self.stats.compiles += 1
        return module, len(payload)


def _write_atomic(path: Path, data: bytes) -> None:
    """Write via a unique temp file and rename: readers in other processes see all of it or nothing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
