"""edgefn benchmarks, one command: `make bench` (= .venv/bin/python bench/run.py after installing the bench extra).

    .venv/bin/python bench/run.py                 # everything, ~5 minutes on 2 cores
    .venv/bin/python bench/run.py --quick         # shorter runs, for checking the harness (~2 minutes)
    .venv/bin/python bench/run.py --only micro coldwarm

Phases (one module each): micro (in-process µs), coldwarm (deploy / restart / steady state over HTTP),
throughput (wrk at c=1/16/64 against edgefn and its baselines, interleaved), profiles (py-spy under load,
pyinstrument in process), resources (memory, worker processes), h3 (one HTTP/3 run), control (alias resolution
on the hot path, alias flip propagation, asynchronous invocation: bench/control.py), purge (cache purge propagation to two workers: bench/purge.py), app (`edgefn bench` on
examples/edgefn.toml: bench/results/app.json and app.html).
Writes bench/results/bench.json, bench/results/bench.md, bench/results/*.png and bench/results/profiles/
(and bench/results/control.json for the control phase). A --quick or --only run writes the same files under
bench/results/tmp/results/ (git-ignored): only a whole run rewrites the committed report, and no run deletes it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import PROFILES, RESULTS, TMP, cpu_sets, log, machine, write_json  # noqa: E402

PHASES = ("micro", "coldwarm", "throughput", "profiles", "resources", "h3", "control", "purge", "kv", "fleet", "events", "app")


def _own_cpu() -> float:
    """CPU seconds of this process and of its finished children (servers, wrk, py-spy: all are waited for)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def _busy() -> float:
    import psutil

    t = psutil.cpu_times()
    return t.user + t.nice + t.system + t.irq + t.softirq + getattr(t, "steal", 0.0)


