"""Invoke functions off the event loop in a bounded worker pool, and write their log streams."""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from ..core import events
from ..core.app import FunctionSpec
from ..core.events import EdgeRequest, EdgeResponse, Event
from ..core.exceptions import (
    EphemeralStorageLimitExceeded,
    FunctionError,
    InvalidResult,
    InvocationError,
    MemoryLimitExceeded,
)
from ..core.loglines import log_lines
from ..core.ports import InvocationObserver, KeyValueStore, NoObserver
from ..core.report import InvocationReport
from ..core.tracing import UNTRACED, Span, TraceContext, Tracer
from . import abi
from .concurrency import ConcurrencyLimiter, InvocationCounts
from .context import KvGrant, SecretMask
from .engine import EngineSettings, EpochTicker, create_engine
from .guest_threads import GuestThreads
from .host import create_linker
from .host.fetch import shared_client
from .inline import InlinePolicy, blocked_ms, blocking_mark
from .instance import GuestInstance
from .module_store import ModuleStore
from .pool import WarmPool, WarmPools
from .sandbox import Sandbox, log_level
from .scheduler import GuestScheduler

#: guest threads beyond the CPU slots: invocations waiting on a fetch hold a thread but not a slot
IO_THREADS = 64


@dataclass
class Invocation:
    """A successful invocation: the decoded result and what it cost."""

    result: EdgeRequest | EdgeResponse
    report: InvocationReport


_FUNCTION_LOGGERS: dict[str, logging.Logger] = {}


def function_logger(name: str) -> logging.Logger:
    """The log stream of one function (START/END/REPORT and the guest's own lines)."""
    logger = _FUNCTION_LOGGERS.get(name)
    if logger is None:  # logging.getLogger takes logging's module lock: once per function, not per invocation
        logger = _FUNCTION_LOGGERS[name] = logging.getLogger(f"edgefn.function.{name}")
    return logger


def _mask_of(fn: FunctionSpec) -> SecretMask | None:
    """What hides `fn`'s secret values in its log lines and error messages (None: it has none)."""
    return SecretMask(fn.secrets.values()) if fn.secrets else None


