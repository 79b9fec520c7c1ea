"""Results → bench/results/bench.md (tables), the target verdicts, and PNG plots."""

from __future__ import annotations

from pathlib import Path

from common import RESULTS
from throughput import EDGEFN_ROWS, cpu_per_request_us

#: issue 14's targets: key -> (label, goal, unit, "le"/"ge"; goal None = measured, no goal)
TARGETS_SPEC = {
    "t1_hello_rps_c1": ("1. C hello as origin, fresh instance: req/s / Starlette on Hypercorn, c=1", 0.75, "×", "ge"),
    "t1_hello_rps_c32": ("1. the same, c=32", 0.75, "×", "ge"),
    "t1_hello_cpu_c32": ("1. the same: server CPU per request / the baseline's, c=32", 1.35, "×", "le"),
    "t2_warm_rps": ("2. C hello, reuse_instances = true: req/s / baseline (the lower of c=1, c=32)", 0.85, "×", "ge"),
    "t2_cached_rps": ("2. a cache hit (no function): req/s / baseline (the lower of c=1, c=32)", 0.92, "×", "ge"),
    "t3_per_hook_cpu_us": ("3. server CPU each pass-through hook adds (4 hooks, c=32)", 60.0, "µs", "le"),
    "t4_python_warm_rps": ("4. Python origin, reuse_instances = true: req/s / baseline (the lower of c=1, c=32)", 0.5, "×", "ge"),
    "t4_python_fresh_rps": ("4. Python origin, fresh instance: req/s / baseline, c=32 (measured)", None, "×", "ge"),
    "t5_fresh_small_us": ("5. in process: fresh Store + instantiate + one invocation, C hello (p50)", 60.0, "µs", "le"),
    "t5_fresh_floor_us": ("5. the same, the no-import floor guest (p50)", 40.0, "µs", "le"),
    "t5_warm_small_us": ("5. a warm pooled invocation, C hello (p50)", 20.0, "µs", "le"),
    "t5_raw_small_us": ("5. the fresh-instance steps as raw C-API calls from Python through ctypes (bench/fastpath.RawFresh; edgefn makes them in C), C hello (p50, measured)", None, "µs", "le"),
    "t6_restart_ratio": ("6. restart, warm store -> first 200 / Starlette-on-Hypercorn start -> first 200 (medians)", 1.3, "×", "le"),
    "t7_workers_scaling": ("7. --workers 2 / --workers 1, edgefn hello (servers unpinned, c=64)", 1.85, "×", "ge"),
    "t1u_hello_rps_c1": ("1. (uvicorn listener) C hello, fresh instance: req/s / Starlette on Hypercorn, c=1", 0.75, "×", "ge"),
    "t1u_hello_rps_c32": ("1. (uvicorn listener) the same, c=32", 0.75, "×", "ge"),
    "t1u_hello_cpu_c32": ("1. (uvicorn listener) server CPU per request / the baseline's, c=32", 1.35, "×", "le"),
    "t2u_warm_rps": ("2. (uvicorn listener) C hello, reuse_instances = true (the lower of c=1, c=32)", 0.85, "×", "ge"),
    "t2u_cached_rps": ("2. (uvicorn listener) a cache hit (the lower of c=1, c=32)", 0.92, "×", "ge"),
    "t3u_per_hook_cpu_us": ("3. (uvicorn listener) server CPU each pass-through hook adds (c=32)", 60.0, "µs", "le"),
    "t4u_python_warm_rps": ("4. (uvicorn listener) Python origin, reuse_instances = true (the lower of c=1, c=32)", 0.5, "×", "ge"),
    "t8_p99_over_p50": ("8. the worst p99 / p50 of any edgefn row at c=32", 3.0, "×", "le"),
    "t8_failed": ("8. failed requests over every edgefn row", 0.0, "", "le"),
}



