"""`edgefn bench` on a user's app, end to end: real builds, real `edgefn serve` and baseline servers on loopback,
real load generators (the built-in client and wrk), the HTML page rendered by headless Chromium."""

from __future__ import annotations

import json
import shutil
import socket
import struct
import subprocess
import zlib
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO
from tests.conftest import run_edgefn as edgefn

EXAMPLES = REPO / "examples"

MANIFEST = """
[app]
name = "bench-app"

[functions.hello]
source = "src/hello.c"
memory_mb = 16
timeout_ms = 1000
fuel = 50_000_000
env = { GREETING = "Hello" }

[functions.redirect]
source = "src/redirect.c"
memory_mb = 16
timeout_ms = 1000
fuel = 50_000_000

[functions.nightly]
source = "src/hello.c"
memory_mb = 16
timeout_ms = 1000
fuel = 50_000_000
env = { GREETING = "Hello" }

[[behaviors]]
path_pattern = "/old/*"
function = "hello"
viewer_request = { function = "redirect" }

[default_behavior]
function = "hello"

[schedules.nightly]
function = "nightly"
expression = "rate(1 day)"
"""


def _app(root: Path) -> Path:
    (root / "src").mkdir(parents=True)
    shutil.copy(EXAMPLES / "hello" / "src" / "hello.c", root / "src")
    shutil.copy(EXAMPLES / "redirect" / "src" / "redirect.c", root / "src")
    (root / "edgefn.toml").write_text(MANIFEST)
    return root / "edgefn.toml"


