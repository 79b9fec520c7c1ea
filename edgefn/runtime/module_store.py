"""Content-addressed store of wasm code and its precompiled artifacts, on disk and in memory.

Layout under the store root (safe to share between processes; every write is temp file + rename):

    wasm/<sha256>.wasm                          the code as deployed (a core module or a component)
    artifacts/<fingerprint[:16]>/<sha256>.cwasm  header + Module.serialize() for this engine
    artifacts/<fingerprint[:16]>/<sha256>.component.cwasm  Component.serialize(), exactly (memory-mapped)
    artifacts/<fingerprint[:16]>/<sha256>.component.meta   its header, in a sidecar
    sources/<sha256>/...                        a source tree (`edgefn dev`'s Python functions), read-only

A source bundle (`add_sources`) is code too: a small descriptor, kept under wasm/ like any code, naming a
runtime component and a source tree. Its digest covers both, so the registry, pools and the catalog treat it
as any other code; it loads as the runtime's component with `GuestSources` to mount at each instance start.

A cold start is a read + checksum + Module.deserialize, never a compile. The artifact header carries the
engine fingerprint, the wasm digest and a checksum of the payload, because wasmtime trusts serialized
bytes: a truncated or foreign file must be caught before it reaches `deserialize`.

Components (tens of MB for a Python guest) are loaded with `Component.deserialize_file`, which maps the
payload file: so the payload is the serialized bytes alone and the header lives in a sidecar, written after
the payload. The sidecar also records the identity the payload had when its checksum was last verified
(device, inode, size, mtime, ctime): a payload that has not been written to since is not hashed again
(40 MB of SHA-256 costs ~30 ms, the mapped load ~3 ms); any write, truncation or copy changes that identity
and brings the full check back. Compiling a component takes seconds, so the request path never does it:
`load(..., compile_components=False)` refuses instead (`edgefn build` precompiles).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import mmap
import os
import shutil
import struct
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import wasmtime
from wasmtime import component as wc

from ..core.exceptions import InvalidModule
from ..core.files import remove, write_atomic
from . import component as comp
from . import fastcall, wasm_binary
from .engine import ARTIFACT_FORMAT
from .host import create_component_linker
from .linking import GuestModuleInfo, check_imports, inspect_module
from .wasm_binary import MemoryLayout

log = logging.getLogger("edgefn.module_store")

_MAGIC = b"EDGEFNCW"
# magic, format, engine fingerprint, wasm sha256, payload sha256, payload length
_HEADER = struct.Struct("<8sI32s32s32sQ")
_COMPONENT_MAGIC = b"EDGEFNCM"
# the component sidecar: the header fields above, its memories (wasm_binary.MemoryLayout: the largest initial one,
# how many, how many can grow, the fixed ones' bytes), and the payload's identity when its checksum was last
# verified (st_dev, st_ino, st_mtime_ns, st_ctime_ns). A sidecar of another size is rebuilt from the wasm.
_COMPONENT_META = struct.Struct("<8sI32s32s32sQQIIQQQqq")
#: a source bundle's descriptor: this line, then JSON {"runtime": digest, "module": name, "tree": digest}
_SOURCES_MAGIC = b"EDGEFNSRC1\n"


@dataclass(frozen=True)
class GuestSources:
    """A source tree an instance of a runtime component imports its function from at start (read-only)."""

    directory: Path
    module: str


def wasm_digest(wasm: bytes) -> str:
    return hashlib.sha256(wasm).hexdigest()


@dataclass
class LoadedModule:
    """Code ready to instantiate: a core module's InstancePre, or a component; the facts the sandbox needs."""

    digest: str
    pre: wasmtime.InstancePre | None
    info: GuestModuleInfo | comp.ComponentInfo
    artifact_bytes: int
    #: how this process got it: "compiled", "disk" (deserialized artifact)
    source: str
    #: time spent making it ready (read + verify + deserialize + link), reported once as Init Duration
    load_ms: float
    #: "core" (ABI v1 core module) or "component" (the edgefn:function world)
    kind: str = "core"
    component: wc.Component | None = None
    #: the component Linker it is instantiated with (core modules carry theirs in `pre`)
    linker: wc.Linker | None = None
    #: a source bundle: what each instance mounts and imports at start (None: the code is complete)
    sources: GuestSources | None = None
    #: the C address of `pre` (what fastcall.CoreStore.instantiate takes), 0 for a component
    pre_ptr: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        self.pre_ptr = fastcall.pointer_of(self.pre) if self.pre is not None else 0


@dataclass(frozen=True)
class StorePruned:
    """What `ModuleStore.prune` removed (or, dry, would remove): code, artifacts and source trees, and bytes."""

    files: tuple[Path, ...]
    bytes: int


