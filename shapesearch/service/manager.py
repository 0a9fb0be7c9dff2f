"""Starting, watching and stopping job drivers; the store is the queue.

One supervisor thread of the server: it starts a driver (a Ray actor, see :mod:`.driver`) for
PENDING jobs, highest priority first, up to ``max_running`` at once, and notices when one ends.
Drivers belong to the server's Ray job, so they end with the server, on one machine or on a
cluster.  (Detached drivers would outlive it, but Ray then starts a fresh worker process for
nearly every evaluation task they send: 4.3x slower on a 2-node cluster in
``benchmarks/service.py``.)  On start the server takes over what a killed one left: every
RUNNING job is started again on its directory, where a search resumes from its checkpoint — so
every job finishes once, with the result of an uninterrupted run.
"""

from __future__ import annotations

import logging
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path

from .driver import driver_class
from .store import Store

NAMESPACE = "shapesearch"
MAX_ATTEMPTS = 3  # drivers started for one job before it counts as failed (a crash, not a bad input)
log = logging.getLogger("shapesearch.service")


@dataclass
class Running:
    actor: object
    done: object  # the ObjectRef of the driver's join()


class Manager:
    """Runs the store's jobs on Ray; ``data``: the directory of every job's files."""

    def __init__(self, store: Store, db_url: str, data: Path, address: str | None = None,
                 max_running: int = 16, poll: float = 0.25) -> None:
        self.store, self.db_url, self.data = store, db_url, Path(data)
        self.address, self.max_running, self.poll = address, max_running, poll
        self.running: dict[str, Running] = {}
        self.task = None  # the Ray remote function every job's evaluations run as (made in start)
        self._lock = threading.Lock()
        self._halt = threading.Event()
        self._thread: threading.Thread | None = None

    def job_dir(self, job_id: str) -> Path:
        return self.data / "jobs" / job_id

    # -- life cycle -----------------------------------------------------------------------------
    def start(self) -> None:
        """Join (or start) Ray, take over what a previous server left, and supervise."""
        from ..engine.executors import evaluation_task, start_ray

        start_ray(self.address)
        self.task = evaluation_task()  # one scheduling class for every job's evaluations
        self._recover()
        self._thread = threading.Thread(target=self._loop, name="shapesearch-jobs", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop supervising; running jobs are left to resume at the next start."""
        self._halt.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _recover(self) -> None:
        for job in self.store.unfinished():
            if job.state == "RUNNING":  # its driver ended with the old server
                self._launch(job.id)

    # -- supervision ----------------------------------------------------------------------------
    def _loop(self) -> None:
        while not self._halt.wait(self.poll):
            try:
                self.tick()
            except Exception:  # noqa: BLE001 - the supervisor must outlive one bad round
                log.exception("job supervisor round failed")

    def tick(self) -> None:
        """Notice ended drivers, then start pending jobs while there is room."""
        import ray

        with self._lock:
            ended = [i for i, r in self.running.items() if ray.wait([r.done], timeout=0)[0]]
            for job_id in ended:
                run = self.running.pop(job_id)
                try:
                    ray.get(run.done)
                except Exception as exc:  # noqa: BLE001 - the driver died (not a bad input: it records those)
                    self._driver_died(job_id, exc)
                ray.kill(run.actor, no_restart=True)  # its process, at once
            for job in self.store.pending():
                if len(self.running) >= self.max_running:
                    break
                self._launch(job.id)

    def _driver_died(self, job_id: str, exc: Exception) -> None:
        job = self.store.get(job_id)
        if job is None or job.state != "RUNNING":
            return
        if job.attempts >= MAX_ATTEMPTS:
            self.store.finish(job_id, "FAILED", f"its driver died {job.attempts} times ({type(exc).__name__})")
        else:
            log.warning("driver of job %s died (%s); starting it again", job_id, type(exc).__name__)
            self._launch(job_id)

    def _launch(self, job_id: str) -> None:
        if not self.store.start(job_id):
            return
        job = self.store.get(job_id)
        if job is None:  # deleted meanwhile
            return
        # named per attempt: the name of a driver that died with an old server may not be free yet
        options = {"name": f"job-{job_id}-{job.attempts}", "namespace": NAMESPACE}
        actor = driver_class().options(**options).remote(job_id, job.kind, job.params, str(self.job_dir(job_id)),
                                                         self.db_url, self.task)
        self.running[job_id] = Running(actor, actor.join.remote())

    # -- requests -------------------------------------------------------------------------------
    def stop(self, job_id: str) -> bool:
        """Stop a pending or running job (STOPPED); False if it had ended."""
        import ray

        with self._lock:
            stopped = self.store.finish(job_id, "STOPPED")
            run = self.running.pop(job_id, None)
            if run is not None:
                ray.kill(run.actor, no_restart=True)
        return stopped

    def delete(self, job_id: str) -> bool:
        """Stop it if needed, then remove its record and files."""
        self.stop(job_id)
        shutil.rmtree(self.job_dir(job_id), ignore_errors=True)
        return self.store.delete(job_id)
