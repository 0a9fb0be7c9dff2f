"""Where evaluations run: in this process, or on persistent Ray actors.

Both expose ``map(func, items) -> list`` in input order, where ``func(tensor, norm, item)``
is a module-level function (see ``fitness``) and ``tensor`` the executor's
:class:`~.fitness.HeldTensor`, which keeps its cast copies; and a ``spectra`` dict, the
surrogate's per-tensor cache.  The Ray executor puts the tensor in the object store once,
keeps one actor per CPU alive for the whole search (one BLAS thread each), hands the next
task to whichever actor frees up first (evaluation times vary ~30×), and restarts a dead
actor and retries its task.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Protocol

import numpy as np

from ..errors import ArgumentError
from .fitness import HeldTensor

THREAD_VARS = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def limit_threads() -> None:
    """One BLAS/torch thread in this process."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)
    torch = sys.modules.get("torch")  # only if something uses it: importing it costs seconds
    if torch is not None:
        torch.set_num_threads(1)


class Executor(Protocol):
    """What the search needs from an executor."""

    workers: int
    spectra: dict  # the surrogate's unfolding spectra of this executor's tensor, by axes

    def map(self, func: Callable, items: Sequence) -> list: ...

    def close(self) -> None: ...


class LocalExecutor:
    """Runs every evaluation in this process (for tiny tensors and tests).  ``norm``: the
    tensor's Frobenius norm, the reference of ε."""

    workers = 1

    def __init__(self, tensor: np.ndarray, norm: float) -> None:
        self.tensor, self.norm = tensor, norm
        self.held = HeldTensor(tensor)
        self.spectra: dict = {}

    def map(self, func: Callable, items: Sequence) -> list:
        """``func(tensor, norm, item)`` of every item, in order."""
        return [func(self.held, self.norm, item) for item in items]

    def close(self) -> None:
        pass


CONNECT_TIMEOUT = 10.0  # seconds to wait for a cluster's head before giving up


def check_address(address: str, timeout: float = CONNECT_TIMEOUT) -> None:
    """Refuse, in ``timeout`` seconds at most, a cluster address nobody answers at (``ray.init``
    would retry for ever) or a ``ray://`` address without Ray Client installed."""
    if address == "auto":
        return
    if address.startswith("ray://"):
        try:
            import grpc  # noqa: F401  (what ray[client] adds)
        except ImportError:
            raise ArgumentError("address", f"{address}: ray:// needs Ray Client (pip install 'ray[client]'); "
                                           "or give the head node's address as HOST:6379") from None
        address = address[len("ray://"):]
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ArgumentError("address", f"{address!r} is not HOST:PORT (the head node's address, e.g. "
                                       "10.0.0.5:6379, as `ray start --head` prints it)")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as exc:
        raise ArgumentError("address", f"{address}: no Ray cluster answers there ({exc.strerror or exc}); "
                                       "start one with `ray start --head` or fix the address") from None


def start_ray(address: str | None = None, num_cpus: int | None = None) -> None:
    """Join ``address`` (or ``RAY_ADDRESS``), else start a loopback-only local Ray."""
    import ray

    if ray.is_initialized():
        return
    if address:
        check_address(address)
    elif os.environ.get("RAY_ADDRESS"):
        address = os.environ["RAY_ADDRESS"]
        try:
            check_address(address)
        except ArgumentError as exc:  # the user gave no --address: name what they did set
            raise ArgumentError("RAY_ADDRESS", f"(environment) {exc.problem}") from None
    else:
        address = None
        # a local Ray otherwise listens on the machine's public interface and writes a token
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    sigterm = signal.getsignal(signal.SIGTERM)
    ray.init(address=address, num_cpus=None if address else num_cpus, include_dashboard=False,
             log_to_driver=False, configure_logging=False,
             runtime_env={"env_vars": dict(THREAD_VARS)})
    if threading.current_thread() is threading.main_thread() and sigterm is not None:
        # ray.init makes SIGTERM exit at once; the caller's own handling (checkpoint kept, exit 143) stays
        signal.signal(signal.SIGTERM, sigterm)