def verdicts(res: dict) -> dict:
    from statistics import median

    v: dict = {}
    micro = res.get("micro", {}).get("guests", {})
    if micro:
        small, floor = micro["small"], micro["floor"]
        v["t5_fresh_small_us"] = small["fresh_instance_sandbox"]["p50"]
        v["t5_fresh_floor_us"] = floor["fresh_instance_sandbox"]["p50"]
        if "warm_instance_sandbox" in small:
            v["t5_warm_small_us"] = small["warm_instance_sandbox"]["p50"]
        if "fresh_instance_raw_floor" in small:
            v["t5_raw_small_us"] = small["fresh_instance_raw_floor"]["p50"]
    tp = res.get("throughput")
    if tp:
        r = tp["ratios"]

        def rps(key: str, cs: tuple[str, ...] = ("1", "32")) -> float | None:
            got = [r[key]["starlette_hypercorn"][c]["rps_ratio"] for c in cs if c in r.get(key, {}).get("starlette_hypercorn", {})]
            return min(got) if got else None

        best = {k: t["best"] for k, t in tp["targets"].items()}
        for tag, pre in (("", "edgefn_"), ("u", "edgefn_uv_")):
            if f"{pre}hello" not in r:
                continue
            v[f"t1{tag}_hello_rps_c1"] = rps(f"{pre}hello", ("1",))
            v[f"t1{tag}_hello_rps_c32"] = rps(f"{pre}hello", ("32",))
            v[f"t1{tag}_hello_cpu_c32"] = r[f"{pre}hello"]["starlette_hypercorn"]["32"]["cpu_per_request_ratio"]
            v[f"t2{tag}_warm_rps"] = rps(f"{pre}warm")
            v[f"t2{tag}_cached_rps"] = rps(f"{pre}cached")
            if "32" in best.get(f"{pre}hooks", {}) and "32" in best.get(f"{pre}hello", {}):
                v[f"t3{tag}_per_hook_cpu_us"] = (cpu_per_request_us(best[f"{pre}hooks"]["32"]) - cpu_per_request_us(best[f"{pre}hello"]["32"])) / 4
        v["t4_python_warm_rps"] = rps("edgefn_py_warm")
        v["t4_python_fresh_rps"] = rps("edgefn_py_fresh", ("32",))
        v["t4u_python_warm_rps"] = rps("edgefn_uv_py_warm")
        rows = [best[k]["32"] for k in EDGEFN_ROWS if "32" in best.get(k, {})]
        v["t8_p99_over_p50"] = max(x["p99_us"] / x["p50_us"] for x in rows)
        v["t8_failed"] = float(sum(run["failed"] for k in EDGEFN_ROWS for runs in tp["targets"].get(k, {}).get("runs", {}).values() for run in runs))
    cw = res.get("coldwarm", {})
    if cw.get("restart_first_200_s") and cw.get("baseline_first_200_s"):
        v["t6_restart_ratio"] = median(cw["restart_first_200_s"]) / median(cw["baseline_first_200_s"])
    workers = res.get("resources", {}).get("workers", {})
    if "scaling" in workers:
        v["t7_workers_scaling"] = workers["scaling"]["edgefn"]
    out = {}
    for key, value in v.items():
        if value is None:
            continue
        label, target, unit, op = TARGETS_SPEC[key]
        if target is None:
            out[key] = {"label": label, "value": value, "target": None, "unit": unit, "op": op, "met": None, "off_by": None}
            continue
        met = value <= target if op == "le" else value >= target
        factor = (value / target if target else float("inf") if value else 1.0) if op == "le" else target / value
        out[key] = {"label": label, "value": value, "target": target, "unit": unit, "op": op, "met": met, "off_by": factor}
    return out


