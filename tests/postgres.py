"""A real PostgreSQL server for tests: the session fixture ``postgres_url``.

Use it with ``from .postgres import postgres_url  # noqa: F401`` and a ``postgres_url`` argument.
It runs ``initdb`` and ``pg_ctl`` (as the ``postgres`` user when the tests run as root, since they
refuse root) on a data folder under /tmp, serves on a free loopback port with trust authentication,
and stops the server and removes the folder at the end of the session, whatever the tests did.
Missing PostgreSQL binaries fail the tests that need them (no skip: CI must run them).
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

START_TIMEOUT_S = 30


def _binary(name: str) -> str:
    found = shutil.which(name) or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)),
                                       None)
    if found is None:
        pytest.fail(f"PostgreSQL's {name} is not installed (looked on PATH and in /usr/lib/postgresql/*/bin): "
                    "install the PostgreSQL server (e.g. apt-get install postgresql) to run these tests",
                    pytrace=False)
    return found


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_server_user() -> dict:
    """subprocess arguments that run a command as ``postgres`` when we are root (initdb refuses root)."""
    if os.geteuid() != 0:
        return {}
    import pwd

    try:
        user = pwd.getpwnam("postgres")
    except KeyError:
        pytest.fail("the tests run as root and there is no 'postgres' user to run PostgreSQL as: create one "
                    "(useradd postgres) or run the tests as another user", pytrace=False)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": user.pw_dir, "USER": "postgres",
           "LOGNAME": "postgres", "LC_ALL": "C"}
    return {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": [], "env": env}


def _run(args: list[str], cwd: Path, timeout: float, who: dict) -> None:
    try:
        done = subprocess.run(args, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, timeout=timeout, **who)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{' '.join(args)} took over {timeout} s", pytrace=False)
    if done.returncode:
        log = cwd / "log"
        tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
        pytest.fail(f"{' '.join(args)} failed ({done.returncode}):\n{done.stdout[-2000:]}\n{tail}", pytrace=False)


def _wait_until_ready(port: int, deadline: float) -> None:
    import psycopg

    while True:
        try:
            with psycopg.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres", connect_timeout=2):
                return
        except psycopg.OperationalError as e:
            if time.monotonic() > deadline:
                pytest.fail(f"PostgreSQL on 127.0.0.1:{port} did not accept connections: {e}", pytrace=False)
            time.sleep(0.1)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """The SQLAlchemy URL of a fresh, empty PostgreSQL server of this test session."""
    initdb, pg_ctl = _binary("initdb"), _binary("pg_ctl")
    who = _as_server_user()
    # under /tmp, not the test's temp folder: the postgres user must reach it
    root = Path(tempfile.mkdtemp(prefix="shapesearch-pg-", dir="/tmp" if os.path.isdir("/tmp") else None))
    root.chmod(0o755)
    if who:
        os.chown(root, who["user"], who["group"])
    data = root / "data"
    try:
        _run([initdb, "-D", str(data), "-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-locale", "--no-sync"],
             root, 120, who)
        for attempt in range(3):  # the free port may be taken between finding and binding it
            port = _free_port()
            options = (f"-p {port} -h 127.0.0.1 -k {root} -c fsync=off -c synchronous_commit=off "
                       "-c full_page_writes=off -c max_connections=100")
            try:
                _run([pg_ctl, "-D", str(data), "-o", options, "-l", str(root / "log"), "-w",
                      "-t", str(START_TIMEOUT_S), "start"], root, START_TIMEOUT_S + 10, who)
                break
            except pytest.fail.Exception:
                if attempt == 2:
                    raise
        _wait_until_ready(port, time.monotonic() + START_TIMEOUT_S)
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
    finally:
        if (data / "postmaster.pid").exists():
            subprocess.run([pg_ctl, "-D", str(data), "-m", "immediate", "-w", "stop"], cwd=root,
                           stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           timeout=60, **who)
        shutil.rmtree(root, ignore_errors=True)
