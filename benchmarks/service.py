"""The job service under load: 8 image searches back to back with the CLI, then all at once
through `shapesearch serve` (one machine, then a 2-node loopback Ray cluster).

    python benchmarks/service.py            # the full run: 4 photos × ε ∈ {0.05, 0.1}
    python benchmarks/service.py --quick    # smoke run: 2 photos × ε = 0.1, --generations 3

Everything is measured in one run of the script.  The photos are scikit-image's, saved as PNG
to a temporary directory; every job has seed 0 and default settings.  Measured:

* back to back: the 8 CLI runs (`python -m shapesearch.cli image PNG --eps E --json`, default
  workers) one after another, total wall time (each run's Ray start-up included);
* service: `shapesearch serve` on loopback with a fresh --data; start-up until it answers,
  then the 8 jobs submitted at once, total from the first submit to the last finish; each
  job's result compared with the CLI's (shape text and TT parameters);
* fairness: a sampler thread polls GET /api/jobs every 0.1 s and records, per job, when
  ``progress.evaluated`` (evaluations finished, counted per Ray task and written at most every
  0.5 s) went up while the job was RUNNING; per job the longest gap between two increases, and
  separately the wait from the job's start to its first one (driver start-up, image loading);
* latency: p50/p99 of GET /api/jobs/{id} for a random running job, 20 requests a second from
  one thread (httpx) while the jobs run (a page or client watching each job a few times a
  second; requests back to back, ~600 a second, took most of a core from the jobs here);
* a 2-node Ray cluster (`ray.cluster_utils.Cluster`, head and worker 1 CPU each, started here)
  given to `serve --address`: the same 8 jobs, total wall time and equality of results.

Rows go to results/service.jsonl (one per job and mode, one summary; tagged with the run's
id), and the table of the latest full run (else the latest quick run) to service.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import skimage.data
from _report import RESULTS, append_row, load_rows, machine, main_with_report, table
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
JSONL = RESULTS / "service.jsonl"
MARKDOWN = Path(__file__).parent / "service.md"
IMAGES = ["astronaut", "coffee", "chelsea", "rocket"]  # as in image_search.py
EPS = [0.05, 0.1]
QUICK_IMAGES, QUICK_EPS, QUICK_GENERATIONS = ["astronaut", "coffee"], [0.1], 3
SERVER_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "disabled"}
FINISHED = ("STOPPED", "SUCCEEDED", "FAILED")
SAMPLE_S = 0.1
START_TIMEOUT_S = 300
JOBS_TIMEOUT_S = 4 * 3600
TARGETS = {"ratio": 1.1, "max_gap_s": 5.0, "p99_ms": 50.0, "min_requests": 500}
LATENCY_RATE = 20  # GET /api/jobs/{id} per second while the jobs run


def log(msg: str) -> None:
    print(msg, flush=True)


# -- inputs and the CLI --------------------------------------------------------------------------
def save_pngs(tmp: Path, names: list[str]) -> dict[str, Path]:
    out = {}
    for name in names:
        out[name] = tmp / f"{name}.png"
        Image.fromarray(getattr(skimage.data, name)()).save(out[name])
    return out


def summary_of(r: dict) -> dict:
    """What a run's result.json is compared on, and a few facts of it."""
    return {"shape": r["shape"]["text"], "params": r["params"], "cr": r["cr"], "rel_error": r["rel_error"],
            "evaluations": r["evaluations"], "generations": r["generations"]}


def same(a: dict, b: dict) -> bool:
    return a["shape"] == b["shape"] and a["params"] == b["params"]


def run_cli(png: Path, eps: float, out: Path, extra: list[str]) -> dict:
    cmd = [sys.executable, "-m", "shapesearch.cli", "image", str(png), "--eps", str(eps), "--seed", "0",
           "--out", str(out), "--json", *extra]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"`{' '.join(cmd[1:])}` failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return {**summary_of(json.loads(proc.stdout)), "wall": wall}