def vs_peers(res: dict) -> list[str]:
    """Target 9: each edgefn row over uvicorn + httptools + uvloop serving the same hello, and over `wasmtime serve`
    running a WAT wasi:http component with a fresh instance per request (c=32)."""
    tp = res.get("throughput")
    if not tp:
        return []
    peer = tp.get("wasmtime_serve", {})
    missing = f"not measured: {peer['unavailable']}" if "unavailable" in peer else "not measured"
    lines = ["## Against the faster peers (target 9), c=32", "",
             f"`wasmtime serve`: {peer.get('version', missing)}, bench/guests/wasi_http_hello.wat made a component by wasm-tools "
             "(bench/wasmtime_serve.py), a new instance per request, on the same pinned core.", "",
             "| edgefn row | req/s / Starlette on uvicorn+httptools+uvloop | CPU per request / that baseline's | req/s / `wasmtime serve` | CPU per request / `wasmtime serve`'s |",
             "|---|---:|---:|---:|---:|"]
    for key in EDGEFN_ROWS:
        x = tp["ratios"].get(key, {}).get("starlette_uvicorn", {}).get("32")
        w = tp["ratios"].get(key, {}).get("wasmtime_serve", {}).get("32")
        if x:
            native = f"{w['rps_ratio']:.2f} | {w['cpu_per_request_ratio']:.2f}" if w else f"{missing} | –"
            lines.append(f"| {tp['targets'][key]['label']} | {x['rps_ratio']:.2f} | {x['cpu_per_request_ratio']:.2f} | {native} |")
    return lines + [""]


def _f(x: float, digits: int = 1) -> str:
    if x is None:
        return "–"
    if abs(x) >= 10000:
        return f"{x:,.0f}"
    return f"{x:,.{digits}f}"


def markdown(res: dict) -> str:
    m = res["machine"]
    lines = [
        "# edgefn benchmark results",
        "",
        f"Produced by `{res['command']}` on {res['finished']} in {res['elapsed_s']:.0f} s.",
        f"Machine: {m['cpus']} × {m['cpu_model'] or m['machine']}, {m['memory_gib']} GiB, Linux {m['kernel']}, Python {m['python']}, "
        f"wasmtime {m['wasmtime']}, Starlette {m['starlette']}, Hypercorn {m['hypercorn']}, uvicorn {m['uvicorn']}, {m.get('wrk', 'no wrk')}. "
        f"Load average at start: {m['load_average_at_start']}. Shared machine: compare ratios within this run.",
        "",
    ]
    po = res.get("phase_other_cpu")
    if po:
        lines += ["CPU used by other processes during each phase (cores; the machine has 2): "
                  + ", ".join(f"{k} {v:.2f}" for k, v in po.items()) + ".", ""]
    t = res.get("tree")
    if t:
        changed = t["edgefn_changed_since_commit"]
        lines += [f"Code measured: commit {t['commit']}" + (f", with uncommitted changes in {', '.join(changed)} (work in progress by other engineers)" if changed else "") + ".", ""]
    v = res.get("verdicts", {})
    if v:
        lines += ["## Targets", "", "| target | goal | measured | verdict |", "|---|---:|---:|---|"]
        for item in v.values():
            op = "≤" if item["op"] == "le" else "≥"
            if item["target"] is None:
                lines.append(f"| {item['label']} | – | {_f(item['value'], 2)} {item['unit']} | measured |")
                continue
            verdict = "met" if item["met"] else f"missed ({item['off_by']:.1f}× off)"
            lines.append(f"| {item['label']} | {op} {item['target']:g} {item['unit']} | {_f(item['value'], 2)} {item['unit']} | {verdict} |")
        lines.append("")
        lines += vs_peers(res)
    if "micro" in res:
        lines += _micro_md(res["micro"])
    if "coldwarm" in res:
        lines += _coldwarm_md(res["coldwarm"])
    if "throughput" in res:
        lines += _throughput_md(res["throughput"])
    if "profiles" in res:
        lines += _profiles_md(res["profiles"])
    if "resources" in res:
        lines += _resources_md(res["resources"])
    if "h3" in res:
        lines += _h3_md(res["h3"])
    if res.get("skipped"):
        lines += ["## Not measured", ""] + [f"- {s}" for s in res["skipped"]] + [""]
    return "\n".join(lines) + "\n"