class Invoker:
    """Runs invocations on worker threads, at most `workers` in wasm at once (wasmtime releases the GIL while
    wasm runs), shared fairly between functions by a GuestScheduler."""

    def __init__(
        self, store: ModuleStore, sandbox: Sandbox, workers: int | None = None, observer: InvocationObserver | None = None, kv: KeyValueStore | None = None,
    ) -> None:
        self.store = store
        self.sandbox = sandbox
        #: the key-value store guests with a `kv` grant reach (the node opens it from the app's [kv] store)
        self.kv = kv
        #: told about every invocation (the node passes its metrics; core.ports)
        self.observer: InvocationObserver = observer or NoObserver()
        self.workers = workers or (os.cpu_count() or 2)
        #: CPU slots: `workers` guests in wasm at once, no function more than its share (docs/security.md)
        self.scheduler = GuestScheduler(self.workers)
        self._threads = GuestThreads(self.workers + IO_THREADS, "edgefn-guest")
        #: warm instances of functions with reuse_instances; no more than `workers` can be busy at once
        self.pools = WarmPools(self.workers)
        #: admission (server.max_concurrency, reserved_concurrency): set by the EdgeNode from the manifest/registry
        self.limiter = ConcurrencyLimiter()
        #: invocations that ran, warm or cold, per "name:version"
        self.counts = InvocationCounts()
        #: short runs on the event loop's thread, under a slice (runtime/inline.py)
        self.inline = InlinePolicy()
        #: where invocation and guest-fetch spans go (core/tracing.py; the node sets the exporter when [tracing] asks)
        self.tracer: Tracer = UNTRACED

    def pool_of(self, fn: FunctionSpec) -> WarmPool:
        """The warm pool of `fn` (a new one when its code, limits or env changed)."""
        return self.pools.pool_for(fn.qualified_name, fn.instance_key)

    def prewarm(self, fn: FunctionSpec) -> int:
        """Create `fn.prewarm` warm instances now (at startup); returns how many are idle in its pool.

        A failure (the instance trapped or hit a limit while initialising) is logged and leaves the pool
        as it is: requests then create instances on demand and report the error themselves."""
        if not fn.reuse_instances or fn.prewarm <= 0:
            return 0
        loaded, _ = self.store.load(fn.digest, fn.name)
        flog = function_logger(fn.name)

        def emit(level: int, message: str) -> None:
            flog.log(log_level(level), "prewarm\t%s", message)

        def make() -> GuestInstance:
            return self.sandbox.prewarm(loaded, function=fn.name, limits=fn.limits, env=fn.guest_env, emit=emit, mask=_mask_of(fn))

        try:
            return self.pools.prewarm(fn.qualified_name, self.pool_of(fn).key, fn.prewarm, make)
        except InvocationError as exc:
            flog.error("prewarm of %r failed: %s", fn.qualified_name, exc)
            pool = self.pools.get(fn.qualified_name)
            return pool.idle() if pool is not None else 0

    async def invoke(self, fn: FunctionSpec, event: Event) -> Invocation:
        """Run `fn` on `event`; raises a typed InvocationError (with `.report`) on any failure, Throttled at once
        when over a concurrency limit."""
        span = self._span(fn, event)
        try:
            invocation = await self._invoke(fn, event, span.context if span is not None else None)
        except InvocationError as exc:
            if span is not None:
                span.fail(f"{exc.kind}: {exc}")
                span.end()
            raise
        if span is not None:
            span.set("edgefn.fuel_used", invocation.report.fuel_used)
            span.end()
        return invocation

    def _span(self, fn: FunctionSpec, event: Event) -> Span | None:
        """The invocation's span, a child of its event's (none outside a trace)."""
        if event.config.trace is None:
            return None
        if not self.tracer.exporting:  # a span only for its context (propagation): no name, no attributes
            return self.tracer.span("", event.config.trace)
        return self.tracer.span(f"{event.config.event_type} {fn.name}", event.config.trace, "internal", {
            "faas.name": fn.name, "faas.version": fn.version, "faas.invocation_id": event.config.request_id, "edgefn.event_type": event.config.event_type,
        })

    async def _invoke(self, fn: FunctionSpec, event: Event, trace: TraceContext | None) -> Invocation:
        lease = self.limiter.acquire(fn.name, event.config.request_id)
        # the loop's thread is a slot of its own: one try at a time, bounded by the slice
        if self.inline.admits(fn, lambda: fn.reuse_instances and self.pool_of(fn).idle() > 0):
            try:
                quick = self._run_admitted(fn, event, inline=True, trace=trace)
            except BaseException:
                lease.release()
                raise
            if quick is not None:
                lease.release()
                return quick
            # the try hit the slice: the invocation runs on a guest thread, with the function's own limits
        try:
            await self.scheduler.acquire(fn.name, fn.limits.cpu_weight)
        except BaseException:
            lease.release()
            raise

        def done() -> None:
            self.scheduler.release(fn.name)
            lease.release()

        # released when the guest call ends (even if the awaiting request was cancelled), or if it never started
        try:
            future = self._threads.submit(asyncio.get_running_loop(), self._run_admitted, fn, event, False, trace, done=done)
        except BaseException:
            done()
            raise
        invocation = await future
        assert invocation is not None  # only an inline try returns None
        return invocation

    def invoke_sync(self, fn: FunctionSpec, event: Event) -> Invocation:
        """The same as `invoke`, on the calling thread (CLI, benchmarks)."""
        lease = self.limiter.acquire(fn.name, event.config.request_id)
        try:
            self.scheduler.acquire_blocking(fn.name, fn.limits.cpu_weight)
            try:
                invocation = self._run_admitted(fn, event)
                assert invocation is not None  # only an inline try returns None
                return invocation
            finally:
                self.scheduler.release(fn.name)
        finally:
            lease.release()

    def stats(self) -> dict[str, object]:
        """Concurrency limits and use, and warm/cold invocations per version (GET /_edgefn/info)."""
        return {
            "concurrency": self.limiter.snapshot(), "invocations": self.counts.snapshot(), "idle_instances": self.pools.idle_counts(),
            "guest_slots": self.scheduler.snapshot(), "inline": self.inline.snapshot(),
        }

    def _run_admitted(self, fn: FunctionSpec, event: Event, inline: bool = False, trace: TraceContext | None = None) -> Invocation | None:
        """One invocation on this thread. `inline`: a try under the slice, whose lines are held until it is
        known to count; None if it hit the slice (nothing of it is logged, counted or reported)."""
        flog = function_logger(fn.name)
        rid = event.config.request_id
        held: list[tuple[int, str]] | None = [] if inline else None
        start_line = f"START RequestId: {rid} Version: {fn.version}"
        # on a guest thread (a run that may be long) START goes out now; an inline try's lines are held
        # until it counts, and then START, END and REPORT go out together when the guest logged nothing
        started = not inline
        if started:
            log_lines(flog, (start_line,))
        # compiling a component takes seconds: on the request path only precompiled artifacts are loaded
        loaded, loaded_now = self.store.load(fn.digest, fn.name, compile_components=False)
        pool = self.pool_of(fn) if fn.reuse_instances else None
        limits = self.inline.slice_of(fn.limits) if inline else fn.limits

        def emit(level: int, message: str) -> None:
            if held is not None:
                held.append((level, message))
            else:
                log_lines(flog, (f"{rid}\t{message}",), log_level(level))

        if not inline:
            self.observer.invocation_started(fn.name)  # sandbox.run returns every invocation error: finished() always follows
        mask = _mask_of(fn)
        kv = KvGrant(self.kv, fn.kv_namespaces, fn.limits.kv_ops, fn.limits.kv_bytes) if fn.kv_namespaces and self.kv is not None else None
        # a component's inline try may wait in the host, out of fuel's and the epoch's reach: how long it blocked
        waits_from = blocking_mark() if inline and loaded.kind == "component" else None
        run = self.sandbox.run(
            loaded,
            function=fn.name,
            request_id=rid,
            event=abi.encode_event(event, loaded.info.encoding),
            limits=limits,
            env=fn.guest_env,
            emit=emit,
            init_duration_ms=loaded.load_ms if loaded_now else None,
            allowed_hosts=fn.allowed_hosts,
            pool=pool,
            # only a guest that may wait on the network (a fetch grant, a kv store) gives its slot back meanwhile
            io_gate=(lambda: self.scheduler.suspend(fn.name), lambda: self.scheduler.resume(fn.name)) if fn.allowed_hosts or fn.kv_namespaces else None,
            kv=kv,
            mask=mask,
            trace=(trace, self.tracer) if trace is not None else None,
        )
        if held is not None:
            if self.inline.missed(fn, limits, run.error, blocked_ms(waits_from) if waits_from is not None else 0.0):
                if pool is not None:
                    pool.discard()
                return None
            self.observer.invocation_started(fn.name)
            if held:
                started = True
                log_lines(flog, (start_line,))
                for level, message in held:
                    log_lines(flog, (f"{rid}\t{message}",), log_level(level))
        else:
            self.inline.learn(fn, loaded.info, run.report)
        run.report.version = fn.version
        if event.config.trace is not None:
            run.report.trace_id = event.config.trace.trace_hex
        self.counts.record(fn.qualified_name, run.report.warm)
        error = run.error
        result: EdgeRequest | EdgeResponse | None = None
        if error is None:
            assert run.result is not None
            try:
                result = abi.decode_result(run.result, event, loaded.info.encoding)
            except abi.GuestFunctionError as exc:
                message = mask(exc.error_message) if mask is not None else exc.error_message  # error pages and logs never show a secret
                if exc.error_type == "OutOfMemory" and (loaded.kind == "component" or run.memory_refused is not None):
                    # the SDK reports that an allocation was refused: a component's memory is not visible to the host
                    # (guest-sdk/ABI.md section 8); a core module's refusal the budget recorded
                    refused = run.memory_refused
                    detail = f": {refused[0]} bytes asked for, {refused[1]} allowed ({exc.error_message})" if refused else f": {exc.error_message}"
                    error = MemoryLimitExceeded(fn.name, rid, fn.limits.memory_mb, detail)
                elif run.report.tmp_refused_bytes is not None:
                    # a write past /tmp's cap was refused (ENOSPC), and the guest then failed: that refusal is the cause
                    error = EphemeralStorageLimitExceeded(fn.name, rid, fn.limits.ephemeral_storage_mb, f" (then: {exc.error_type}: {message})")
                else:
                    error = FunctionError(fn.name, rid, exc.error_type, message)
            except events.ResultError as exc:
                error = InvalidResult(fn.name, rid, str(exc))
            if error is not None:
                run.report.outcome = error.kind
        if pool is not None:
            # back to the pool only after a clean invocation; anything else drops the instance
            if run.instance is not None and error is None:
                pool.give(run.instance)
            else:
                pool.discard()
        self.observer.invocation_finished(fn, run.report, error)
        # one block of lines, written without a LogRecord where only edgefn's handlers listen (core/loglines.py)
        closing = (f"END RequestId: {rid}", run.report.line())
        log_lines(flog, closing if started else (start_line, *closing))
        if error is not None:
            flog.error("%s\t%s", rid, error)
            error.report = run.report
            raise error
        assert result is not None
        return Invocation(result, run.report)

    def close(self) -> None:
        self._threads.shutdown()
        self.pools.close()  # a Store with WASI output callbacks must not outlive the interpreter