def tree() -> dict:
    """The code measured: the commit, and the edgefn/ files that differ from it (others edit concurrently)."""
    import subprocess

    def git(*args: str) -> str:
        proc = subprocess.run(["git", *args], capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])
        return proc.stdout.rstrip("\n")

    return {
        "commit": git("rev-parse", "--short", "HEAD"),
        "edgefn_changed_since_commit": [ln[3:] for ln in git("status", "--porcelain", "--", "edgefn").splitlines()],
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="shorter runs (harness check, not for reporting)")
    p.add_argument("--only", nargs="+", choices=PHASES, help="run only these phases")
    p.add_argument("--seconds", type=float, help="seconds per load run (default 3, --quick 2)")
    p.add_argument("--budget", type=float, default=300.0, help="seconds the whole run aims to stay under (reruns stop there)")
    a = p.parse_args()
    phases = a.only or list(PHASES)
    seconds = a.seconds or (2.0 if a.quick else 3.0)
    started = time.monotonic()

    import load

    if any(ph in phases for ph in ("throughput", "profiles", "resources", "h3")) and not load.have_wrk():
        print("bench: wrk is not installed (make bench installs it: apt-get install wrk)", file=sys.stderr)
        return 2
    shutil.rmtree(TMP, ignore_errors=True)
    TMP.mkdir(parents=True)
    # only a whole run rewrites the committed report; --quick / --only runs write theirs into the git-ignored scratch
    out_dir = RESULTS if not (a.quick or a.only) else TMP / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    PROFILES.mkdir(parents=True, exist_ok=True)  # files of a phase that does not run stay as they are
    lg_cpus, server_cpus = cpu_sets()
    res: dict = {
        "command": "make bench" if os.environ.get("MAKELEVEL") else " ".join(["python", "bench/run.py", *sys.argv[1:]]),
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "machine": machine(),
        "tree": tree(),
        "pinning": {"load_generator_cpus": lg_cpus, "server_cpus": server_cpus},
        "quick": a.quick,
        "phase_seconds": {},
        "skipped": [
            "The Python component guest size in the micro table, as the issue says (components were not built when this bench was written). Python guests are measured by bench/python_guest.py (its own section in bench/README.md); a componentize-py build and precompile take tens of seconds each, more than a 5-minute `make bench` can spend on one row.",
        ],
    }
    import servers

    servers.write_manifest()
    servers.write_python_manifest()

    def phase(name: str, fn) -> None:  # type: ignore[no-untyped-def]
        if name not in phases:
            return
        t0 = time.monotonic()
        own0, busy0 = _own_cpu(), _busy()
        log(f"=== {name} ===")
        try:
            res[name] = fn()
        except Exception as exc:  # noqa: BLE001 - one failed phase must not lose the others' figures
            traceback.print_exc()
            res.setdefault("errors", {})[name] = f"{type(exc).__name__}: {exc}"
        res["phase_seconds"][name] = time.monotonic() - t0
        # cores used meanwhile by processes that are not this bench's (other engineers' tests): the phase's noise
        res.setdefault("phase_other_cpu", {})[name] = max(0.0, (_busy() - busy0 - (_own_cpu() - own0)) / res["phase_seconds"][name])
        log(f"=== {name} done in {res['phase_seconds'][name]:.0f} s ===")

    def micro_phase() -> dict:
        import micro

        return micro.run(quick=a.quick)

    def coldwarm_phase() -> dict:
        import coldwarm
        import profiles
        from common import PYTHON

        out = coldwarm.run(server_cpus, repeats=1 if a.quick else 2, steady_n=150 if a.quick else 250)
        port = servers.free_port()
        cmd = [PYTHON, "-m", "edgefn.cli", "serve", "--config", str(servers.MANIFEST), "--port", str(port), "--tls-port", "0", "--admin-port", "0"]
        out["startup_profile"] = profiles.profile_startup(cmd, port, "edgefn-restart")
        return out

    def throughput_phase() -> dict:
        import throughput

        elapsed = time.monotonic() - started
        # what the later phases need, so reruns of noisy points cannot push the whole run over budget
        later = 85.0 + (55.0 if "control" in phases else 0.0) + (25.0 if "purge" in phases else 0.0) + (35.0 if "kv" in phases else 0.0) + (120.0 if "fleet" in phases else 0.0) + (40.0 if "events" in phases else 0.0) + (90.0 if "app" in phases else 0.0) if not a.only else 0.0
        return throughput.run(lg_cpus, server_cpus, seconds=seconds, rounds=2, budget_s=max(0.0, a.budget - elapsed - later), short_seconds=2.0)

    def profiles_phase() -> dict:
        import profiles

        out: dict = {}
        made = {
            "edgefn_hello": servers.edgefn("edgefn-profiled", server_cpus),
            "starlette_hypercorn": servers.baseline("starlette-hypercorn", "starlette-hypercorn-profiled", server_cpus),
        }
        try:
            for s in made.values():
                s.spawn()
            for key, s in made.items():
                s.wait_healthy()
                load.wrk(s.base + "/", 16, 1, lg_cpus, s)  # warm-up
                if key == "edgefn_hello":
                    load.wrk(s.base + "/cached/bench", 16, 1, lg_cpus, s)  # warms (and fills) the cached path too
                out[key] = profiles.profile_server(s, s.base + "/", 16, 3.0, lg_cpus, key)
                if key == "edgefn_hello":  # the same server answering from its cache: the pipeline without a guest
                    out["edgefn_cached"] = profiles.profile_server(s, s.base + "/cached/bench", 16, 3.0, lg_cpus, "edgefn_cached")
        finally:
            for s in made.values():
                s.stop()
        out["pyinstrument"] = profiles.pyinstrument_invoke(1000 if a.quick else 2000)
        return out

    def resources_phase() -> dict:
        import resources

        return {"memory": resources.memory(), "workers": resources.workers_scaling(lg_cpus, seconds=2.0, rounds=1)}

    def h3_phase() -> dict:
        import h3

        try:
            import aioquic  # noqa: F401
        except ImportError:
            return {"skipped": "HTTP/3: aioquic is not installed, so there is no HTTP/3 client."}
        return h3.run(lg_cpus, server_cpus, seconds=2.0, concurrency=(16,))

    phase("micro", micro_phase)
    phase("coldwarm", coldwarm_phase)
    phase("throughput", throughput_phase)
    phase("profiles", profiles_phase)
    phase("resources", resources_phase)
    phase("h3", h3_phase)

    def control_phase() -> dict:
        import control

        out = control.run(lg_cpus, server_cpus, quick=a.quick)
        write_json(out_dir / "control.json", {"command": res["command"], "started": res["started"], "machine": res["machine"], **out})
        return out

    phase("control", control_phase)

    def purge_phase() -> dict:
        import purge

        out = purge.run(server_cpus, purges=8 if a.quick else 20)
        write_json(out_dir / "purge.json", out)
        return out

    phase("purge", purge_phase)

    def kv_phase() -> dict:
        import kv

        out = kv.run(1.0 if a.quick else 3.0)
        write_json(out_dir / "kv.json", out)
        return out

    phase("kv", kv_phase)

    def fleet_phase() -> dict:
        import fleet

        out = fleet.run(quick=a.quick)
        write_json(out_dir / "fleet.json", out)
        return out

    phase("fleet", fleet_phase)

    def events_phase() -> dict:
        import event_sources

        out = event_sources.run(quick=a.quick)
        write_json(out_dir / "event_sources.json", out)
        return out

    phase("events", events_phase)

    def app_phase() -> dict:
        """`edgefn bench` itself on examples/edgefn.toml: the product command's own table, JSON and page."""
        from common import REPO

        from edgefn.benchmark.report import html_page, table
        from edgefn.benchmark.run import BenchPlan, run_bench

        config = REPO / "examples" / "edgefn.toml"
        for fn in ("auth", "py-auth"):  # their secret AUTH_TOKEN, as `make run` puts it
            subprocess.run(
                [sys.executable, "-m", "edgefn.cli", "secret", "put", fn, "AUTH_TOKEN", "--if-missing", "--config", str(config)],
                input="let-me-in\n", text=True, check=True, capture_output=True,
            )
        plan = BenchPlan(
            config, duration_s=1.0 if a.quick else 2.0, concurrency=(1, 16),
            headers=(("Authorization", "Bearer let-me-in"),),  # the examples' auth hooks let it through (their secret AUTH_TOKEN)
        )
        doc = run_bench(plan, progress=log)
        write_json(out_dir / "app.json", doc)
        (out_dir / "app.html").write_text(html_page(doc))
        print(table(doc), file=sys.stderr)
        return {"json": "app.json", "html": "app.html", "phase_s": doc["phase_s"]}

    phase("app", app_phase)

    import report

    res["verdicts"] = report.verdicts(res)
    res["finished"] = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    res["elapsed_s"] = time.monotonic() - started
    try:
        res["plots"] = report.plots(res, out_dir)
    except Exception:  # noqa: BLE001
        traceback.print_exc()
        res.setdefault("errors", {})["plots"] = traceback.format_exc(limit=3)
    write_json(out_dir / "bench.json", res)
    control_md = ""
    if "control" in res:  # report.py does not know this phase: its table is appended as control.py prints it
        import control

        control_md = f"\n## Control plane (bench/control.py)\n\n{control.table(res['control'])}\n"
    if "purge" in res:
        import purge

        control_md += f"\n## Cache purge propagation (bench/purge.py)\n\n{purge.table(res['purge'])}\n"
    if "kv" in res:
        import kv

        control_md += f"\n## Key-value calls from a guest (bench/kv.py)\n\n{kv.table(res['kv'])}\n"
    if "fleet" in res:
        import fleet

        control_md += f"\n## A fleet on PostgreSQL (bench/fleet.py)\n\n{fleet.table(res['fleet'])}\n"
    if "events" in res:
        import event_sources

        control_md += f"\n## Polling event sources (bench/event_sources.py)\n\n{event_sources.table(res['events'])}\n"
    (out_dir / "bench.md").write_text(report.markdown(res) + control_md)
    for item in res["verdicts"].values():
        if item["target"] is None:
            print(f"  {item['label']}: {item['value']:.2f} {item['unit']} (measured)")
            continue
        verdict = "met" if item["met"] else f"MISSED by {item['off_by']:.1f}x"
        print(f"  {item['label']}: {item['value']:.2f} {item['unit']} (target {item['target']:g}) {verdict}")
    log(f"done in {res['elapsed_s']:.0f} s: {out_dir}/bench.md, bench.json, {', '.join(res.get('plots', []))}")
    return 1 if res.get("errors") else 0


if __name__ == "__main__":
    sys.exit(main())
