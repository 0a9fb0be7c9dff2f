"""Ray execution: one node, a two-node loopback cluster, and a worker killed mid-search."""

import os
import signal
import threading
import time

import numpy as np
import pytest
import ray

from shapesearch.engine.executors import LocalExecutor, RayExecutor, RayTaskExecutor, evaluation_task, start_ray
from shapesearch.engine.search import SearchConfig, run_search

from .conftest import smooth_image

CFG = dict(eps=0.1, population=12, generations=5, stall=100, seed=11)


def _key(r):
    return (r.shape.key, r.params, r.ranks, r.evaluations, r.cache_hits,
            [h["best_params"] for h in r.history])


@pytest.fixture(scope="module")
def image():
    return smooth_image(64, 96, 3, seed=5)


@pytest.fixture(scope="module")
def reference(image):
    ex = LocalExecutor(image, float(np.linalg.norm(image)))
    return _key(run_search(image, SearchConfig(**CFG), ex))


@pytest.fixture
def local_ray():
    ray.shutdown()
    yield
    ray.shutdown()


def test_one_node_matches_in_process(image, reference, local_ray):
    ex = RayExecutor(image, float(np.linalg.norm(image)), workers=2)
    assert ex.workers == 2
    assert ray.util.get_node_ip_address() == "127.0.0.1"
    assert _key(run_search(image, SearchConfig(**CFG), ex)) == reference
    ex.close()


def test_two_node_cluster_gives_same_result(image, reference, local_ray):
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args=dict(num_cpus=1, include_dashboard=False))
    cluster.add_node(num_cpus=1)
    try:
        ex = RayExecutor(image, float(np.linalg.norm(image)), address=cluster.address)
        assert ex.workers == 2
        nodes = {n["NodeManagerAddress"] for n in ray.nodes() if n["Alive"]}
        assert nodes == {"127.0.0.1"} and len([n for n in ray.nodes() if n["Alive"]]) == 2
        assert _key(run_search(image, SearchConfig(**CFG), ex)) == reference
        ex.close()
    finally:
        ray.shutdown()
        cluster.shutdown()


def test_killing_a_worker_mid_search_changes_nothing(image, reference, local_ray):
    ex = RayExecutor(image, float(np.linalg.norm(image)), workers=2)
    before = ex.pids()
    killed = []

    def kill_one(h):
        if h["generation"] == 2 and not killed:
            os.kill(before[0], signal.SIGKILL)
            killed.append(before[0])

    result = run_search(image, SearchConfig(**CFG), ex, on_generation=kill_one)
    assert killed
    after = ex.pids()
    assert after[0] != before[0]  # the actor was restarted and took the retried work
    assert _key(result) == reference
    ex.close()


def test_task_executor_matches_in_process(image, reference, local_ray):
    ex = RayTaskExecutor(image, float(np.linalg.norm(image)), share=1, task_s=0.02)
    assert _key(run_search(image, SearchConfig(**CFG), ex)) == reference
    ex.close()


def test_jobs_sharing_one_evaluation_task_take_turns(local_ray):
    """Searches on one cluster, one task in flight each: with one shared remote function every
    job gets a worker every few tasks; with one function per job, Ray served some jobs for
    seconds while others waited."""
    start_ray(num_cpus=2)
    task = evaluation_task()
    done: dict[int, list[float]] = {j: [] for j in range(6)}

    def busy(_tensor, _norm, item):
        t = time.perf_counter()
        while time.perf_counter() - t < 0.04:
            pass
        return item

    def job(j: int) -> None:
        tiny = np.ones((2, 2))
        ex = RayTaskExecutor(tiny, 2.0, share=1, task=task, task_s=0.04,
                             on_evaluated=lambda n: done[j].append(time.perf_counter()))
        assert ex.map(busy, list(range(40))) == list(range(40))

    RayTaskExecutor(np.ones((2, 2)), 2.0, task=task).map(busy, list(range(4)))  # workers started
    t0 = time.perf_counter()
    threads = [threading.Thread(target=job, args=(j,)) for j in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # 240 tasks of 40 ms on 2 CPUs: taking turns, a job waits ~6 × 40 ms / 2 between its tasks
    # (measured 0.14 s; with a function per job, 1.5-3 s)
    gaps = [max(b - a for a, b in zip([t0, *times], times)) for times in done.values()]
    assert max(gaps) < 1.5, gaps