def _refused(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(2)
        return s.connect_ex(("127.0.0.1", port)) != 0


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], dict[str, Any], Path]:
    """One `edgefn bench` of the whole app with the built-in load generator, its JSON and HTML written."""
    root = tmp_path_factory.mktemp("bench")
    config = _app(root / "app")
    proc = edgefn(
        "bench", "--config", str(config), "--duration", "1s", "--concurrency", "1,4", "--load-generator", "builtin",
        "--json", str(root / "bench.json"), "--html", str(root / "bench.html"), timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc, json.loads((root / "bench.json").read_text()), root / "bench.html"


def test_every_function_is_measured_cold_and_warm_in_process(run: tuple[subprocess.CompletedProcess[str], dict[str, Any], Path]) -> None:
    proc, doc, _ = run
    assert set(doc["functions"]) == {"hello", "redirect", "nightly"}
    assert doc["functions"]["redirect"]["trigger"] == "viewer-request"
    assert doc["functions"]["hello"]["trigger"] == "origin-request"
    for name, fn in doc["functions"].items():
        assert set(fn["series"]) == {"cold_compile", "cold_artifact", "warm_fresh", "warm_reused"}, (name, fn["skipped"])
        s = {k: v["summary"] for k, v in fn["series"].items()}
        assert all(v["n"] >= 1 and 0 < v["p50"] <= v["p99"] for v in s.values()), s
        # what the figures are for: a compile costs far more than an artifact load, which costs more than a warm call
        assert s["cold_compile"]["p50"] > 3 * s["cold_artifact"]["p50"] > 3 * s["warm_fresh"]["p50"], s
        assert fn["fuel"]["p50"] > 0 and 0 < fn["peak_memory_bytes"] <= fn["memory_mb"] << 20
        assert set(fn["series"]["warm_fresh"]["ladder"]) >= {"0", "50", "99", "100"}
        assert name in proc.stdout
    assert "cold: compile" in proc.stdout and "warm: reused instance" in proc.stdout


def test_over_http_each_route_is_loaded_against_the_baseline(run: tuple[subprocess.CompletedProcess[str], dict[str, Any], Path]) -> None:
    proc, doc, _ = run
    http = doc["http"]
    assert doc["load_generator"] == "builtin"
    paths = {t["path"]: t["functions"] for t in http["targets"]}
    assert paths == {"/old/bench": ["hello", "redirect"], "/": ["hello"]}
    assert doc["no_http"] == {"nightly": "no behavior runs it (schedules, async or API invokes only)"}
    assert http["first_request"]["/"]["status"] == 200 and http["first_request"]["/old/bench"]["status"] == 301
    for key in ("baseline", "/", "/old/bench"):
        for c in ("1", "4"):
            r = http["runs"][key][c]
            assert r["requests"] > 20 and r["rps"] > 0 and r["errors"] == {} and r["non_2xx"] == 0, (key, c, r)
            assert 0 < r["p50_us"] <= r["p99_us"] and r["server_cpu_us_per_request"] > 0 and 0 < r["client_cpu"] < 1.5
            if key != "baseline":
                q = http["ratios"][key][c]
                assert q["rps"] == pytest.approx(r["rps"] / http["runs"]["baseline"][c]["rps"])
                assert q["cpu_per_request"] and q["p50"] and q["p99"]
    assert {"origin", "total"} <= set(http["stages"]["/"]["stages_ms"])
    assert {"viewer-request", "total"} <= set(http["stages"]["/old/bench"]["stages_ms"])
    assert http["stages"]["/old/bench"]["statuses"].keys() == {"301"}
    assert "× baseline" in proc.stdout and "baseline: Starlette hello" in proc.stdout and "Server-Timing" in proc.stdout
    # nothing left running: both servers' ports are closed once the command has returned
    assert _refused(http["ports"]["edgefn"]) and _refused(http["ports"]["baseline"])


def test_wrk_is_used_when_installed(tmp_path: Path) -> None:
    assert shutil.which("wrk"), "wrk is installed by `make test` (make debs)"
    config = _app(tmp_path / "app")
    proc = edgefn("bench", "--config", str(config), "hello", "--no-in-process", "--duration", "1s", "--concurrency", "2", "--json", str(tmp_path / "b.json"), timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads((tmp_path / "b.json").read_text())
    assert doc["load_generator"] == "wrk" and doc["functions"] == {}
    run = doc["http"]["runs"]["/"]["2"]
    assert run["generator"] == "wrk" and run["requests"] > 20 and run["non_2xx"] == 0
    assert [t["path"] for t in doc["http"]["targets"]] == ["/"]


def _png_pixels(data: bytes) -> tuple[int, int, list[bytes]]:
    """Width, height and RGB(A) rows of an 8-bit truecolor PNG (what Chromium's screenshots are)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width = 8, b"", 0
    height = channels = 0
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        chunk = data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, colour = struct.unpack(">IIBB", chunk[:10])
            assert depth == 8 and colour in (2, 6)
            channels = 3 if colour == 2 else 4
        elif kind == b"IDAT":
            idat += chunk
        pos += 12 + length
    raw, stride, rows, prev = zlib.decompress(idat), width * channels, [], bytearray(width * channels)
    for y in range(height):
        f, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - channels] if i >= channels else 0
            b, c = prev[i], prev[i - channels] if i >= channels else 0
            if f == 1:
                line[i] = (line[i] + a) & 255
            elif f == 2:
                line[i] = (line[i] + b) & 255
            elif f == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append(bytes(line))
        prev = line
    return width, height, [bytes(r) for r in rows] if channels == 3 else [bytes(v for i, v in enumerate(r) if i % 4 != 3) for r in rows]


def test_the_html_page_renders_the_functions_and_their_plots_in_chromium(run: tuple[subprocess.CompletedProcess[str], dict[str, Any], Path], tmp_path: Path) -> None:
    _, doc, page = run
    text = page.read_text()
    assert "http://" not in text.replace("http://127.0.0.1", "") and "https://" not in text and "<link" not in text, "one self-contained page"
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "chromium is installed by `make test` (make debs)"
    flags = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run([*flags, "--virtual-time-budget=5000", "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120).stdout
    for name in doc["functions"]:
        assert f'data-function="{name}"' in dom, name
    figures = [f for f in dom.split("<figure")[1:]]
    assert len(figures) == len(doc["functions"]) + len(doc["http"]["targets"])
    assert f'data-plots="{len(figures)}"' in dom, "the page's own check ran after layout"
    for fig in figures:  # each plot's lines were laid out with a real size by the browser
        w, h = (int(v) for v in fig.split('data-drawn="', 1)[1].split('"', 1)[0].split("x"))
        assert w > 50 and h > 50, fig[:200]
    shot = tmp_path / "page.png"
    subprocess.run([*flags, "--window-size=1200,2400", f"--screenshot={shot}", page.as_uri()], capture_output=True, timeout=120)
    width, height, rows = _png_pixels(shot.read_bytes())
    assert (width, height) == (1200, 2400)
    # the series colours of the report (warm fresh instance #2471a3, cold compile #c0392b) are painted
    painted = {colour: sum(row.count(bytes.fromhex(colour)) for row in rows) for colour in ("2471a3", "c0392b")}
    assert all(n > 200 for n in painted.values()), painted


def test_a_mistake_gets_one_line(tmp_path: Path) -> None:
    config = _app(tmp_path / "app")
    for args, fragment in (
        (["nosuch"], "functions.nosuch"), (["--duration", "ten"], "'ten' is not a duration"), (["--concurrency", "1,x"], "not a comma-separated list"),
        (["--concurrency", "0"], "each concurrency is 1..4096"), (["-H", "Authorization"], "is not 'Name: value'"),
    ):
        proc = edgefn("bench", "--config", str(config), *args)
        assert proc.returncode == 2 and fragment in proc.stderr and "Traceback" not in proc.stderr, (args, proc.stderr)
        assert "building" not in proc.stderr, "found before any build"