# -- the server ----------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`shapesearch serve` as a subprocess on a free loopback port with a fresh data directory."""

    def __init__(self, data: Path, address: str | None = None) -> None:
        import httpx

        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = data.parent / f"{data.name}.log"
        cmd = [sys.executable, "-m", "shapesearch.cli", "serve", "--data", str(data), "--port", str(port),
               "--host", "127.0.0.1"]
        if address:
            cmd += ["--address", address]
        t0 = time.perf_counter()
        with open(self.log_path, "wb") as f:
            self.proc = subprocess.Popen(cmd, cwd=REPO, env={**os.environ, **SERVER_ENV}, stdout=f,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        with httpx.Client(base_url=self.url, timeout=5) as http:
            while True:
                self.check()
                try:
                    if http.get("/api/jobs").status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.perf_counter() - t0 > START_TIMEOUT_S:
                    self.stop()
                    raise SystemExit(f"`shapesearch serve` did not answer within {START_TIMEOUT_S} s:\n{self.tail()}")
                time.sleep(0.1)
        self.startup = time.perf_counter() - t0

    def tail(self, lines: int = 40) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def check(self) -> None:
        if self.proc.poll() is not None:
            raise SystemExit(f"`shapesearch serve` exited with {self.proc.returncode}:\n{self.tail()}")

    def stop(self) -> None:
        """SIGTERM, then SIGKILL to its process group after 60 s."""
        if self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            log("  (the server did not exit within 60 s of SIGTERM; killed)")
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)


class Sampler(threading.Thread):
    """Polls GET /api/jobs every 0.1 s: per job, when its evaluations went up while RUNNING."""

    def __init__(self, server: Server, expected: int) -> None:
        super().__init__(daemon=True, name="sampler")
        import httpx

        self.server, self.expected, self.ids = server, expected, set()
        self.http = httpx.Client(base_url=server.url, timeout=30)
        self.ticks: dict[str, list[float]] = defaultdict(list)  # unix times of an increase
        self.last_evals: dict[str, int] = defaultdict(int)
        self.jobs: dict[str, dict] = {}
        self.running: list[str] = []
        self.done = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            while not self.done.is_set():
                t0 = time.perf_counter()
                now = time.time()
                ids = set(self.ids)  # (added to by the submitting thread)
                found = {j["id"]: j for j in self.http.get("/api/jobs").raise_for_status().json() if j["id"] in ids}
                for job_id, job in found.items():
                    progress = job.get("progress") or {}
                    # finished evaluation tasks (reported at most every 0.5 s), else per generation
                    evals = progress.get("evaluated") or progress.get("evaluations") or 0
                    if job["state"] == "RUNNING" and evals > self.last_evals[job_id]:
                        self.ticks[job_id].append(now)
                    self.last_evals[job_id] = max(self.last_evals[job_id], evals)
                self.jobs = found
                self.running = [i for i, j in found.items() if j["state"] == "RUNNING"]
                if len(found) == self.expected and all(j["state"] in FINISHED for j in found.values()):
                    self.done.set()
                    break
                if self.server.proc.poll() is not None:
                    raise RuntimeError(f"the server exited with {self.server.proc.returncode}")
                time.sleep(max(0.0, SAMPLE_S - (time.perf_counter() - t0)))
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            self.error = exc
            self.done.set()
        finally:
            self.http.close()

    def gaps(self, job: dict) -> dict:
        """max_gap: the longest gap from the job's start through its evaluation reports; first: from
        its start to its first report; between: the longest between two reports; tail: from the
        last report to the job's end (not an evaluation gap: the final confirmation and files)."""
        ticks = self.ticks[job["id"]]
        if job.get("started") is None or not ticks:
            return {"max_gap": None, "first": None, "between": None, "tail": None}
        first = ticks[0] - job["started"]
        between = max((b - a for a, b in zip(ticks, ticks[1:])), default=0.0)
        return {"max_gap": max(first, between), "first": first, "between": between,
                "tail": (job["finished"] or ticks[-1]) - ticks[-1]}


class Latency(threading.Thread):
    """GET /api/jobs/{id} for a random running job, LATENCY_RATE a second; wall time per request."""

    def __init__(self, server: Server, sampler: Sampler) -> None:
        super().__init__(daemon=True, name="latency")
        import httpx

        self.sampler = sampler
        self.http = httpx.Client(base_url=server.url, timeout=30)
        self.times: list[float] = []
        self.errors = 0

    def run(self) -> None:
        rng = random.Random(0)
        try:
            while not self.sampler.done.is_set():
                running = self.sampler.running
                if not running:
                    time.sleep(0.01)
                    continue
                job_id = rng.choice(running)
                t0 = time.perf_counter()
                r = self.http.get(f"/api/jobs/{job_id}")
                dt = time.perf_counter() - t0
                time.sleep(max(0.0, 1 / LATENCY_RATE - dt))
                if r.status_code == 200:
                    self.times.append(dt)
                else:
                    self.errors += 1
        finally:
            self.http.close()