MICRO_OPS = [
    ("compile", "compile from wasm (`wasmtime.Module`)"),
    ("store_load_disk", "load from the on-disk store (read + sha256 + deserialize + link)"),
    ("deserialize_bytes", "  of which `Module.deserialize(bytes)`"),
    ("deserialize_file_mmap", "  vs `Module.deserialize_file` (mmap; not used by edgefn)"),
    ("cold_start_from_artifact", "cold start: store load + first invocation"),
    ("fresh_instance_sandbox", "instantiate + one invocation, fresh instance (`Sandbox.run`)"),
    ("fresh_instance_raw_floor", "  the same steps as raw C-API calls through ctypes (bench/fastpath.RawFresh; edgefn makes them in C, runtime/_native.c)"),
    ("fresh_instance_invoke", "  the same through `Invoker.invoke_sync` (+ CBOR encode/decode, report)"),
    ("warm_instance_sandbox", "warm instance from the runtime's pool (`Sandbox.run`, `reuse_instances = true`)"),
    ("warm_instance_invoke", "  the same through `Invoker.invoke_sync`"),
    ("reused_instance_raw", "second invocation on the same instance (raw wasmtime calls, no runtime)"),
    ("reused_instance_lean_prototype", "  the same with a leaner call path (bench/fastpath.py prototype)"),
]


def _micro_md(micro: dict) -> list[str]:
    g = micro["guests"]
    lines = ["## Micro (in-process), µs per operation", ""]
    lines.append("Guests: " + "; ".join(f"**{k}** = {v['describe']} (artifact {v['artifact_bytes']:,} bytes)" for k, v in g.items()) + ".")
    lines += ["", "| operation | " + " | ".join(f"{k} min | {k} p50 | {k} p99" for k in g) + " |", "|---|" + "---:|" * (3 * len(g))]
    for key, label in MICRO_OPS:
        if not all(key in g[k] for k in g):
            continue
        row = [label]
        for k in g:
            s = g[k][key]
            row += [_f(s["min"]), _f(s["p50"]), _f(s["p99"])]
        lines.append("| " + " | ".join(row) + " |")
    lines += ["", "Where a fresh-instance invocation of the small guest goes (the steps `Sandbox.run` makes in one `_native.run_fresh` call, here made one by one through fastcall.CoreStore and timed each):", "",
              "| step | p50 µs | p99 µs |", "|---|---:|---:|"]
    for name, s in micro["breakdown_small"].items():
        lines.append(f"| {name} | {_f(s['p50'])} | {_f(s['p99'])} |")
    hc = micro["host_call"]
    lines += ["", f"One guest→host `env_get` call (hello makes one per request): {_f(hc['env_get_call_us_p50'])} µs (p50).", ""]
    return lines


def _coldwarm_md(cw: dict) -> list[str]:
    lines = ["## Cold vs warm, end to end (HTTP/1.1, raw socket client)", "",
             "| scenario | spawn → healthy (s) | first request (ms, new connection) | its Server-Timing total (ms) | second request (ms) |",
             "|---|---:|---:|---:|---:|"]
    for key, label in (("deploy_empty_store", "deploy, empty module store"), ("restart_warm_store", "process restart, warm disk store")):
        for i, r in enumerate(cw[key]):
            lines.append(
                f"| {label} #{i + 1} | {r['start_to_healthy_s']:.2f} | {r['first_request']['client_ms']:.2f} | "
                f"{r['first_request']['server_timing_ms'].get('total', float('nan')):.2f} | {r['second_request']['client_ms']:.2f} |"
            )
    lines.append("")
    sp = cw.get("startup_profile")
    if sp and "ms_by_phase" in sp:
        lines += ["Where a restart's main-thread time goes (py-spy `--idle`, warm store):", "", "| phase | ms |", "|---|---:|"]
        lines += [f"| {k} | {v:.0f} |" for k, v in sp["ms_by_phase"].items()]
        lines.append("")
    lines += ["Steady state, sequential keep-alive requests (client latency and the server's Server-Timing, ms):", "",
              "| path | client p50 | client p99 | stage | server p50 | server p99 |", "|---|---:|---:|---|---:|---:|"]
    for key, st in cw["steady"].items():
        first = True
        for stage, s in st["server_timing_ms"].items():
            c = st["client_ms"]
            lines.append(f"| {st['path'] if first else ''} | {_f(c['p50'], 2) if first else ''} | {_f(c['p99'], 2) if first else ''} | {stage} | {_f(s['p50'], 2)} | {_f(s['p99'], 2)} |")
            first = False
    lines += ["", f"Four pass-through hooks add {cw['hooks_added_total_p50_ms']:.2f} ms to the server total (p50); per hook: "
              + ", ".join(f"{k} {v:.2f} ms" for k, v in cw["per_hook_p50_ms"].items()) + ".", ""]
    return lines


