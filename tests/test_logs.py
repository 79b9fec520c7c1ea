"""Per-function log streams: a real server writes them, `edgefn logs` (a subprocess) reads them back;
rotation, retention and following across a rotation with the sink in process."""

from __future__ import annotations

import io
import logging
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import httpx
import pytest

from edgefn.core.exceptions import LogQueryError
from edgefn.core.loglines import log_lines
from edgefn.observability.logs import SERVER_FORMAT, STREAMS_LOGGER, BatchedStreamHandler, FunctionLogSink, StreamReader, parse_since, prune
from tests.servers import REPO, edge_server

LOGGER_C = REPO / "tests" / "guests" / "c" / "logger.c"
TRAP_C = REPO / "tests" / "guests" / "c" / "trap.c"


def edgefn(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edgefn.cli", *args], capture_output=True, text=True, cwd=REPO, timeout=timeout)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """Two server processes writing the streams of `logger` and `crash` under <app>/logs."""
    app = tmp_path_factory.mktemp("logs-app")
    config = app / "edgefn.toml"
    config.write_text(
        f'[app]\nname = "logs"\n\n[logs]\ndir = "logs"\n\n'
        f'[functions.logger]\nsource = "{LOGGER_C}"\n\n[functions.crash]\nsource = "{TRAP_C}"\n\n'
        '[[behaviors]]\npath_pattern = "/crash/*"\nfunction = "crash"\n\n'
        '[default_behavior]\nfunction = "logger"\n'
    )
    with edge_server(config, "--workers", "2", tls=False) as server:
        yield server, config


def request_ids(base: str, path: str, n: int) -> list[str]:
    with httpx.Client(base_url=base, timeout=30) as client:
        return [client.get(path).headers["x-edgefn-request-id"] for _ in range(n)]


def logs_until(config: Path, function: str, wanted: list[str], *extra: str) -> str:
    """`edgefn logs` output once every string in `wanted` is in it (lines reach the disk within ~100 ms)."""
    deadline = time.monotonic() + 10
    while True:
        proc = edgefn("logs", function, "--config", str(config), *extra)
        assert proc.returncode == 0, proc.stderr
        if all(w in proc.stdout for w in wanted) or time.monotonic() > deadline:
            return proc.stdout
        time.sleep(0.2)


def test_logs_shows_start_end_report_and_the_guests_own_lines(served):
    server, config = served
    rids = request_ids(server.base, "/hello", 4)
    out = logs_until(config, "logger", [f"REPORT RequestId: {rid}" for rid in rids])
    lines = out.splitlines()
    for rid in rids:
        mine = [line.split("\t", 1)[1] for line in lines if rid in line]
        assert mine[0] == f"START RequestId: {rid} Version: $LATEST"
        assert f"{rid}\tlogger: info line" in mine and f"{rid}\tlogger: error line" in mine
        assert mine[-2] == f"END RequestId: {rid}"
        report = mine[-1].split("\t")
        assert report[0] == f"REPORT RequestId: {rid}" and report[-1] == "Outcome: ok"
        assert any(part.startswith("Fuel Used: ") for part in report)
    stamps = [line.split("\t", 1)[0] for line in lines]
    assert stamps == sorted(stamps)  # merged across both processes' files in time order
    assert all(datetime.fromisoformat(s).tzinfo == timezone.utc for s in stamps)
    files = list((config.parent / "logs" / "logger").glob("*.log"))
    assert files and all(f.stem.rsplit("-", 1)[1].isdigit() for f in files)  # named by the writing process id


def test_a_failed_invocation_logs_its_error_and_outcome(served):
    server, config = served
    [rid] = request_ids(server.base, "/crash/x", 1)
    out = logs_until(config, "crash", [f"REPORT RequestId: {rid}"])
    mine = [line.split("\t", 1)[1] for line in out.splitlines() if rid in line]
    assert mine[0].startswith(f"START RequestId: {rid}")
    assert any(line.startswith(f"REPORT RequestId: {rid}") and line.endswith("\tOutcome: trap") for line in mine)
    assert any(line.startswith(f"{rid}\ttrap: function 'crash', request {rid}: trapped") for line in mine)


def test_since_filters_by_time(served):
    server, config = served
    [before] = request_ids(server.base, "/before", 1)
    logs_until(config, "logger", [f"REPORT RequestId: {before}"])
    cut = datetime.now(timezone.utc)
    [after] = request_ids(server.base, "/after", 1)
    out = logs_until(config, "logger", [f"REPORT RequestId: {after}"], "--since", cut.isoformat())
    assert f"START RequestId: {after}" in out and before not in out
    recent = edgefn("logs", "logger", "--config", str(config), "--since", "10m").stdout
    assert before in recent and after in recent
    future = edgefn("logs", "logger", "--config", str(config), "--since", "2999-01-01T00:00:00Z")
    assert future.returncode == 0 and future.stdout == ""


def test_follow_prints_a_new_requests_lines(served):
    server, config = served
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgefn.cli", "logs", "logger", "--follow", "--config", str(config)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
    )
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True).start()  # type: ignore[union-attr]
    try:
        [rid] = request_ids(server.base, "/followed", 1)
        seen: list[str] = []
        deadline = time.monotonic() + 15
        while not any(f"REPORT RequestId: {rid}" in line for line in seen) and time.monotonic() < deadline:
            try:
                seen.append(lines.get(timeout=0.5))
            except queue.Empty:
                pass
        assert any(f"START RequestId: {rid}" in line for line in seen), seen[-5:]
        assert any(f"REPORT RequestId: {rid}" in line for line in seen)
    finally:
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        code = proc.wait(timeout=10)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
        assert code == 0


def test_unknown_function_lists_the_ones_with_logs(served):
    _, config = served
    request_ids(served[0].base, "/", 1)
    proc = edgefn("logs", "nope", "--config", str(config))
    assert proc.returncode == 2
    assert "no logs for function 'nope'" in proc.stderr and "logger" in proc.stderr
    bad = edgefn("logs", "logger", "--config", str(config), "--since", "yesterday")
    assert bad.returncode == 2 and "--since 'yesterday'" in bad.stderr


# --- the sink in process ------------------------------------------------------------------------------


@pytest.fixture
def function_log():
    """A function logger that passes INFO (the server sets this up through logging.basicConfig)."""
    created: list[logging.Logger] = []

    def make(name: str) -> logging.Logger:
        logger = logging.getLogger(f"edgefn.function.{name}")
        logger.setLevel(logging.INFO)
        created.append(logger)
        return logger

    yield make
    for logger in created:
        logger.setLevel(logging.NOTSET)


def test_rotation_keeps_files_under_the_size_and_count_bounds(tmp_path, function_log):
    sink = FunctionLogSink(tmp_path, max_file_bytes=4096, keep_files=3, retention_days=7).start()
    log = function_log("rot")
    try:
        for i in range(2000):
            log.info("req-%d\tline number %05d", i, i)
            if i % 100 == 99:
                sink.flush()  # as the writer thread does every 100 ms
    finally:
        sink.close()
    files = sorted((tmp_path / "rot").glob("*.log"))
    assert len(files) <= 3 + 1  # keep_files rotated plus the one open at the last rotation
    assert all(f.stat().st_size <= 4096 for f in files)
    kept = StreamReader(tmp_path / "rot").read_new()
    numbers = [int(line.text.rsplit(" ", 1)[1]) for line in kept]
    assert numbers == list(range(numbers[0], 2000))  # the newest lines, none missing, in order
    assert numbers[0] > 0  # older files were deleted


def test_retention_deletes_old_closed_files_but_never_an_open_one(tmp_path, function_log):
    old = time.time() - 8 * 86400
    writer = FunctionLogSink(tmp_path, max_file_bytes=1 << 20, keep_files=5, retention_days=7).start()
    log = function_log("ret")
    log.info("req-1\tfirst")
    writer.flush()
    [active] = (tmp_path / "ret").glob("*.log")
    os.utime(active, (old, old))
    assert prune(tmp_path / "ret", keep_files=0, retention_days=7) == []  # another process is writing it
    writer.close()
    assert prune(tmp_path / "ret", keep_files=5, retention_days=7) == [active]

    stale = tmp_path / "ret" / "20000101T000000.000000Z-1.log"
    stale.write_text("2000-01-01T00:00:00.000000Z\told\n")
    os.utime(stale, (old, old))
    FunctionLogSink(tmp_path, max_file_bytes=1 << 20, keep_files=5, retention_days=7).start().close()  # prunes at start
    assert not stale.exists()


def test_reader_follows_across_a_rotation_without_losing_or_repeating_lines(tmp_path, function_log):
    sink = FunctionLogSink(tmp_path, max_file_bytes=4096, keep_files=50, retention_days=7).start()
    log = function_log("fol")
    reader = StreamReader(tmp_path / "fol")
    seen: list[str] = []
    try:
        for batch in range(5):
            for i in range(40):
                log.info("req\tmessage %d-%02d\nsecond line", batch, i)
            sink.flush()
            seen += [line.text for line in reader.read_new()]
    finally:
        sink.close()
    assert len(list((tmp_path / "fol").glob("*.log"))) > 2  # it did rotate
    assert seen == [f"req\tmessage {b}-{i:02d}\rsecond line" for b in range(5) for i in range(40)]
    assert StreamReader(tmp_path / "fol").read_new()[0].render().endswith("message 0-00\nsecond line")


@pytest.fixture
def isolated_streams(tmp_path):
    """A function logger with nothing but edgefn's handlers on its route (the sink and a stderr-like writer
    on a StringIO): a logger outside logging's tree, so pytest's capture handlers are not on it."""
    out = io.StringIO()
    stderr = BatchedStreamHandler(out, SERVER_FORMAT)
    sink = FunctionLogSink(tmp_path, max_file_bytes=1 << 20, keep_files=5, retention_days=7).start()
    logger = logging.Logger(f"{STREAMS_LOGGER}.direct", logging.INFO)
    logger.addHandler(sink)
    logger.addHandler(stderr)
    try:
        yield logger, stderr, sink, out
    finally:
        stderr.close()
        sink.close()


def counting_records():
    """A list that grows by one for every LogRecord made until the returned restore() is called."""
    made: list[logging.LogRecord] = []
    factory = logging.getLogRecordFactory()

    def count(*args, **kwargs):
        record = factory(*args, **kwargs)
        made.append(record)
        return record

    logging.setLogRecordFactory(count)
    return made, lambda: logging.setLogRecordFactory(factory)


def untimed(text: str) -> list[str]:
    """Log output without its timestamps (the two paths log at different instants)."""
    return [re.sub(r"^\S+ \S+(?= edgefn)|^\S+\t", "", line) for line in text.splitlines()]


LINES = ("START RequestId: r-1 Version: 1", "END RequestId: r-1", "REPORT RequestId: r-1\tDuration: 0.10 ms")


def test_log_lines_reach_edgefns_handlers_without_a_record_and_write_what_a_record_would(tmp_path, isolated_streams):
    logger, stderr, sink, out = isolated_streams
    made, restore = counting_records()
    try:
        log_lines(logger, LINES)
        log_lines(logger, ("debug only",), logging.DEBUG)  # below the logger's level: nothing at all
    finally:
        restore()
    assert made == []
    stderr.flush()
    sink.flush()
    direct_err = out.getvalue()
    [stream] = (tmp_path / "direct").glob("*.log")
    direct_file = stream.read_text()

    keep = logging.Filter()  # passes everything, but a filter on the route needs a record
    stderr.addFilter(keep)
    made, restore = counting_records()
    try:
        log_lines(logger, LINES)
    finally:
        restore()
        stderr.removeFilter(keep)
    assert len(made) == 1  # the three lines as one record
    stderr.flush()
    sink.flush()
    both_err = out.getvalue()
    both_file = stream.read_text()
    assert untimed(direct_err) == [f" edgefn.function.direct {line}" for line in LINES]
    assert untimed(both_err[len(direct_err):]) == untimed(direct_err)
    assert untimed(direct_file) == list(LINES)
    assert untimed(both_file[len(direct_file):]) == untimed(direct_file)
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}", direct_err.split(" edgefn")[0])


def test_log_lines_fall_back_to_one_record_when_a_handler_on_the_route_needs_it(isolated_streams):
    logger, stderr, sink, out = isolated_streams
    seen: list[logging.LogRecord] = []

    class Theirs(logging.Handler):  # a handler of the user's: it is given the record, as before
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record)

    logger.addHandler(Theirs())
    log_lines(logger, LINES)
    log_lines(logger, ("one line",))
    assert [r.getMessage() for r in seen] == ["\n".join(LINES), "one line"]
    stderr.flush()
    assert untimed(out.getvalue()) == [f" edgefn.function.direct {line}" for line in (*LINES, "one line")]


def test_since_accepts_durations_and_iso_times():
    now = datetime(2025, 1, 31, 12, 0, tzinfo=timezone.utc)
    assert parse_since("10m", now) == datetime(2025, 1, 31, 11, 50, tzinfo=timezone.utc)
    assert parse_since("1h", now) == datetime(2025, 1, 31, 11, 0, tzinfo=timezone.utc)
    assert parse_since("2d", now) == datetime(2025, 1, 29, 12, 0, tzinfo=timezone.utc)
    assert parse_since("2025-01-31T10:00:00Z") == datetime(2025, 1, 31, 10, 0, tzinfo=timezone.utc)
    assert parse_since("2025-01-31T12:00:00+02:00") == datetime(2025, 1, 31, 10, 0, tzinfo=timezone.utc)
    assert parse_since("2025-01-31T10:00:00") == datetime(2025, 1, 31, 10, 0, tzinfo=timezone.utc)
    with pytest.raises(LogQueryError, match="30s, 10m, 1h or 2d"):
        parse_since("soon")