def run_service(server: Server, pngs: dict[str, Path], jobs: list[tuple[str, float]], params: dict,
                latency: bool) -> dict:
    """Submit every job at once, wait for all; per job: its record and result."""
    from shapesearch.service.client import Client

    client = Client(server.url, timeout=120)
    sampler = Sampler(server, len(jobs))
    sampler.start()  # before the first submit: a job may start while the others are sent
    ids = []
    t_submit = time.time()
    for name, eps in jobs:
        ids.append(client.submit("image", pngs[name], eps=eps, **params))
        sampler.ids.add(ids[-1])
    t_submitted = time.time()
    lat = Latency(server, sampler) if latency else None
    if lat:
        lat.start()
    if not sampler.done.wait(JOBS_TIMEOUT_S):
        sampler.done.set()
        raise SystemExit(f"the jobs did not finish within {JOBS_TIMEOUT_S} s:\n{server.tail()}")
    sampler.join()
    if lat:
        lat.join()
    if sampler.error is not None:
        raise SystemExit(f"watching the jobs failed ({sampler.error!r}):\n{server.tail()}")
    out, finished = [], []
    for (name, eps), job_id in zip(jobs, ids):
        job = client.get(job_id)
        finished.append(job["finished"])
        row = {"image": name, "eps": eps, "id": job_id, "state": job["state"], "error": job["error"],
               "queued": job["started"] - job["created"] if job["started"] else None,
               "wall": job["finished"] - job["started"] if job["started"] and job["finished"] else None,
               **sampler.gaps(job), "reports": len(sampler.ticks[job_id]), "attempts": job["attempts"]}
        if job["state"] == "SUCCEEDED":
            row.update(summary_of(client.result(job_id)))
            log_text = client.logs(job_id)
            row["log_lines"] = sum(" generation " in line for line in log_text.splitlines())
        out.append(row)
    client.close()
    return {"jobs": out, "submit_s": t_submitted - t_submit,
            "total": max(finished) - t_submit if all(finished) else None,
            "latency": lat.times if lat else [], "latency_errors": lat.errors if lat else 0}


def live_drivers(address: str) -> int:
    """Job drivers (named actors job-*) still alive on the cluster at ``address``."""
    import ray

    ray.init(address=address, log_to_driver=False, configure_logging=False)
    try:
        return sum(a["namespace"] == "shapesearch" and a["name"].startswith("job-")
                   for a in ray.util.list_named_actors(all_namespaces=True))
    finally:
        ray.shutdown()


def start_cluster():
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args=dict(num_cpus=1, include_dashboard=False))
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    return cluster


# -- the run -------------------------------------------------------------------------------------
def percentile_ms(times: list[float], q: float) -> float | None:
    return float(np.percentile(np.array(times) * 1000, q)) if times else None


def compare(mode: str, got: list[dict], cli: dict) -> bool:
    all_equal = True
    for r in got:
        ref = cli[(r["image"], r["eps"])]
        r["equal_cli"] = r["state"] == "SUCCEEDED" and same(r, ref)
        all_equal &= r["equal_cli"]
        if r["state"] != "SUCCEEDED":
            what = f"{r['state']}: {r['error']}"
        else:
            what = (f"{'equal' if r['equal_cli'] else 'DIFFERENT'} "
                    f"({r['shape']}, {r['params']} params, CR {r['cr']:.2f}"
                    + ("" if r["equal_cli"] else f"; CLI: {ref['shape']}, {ref['params']} params, CR {ref['cr']:.2f}")
                    + ")")
        gap = (f", longest gap {r['max_gap']:.2f} s (start to first report {r['first']:.2f} s, between reports "
               f"{r['between']:.2f} s; {r['reports']} reports, {r.get('log_lines')} generation lines in log.txt)"
               if r.get("max_gap") is not None else "")
        wall = f"{r['wall']:.1f} s" if r["wall"] is not None else "-"
        log(f"  {mode} {r['image']} ε={r['eps']}: {wall}{gap}, {what}")
    return all_equal