def _throughput_md(tp: dict) -> list[str]:
    lines = ["## Throughput and latency, HTTP/1.1 (wrk, closed loop)", "",
             f"Server pinned to CPU {tp['server_cpus']}, wrk (1 thread) to CPU {tp['load_cpus']}; {tp['seconds_per_run']:g} s per run for edgefn hello and the "
             f"two Starlette baselines, {tp.get('short_seconds_per_run', tp['seconds_per_run']):g} s for the other rows; {tp['rounds']} rounds, targets interleaved; "
             "each point is the quietest of its runs. `noise` = CPU used on the server's core by anything but the server "
             "(other engineers' tests; * = over 0.15, disturbed); `others` = the same machine-wide. `failed` = non-2xx or socket errors. "
             "`runs` = runs at that point and the spread of their req/s ((max − min) / max).", "",
             "| target | c | req/s | p50 ms | p99 ms | × Starlette/Hypercorn | × uvicorn | × no-store | server cores | wrk cores | noise | others | failed | runs |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    ratios = tp["ratios"]
    for key, t in tp["targets"].items():
        for c, b in sorted(t["best"].items(), key=lambda kv: int(kv[0])):
            r = ratios.get(key, {})
            rh = r.get("starlette_hypercorn", {}).get(c, {}).get("rps_ratio")
            ru = r.get("starlette_uvicorn", {}).get(c, {}).get("rps_ratio")
            rn = r.get("edgefn_nostore", {}).get(c, {}).get("rps_ratio")
            noisy = "*" if b["noise"] > 0.15 else ""
            lines.append(
                f"| {t['label']} | {c} | {b['rps']:,.0f} | {b['p50_us'] / 1000:.2f} | {b['p99_us'] / 1000:.2f} | "
                f"{_f(rh, 2) if rh else ''} | {_f(ru, 2) if ru else ''} | {_f(rn, 1) if rn else ''} | {b['server_cpu']:.2f} | {b['client_cpu']:.2f} | "
                f"{b['noise']:.2f}{noisy} | {b['other_cpu']:.2f} | {b['failed'] or ''} | {_runs(t, c)} |"
            )
    lines += ["", "What each request got (probe before the load):", "", "| target | status | x-cache (2nd request) | Server-Timing |", "|---|---|---|---|"]
    for key, t in tp["targets"].items():
        p = t["probe"]
        lines.append(f"| {key} | {p['status']} | {p['x_cache_second'] or ''} | {p['server_timing'] or ''} |")
    inline = tp.get("inline") or {}
    if inline:  # a try that missed sends its function to the guest threads for a cooldown: slower rows
        lines += ["", "Invocations on the event loop per edgefn server, over the whole phase (GET /_edgefn/info):", "",
                  "| server | inline runs | slice misses |", "|---|---:|---:|"]
        lines += [f"| {name} | {i.get('inline_runs', '')} | {i.get('slice_misses', '')} |" for name, i in inline.items()]
    lines.append("")
    return lines


def _runs(t: dict, c: str) -> str:
    sp = t.get("spread", {}).get(c)
    if not sp:
        return ""
    return f"{sp['runs']}" + (f" ({sp['spread'] * 100:.0f}%)" if sp["runs"] > 1 else "")


def _profiles_md(pr: dict) -> list[str]:
    lines = ["## Profiles under load (py-spy, c=16, CPU µs per request by component)", "",
             "Columns: edgefn hello as it is; the what-if server with the guest run on the event loop and no per-request log lines; "
             "edgefn answering the same request from its cache (the pipeline without a guest); the plain Starlette/Hypercorn baseline. "
             "In the threaded server a thread waiting to re-take the GIL is charged to the line it waits at (e.g. `uuid4`, "
             "`Handler.acquire`, the thread pool's queue), so those rows are the cost of handing work between threads. Shares of on-CPU samples × the server's measured CPU per request in the profiled run.", ""]
    servers = [k for k in ("edgefn_hello", "edgefn_cached", "starlette_hypercorn") if k in pr and "us_per_request_by_component" in pr[k]]
    if servers:
        comps: list[str] = []
        for k in servers:
            comps += [c for c in pr[k]["us_per_request_by_component"] if c not in comps]
        lines += ["| component | " + " | ".join(servers) + " |", "|---|" + "---:|" * len(servers)]
        for c in comps:
            lines.append(f"| {c} | " + " | ".join(_f(pr[k]["us_per_request_by_component"].get(c, 0.0)) for k in servers) + " |")
        lines.append("| **total CPU per request** | " + " | ".join(f"**{_f(pr[k]['cpu_us_per_request'])}**" for k in servers) + " |")
        lines.append("| req/s while profiled | " + " | ".join(f"{pr[k]['load']['rps']:,.0f}" for k in servers) + " |")
        lines.append("")
        if "edgefn_hello" in servers:
            lc = pr["edgefn_hello"].get("logging_and_json_by_caller", {})
            if lc:
                lines.append("edgefn's logging by caller (share of samples): " + ", ".join(f"{k} {v * 100:.1f}%" for k, v in lc.items()) + ".")
            lines += ["", "Top leaf functions in edgefn (share of samples): "
                      + "; ".join(f"{name} {share * 100:.1f}%" for name, share in pr["edgefn_hello"]["top_self"][:10]) + ".", ""]
    if "pyinstrument" in pr:
        lines += [f"pyinstrument of the in-process invocation loop: `{Path(pr['pyinstrument']['file']).relative_to(RESULTS.parent.parent)}`.", ""]
    return lines


def _resources_md(rs: dict) -> list[str]:
    lines = ["## Resources", ""]
    mem = rs.get("memory")
    if mem:
        def kb(x: float) -> str:
            return f"{x / 1024:,.0f} KiB"

        lines += ["| memory | RSS | USS (private) | virtual |", "|---|---:|---:|---:|"]
        for key, label in (("idle_function_small", f"per deployed, idle function (small; {mem['n']['small_functions']} loaded)"),
                           ("idle_function_medium", f"per deployed, idle function (medium; {mem['n']['medium_functions']} loaded)"),
                           ("inflight_instance_small", f"per in-flight instance (small; {mem['n']['small_instances']} alive)"),
                           ("inflight_instance_medium", f"per in-flight instance (medium; {mem['n']['medium_instances']} alive)")):
            d = mem[key]
            lines.append(f"| {label} | {kb(d['rss'])} | {kb(d['uss'])} | {kb(d['vms'])} |")
        p = mem["process_after_start"]
        lines += [f"| runtime process after start (imports + Runtime) | {kb(p['rss'])} | {kb(p['uss'])} | {kb(p['vms'])} |", ""]
    ws = rs.get("workers")
    if ws:
        lines += [f"Throughput vs worker processes (c={ws['connections']}, {ws['note']}):", "",
                  "| server | 1 worker req/s | 2 workers req/s | scaling | CPU per process, 2 workers (cores) | other | idle RSS 1w / 2w |",
                  "|---|---:|---:|---:|---|---:|---:|"]
        for name, b in ws["best"].items():
            rss = ws.get("idle_rss_bytes", {})
            per = " / ".join(f"{x:.2f}" for x in b["2"].get("server_cpu_by_process", []))
            lines.append(f"| {name} | {b['1']['rps']:,.0f} | {b['2']['rps']:,.0f} | {ws['scaling'][name]:.2f}× | {per} | "
                         f"{max(b['1']['other_cpu'], b['2']['other_cpu']):.2f} | "
                         f"{rss.get(name + '_w1', 0) / 2**20:.0f} / {rss.get(name + '_w2', 0) / 2**20:.0f} MiB |")
        lines += ["", "edgefn / baseline: " + ", ".join(f"{w} worker(s) {r:.2f}" for w, r in ws["edgefn_over_baseline"].items()), ""]
    return lines


def _h3_md(h3: dict) -> list[str]:
    if "skipped" in h3:
        return ["## HTTP/3", "", h3["skipped"], ""]
    lines = ["## HTTP/3 (one run)", "", f"Client: {h3['client']}.", "",
             "| server | c | h3 req/s | h3 p50 ms | h3 p99 ms | client cores | server cores |", "|---|---:|---:|---:|---:|---:|---:|"]
    for key, byc in h3["runs"].items():
        for c, h in byc.items():
            lines.append(f"| {key} | {c} | {h['rps']:,.0f} | {h['p50_us'] / 1000:.2f} | {h['p99_us'] / 1000:.2f} | {h['client_cpu']:.2f} | {h['server_cpu']:.2f} |")
    lines += ["", "edgefn / baseline over HTTP/3: " + ", ".join(f"c={c} {v:.2f}" for c, v in h3["ratio_edgefn_over_baseline_h3"].items()), ""]
    pr = h3.get("profile_starlette_hypercorn_h3", {})
    if "us_per_request_by_component" in pr:
        lines += [f"Profile of the baseline over HTTP/3, c=16 ({pr['load']['rps']:,.0f} req/s while profiled, server {pr['load']['server_cpu']:.2f} cores): "
                  f"{pr['cpu_us_per_request']:,.0f} CPU µs per request: "
                  + ", ".join(f"{k} {v:,.0f}" for k, v in pr["us_per_request_by_component"].items() if v >= 1) + ".", ""]
    return lines


def main() -> None:
    """Re-render bench.md and the plots from bench/results/bench.json (no measuring)."""
    import json

    res = json.loads((RESULTS / "bench.json").read_text())
    res["verdicts"] = verdicts(res)  # the labels and goals as they are now, on the figures measured
    (RESULTS / "bench.md").write_text(markdown(res))
    plots(res, RESULTS)


# --- plots -----------------------------------------------------------------------------------------


def plots(res: dict, out_dir: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made: list[str] = []
    colors = {
        "edgefn_hello": "#d62728", "edgefn_warm": "#17becf", "edgefn_hooks": "#ff7f0e", "edgefn_cached": "#bcbd22", "starlette_hypercorn": "#1f77b4",
        "starlette_uvicorn": "#2ca02c", "edgefn_nostore": "#7f7f7f", "edgefn_py_warm": "#9467bd", "edgefn_py_fresh": "#8c564b",
        "wasmtime_serve": "#e377c2",
    }
    tp = res.get("throughput")
    if tp:
        fig, axes = plt.subplots(1, 2, figsize=(12, 5), sharey=True)
        for ax, c in zip(axes, ("1", "32"), strict=False):
            for key, t in tp["targets"].items():
                b = t["best"].get(c)
                if not b:
                    continue
                pct = b["latency_us"]["percentiles"]
                ps = sorted(pct, key=float)
                ax.plot([pct[p] / 1000 for p in ps], [float(p) for p in ps], label=t["label"], color=colors.get(key), lw=1.8)
            ax.set_xscale("log")
            ax.set_title(f"concurrency {c}")
            ax.set_xlabel("latency (ms, log)")
            ax.grid(True, which="both", alpha=0.3)
        axes[0].set_ylabel("percentile")
        axes[1].legend(fontsize=6, loc="lower right")  # c=32 has every row
        fig.suptitle("HTTP/1.1 latency distribution (wrk percentiles)")
        fig.tight_layout()
        fig.savefig(out_dir / "latency_cdf.png", dpi=110)
        plt.close(fig)
        made.append("latency_cdf.png")

        fig, ax = plt.subplots(figsize=(9, 5.5))
        for key, t in tp["targets"].items():
            cs = sorted(t["best"], key=int)
            if len(cs) < 2:
                continue
            ax.plot([int(c) for c in cs], [t["best"][c]["rps"] for c in cs], marker="o", label=t["label"], color=colors.get(key), lw=2)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks([1, 32], ["1", "32"])
        ax.set_xlabel("concurrent connections")
        ax.set_ylabel("requests / s (log)")
        ax.set_title("Throughput vs concurrency (server on 1 core, HTTP/1.1)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out_dir / "throughput.png", dpi=110)
        plt.close(fig)
        made.append("throughput.png")

    micro = res.get("micro")
    if micro:
        g = micro["guests"]
        fig, ax = plt.subplots(figsize=(11, 6))
        import textwrap

        ops = [(k, label) for k, label in MICRO_OPS if all(k in d for d in g.values())]
        labels = ["\n".join(textwrap.wrap(label.strip(), 42)) for _, label in ops]
        y = range(len(ops))
        width = 0.8 / len(g)
        for i, (name, d) in enumerate(g.items()):
            p50 = [d[k]["p50"] for k, _ in ops]
            p99 = [d[k]["p99"] for k, _ in ops]
            ys = [yy + i * width for yy in y]
            ax.barh(ys, p50, height=width, label=f"{name} p50")
            ax.scatter(p99, ys, marker="|", color="k", s=80, zorder=5, label="p99" if i == 0 else None)
        ax.set_yticks([yy + width for yy in y], labels, fontsize=7)
        ax.invert_yaxis()
        ax.set_xscale("log")
        ax.axvline(60, color="r", ls="--", lw=1, label="target 60 µs (fresh)")
        ax.axvline(30, color="m", ls=":", lw=1, label="target 30 µs (reused)")
        ax.set_xlabel("µs (log)")
        ax.set_title("Micro benchmarks (in-process)")
        ax.legend(fontsize=7)
        ax.grid(True, axis="x", which="both", alpha=0.3)
        fig.tight_layout()
        fig.savefig(out_dir / "micro.png", dpi=110)
        plt.close(fig)
        made.append("micro.png")

    pr = res.get("profiles", {})
    servers = [k for k in ("edgefn_hello", "edgefn_cached", "starlette_hypercorn") if "us_per_request_by_component" in pr.get(k, {})]
    if servers:
        comps: list[str] = []
        for k in servers:
            comps += [c for c in pr[k]["us_per_request_by_component"] if c not in comps]
        fig, ax = plt.subplots(figsize=(10, 5))
        cmap = plt.get_cmap("tab20")
        for i, k in enumerate(servers):
            left = 0.0
            for j, c in enumerate(comps):
                w = pr[k]["us_per_request_by_component"].get(c, 0.0)
                ax.barh(i, w, left=left, color=cmap(j % 20), label=c if i == 0 or c not in pr[servers[0]]["us_per_request_by_component"] else None)
                left += w
        ax.set_yticks(range(len(servers)), servers)
        ax.set_xlabel("CPU µs per request (py-spy shares × measured CPU/request), c=16")
        ax.set_title("Where a request's CPU goes")
        ax.legend(fontsize=6, loc="lower right", ncol=2)
        fig.tight_layout()
        fig.savefig(out_dir / "profile.png", dpi=110)
        plt.close(fig)
        made.append("profile.png")

    cw = res.get("coldwarm")
    if cw:
        st = cw["steady"]["hooks"]["server_timing_ms"]
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(12, 4.5))
        stages = [s for s in st if s != "total"]
        a1.bar(stages, [st[s]["p50"] for s in stages], color="#ff7f0e", label="p50")
        a1.scatter(stages, [st[s]["p99"] for s in stages], color="k", marker="_", s=200, label="p99")
        a1.set_ylabel("ms (Server-Timing)")
        a1.set_title("Per-stage time, hello + 4 pass-through hooks")
        a1.tick_params(axis="x", labelsize=7)
        a1.legend()
        names, vals = [], []
        for key, label in (("deploy_empty_store", "1st req after deploy\n(empty store)"), ("restart_warm_store", "1st req after restart\n(warm store)")):
            names.append(label)
            vals.append(min(r["first_request"]["client_ms"] for r in cw[key]))
        names.append("steady state\n(p50)")
        vals.append(cw["steady"]["hello"]["client_ms"]["p50"])
        a2.bar(names, vals, color=["#7f7f7f", "#1f77b4", "#2ca02c"])
        a2.set_ylabel("client ms (new connection for 1st requests)")
        a2.set_title("Cold vs warm, hello over HTTP/1.1")
        a2.tick_params(axis="x", labelsize=8)
        fig.tight_layout()
        fig.savefig(out_dir / "coldwarm.png", dpi=110)
        plt.close(fig)
        made.append("coldwarm.png")
    return made


if __name__ == "__main__":
    main()