@dataclass
class StoreStats:
    memory_hits: int = 0
    disk_loads: int = 0
    compiles: int = 0
    rebuilt_artifacts: int = 0
    evictions: int = 0


class ModuleStore:
    def __init__(
        self,
        root: Path,
        engine: wasmtime.Engine,
        linker: wasmtime.Linker,
        fingerprint: str,
        max_entries: int = 256,
        max_bytes: int = 512 * 1024 * 1024,
        component_linker: wc.Linker | None = None,
        component_engine: wasmtime.Engine | None = None,
    ) -> None:
        self.root = Path(root)
        self._engine = engine
        #: components compile and load on their own engine (runtime/engine.py: memory differs, code does not)
        self._component_engine = component_engine or engine
        self._linker = linker
        self._component_linker = component_linker
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

    def component_artifact_path(self, digest: str) -> Path:
        return self._artifact_dir / f"{digest}.component.cwasm"

    def component_meta_path(self, digest: str) -> Path:
        return self._artifact_dir / f"{digest}.component.meta"

    @property
    def component_linker(self) -> wc.Linker:
        if self._component_linker is None:
            self._component_linker = create_component_linker(self._component_engine)
        return self._component_linker

    def kind_of(self, digest: str) -> str:
        """"component", "core" or "sources", from the stored code's header (or, without it, the artifacts)."""
        try:
            with open(self.wasm_path(digest), "rb") as f:
                head = f.read(len(_SOURCES_MAGIC))
        except FileNotFoundError:
            return "component" if self.component_meta_path(digest).exists() else "core"
        if head == _SOURCES_MAGIC:
            return "sources"
        return "component" if wasm_binary.is_component(head) else "core"

    def add(self, wasm: bytes) -> str:
        """Keep `wasm` in the store; returns its digest (the key of everything else)."""
        digest = wasm_digest(wasm)
        path = self.wasm_path(digest)
        if not path.exists():
            write_atomic(path, wasm)
        return digest

    def has(self, digest: str) -> bool:
        """Is the code of `digest` here (a wasm file, or a source bundle's header)?"""
        return self.wasm_path(digest).exists()

    def read_wasm(self, digest: str) -> bytes | None:
        """The deployed bytes of `digest`, for another node to fetch; None if not here, or a source bundle (its
        tree lives beside it: only this machine can serve it)."""
        try:
            data = self.wasm_path(digest).read_bytes()
        except FileNotFoundError:
            return None
        return None if data.startswith(_SOURCES_MAGIC) else data

    def add_fetched(self, digest: str, data: bytes, function: str) -> None:
        """Keep code fetched from the control plane once its bytes hash to the `digest` they were fetched by."""
        actual = wasm_digest(data)
        if actual != digest:
            raise InvalidModule(function, f"code fetched for {digest[:12]} hashes to {actual[:12]}: refused; redeploy it")
        self.add(data)

    def add_sources(self, runtime: str, module: str, files: dict[str, bytes]) -> str:
        """Keep a source bundle: the runtime component `runtime` (a digest in this store) running `module`
        from `files` (relative path -> bytes). Returns the bundle's digest."""
        tree = hashlib.sha256()
        for rel in sorted(files):
            tree.update(f"{rel}\0{len(files[rel])}\0".encode() + files[rel])
        directory = self.root / "sources" / tree.hexdigest()
        if not directory.is_dir():
            stage = directory.with_name(f".{directory.name}.{os.getpid()}.{threading.get_ident()}.tmp")
            for rel, data in files.items():
                path = stage / rel
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data)
                path.chmod(0o444)
            try:
                os.rename(stage, directory)
            except OSError:  # another process kept the same tree first
                shutil.rmtree(stage, ignore_errors=True)
        descriptor = json.dumps({"runtime": runtime, "module": module, "tree": tree.hexdigest()}, sort_keys=True)
        return self.add(_SOURCES_MAGIC + descriptor.encode())

    def _needs(self, digest: str) -> set[str]:
        """`digest` and the code it stands on: a source bundle's runtime component and tree."""
        if self.kind_of(digest) != "sources":
            return {digest}
        try:
            doc = json.loads(self.wasm_path(digest).read_bytes()[len(_SOURCES_MAGIC) :])
            return {digest, str(doc["runtime"]), "tree:" + str(doc["tree"])}
        except (OSError, ValueError, KeyError, TypeError):
            return {digest}

    def prune(self, keep: set[str], dry_run: bool = False) -> StorePruned:
        """Remove every code, artifact (any engine's) and source tree that `keep` (digests that may run:
        the registry's $LATEST and versions) does not need. A running server has what it loaded in memory;
        a removed component artifact it maps stays readable to it until it lets go."""
        needed: set[str] = set()
        for digest in keep:
            needed |= self._needs(digest)
        doomed: list[Path] = []
        for path in sorted((self.root / "wasm").glob("*.wasm")):
            if path.stem not in needed:
                doomed.append(path)
        for path in sorted((self.root / "artifacts").glob("*/*")):
            if path.name.split(".")[0] not in needed or path.parent != self._artifact_dir:
                doomed.append(path)  # unneeded code, or another engine's (an older edgefn or wasmtime)
        for tree in sorted((self.root / "sources").glob("*")):
            if "tree:" + tree.name not in needed:  # kept trees, and temporaries of a failed write
                doomed.append(tree)
        size = remove(doomed, dry_run)
        if not dry_run:
            for digest in [d for d in self.ready_digests() if d not in needed]:
                self.evict(digest)
        return StorePruned(tuple(doomed), size)

    # --- artifacts -------------------------------------------------------------------------------

    def load(self, digest: str, function: str, compile_components: bool = True) -> tuple[LoadedModule, bool]:
        """The ready module for `digest` (memory, else disk artifact, else compile); True if loaded now.

        With `compile_components=False` (the request path) a component without a usable artifact is
        refused with InvalidModule instead of being compiled, which takes seconds.
        """
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
                ready = self._load_uncached(digest, function, compile_components)
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

    def drop_artifacts(self, digest: str) -> None:
        """Forget `digest`'s precompiled artifacts, in memory and on disk (the wasm stays): its next load compiles."""
        self.evict(digest)
        for path in (self.artifact_path(digest), self.component_artifact_path(digest), self.component_meta_path(digest)):
            path.unlink(missing_ok=True)

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

    def _load_uncached(self, digest: str, function: str, compile_components: bool = True) -> LoadedModule:
        kind = self.kind_of(digest)
        if kind == "sources":
            return self._load_sources(digest, function, compile_components)
        if kind == "component":
            return self._load_component(digest, function, compile_components)
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

    def _stored_wasm(self, digest: str, function: str) -> bytes:
        try:
            wasm = self.wasm_path(digest).read_bytes()
        except FileNotFoundError:
            raise InvalidModule(function, f"code {digest[:12]} is not in the module store at {self.root}") from None
        if wasm_digest(wasm) != digest:
            raise InvalidModule(function, f"stored wasm {self.wasm_path(digest)} does not match its digest; redeploy it")
        return wasm

    def _compile(self, digest: str, function: str) -> tuple[wasmtime.Module, int]:
        wasm = self._stored_wasm(digest, function)
        try:
            imports = wasm_binary.core_imports(wasm)
        except (ValueError, IndexError) as exc:
            raise InvalidModule(function, f"is not a valid wasm module: {exc}") from None
        check_imports(imports, function)  # by name, before the compile
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
        write_atomic(self.artifact_path(digest), header + payload)
        self.stats.compiles += 1
        return module, len(payload)


    # --- components ----------------------------------------------------------------------------------

    def _load_component(self, digest: str, function: str, compile_components: bool) -> LoadedModule:
        start = time.perf_counter()
        found = self._read_component_artifact(digest)
        source = "disk"
        if found is None:
            if not compile_components:
                raise InvalidModule(
                    function,
                    f"component {digest[:12]} has no usable precompiled artifact in {self._artifact_dir}; run `edgefn build` "
                    "(compiling a component takes seconds, so it never happens on the request path)",
                )
            found = self._compile_component(digest, function)
            source = "compiled"
        component, payload_len, memory = found
        info = comp.inspect_component(component, self._component_engine, function, memory)
        comp.check_links(self._component_engine, self.component_linker, component, function)
        load_ms = (time.perf_counter() - start) * 1000
        return LoadedModule(
            digest, None, info, payload_len, source, load_ms, kind="component", component=component, linker=self.component_linker
        )

    def _load_sources(self, digest: str, function: str, compile_components: bool) -> LoadedModule:
        start = time.perf_counter()
        raw = self._stored_wasm(digest, function)
        try:
            doc = json.loads(raw[len(_SOURCES_MAGIC) :])
            runtime, module, tree = str(doc["runtime"]), str(doc["module"]), str(doc["tree"])
        except (ValueError, KeyError, TypeError):
            raise InvalidModule(function, f"source bundle {digest[:12]} in {self.root} is not readable; rebuild it") from None
        directory = self.root / "sources" / tree
        if not directory.is_dir():
            raise InvalidModule(function, f"the sources of bundle {digest[:12]} are missing from {directory.parent}; rebuild it")
        if self.kind_of(runtime) != "component":
            raise InvalidModule(function, f"source bundle {digest[:12]} names runtime {runtime[:12]}, which is not a component in {self.root}")
        base, _ = self.load(runtime, function, compile_components)
        return dataclasses.replace(
            base, digest=digest, artifact_bytes=0, load_ms=(time.perf_counter() - start) * 1000, sources=GuestSources(directory, module)
        )  # artifact_bytes 0: the runtime's artifact is held (and counted) once, under its own digest

    def _read_component_artifact(self, digest: str) -> tuple[wc.Component, int, MemoryLayout] | None:
        meta_path, path = self.component_meta_path(digest), self.component_artifact_path(digest)
        try:
            meta = meta_path.read_bytes()
        except FileNotFoundError:
            return None
        problem, fields = self._component_meta_problem(meta, digest)
        if problem is None:
            problem = self._component_payload_problem(path, meta_path, meta, fields)
        if problem is None:
            try:
                component = wc.Component.deserialize_file(self._component_engine, str(path))
            except wasmtime.WasmtimeError as exc:
                problem = f"wasmtime refused it ({str(exc).splitlines()[0]})"
            else:
                self.stats.disk_loads += 1
                return component, fields[5], MemoryLayout(*fields[6:10])
        log.warning("module store: component artifact %s is unusable: %s; rebuilding it from the wasm", path, problem)
        self.stats.rebuilt_artifacts += 1
        return None

    def _component_meta_problem(self, meta: bytes, digest: str) -> tuple[str | None, tuple[Any, ...]]:
        if len(meta) != _COMPONENT_META.size:
            return f"its sidecar is {len(meta)} bytes, expected {_COMPONENT_META.size}", ()
        fields = _COMPONENT_META.unpack(meta)
        magic, fmt, fingerprint, wasm_sha = fields[:4]
        if magic != _COMPONENT_MAGIC:
            return "not an edgefn component artifact (bad magic)", fields
        if fmt != ARTIFACT_FORMAT:
            return f"artifact format {fmt}, expected {ARTIFACT_FORMAT}", fields
        if fingerprint.hex() != self.fingerprint:
            return "built by another engine (fingerprint differs)", fields
        if wasm_sha.hex() != digest:
            return "holds another component (wasm digest differs)", fields
        return None, fields

    def _component_payload_problem(self, path: Path, meta_path: Path, meta: bytes, fields: tuple[Any, ...]) -> str | None:
        payload_sha, payload_len = fields[4], fields[5]
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return "its payload is missing"
        if st.st_size != payload_len:
            return f"truncated (payload {st.st_size} of {payload_len} bytes)"
        if (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_ctime_ns) == tuple(fields[10:14]):
            return None  # verified when last written or checked, and not written to since
        if _file_sha256(path) != payload_sha:
            return "corrupted (payload checksum differs)"
        try:  # remember the identity it was verified with (best effort; another process may do the same)
            write_atomic(meta_path, _COMPONENT_META.pack(*fields[:10], st.st_dev, st.st_ino, st.st_mtime_ns, st.st_ctime_ns))
        except OSError:
            pass
        return None

    def _compile_component(self, digest: str, function: str) -> tuple[wc.Component, int, MemoryLayout]:
        wasm = self._stored_wasm(digest, function)
        try:
            imports, memory = wasm_binary.component_imports(wasm), wasm_binary.memory_layout(wasm)
        except (ValueError, IndexError) as exc:
            raise InvalidModule(function, f"is not a valid component: {exc}") from None
        comp.check_imports(imports, function)  # milliseconds, where the compile below can take a minute
        try:
            component = wc.Component(self._component_engine, wasm)
        except wasmtime.WasmtimeError as exc:
            raise InvalidModule(function, f"is not a valid component: {str(exc).splitlines()[0]}") from None
        payload = bytes(component.serialize())
        path = self.component_artifact_path(digest)
        write_atomic(path, payload)
        st = os.stat(path)
        meta = _COMPONENT_META.pack(
            _COMPONENT_MAGIC, ARTIFACT_FORMAT, bytes.fromhex(self.fingerprint), bytes.fromhex(digest),
            hashlib.sha256(payload).digest(), len(payload), memory.largest_min_bytes, memory.count, memory.growable,
            memory.fixed_bytes, st.st_dev, st.st_ino, st.st_mtime_ns, st.st_ctime_ns,
        )
        write_atomic(self.component_meta_path(digest), meta)
        self.stats.compiles += 1
        return component, len(payload), memory


def _file_sha256(path: Path) -> bytes:
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size == 0:
            return hashlib.sha256(b"").digest()
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
            return hashlib.sha256(m).digest()