def interleaved_chunks(items: Sequence, n: int) -> list[list[tuple[int, object]]]:
    """(index, item) pairs dealt into at most ``n`` chunks, item j to chunk j mod n: fewer round
    trips than one task per item, and each chunk mixes cheap and costly items."""
    n = max(1, min(len(items), n))
    indexed = list(enumerate(items))
    return [indexed[j::n] for j in range(n)]


def _worker_class():
    import ray

    @ray.remote(num_cpus=1, max_restarts=-1, max_task_retries=-1)
    class FitnessWorker:
        # the tensor comes with every task as a nested ref, fetched once per actor life: a
        # constructor argument would make Ray warn that restarts may fail, and a restarted
        # actor fetches it again on its first task
        def __init__(self, norm: float) -> None:
            limit_threads()
            self.held, self.norm = None, norm

        def run(self, refs: list, func: Callable, indexed: list[tuple[int, object]]) -> list[tuple[int, object]]:
            if self.held is None:
                self.held = HeldTensor(ray.get(refs[0]))  # zero-copy, read-only
            return [(i, func(self.held, self.norm, item)) for i, item in indexed]

        def pid(self) -> int:
            return os.getpid()

    return FitnessWorker


class RayExecutor:
    """A persistent pool of Ray actors that each hold the tensor."""

    def __init__(self, tensor: np.ndarray, norm: float, workers: int | None = None,
                 address: str | None = None) -> None:
        import ray
        from ray.util import ActorPool

        start_ray(address, workers)
        cpus = int(ray.cluster_resources().get("CPU", 1))
        self.workers = max(1, min(workers or cpus, cpus))
        self.spectra: dict = {}
        ref = ray.put(np.ascontiguousarray(tensor))
        worker = _worker_class()
        self.actors = [worker.remote(norm) for _ in range(self.workers)]
        self._refs = [ref]  # kept alive by this executor: restarted actors read it again
        # each actor appears twice: its next task is already queued when one finishes
        self.pool = ActorPool(self.actors * 2)
        self.pids()  # wait until every actor is up, so start-up is not billed to the first tasks

    def map(self, func: Callable, items: Sequence, chunks_per_worker: int = 4) -> list:
        """Results in input order.  Items go out in interleaved chunks (item j to chunk j mod C,
        about ``chunks_per_worker`` chunks per actor): fewer round trips, mixed costs per chunk."""
        out: list = [None] * len(items)
        chunks = interleaved_chunks(items, self.workers * chunks_per_worker)
        for done in self.pool.map_unordered(lambda a, chunk: a.run.remote(self._refs, func, chunk), chunks):
            for index, value in done:
                out[index] = value
        return out

    def pids(self) -> list[int]:
        import ray

        return ray.get([a.pid.remote() for a in self.actors])

    def close(self) -> None:
        import ray

        for a in self.actors:
            ray.kill(a)
        self.actors = []


# per Ray worker process: the tensors of recent tasks by object id, so that tasks of one search
# landing on the same worker cast the tensor once (workers are shared by every job on the cluster)
_HELD: dict[str, HeldTensor] = {}
_HELD_MAX = 4


def _held(ref) -> HeldTensor:
    import ray

    key = ref.hex()
    if key not in _HELD:
        while len(_HELD) >= _HELD_MAX:
            _HELD.pop(next(iter(_HELD)))
        _HELD[key] = HeldTensor(ray.get(ref))  # zero-copy, read-only
    return _HELD[key]


def _run_chunk(refs: list, norm: float, func: Callable, indexed: list[tuple[int, object]]
               ) -> tuple[list[tuple[int, object]], float]:
    """(index, result) pairs and the seconds the worker spent on them."""
    start = time.perf_counter()
    limit_threads()
    held = _held(refs[0])
    return [(i, func(held, norm, item)) for i, item in indexed], time.perf_counter() - start


def evaluation_task(cpus: float = 1.0):
    """The Ray remote function that runs chunks of evaluations, asking for ``cpus`` each.

    Ray makes every remote function a scheduling class of its own (a new id per
    ``ray.remote`` call) and serves the classes unevenly; tasks of one class get workers in
    the order they asked.  So searches that share a cluster must share this one object: the
    service makes it once and hands it to every job (it pickles with its id)."""
    import ray

    return ray.remote(num_cpus=cpus, max_retries=5)(_run_chunk)


