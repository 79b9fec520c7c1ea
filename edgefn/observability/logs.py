"""Per-function log streams on disk: a logging handler that writes them, and the reader behind `edgefn logs`.

Layout: LOGS_DIR/<function>/<created>-<pid>.log, one file open per function per server process, so processes
never interleave partial lines. Each line is "<ISO-8601 UTC time>\\t<log line>"; a record's own newlines are
stored as \\r (as Lambda's runtimes do) so one record stays one line. The writing process holds an flock on
its open file: pruning (keep_files, retention_days) only ever deletes files nobody is writing.
"""

from __future__ import annotations

import collections
import fcntl
import json
import logging
import os
import re
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TextIO

from ..core.app import LogSettings
from ..core.exceptions import LogQueryError
from ..core.loglines import LINES, record_lines
from ..manifest.schema import LogConfig

#: parent of every function's logger (edgefn.runtime.invoker.function_logger names edgefn.function.<name>)
STREAMS_LOGGER = "edgefn.function"
_PREFIX = STREAMS_LOGGER + "."
_FUNCTION_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,63}")
_SUFFIX = ".log"

FLUSH_INTERVAL_S = 0.1  # `edgefn logs --follow` sees a line within about this long
PRUNE_INTERVAL_S = 600.0  # retention is enforced this often even for a function whose file never rotates
MAX_PENDING_BYTES = 8 * 1024 * 1024  # a writer this far behind the disk drops lines instead of growing
FOLLOW_POLL_S = 0.2
#: a server process's stderr lines
SERVER_FORMAT = "%(asctime)s %(name)s %(message)s"

internal_log = logging.getLogger("edgefn.logs")  # the sink's own problems: never a function's stream

#: how the terminal shows a server's log, set by the CLI (-q, --log-level, --log-format, --color) and read by
#: every server process it starts
LOG_LEVEL_ENV = "EDGEFN_LOG_LEVEL"
LOG_FORMAT_ENV = "EDGEFN_LOG_FORMAT"
#: "text" (the default: "<time> <logger> <message>") or "json" (one JSON object per line, access log included)
LOG_FORMATS = ("text", "json")
LOG_LEVELS = ("debug", "info", "warning", "error")
#: in `edgefn dev` the terminal shows one line per request (dev/console.py), not these
DEV_QUIET_LOGGERS = ("edgefn.access", "edgefn.control.catalog", "hypercorn.access", "hypercorn.error")


def _platform_line(record: logging.LogRecord) -> bool:
    """A function stream's own START / END / REPORT lines (not the guest's): `edgefn logs` has them."""
    message = record.msg if isinstance(record.msg, str) and not record.args else record.getMessage()
    return message.startswith(("START RequestId:", "END RequestId:"))


class ListenerEchoFilter(logging.Filter):
    """Hypercorn's "Running on ..." once per listener and worker: `serve` has said "listening on" for each."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.levelno < logging.WARNING and isinstance(record.msg, str) and record.msg.startswith("Running on"))


class DevTerminalFilter(logging.Filter):
    """`edgefn dev`'s terminal: warnings and errors, the guest's own log lines and the build's steps; not the
    per-invocation START/END/REPORT and access lines that the one request line replaces."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.WARNING:
            return True
        if record.name in DEV_QUIET_LOGGERS:
            return False
        return not (record.name.startswith(_PREFIX) and _platform_line(record))


_second: tuple[int, str] = (-1, "")