class Runtime:
    """Everything a process needs to run guests: the engines (core modules, components), ticker, linker,
    module store and invoker (and the key-value store it is given, which it closes)."""

    def __init__(
        self, store_dir: Path, settings: EngineSettings | None = None, workers: int | None = None, observer: InvocationObserver | None = None,
        kv: KeyValueStore | None = None,
    ) -> None:
        self.settings = settings or EngineSettings()
        self.engine = create_engine(self.settings, "core")
        self.component_engine = create_engine(self.settings, "component")
        self.ticker = EpochTicker([self.engine, self.component_engine], self.settings.epoch_tick_ms)
        self.linker = create_linker(self.engine)
        self.store = ModuleStore(store_dir, self.engine, self.linker, self.settings.fingerprint(), component_engine=self.component_engine)
        self.sandbox = Sandbox(self.engine, self.ticker, self.component_engine)
        self.invoker = Invoker(self.store, self.sandbox, workers, observer, kv)
        self._started = False
        self._lock = threading.Lock()

    def start(self, prepare_fetch: bool = False) -> "Runtime":
        """Start the epoch ticker. `prepare_fetch`: some function may fetch, so make the outbound client now."""
        with self._lock:
            if not self._started:
                self.ticker.start()
                if prepare_fetch:  # its import and TLS setup take tens of ms: beside the start, not in the first fetch
                    threading.Thread(target=shared_client, name="edgefn-fetch-client", daemon=True).start()
                self._started = True
        return self

    def close(self) -> None:
        self.invoker.close()
        self.sandbox.scratch_root.close()
        self.ticker.stop()
        if self.invoker.kv is not None:  # after the guests: none is left to call it
            self.invoker.kv.close()

    def __enter__(self) -> "Runtime":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