class RayTaskExecutor:
    """Evaluations as plain Ray tasks on a cluster shared with other searches: no actors of
    its own, so Ray's scheduler interleaves the tasks of every job by their resource requests.

    Ray grants workers to the lease requests of one scheduling class in the order they came,
    and an owner with queued tasks keeps a granted worker for up to half a second; so a job
    that queued many tasks would make every other job wait behind them.  Each job therefore
    keeps only ``share`` short tasks in flight (about ``task_s`` seconds of work each, sized
    from the seconds its last tasks took on the workers): every finished task puts its next
    one at the back of Ray's queue, and the jobs take turns.

    ``share``: a number (the job's CPU share), a function asked as tasks are sent (e.g. the
    cluster's CPUs over the jobs running now), or None (the cluster's CPUs).  ``task``: the
    remote function to run (:func:`evaluation_task`), the same object for every job on the
    cluster; default: one of its own.  A task on a killed worker is retried, so the loss is
    its in-flight evaluations and the result does not change (results never depend on how
    items were grouped).  ``on_evaluated(n)``: told as each task finishes."""

    def __init__(self, tensor: np.ndarray, norm: float, share: int | Callable[[], int] | None = None,
                 task=None, address: str | None = None,
                 on_evaluated: Callable[[int], None] | None = None, task_s: float = 0.25) -> None:
        import ray

        if isinstance(share, int) and share < 1:
            raise ArgumentError("share", f"must be >= 1 task in flight, got {share}")
        start_ray(address)
        self.cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
        self.share, self.norm, self.spectra, self.task_s = share, norm, {}, task_s
        self.on_evaluated = on_evaluated
        self._item_s: dict[Callable, float] = {}  # per function: recent worker seconds per item
        self._refs = [ray.put(np.ascontiguousarray(tensor))]
        self._task = task or evaluation_task()

    @property
    def workers(self) -> int:
        """Tasks in flight at once now."""
        share = self.share() if callable(self.share) else self.share
        return max(1, min(share or self.cpus, self.cpus))

    def _chunk_size(self, func: Callable) -> int:
        per_item = self._item_s.get(func)
        return 1 if not per_item else max(1, int(self.task_s / per_item))

    def map(self, func: Callable, items: Sequence) -> list:
        """Results in input order; items go out in the given order (the search sends its
        costliest first), in tasks of about ``task_s`` seconds, ``workers`` at a time."""
        import ray

        out: list = [None] * len(items)
        todo = list(enumerate(items))
        todo.reverse()  # popped from the end: the given order is kept
        pending: list = []
        while todo or pending:
            window = self.workers
            while todo and len(pending) < window:
                chunk = [todo.pop() for _ in range(min(self._chunk_size(func), len(todo)))]
                pending.append(self._task.remote(self._refs, self.norm, func, chunk))
            done, pending = ray.wait(pending, num_returns=1)
            finished, seconds = ray.get(done[0])
            for index, value in finished:
                out[index] = value
            # recent tasks weigh most: items are sent costliest first
            per_item = seconds / len(finished)
            self._item_s[func] = (per_item + self._item_s[func]) / 2 if func in self._item_s else per_item
            if self.on_evaluated is not None:
                self.on_evaluated(len(finished))
        return out

    def close(self) -> None:
        self._refs = []


def check_workers(workers: int | None) -> None:
    """``workers``: None (one per CPU), 0 (in process) or a positive count."""
    if workers is not None and workers < 0:
        raise ArgumentError("workers", f"must be >= 0 (0 = in process), got {workers}")


def make_executor(tensor: np.ndarray, norm: float, workers: int | None = None,
                  address: str | None = None) -> Executor:
    """``workers=0`` runs in process; otherwise Ray (local unless an address is given).
    ``norm``: the tensor's Frobenius norm."""
    check_workers(workers)
    if workers == 0:
        return LocalExecutor(tensor, norm)
    return RayExecutor(tensor, norm, workers, address)