def timestamp(created: float) -> str:
    """Fixed-width UTC time with microseconds: sorts as text in time order."""
    global _second
    whole = int(created)
    micros = round((created - whole) * 1_000_000)  # rounded as datetime.fromtimestamp rounds
    if micros == 1_000_000:
        whole, micros = whole + 1, 0
    cached, text = _second
    if whole != cached:  # strftime once per second, not once per line
        text = datetime.fromtimestamp(whole, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
        _second = (whole, text)
    return f"{text}.{micros:06d}Z"


def logs_dir_of(manifest_path: Path, config: LogConfig) -> Path:
    return (Path(manifest_path).resolve().parent / config.dir).resolve()


# --- writing ------------------------------------------------------------------------------------------


def _is_active(path: Path) -> bool:
    """True while some process holds the writer's lock on `path` (its open log file)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # also releases the probe's lock
    return False


def prune(function_dir: Path, keep_files: int, retention_days: float, now: float | None = None) -> list[Path]:
    """Delete closed files of one stream older than `retention_days` or beyond the newest `keep_files`.

    Returns what was deleted. Files a process is still writing are never touched (nor counted)."""
    now = time.time() if now is None else now
    closed = [p for p in sorted(function_dir.glob(f"*{_SUFFIX}")) if not _is_active(p)]  # names sort by creation
    cutoff = now - retention_days * 86400
    doomed = closed[: max(0, len(closed) - keep_files)]
    for path in closed[len(doomed):]:
        try:
            if path.stat().st_mtime < cutoff:
                doomed.append(path)
        except FileNotFoundError:
            pass
    deleted = []
    for path in doomed:
        try:
            path.unlink()
            deleted.append(path)
        except FileNotFoundError:
            pass
    return deleted


class _StreamFile:
    """The file one process is appending one function's stream to; a new file at each rotation."""

    def __init__(self, directory: Path, max_bytes: int) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self.fd: int | None = None
        self.size = 0

    def _open(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        while True:  # names are unique: two rotations within one microsecond try the next one
            created = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
            try:
                self.fd = os.open(self.directory / f"{created}-{os.getpid()}{_SUFFIX}", os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
                break
            except FileExistsError:
                continue
        fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # marks it active for every process's pruning
        self.size = 0

    def write(self, lines: list[bytes]) -> bool:
        """Append `lines` (each one or more whole lines: a record's), rotating first whenever the next would
        pass max_bytes; True if it rotated."""
        rotated = False
        chunk: list[bytes] = []
        chunk_size = 0
        for line in lines:
            if self.fd is None:
                self._open()
            elif self.size + chunk_size + len(line) > self.max_bytes and self.size + chunk_size > 0:
                self._append(chunk)
                self.close()
                self._open()
                chunk, chunk_size, rotated = [], 0, True
            chunk.append(line)
            chunk_size += len(line)
        self._append(chunk)
        return rotated

    def _append(self, chunk: list[bytes]) -> None:
        if not chunk:
            return
        assert self.fd is not None
        data = b"".join(chunk)
        view = memoryview(data)
        while view:
            view = view[os.write(self.fd, view):]
        self.size += len(data)

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # releases the lock: the file counts as rotated from now on
            self.fd = None


class _SecondFormatter(logging.Formatter):
    """logging's "%(asctime)s" (local time, milliseconds), its strftime done once per second, not per record."""

    _cached: tuple[int, str] = (-1, "")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802 - logging's name
        return self.stamp(record.created, record.msecs)

    def stamp(self, created: float, msecs: float) -> str:
        """The time of a record made at `created` (time.time()) with `msecs` (LogRecord.msecs)."""
        whole = int(created)
        second, text = self._cached
        if whole != second:
            text = time.strftime(self.default_time_format, self.converter(whole))
            self._cached = (whole, text)
        return f"{text},{int(msecs):03d}"  # logging's default_msec_format, "%s,%03d"


class BatchedStreamHandler(logging.Handler):
    """A server's own log (stderr) in batches: one write per request rather than one per record.

    emit() formats and appends. The record that ends a request (its access-log line, on one of `closing`
    loggers) writes the batch at once, so a request's lines are out before its response; a warning or
    error too; whatever else (background work) a writer thread writes every FLUSH_INTERVAL_S. A
    StreamHandler writes and flushes per record: a syscall that hands the GIL to whichever thread wants
    it, for every invocation's START, END and REPORT."""

    def __init__(self, stream: TextIO, fmt: str, closing: tuple[str, ...] = ("edgefn.access", "edgefn.admin"), json_lines: bool = False) -> None:
        super().__init__()
        self.stream = stream
        #: one JSON object per line ({"time", "level", "logger", "message"}; an access record's fields inline)
        self.json_lines = json_lines
        self.closing = frozenset(closing)
        self._time = _SecondFormatter(fmt)
        self.setFormatter(self._time)
        #: the server format is rendered without logging.Formatter (one f-string; ~5 µs less a record)
        self._plain = fmt == SERVER_FORMAT
        self._pending: list[str] = []  # guarded by self.lock
        self._thread = threading.Thread(target=self._run, name="edgefn-stderr-writer", daemon=True)
        self._thread.start()

    @property
    def takes_lines(self) -> bool:
        """The server format in text (core/loglines.py): lines need no record; JSON and other formats do."""
        return self._plain and not self.json_lines and self.formatter is self._time

    def emit_lines(self, logger: str, level: int, created: float, lines: Sequence[str]) -> None:  # with self.lock held
        msecs = int((created - int(created)) * 1000)  # as LogRecord.msecs
        prefix = f"{self._time.stamp(created, msecs)} {logger} "
        self._pending.append(prefix + f"\n{prefix}".join(lines) + "\n")
        self._written_if_due(logger, level)

    def emit(self, record: logging.LogRecord) -> None:  # called with self.lock held
        try:
            if self.json_lines:
                out = "\n".join(json_lines(record))
            elif self._plain and not record.exc_info and not record.stack_info and self.formatter is self._time:
                prefix = f"{self._time.formatTime(record)} {record.name} "
                message = record.getMessage()
                out = prefix + (message.replace("\n", "\n" + prefix) if getattr(record, LINES, False) else message)
            else:
                out = self._formatted(record)
            self._pending.append(out + "\n")
        except Exception:
            self.handleError(record)
            return
        self._written_if_due(record.name, record.levelno)

    def _written_if_due(self, logger: str, level: int) -> None:  # with self.lock held
        """Write the batch now if the last lines end a request, warn, or the batch is large."""
        if logger in self.closing or level >= logging.WARNING or len(self._pending) > 4096:
            self._write()

    def _formatted(self, record: logging.LogRecord) -> str:
        out = self.format(record)
        if getattr(record, LINES, False):  # several lines in one record: each with the record's prefix
            message = record.getMessage()
            prefix = out[: len(out) - len(message)] if out.endswith(message) else ""
            out = "\n".join(prefix + text for text in record_lines(record))
        return out

    def _write(self) -> None:  # with self.lock held
        pending, self._pending = self._pending, []
        if pending:
            try:
                self.stream.write("".join(pending))
                self.stream.flush()
            except (OSError, ValueError):  # stderr closed or gone: nobody is left to tell
                pass

    def _run(self) -> None:
        while True:
            time.sleep(FLUSH_INTERVAL_S)
            self.flush()

    def flush(self) -> None:
        """Write what is buffered (logging.shutdown calls this at exit, so nothing is lost on a clean stop)."""
        self.acquire()
        try:
            self._write()
        finally:
            self.release()


def json_lines(record: logging.LogRecord) -> list[str]:
    """A record as JSON lines, one per line it holds: time (UTC, ISO 8601), level, logger, message; an
    access-log record (its message a JSON object) has its fields in place of "message"."""
    head = {
        "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "level": record.levelname.lower(),
        "logger": record.name,
    }
    out = []
    for line in record_lines(record):
        fields: object = None
        if line.startswith("{"):
            try:
                fields = json.loads(line)
            except ValueError:
                fields = None
        doc = {**head, **fields} if isinstance(fields, dict) else {**head, "message": line}
        if record.exc_info and record.exc_info[0] is not None:
            doc["exception"] = logging.Formatter().formatException(record.exc_info)
        out.append(json.dumps(doc, ensure_ascii=False))
    return out


class JsonLinesFormatter(logging.Formatter):
    """`--log-format json`: a record as its JSON lines (json_lines)."""

    def format(self, record: logging.LogRecord) -> str:
        return "\n".join(json_lines(record))


def configure_server_logging(fmt: str = SERVER_FORMAT, dev: bool = False) -> None:
    """The root logger of a server process: to stderr, in batches (once per process), at the level and in the
    format the CLI asked for ($EDGEFN_LOG_LEVEL, $EDGEFN_LOG_FORMAT; INFO and text by default). `dev`: the
    terminal of `edgefn dev` (DevTerminalFilter)."""
    # what no edgefn format shows is not gathered per record (the logging HOWTO's "Optimization"): the
    # caller's frame, thread, process and task names
    logging._srcfile = None  # the documented switch has no public name
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    logging.logAsyncioTasks = False  # type: ignore[attr-defined]  # Python 3.12+; harmless before
    name = os.environ.get(LOG_LEVEL_ENV, "info")
    level = logging.getLevelName(name.upper()) if name in LOG_LEVELS else logging.INFO
    root = logging.getLogger()
    if not any(isinstance(h, BatchedStreamHandler) for h in root.handlers):
        handler = BatchedStreamHandler(sys.stderr, fmt, json_lines=os.environ.get(LOG_FORMAT_ENV) == "json")
        handler.setLevel(level)  # the terminal's level; function streams (`edgefn logs`) keep every INFO line
        if dev:
            handler.addFilter(DevTerminalFilter())
        logging.getLogger("hypercorn.error").addFilter(ListenerEchoFilter())
        root.addHandler(handler)
    root.setLevel(min(level, logging.INFO))


class FunctionLogSink(logging.Handler):
    """Writes every function's log stream to LOGS_DIR/<function>/, off the calling thread.

    emit() only formats the line and appends it to a buffer; a writer thread flushes the buffers every
    FLUSH_INTERVAL_S (sooner when they grow), rotates at max_file_bytes and prunes each stream.
    """

    def __init__(self, root: Path, max_file_bytes: int, keep_files: int, retention_days: float) -> None:
        super().__init__()
        self.root = Path(root)
        self.max_file_bytes = max_file_bytes
        self.keep_files = keep_files
        self.retention_days = retention_days
        self.setFormatter(logging.Formatter("%(message)s"))
        self._pending: dict[str, list[bytes]] = collections.defaultdict(list)  # guarded by self.lock
        self._pending_bytes = 0
        #: logger name -> the function whose stream it writes ("" for none); filled as loggers log
        self._streams: dict[str, str] = {}
        self._dropped: collections.Counter[str] = collections.Counter()
        self._files: dict[str, _StreamFile] = {}
        self._io_lock = threading.Lock()  # one flush at a time (writer thread, close)
        self._wake = threading.Event()
        self._stopping = False
        self._failed = False
        self._thread: threading.Thread | None = None

    @classmethod
    def from_settings(cls, settings: LogSettings) -> "FunctionLogSink":
        return cls(settings.dir, settings.max_file_bytes, settings.keep_files, settings.retention_days)

    # --- lifecycle ------------------------------------------------------------------------------------

    def start(self) -> "FunctionLogSink":
        """Prune what earlier runs left, start the writer thread and receive every function's records.

        An unwritable directory does not stop the server: the problem is logged and writes are retried."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            internal_log.error("cannot create the log directory %s (logs.dir): %s", self.root, exc)
        self.prune_all()
        self._thread = threading.Thread(target=self._run, name="edgefn-log-writer", daemon=True)
        self._thread.start()
        logging.getLogger(STREAMS_LOGGER).addHandler(self)
        return self

    def close(self) -> None:
        logging.getLogger(STREAMS_LOGGER).removeHandler(self)
        if self._thread is not None and not self._stopping:
            self._stopping = True
            self._wake.set()
            self._thread.join(timeout=10)
        self.flush()
        with self._io_lock:
            for stream in self._files.values():
                stream.close()
            self._files.clear()
        super().close()

    # --- the calling thread -----------------------------------------------------------------------------

    #: the lines of a function's stream need no record (core/loglines.py)
    takes_lines = True

    def emit(self, record: logging.LogRecord) -> None:  # called with self.lock held (Handler.handle)
        try:
            texts = record_lines(record)
        except Exception:
            self.handleError(record)
            return
        self._append(record.name, record.created, texts)

    def emit_lines(self, logger: str, level: int, created: float, lines: Sequence[str]) -> None:  # with self.lock held
        self._append(logger, created, lines)

    def _append(self, logger: str, created: float, texts: Sequence[str]) -> None:
        function = self._streams.get(logger)
        if function is None:  # a logger's stream is looked up once, not per line
            function = logger[len(_PREFIX):] if logger.startswith(_PREFIX) else ""
            function = self._streams[logger] = function if _FUNCTION_NAME.fullmatch(function) else ""
        if not function or not texts:
            return
        when = timestamp(created)
        # a record's lines (an invocation's START, END and REPORT) are one block, each line prefixed; a newline
        # inside a line becomes a CR (one line per entry in the file)
        block = "\n".join(texts)
        if block.count("\n") != len(texts) - 1:
            block = "\n".join(text.replace("\n", "\r") for text in texts)
        data = (f"{when}\t" + block.replace("\n", f"\n{when}\t") + "\n").encode("utf-8", "replace")
        if self._pending_bytes + len(data) > MAX_PENDING_BYTES:
            self._dropped[function] += len(texts)
        else:
            self._pending[function].append(data)
            self._pending_bytes += len(data)
        if self._pending_bytes > MAX_PENDING_BYTES // 8:
            self._wake.set()

    # --- the writer thread -------------------------------------------------------------------------------

    def _run(self) -> None:
        last_prune = time.monotonic()
        while not self._stopping:
            self._wake.wait(FLUSH_INTERVAL_S)
            self._wake.clear()
            self.flush(wait_s=0.25)
            if time.monotonic() - last_prune > PRUNE_INTERVAL_S:
                self.prune_all()
                last_prune = time.monotonic()

    def flush(self, wait_s: float = -1) -> None:
        """Write everything buffered so far to disk (the writer thread does this every FLUSH_INTERVAL_S).

        `wait_s`: give up after that long waiting for the handler's lock. The writer thread does, because
        logging.shutdown closes handlers with their lock held, and close() waits for the writer thread."""
        with self._io_lock:
            assert self.lock is not None
            if not self.lock.acquire(timeout=wait_s):
                return
            try:
                pending, self._pending = self._pending, collections.defaultdict(list)
                dropped, self._dropped = self._dropped, collections.Counter()
                self._pending_bytes = 0
            finally:
                self.release()
            for function, count in dropped.items():
                note = f"edgefn: dropped {count} log lines of this function (the log writer fell behind the disk)"
                pending[function].append(f"{timestamp(time.time())}\t{note}\n".encode())
            for function, lines in pending.items():
                self._write(function, lines)

    def _write(self, function: str, lines: list[bytes]) -> None:
        stream = self._files.get(function)
        if stream is None:
            stream = self._files[function] = _StreamFile(self.root / function, self.max_file_bytes)
        try:
            rotated = stream.write(lines)
            self._failed = False
        except OSError as exc:
            stream.close()  # the next flush opens a fresh file (the directory may have been removed)
            if not self._failed:  # once per outage, not once per flush
                internal_log.error("cannot write the log stream of %r under %s: %s", function, self.root, exc)
            self._failed = True
            return
        if rotated:
            self._prune(self.root / function)

    def prune_all(self) -> None:
        try:
            directories = [d for d in self.root.iterdir() if d.is_dir()]
        except OSError:
            return  # no directory (yet): nothing to prune
        for directory in directories:
            self._prune(directory)

    def _prune(self, directory: Path) -> None:
        try:
            prune(directory, self.keep_files, self.retention_days)
        except OSError as exc:
            internal_log.error("cannot prune the log stream in %s: %s", directory, exc)


# --- reading ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LogLine:
    time: str  # ISO-8601 UTC, fixed width: compares in time order
    text: str

    def render(self) -> str:
        return f"{self.time}\t{self.text.replace(chr(13), chr(10))}"


_DURATION = re.compile(r"(\d+)\s*(s|m|h|d)")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """`10m`, `1h`, `30s`, `2d` (that long ago) or an ISO-8601 time (UTC unless it names an offset)."""
    now = now or datetime.now(timezone.utc)
    found = _DURATION.fullmatch(text.strip())
    if found:
        return now - timedelta(seconds=int(found.group(1)) * _UNITS[found.group(2)])
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise LogQueryError(f"--since {text!r}: give a duration such as 30s, 10m, 1h or 2d, or an ISO-8601 time such as 2025-01-31T12:00:00Z") from None
    return when.replace(tzinfo=timezone.utc) if when.tzinfo is None else when.astimezone(timezone.utc)


def functions_with_logs(root: Path) -> list[str]:
    if not root.is_dir():
        return []
    return sorted(d.name for d in root.iterdir() if d.is_dir() and any(d.glob(f"*{_SUFFIX}")))


class StreamReader:
    """Reads one function's stream across all its files (every process, every rotation), new lines only.

    Files are never renamed, so a file's name identifies it; each read returns the complete lines written
    since the previous read, merged in time order."""

    def __init__(self, function_dir: Path, since: datetime | None = None) -> None:
        self.directory = function_dir
        self.since = timestamp(since.timestamp()) if since is not None else ""
        self._offsets: dict[str, int] = {}

    def read_new(self) -> list[LogLine]:
        lines: list[LogLine] = []
        present = set()
        for path in sorted(self.directory.glob(f"*{_SUFFIX}")):
            present.add(path.name)
            offset = self._offsets.get(path.name, 0)
            try:
                with open(path, "rb") as f:
                    f.seek(offset)
                    data = f.read()
            except FileNotFoundError:  # pruned between the listing and the read
                continue
            complete = data.rfind(b"\n") + 1  # a line still being written waits for the next read
            self._offsets[path.name] = offset + complete
            for raw in data[:complete].split(b"\n")[:-1]:  # not splitlines(): \r inside a record is not an end
                when, tab, text = raw.decode("utf-8", "replace").partition("\t")
                if tab and when >= self.since:
                    lines.append(LogLine(when, text))
        for gone in set(self._offsets) - present:
            del self._offsets[gone]
        lines.sort(key=lambda line: line.time)  # stable: one process's lines keep their order
        return lines


def print_logs(root: Path, function: str, known: set[str], out: TextIO, since: datetime | None = None, follow: bool = False) -> int:
    """`edgefn logs`: the stream of `function` merged in time order; with `follow`, new lines until Ctrl-C.

    `known` are the functions the app defines: one of them without logs yet is not an error."""
    available = functions_with_logs(root)
    if function not in available and function not in known:
        listing = ", ".join(available) if available else f"none yet (serve the app, send it requests; streams go to {root})"
        raise LogQueryError(f"no logs for function {function!r} in {root}; functions with logs: {listing}")
    reader = StreamReader(root / function, since)
    try:
        while True:
            for line in reader.read_new():
                out.write(line.render() + "\n")
            out.flush()
            if not follow:
                return 0
            time.sleep(FOLLOW_POLL_S)
    except KeyboardInterrupt:
        return 0
    except BrokenPipeError:  # `edgefn logs f | head`: stop quietly, also at interpreter exit
        if out is sys.stdout:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
