"""One job's driver: a Ray actor that runs the job as its command would and reports to the store.

The driver holds no CPU of its own (``num_cpus=0``): a search's evaluations go out as plain
Ray tasks (:class:`~shapesearch.engine.executors.RayTaskExecutor`), so every job on the cluster
shares its CPUs through Ray's scheduler.  Progress goes to the store every generation, a line
per generation to ``log.txt``, and the final state (SUCCEEDED, or FAILED with the one-line
message the command would print) is written by the driver itself.  A search writes its
checkpoint every generation, so a driver started again on the same directory resumes it.
"""

from __future__ import annotations

import json
import threading
import time
import traceback
from pathlib import Path

from ..errors import ShapesearchError
from .specs import OPTIONS, compress_configs, layers_request, search_config
from .store import Store

INPUT = "input"  # an uploaded input is saved as input.<suffix> in the job's directory
OUT = "out"  # the run's own output directory inside the job's directory
LOG = "log.txt"


def input_file(job_dir: Path) -> Path | None:
    """The uploaded input of a job, if it has one."""
    found = sorted(Path(job_dir).glob(f"{INPUT}.*"))
    return found[0] if found else None


def _eta(h: dict, generations: int) -> float | None:
    done = max(h["generation"], 0)
    if done == 0 or h.get("phase") != "ga":
        return None
    return h["elapsed"] / done * max(generations - done, 0)  # an upper bound: a stall ends it sooner


class JobRunner:
    """Runs one job (``kind``, checked ``params``) in ``job_dir``, reporting to ``store``."""

    def __init__(self, job_id: str, kind: str, params: dict, job_dir: str, db_url: str, task=None) -> None:
        self.job_id, self.kind, self.params, self.task = job_id, kind, params, task
        self.dir = Path(job_dir)
        self.store = Store(db_url)
        self._share = (1, -float("inf"))  # (tasks in flight, when it was looked up)

    def log(self, line: str) -> None:
        with (self.dir / LOG).open("a") as f:
            f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {line}\n")

    def run(self) -> str:
        """Run to the end; the final state."""
        self.log(f"{self.kind} job {self.job_id} started")
        try:
            {"image": self._search, "tensor": self._search, "layers": self._layers,
             "compress": self._compress}[self.kind]()
        except ShapesearchError as exc:
            flags = set(OPTIONS[self.kind])
            message = exc.for_command_line(flags)
            self.log(f"failed: {message}")
            self.store.finish(self.job_id, "FAILED", message)
            return "FAILED"
        except Exception as exc:  # noqa: BLE001 - recorded for the user; the traceback goes to the log
            self.log("failed:\n" + traceback.format_exc())
            self.store.finish(self.job_id, "FAILED", f"internal error: {type(exc).__name__}: {exc}".splitlines()[0])
            return "FAILED"
        self.log("succeeded")
        self.store.finish(self.job_id, "SUCCEEDED")
        return "SUCCEEDED"

    def _fair_share(self) -> int:
        """Tasks in flight for a job with no ``cpus`` of its own: the cluster's CPUs over the jobs
        running now, rounded up (a job alone uses every CPU; many take turns, see
        RayTaskExecutor).  Looked up at most once a second."""
        import ray

        now = time.monotonic()
        if now - self._share[1] >= 1.0:
            running = max(1, self.store.count("RUNNING"))
            cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
            self._share = (-(-cpus // running), now)
        return self._share[0]

    def _report(self, progress: dict) -> None:
        self.store.report(self.job_id, progress)

    def _search(self) -> None:
        from ..jobs.search_job import Job, run_job
        from ..jobs.sources import Source

        p = self.params
        config = search_config(p)
        path = input_file(self.dir) or p.get("path")
        source = Source("image" if self.kind == "image" else "array", path, p.get("key"))
        try:
            data, name, bits = source.load()
        except ShapesearchError as exc:  # say what the user sent, not where this server keeps it
            if "upload" not in p:
                raise
            raise ShapesearchError(str(exc).replace(str(source.path), p["upload"])) from None
        if "upload" in p:  # the job's name as a CLI run on that file names it (the file's stem, and its key)
            name = Source(source.kind, p["upload"], p.get("key")).name
        out = self.dir / OUT
        latest: dict = {}
        tally = {"evaluated": 0, "sent": 0.0}

        def evaluated(n: int) -> None:
            # finer than a generation: every finished task counts, written at most twice a second
            tally["evaluated"] += n
            now = time.time()
            if now - tally["sent"] >= 0.5:
                tally["sent"] = now
                self._report({**latest, "evaluated": tally["evaluated"], "last_evaluation": now})

        job = Job(data=data, name=name, out=out, kind=source.kind, bits=bits,
                  resume=(out / "checkpoint.json").is_file(), overwrite=True, source=source,
                  shared=True, share=p.get("cpus") or self._fair_share, on_evaluated=evaluated, task=self.task)
        if job.resume:
            self.log("resuming from the last checkpoint")

        def progress(h: dict) -> None:
            latest.clear()
            latest.update(generation=h["generation"], generations=config.generations, phase=h["phase"],
                          evaluations=h["evaluations"], best_cr=h["best_cr"], best_error=h.get("best_error"),
                          elapsed=h["elapsed"], eta=_eta(h, config.generations))
            self._report({**latest, "evaluated": tally["evaluated"], "last_evaluation": tally["sent"] or None})
            self.log(f"generation {h['generation']} ({h['phase']}): best CR {h['best_cr']:.3f}, "
                     f"{h['evaluations']} evaluations, {h['elapsed']:.1f} s")

        run_job(job, config, on_generation=progress)

    def _layers(self) -> None:
        from compressors.layer_plans import plan_layers

        p = self.params
        start = time.perf_counter()

        def progress(n: int, total: int) -> None:
            self._report({"done": n, "total": total, "elapsed": time.perf_counter() - start})

        request = layers_request(p)  # what the submission was checked as
        plan = plan_layers(p["model"], eps=request.eps, fmt=request.format, budget=request.budget,
                           eps_grid=request.eps_grid, layers=request.layers, generations=request.generations,
                           population=request.population, seed=request.seed, progress=progress,
                           embeddings=p.get("embeddings", False))
        (self.dir / OUT).mkdir(exist_ok=True)
        plan.save(self.dir / OUT / "plan.json")

    def _compress(self) -> None:
        from compressors import compress_model

        p = self.params
        config, tune = compress_configs(p)
        report = compress_model(p["model"], config, self.dir / OUT / "model", calib=p.get("calib"),
                                samples=p["samples"], seqlen=p["seqlen"], seed=p["seed"], finetune_config=tune,
                                overwrite=True, progress=False, embedding_weights=not p.get("plain_embedding", False))
        (self.dir / OUT / "report.json").write_text(json.dumps(report, indent=2) + "\n")


def driver_class():
    """The Ray actor class (built lazily: importing this module must not need Ray)."""
    import ray

    @ray.remote(num_cpus=0, max_restarts=0, max_concurrency=2)
    class JobDriver:
        """Starts its job in a thread at once; ``join`` waits for the final state."""

        def __init__(self, job_id: str, kind: str, params: dict, job_dir: str, db_url: str, task=None) -> None:
            self.runner = JobRunner(job_id, kind, params, job_dir, db_url, task)
            self.state: str | None = None
            self.thread = threading.Thread(target=self._run, daemon=True)
            self.thread.start()

        def _run(self) -> None:
            self.state = self.runner.run()

        def join(self) -> str | None:
            self.thread.join()
            return self.state

    return JobDriver