def run(args) -> str:
    names, epss = (QUICK_IMAGES, QUICK_EPS) if args.quick else (IMAGES, EPS)
    jobs = [(name, eps) for eps in epss for name in names]
    extra = ["--generations", str(QUICK_GENERATIONS)] if args.quick else []
    params = {"seed": 0, **({"generations": QUICK_GENERATIONS} if args.quick else {})}
    run_id = time.strftime("%Y-%m-%dT%H:%M:%S")
    base = {"run": run_id, "quick": args.quick, "machine": machine()}
    with tempfile.TemporaryDirectory(prefix="service-bench-") as tmp:
        tmp = Path(tmp)
        pngs = save_pngs(tmp, names)

        log(f"back to back: {len(jobs)} CLI runs")
        cli, t0 = {}, time.perf_counter()
        for i, (name, eps) in enumerate(jobs):
            r = run_cli(pngs[name], eps, tmp / f"cli-{i}", extra)
            cli[(name, eps)] = r
            append_row(JSONL, {**base, "mode": "cli", "image": name, "eps": eps, **r})
            log(f"  cli {name} ε={eps}: {r['wall']:.1f} s, {r['shape']}, {r['params']} params, CR {r['cr']:.2f}, "
                f"{r['evaluations']} evaluations")
        cli_total = time.perf_counter() - t0
        log(f"  back-to-back total {cli_total:.1f} s")

        log("service (this machine's Ray)")
        server = Server(tmp / "data")
        try:
            log(f"  server answered after {server.startup:.1f} s")
            svc = run_service(server, pngs, jobs, params, latency=True)
        finally:
            server.stop()
        svc_equal = compare("service", svc["jobs"], cli)
        for r in svc["jobs"]:
            append_row(JSONL, {**base, "mode": "service", **r})

        log("service on a 2-node loopback Ray cluster")
        t0 = time.perf_counter()
        cluster = start_cluster()
        try:
            cluster_start = time.perf_counter() - t0
            log(f"  cluster up after {cluster_start:.1f} s at {cluster.address}")
            server2 = Server(tmp / "data-cluster", address=cluster.address)
            try:
                log(f"  server answered after {server2.startup:.1f} s")
                clu = run_service(server2, pngs, jobs, params, latency=False)
                time.sleep(2)
                leftover = live_drivers(cluster.address)
                log(f"  job drivers still alive on the cluster 2 s after every job ended: {leftover}")
            finally:
                server2.stop()
        finally:
            cluster.shutdown()
        clu_equal = compare("cluster", clu["jobs"], cli)
        for r in clu["jobs"]:
            append_row(JSONL, {**base, "mode": "cluster", **r})

    gaps = [(r["between"], r["image"], r["eps"]) for r in svc["jobs"] if r["between"] is not None]
    max_gap = max(gaps) if gaps else (None, None, None)
    firsts = [r["first"] for r in svc["jobs"] if r["first"] is not None]
    lat = svc["latency"]
    summary = {
        **base, "mode": "summary", "jobs": len(jobs), "cli_total": cli_total,
        "service_startup": server.startup, "service_submit": svc["submit_s"], "service_total": svc["total"],
        "ratio": svc["total"] / cli_total if svc["total"] else None, "service_all_equal": svc_equal,
        "max_gap": max_gap[0], "max_gap_job": f"{max_gap[1]} ε={max_gap[2]}" if max_gap[1] else None,
        "max_first": max(firsts) if firsts else None,
        "latency_n": len(lat), "latency_errors": svc["latency_errors"], "latency_rate": LATENCY_RATE,
        "latency_p50_ms": percentile_ms(lat, 50), "latency_p99_ms": percentile_ms(lat, 99),
        "latency_max_ms": percentile_ms(lat, 100),
        "cluster_startup": cluster_start, "cluster_server_startup": server2.startup, "cluster_total": clu["total"],
        "cluster_ratio": clu["total"] / cli_total if clu["total"] else None, "cluster_all_equal": clu_equal,
        "cluster_drivers_left": leftover,
    }
    append_row(JSONL, summary)
    return run_id


def met(ok: bool | None) -> str:
    return "n/a" if ok is None else ("**yes**" if ok else "**NO**")


def num(v: float | None, fmt: str = ".2f") -> str:
    return "-" if v is None else format(v, fmt)


