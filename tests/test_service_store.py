"""The service's durable job store, on a SQLite file and on a real PostgreSQL server."""

from __future__ import annotations

import json
import multiprocessing
import os
import pickle
import queue
import socket
import time
import traceback
import uuid
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from shapesearch.errors import ShapesearchError
from shapesearch.service.store import FINISHED, STATES, JobRecord, Store

from .postgres import postgres_url  # noqa: F401


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request, tmp_path):
    """A fresh, empty database: a SQLite file, or a new database on the session's PostgreSQL server."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/jobs.db"
        return
    import psycopg

    base = request.getfixturevalue("postgres_url")
    name = f"t_{uuid.uuid4().hex[:12]}"
    conninfo = base.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    yield base.rsplit("/", 1)[0] + "/" + name
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE {name} WITH (FORCE)")


@pytest.fixture
def store(url):
    s = Store(url)
    yield s
    s.close()


def test_add_get_list(store):
    a = store.add("image", {"path": "a.png", "error": 0.05, "nested": {"k": [1, 2.5, None, "x"]}})
    b = store.add("tensor", {"path": "b.npy"}, priority=3, cpus=2)
    c = store.add("layers", {}, cpus=0.5)
    assert len({a.id, b.id, c.id}) == 3 and all(len(j.id) == 12 and int(j.id, 16) >= 0 for j in (a, b, c))
    got = store.get(a.id)
    assert got == a and isinstance(got, JobRecord)
    assert got.state == "PENDING" and got.progress == {} and got.attempts == 0 and got.error is None
    assert got.params["nested"] == {"k": [1, 2.5, None, "x"]}
    assert store.get(b.id).cpus == 2.0 and store.get(b.id).priority == 3 and store.get(a.id).cpus is None
    assert abs(got.created - time.time()) < 60 and got.started is None and got.finished is None
    assert store.get("0123456789ab") is None
    assert [j.id for j in store.list()] == [c.id, b.id, a.id]  # newest first
    store.start(b.id)
    assert [j.id for j in store.list("PENDING")] == [c.id, a.id]
    assert [j.id for j in store.list("RUNNING")] == [b.id]
    assert store.list("FAILED") == []
    for job in store.list():
        d = job.to_dict()
        assert json.loads(json.dumps(d)) == d
        assert set(d) == {"id", "kind", "state", "params", "priority", "cpus", "created", "started", "finished",
                          "progress", "error", "attempts"}


def test_pending_order_is_priority_then_age(store):
    ids = [store.add("image", {"n": n}, priority=p).id for n, p in enumerate([0, 5, 0, 5, -1, 1])]
    assert [j.params["n"] for j in store.pending()] == [1, 3, 5, 0, 2, 4]
    store.start(ids[1])
    store.finish(ids[5], "STOPPED")
    assert [j.params["n"] for j in store.pending()] == [3, 0, 2, 4]
    assert [j.params["n"] for j in store.unfinished()] == [0, 1, 2, 3, 4]  # PENDING and RUNNING, oldest first


def test_transitions_are_checked(store):
    job = store.add("compress", {"model": "tiny"}).id
    store.report(job, {"step": 1})  # not running yet: ignored
    assert store.get(job).progress == {}
    assert store.start(job)
    first = store.get(job)
    assert first.state == "RUNNING" and first.attempts == 1 and first.started is not None
    assert store.start(job)  # a restarted driver: counted, started kept
    again = store.get(job)
    assert again.attempts == 2 and again.started == first.started
    store.report(job, {"step": 2, "best": np.float32(0.25), "shape": np.array([4, 8]), "inf": float("inf")})
    store.report(job, {"step": 3, "best": 0.125})  # replaces, no merge
    assert store.get(job).progress == {"step": 3, "best": 0.125}
    assert store.finish(job, "FAILED", "Traceback:\n  boom\nValueError: bad  thing\n")
    done = store.get(job)
    assert done.state == "FAILED" and done.error == "Traceback: boom ValueError: bad thing"
    assert done.finished is not None and done.finished >= done.started
    assert not store.finish(job, "SUCCEEDED")  # finished twice
    assert not store.finish(job, "FAILED")
    assert not store.start(job)  # started after finishing
    store.report(job, {"step": 4})
    after = store.get(job)
    assert after.state == "FAILED" and after.progress == {"step": 3, "best": 0.125} and after.attempts == 2
    pending = store.add("image", {}).id
    assert store.finish(pending, "STOPPED")  # stopped before it ran
    stopped = store.get(pending)
    assert stopped.state == "STOPPED" and stopped.started is None and stopped.error is None
    gone = "ffffffffffff"
    assert not store.start(gone) and not store.finish(gone, "STOPPED") and store.report(gone, {}) is None


def test_progress_reported_with_numpy_values(store):
    job = store.add("tensor", {"shape": np.array([2, 3]), "eps": np.float64(0.1)}).id
    assert store.get(job).params == {"shape": [2, 3], "eps": 0.1}
    store.start(job)
    store.report(job, {"shape": np.array([4, 8]), "best": np.float32(0.25), "inf": float("inf")})
    assert store.get(job).progress == {"shape": [4, 8], "best": 0.25, "inf": None}


def test_bad_arguments(store):
    job = store.add("image", {}).id
    bad = [lambda: store.add("video", {}), lambda: store.add("image", {"x": object()}),
           lambda: store.add("image", [1]), lambda: store.add("image", {}, cpus=-1),
           lambda: store.add("image", {}, priority=1.5), lambda: store.list("DONE"),
           lambda: store.finish(job, "RUNNING"), lambda: store.finish(job, "done")]
    for call in bad:
        with pytest.raises(ShapesearchError) as caught:
            call()
        assert "\n" not in str(caught.value)
    store.start(job)
    with pytest.raises(ShapesearchError):
        store.report(job, {"x": {1, 2}})
    assert set(FINISHED) < set(STATES)


def test_delete(store):
    a, b = store.add("image", {}).id, store.add("image", {}).id
    assert store.delete(a)
    assert not store.delete(a)
    assert store.get(a) is None and [j.id for j in store.list()] == [b]
    assert not store.start(a) and not store.finish(a, "STOPPED")


def test_a_restarted_server_sees_everything(url):
    first = Store(url)
    a = first.add("image", {"n": 1}, priority=2, cpus=1.5)
    b = first.add("layers", {"n": 2})
    c = first.add("tensor", {"n": 3})
    first.start(a.id)
    first.report(a.id, {"generation": 7})
    first.finish(c.id, "SUCCEEDED")
    before = [j.to_dict() for j in first.list()]
    other = Store(url)  # a second process while the first runs
    assert [j.to_dict() for j in other.list()] == before
    other.close()
    first.close()
    second = Store(url)  # after a restart
    assert [j.to_dict() for j in second.list()] == before
    assert [j.id for j in second.unfinished()] == [a.id, b.id]
    assert second.get(a.id).progress == {"generation": 7} and second.get(a.id).cpus == 1.5
    assert second.start(a.id) and second.get(a.id).attempts == 2
    second.close()
    first.add("image", {})  # a closed store reconnects
    assert len(first.list()) == 4
    first.close()


def test_a_pickled_store_reconnects(store):
    job = store.add("image", {}).id
    copy = pickle.loads(pickle.dumps(store))
    assert copy.get(job) is not None and copy.url == store.url
    copy.close()


def test_threads_share_a_store(store):
    jobs = [store.add("image", {}).id for _ in range(8)]

    def drive(job: str) -> bool:
        for i in range(10):
            store.start(job)
            store.report(job, {"i": i})
        return store.finish(job, "SUCCEEDED")

    with ThreadPoolExecutor(8) as pool:
        assert all(pool.map(drive, jobs))
    assert all(j.state == "SUCCEEDED" and j.attempts == 10 and j.progress == {"i": 9} for j in store.list())


ROUNDS, OWN, SHARED, WORKERS = 50, 5, 20, 4


def _driver(url: str, own: list[str], shared: list[str], barrier, results) -> None:
    """A job driver process: runs its own jobs, then races the others to stop the shared ones."""
    try:
        store = Store(url)
        barrier.wait(60)
        for i in range(ROUNDS):
            job = own[i % len(own)]
            assert store.start(job), job
            store.report(job, {"round": i, "pid": os.getpid()})
        assert all(store.finish(job, "SUCCEEDED") for job in own)
        assert not any(store.start(job) for job in own)
        won = [job for job in shared if store.start(job) and store.finish(job, "STOPPED", f"by {os.getpid()}")]
        store.close()
        results.put((os.getpid(), won, None))
    except BaseException:
        results.put((os.getpid(), [], traceback.format_exc()))


def test_several_processes_write_at_once(url):
    store = Store(url)
    own = [[store.add("image", {"worker": w}).id for _ in range(OWN)] for w in range(WORKERS)]
    shared = [store.add("tensor", {}).id for _ in range(SHARED)]
    ctx = multiprocessing.get_context("fork")  # each makes its own Store, as a Ray worker would
    barrier, results = ctx.Barrier(WORKERS), ctx.Queue()
    procs = [ctx.Process(target=_driver, args=(url, own[w], shared, barrier, results)) for w in range(WORKERS)]
    for p in procs:
        p.start()
    try:
        outcomes = [results.get(timeout=120) for _ in procs]
    except queue.Empty:
        pytest.fail("a driver process hung")
    finally:
        for p in procs:
            p.join(30)
            if p.is_alive():
                p.kill()
    errors = [err for _, _, err in outcomes if err]
    assert not errors, errors[0]
    wins = [job for _, won, _ in outcomes for job in won]
    assert sorted(wins) == sorted(shared)  # each shared job stopped by exactly one driver
    per_job = ROUNDS // OWN
    for w in range(WORKERS):
        for k, job in enumerate(own[w]):
            record = store.get(job)
            assert record.state == "SUCCEEDED" and record.attempts == per_job
            assert record.progress["round"] == ROUNDS - OWN + k
    for job in shared:
        record = store.get(job)
        assert record.state == "STOPPED" and record.error.startswith("by ")
    store.close()


@pytest.mark.parametrize("bad", [
    "nosuchdb://user:hunter2@host/db",
    "not a url at all",
    "postgresql+psycopg://user:hunter2@127.0.0.1:1/db",  # nothing listens on port 1
    "mysql://user:hunter2@127.0.0.1/db",  # no driver installed
    "sqlite:////no/such/folder/jobs.db",
])
def test_a_bad_url_says_what_to_do(bad):
    t0 = time.monotonic()
    with pytest.raises(ShapesearchError) as caught:
        Store(bad)
    message = str(caught.value)
    assert time.monotonic() - t0 < 5
    assert "hunter2" not in message and "\n" not in message
    assert "sqlite:///" in message or "folder" in message


def test_a_silent_server_times_out():
    """A server that accepts the connection and never answers: an error within the connect timeout."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        port = silent.getsockname()[1]
        t0 = time.monotonic()
        with pytest.raises(ShapesearchError, match=f"127.0.0.1:{port}") as caught:
            Store(f"postgresql://user:hunter2@127.0.0.1:{port}/db")
        assert time.monotonic() - t0 < 10
        assert "hunter2" not in str(caught.value)