def report() -> str:
    rows = load_rows(JSONL)
    summaries = [r for r in rows if r["mode"] == "summary"]
    if not summaries:
        return "# Job service benchmark\n\nNo complete run yet: `python benchmarks/service.py`."
    full = [s for s in summaries if not s["quick"]]
    s = (full or summaries)[-1]
    mine = [r for r in rows if r["run"] == s["run"]]
    by = {(r["mode"], r["image"], r["eps"]): r for r in mine if r["mode"] != "summary"}
    keys = [(r["image"], r["eps"]) for r in mine if r["mode"] == "cli"]
    quick = (f" **This is a `--quick` smoke run ({s['jobs']} jobs, {QUICK_GENERATIONS} generations), not the "
             "benchmark.**") if s["quick"] else ""
    out = ["# Job service benchmark", "",
           f"Printed by `benchmarks/service.py` (rows in `results/service.jsonl`), run {s['run']} on "
           f"{s['machine']}.{quick} {s['jobs']} image searches (scikit-image photos saved as PNG, seed 0, "
           "default settings) run back to back with the CLI (`shapesearch image … --json`, default workers, "
           "each run's Ray start-up included), then submitted at once to `shapesearch serve` (loopback, fresh "
           "`--data`, this machine's Ray), then to a server given a 2-node loopback Ray cluster "
           "(`ray.cluster_utils.Cluster`, 1 CPU per node) with `--address`. Service totals run from the first "
           "submit to the last job's end; the server's start-up is separate.", ""]
    body = []
    for name, eps in keys:
        c, v, k = by[("cli", name, eps)], by.get(("service", name, eps), {}), by.get(("cluster", name, eps), {})
        body.append([name, eps, c["wall"], c["cr"], c["params"], c["shape"], num(v.get("wall"), ".1f"),
                     "equal" if v.get("equal_cli") else "**different**", num(v.get("max_gap")), num(v.get("first")),
                     num(k.get("wall"), ".1f"), "equal" if k.get("equal_cli") else "**different**"])
    out += [table(["image", "ε", "CLI wall s", "CR", "TT params", "shape (CLI)", "service job s",
                   "service = CLI", "longest gap s", "start → 1st report s", "cluster job s",
                   "cluster = CLI"], body), "",
            "'service job s': the job's own run time on the server (start to end, with every job sharing the "
            "CPUs); 'longest gap s': the longest the job went without a new evaluation count while RUNNING "
            "(from its start to its first report, and between reports); 'start → 1st report s': the first of those "
            "(image loading, surrogate seeds and the initial population).", ""]
    ratio_ok = s["ratio"] is not None and s["ratio"] <= TARGETS["ratio"]
    p99 = s["latency_p99_ms"]
    summary = [
        ["back-to-back CLI total", f"{s['cli_total']:.1f} s", "", ""],
        ["service start-up (until GET /api/jobs answers)", f"{s['service_startup']:.1f} s", "", ""],
        ["service total, first submit to last end", f"{num(s['service_total'], '.1f')} s "
         f"({num(s['ratio'])}× back to back)", f"≤ {TARGETS['ratio']} × back to back", met(ratio_ok)],
        ["service results equal to the CLI's", str(s["service_all_equal"]), "all equal", met(s["service_all_equal"])],
        ["longest wait for a job's next finished evaluation (max over jobs)",
         f"{num(s['max_gap'])} s ({s['max_gap_job']})", f"≤ {TARGETS['max_gap_s']:g} s",
         met(None if s["max_gap"] is None else s["max_gap"] <= TARGETS["max_gap_s"])],
        ["longest wait from a job's start to its first finished evaluation",
         f"{num(s.get('max_first'))} s", "", ""],
        ["GET /api/jobs/{id} p50 / p99 / max", f"{num(s['latency_p50_ms'])} / {num(p99)} / "
         f"{num(s['latency_max_ms'])} ms ({s['latency_n']} requests, {s['latency_errors']} errors)",
         f"p99 < {TARGETS['p99_ms']:g} ms, ≥ {TARGETS['min_requests']} requests",
         met(None if p99 is None else p99 < TARGETS["p99_ms"] and s["latency_n"] >= TARGETS["min_requests"])],
        ["2-node cluster start-up + its server's", f"{s['cluster_startup']:.1f} + {s['cluster_server_startup']:.1f} s",
         "", ""],
        ["2-node cluster total, first submit to last end", f"{num(s['cluster_total'], '.1f')} s "
         f"({num(s['cluster_ratio'])}× back to back)", "", ""],
        ["2-node cluster results equal to the CLI's", str(s["cluster_all_equal"]), "all equal",
         met(s["cluster_all_equal"])],
        ["job drivers alive on the cluster after every job ended", str(s.get("cluster_drivers_left")), "", ""],
    ]
    out += [table(["measure", "value", "target", "met"], summary), "",
            "The wait is measured on the job's count of finished evaluations, which its driver writes at "
            "most every 0.5 s as Ray tasks finish, sampled from `GET /api/jobs` every "
            f"{SAMPLE_S:g} s (so it is exact to about 0.6 s). The start → first report wait is mostly Ray starting "
            "each job's driver process (all 8 at once on 2 cores) and its first task's worker. Latency: one "
            "thread, " + (f"{s['latency_rate']} requests a second" if "latency_rate" in s
                          else "requesting back to back")
            + ", wall time of each request with httpx, while the jobs ran.", ""]
    return "\n".join(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true",
                   help=f"smoke run: {len(QUICK_IMAGES)} images × ε = {QUICK_EPS[0]}, "
                        f"--generations {QUICK_GENERATIONS}")
    main_with_report(p, run, report, MARKDOWN)


if __name__ == "__main__":
    main()
