"""The durable job store: one row per job in a SQL database, through SQLAlchemy.

A SQLite file by default (``sqlite:///path/jobs.db``), any SQLAlchemy URL otherwise
(``postgresql+psycopg://user:password@host:5432/db``). The HTTP server and the job drivers (other
processes, perhaps on other machines: those need PostgreSQL, since a SQLite file cannot be shared
over a network file system) write it at once, so every call is one short transaction, state
changes are single conditional ``UPDATE``s (atomic whoever else writes), and SQLite runs in WAL
mode with a busy timeout.
"""

from __future__ import annotations

import math
import os
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import PurePath
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event, exc
from sqlalchemy.engine import Engine, make_url

from ..errors import ArgumentError, ShapesearchError

STATES = ("PENDING", "RUNNING", "STOPPED", "SUCCEEDED", "FAILED")  # as Ray Jobs names them
FINISHED = ("STOPPED", "SUCCEEDED", "FAILED")
UNFINISHED = ("PENDING", "RUNNING")
KINDS = ("image", "tensor", "layers", "compress")

BUSY_TIMEOUT_S = 30  # how long a SQLite writer waits for another one before "database is locked"
CONNECT_TIMEOUT_S = 5  # how long to wait for a database server (PostgreSQL) to answer
MAX_ERROR_CHARS = 2000

_metadata = sa.MetaData()
jobs_table = sa.Table(
    "shapesearch_jobs",
    _metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),  # insertion order, never reused
    sa.Column("id", sa.String(32), nullable=False, unique=True),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("state", sa.String(16), nullable=False, index=True),
    sa.Column("params", sa.JSON, nullable=False),
    sa.Column("priority", sa.Integer, nullable=False),
    sa.Column("cpus", sa.Double, nullable=True),
    sa.Column("created", sa.Double, nullable=False),
    sa.Column("started", sa.Double, nullable=True),
    sa.Column("finished", sa.Double, nullable=True),
    sa.Column("progress", sa.JSON, nullable=False),
    sa.Column("error", sa.Text, nullable=True),
    sa.Column("attempts", sa.Integer, nullable=False),
    sqlite_autoincrement=True,
)
_COLUMNS = ("id", "kind", "state", "params", "priority", "cpus", "created", "started", "finished", "progress",
            "error", "attempts")


@dataclass
class JobRecord:
    """One job as the store holds it."""

    id: str  # 12 hex chars (uuid4)
    kind: str  # "image" | "tensor" | "layers" | "compress"
    state: str  # one of STATES
    params: dict = field(default_factory=dict)  # the job's options (JSON)
    priority: int = 0  # higher runs first among PENDING
    cpus: float | None = None  # the job's CPU share (None: no cap)
    created: float = 0.0  # unix seconds
    started: float | None = None
    finished: float | None = None
    progress: dict = field(default_factory=dict)  # the latest progress report (JSON), {} at first
    error: str | None = None  # one line, when FAILED
    attempts: int = 0  # times a driver was started for it (1 on the first start)

    def to_dict(self) -> dict:
        """The record as plain JSON-ready values."""
        return asdict(self)

    @classmethod
    def _from_row(cls, row: Any) -> JobRecord:
        m = row._mapping
        return cls(**{name: m[name] for name in _COLUMNS})


def _plain(value: Any, where: str) -> Any:
    """``value`` as plain JSON: numpy scalars and arrays become numbers and lists, paths strings,
    non-finite floats ``None``; anything else not JSON raises."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _plain(v, where) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v, where) for v in value]
    if isinstance(value, PurePath):
        return str(value)
    if hasattr(value, "tolist"):  # numpy scalar or array
        return _plain(value.tolist(), where)
    raise ArgumentError(where, f"must hold JSON values only (numbers, strings, lists, dicts), "
                               f"not {type(value).__name__}")


def _json_dict(value: Any, where: str) -> dict:
    if not isinstance(value, dict):
        raise ArgumentError(where, f"must be a dict, not {type(value).__name__}")
    return _plain(value, where)


def _check_state(state: str, allowed: tuple[str, ...] = STATES) -> str:
    if state not in allowed:
        raise ArgumentError("state", f"must be one of {', '.join(allowed)}, not {state!r}")
    return state


def _one_line(error: str | None) -> str | None:
    if error is None:
        return None
    line = " ".join(str(error).split())
    return line if len(line) <= MAX_ERROR_CHARS else line[: MAX_ERROR_CHARS - 1] + "…"


def _driver_message(error: BaseException) -> str:
    """The first line of what the database driver said."""
    inner = getattr(error, "orig", None) or error
    text = str(inner).strip().splitlines()
    return text[0].strip() if text else type(inner).__name__


class Store:
    """Jobs in a SQL database; safe to use from several threads and processes at once.

    Each process needs its own ``Store`` (a pickled one reconnects; one inherited through ``fork``
    opens fresh connections on first use).
    """

    def __init__(self, url: str) -> None:
        """Connect to ``url`` (e.g. ``sqlite:///path/jobs.db``) and create the table if it is missing."""
        self._url = str(url)
        self._engine = _make_engine(self._url)
        self.url = self._engine.url.render_as_string(hide_password=True)  # safe to print
        self._pid = os.getpid()
        try:
            _create_table(self._engine, self.url)
        except BaseException:
            self._engine.dispose()
            raise

    # pickling (e.g. into a Ray actor) carries the URL and reconnects on the other side
    def __getstate__(self) -> dict:
        return {"url": self._url}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["url"])

    def __repr__(self) -> str:
        return f"Store({self.url!r})"

    def _begin(self) -> Any:
        """One transaction on a connection of this process (a forked child drops its parent's)."""
        if os.getpid() != self._pid:
            self._engine.dispose(close=False)
            self._pid = os.getpid()
        return self._engine.begin()

    def add(self, kind: str, params: dict, priority: int = 0, cpus: float | None = None) -> JobRecord:
        """Record a new PENDING job and return it."""
        if kind not in KINDS:
            raise ArgumentError("kind", f"must be one of {', '.join(KINDS)}, not {kind!r}")
        params = _json_dict(params, "params")
        if isinstance(priority, bool) or not isinstance(priority, int):
            raise ArgumentError("priority", f"must be an integer, not {priority!r}")
        if cpus is not None:
            if isinstance(cpus, bool) or not isinstance(cpus, int | float) or not (0 < cpus < math.inf):
                raise ArgumentError("cpus", f"must be a positive number or None, not {cpus!r}")
            cpus = float(cpus)
        for _ in range(3):  # a clash of 48 random bits is all but impossible; try again if it happens
            record = JobRecord(id=uuid.uuid4().hex[:12], kind=kind, state="PENDING", params=params,
                               priority=int(priority), cpus=cpus, created=time.time(), progress={}, attempts=0)
            try:
                with self._begin() as conn:
                    conn.execute(sa.insert(jobs_table).values(**asdict(record)))
                return record
            except exc.IntegrityError:
                continue
        raise ShapesearchError("could not find a free job id after 3 tries; is the job table corrupted?")

    def get(self, job_id: str) -> JobRecord | None:
        """The job ``job_id``, or None if there is none."""
        with self._begin() as conn:
            row = conn.execute(sa.select(jobs_table).where(jobs_table.c.id == job_id)).first()
        return None if row is None else JobRecord._from_row(row)

    def _select(self, query: sa.Select) -> list[JobRecord]:
        with self._begin() as conn:
            rows = conn.execute(query).all()
        return [JobRecord._from_row(row) for row in rows]

    def list(self, state: str | None = None) -> list[JobRecord]:
        """All jobs (or those in ``state``), newest first."""
        query = sa.select(jobs_table).order_by(jobs_table.c.seq.desc())
        if state is not None:
            query = query.where(jobs_table.c.state == _check_state(state))
        return self._select(query)

    def count(self, state: str) -> int:
        """How many jobs are in ``state``."""
        query = sa.select(sa.func.count()).select_from(jobs_table).where(jobs_table.c.state == _check_state(state))
        with self._begin() as conn:
            return int(conn.execute(query).scalar_one())

    def pending(self) -> list[JobRecord]:
        """PENDING jobs in the order to run them: highest priority first, then oldest first."""
        return self._select(sa.select(jobs_table).where(jobs_table.c.state == "PENDING")
                            .order_by(jobs_table.c.priority.desc(), jobs_table.c.seq.asc()))

    def unfinished(self) -> list[JobRecord]:
        """PENDING or RUNNING jobs (what a restarted server must look after), oldest first."""
        return self._select(sa.select(jobs_table).where(jobs_table.c.state.in_(UNFINISHED))
                            .order_by(jobs_table.c.seq.asc()))

    def start(self, job_id: str) -> bool:
        """Mark a PENDING or RUNNING job RUNNING and count the attempt; False if it is finished or gone."""
        query = (sa.update(jobs_table)
                 .where(jobs_table.c.id == job_id, jobs_table.c.state.in_(UNFINISHED))
                 .values(state="RUNNING", attempts=jobs_table.c.attempts + 1,
                         started=sa.func.coalesce(jobs_table.c.started, time.time())))
        with self._begin() as conn:
            return conn.execute(query).rowcount == 1

    def report(self, job_id: str, progress: dict) -> None:
        """Replace the job's progress report; ignored unless the job is RUNNING."""
        progress = _json_dict(progress, "progress")
        with self._begin() as conn:
            conn.execute(sa.update(jobs_table).where(jobs_table.c.id == job_id, jobs_table.c.state == "RUNNING")
                         .values(progress=progress))

    def finish(self, job_id: str, state: str, error: str | None = None) -> bool:
        """Move a PENDING or RUNNING job to the finished ``state`` (with a one-line ``error``, if any);
        False if it was already finished or is gone."""
        _check_state(state, FINISHED)
        query = (sa.update(jobs_table)
                 .where(jobs_table.c.id == job_id, jobs_table.c.state.in_(UNFINISHED))
                 .values(state=state, finished=time.time(), error=_one_line(error)))
        with self._begin() as conn:
            return conn.execute(query).rowcount == 1

    def delete(self, job_id: str) -> bool:
        """Forget the job; False if there was none."""
        with self._begin() as conn:
            return conn.execute(sa.delete(jobs_table).where(jobs_table.c.id == job_id)).rowcount == 1

    def close(self) -> None:
        """Close the database connections (the store reconnects if used again)."""
        self._engine.dispose()


def _make_engine(url: str) -> Engine:
    """An engine for ``url``, set up for many writers; a bad URL raises ShapesearchError."""
    try:
        parsed = make_url(url)
    except (exc.ArgumentError, ValueError):
        raise ShapesearchError(f"cannot read the database URL {_hide_password(url)!r}: give a SQLAlchemy URL such "
                               "as sqlite:///path/jobs.db or postgresql+psycopg://user:password@host:5432/db") from None
    if parsed.drivername in ("postgresql", "postgres"):  # the default driver would be psycopg2; we depend on psycopg 3
        parsed = parsed.set(drivername="postgresql+psycopg")
    shown = parsed.render_as_string(hide_password=True)
    backend = parsed.get_backend_name()
    connect_args: dict[str, Any] = {}
    if backend == "sqlite":
        connect_args = {"timeout": BUSY_TIMEOUT_S, "check_same_thread": False}
        database = parsed.database or ""
        if database and database != ":memory:" and not database.startswith("file:"):
            folder = os.path.dirname(os.path.abspath(database))
            if not os.path.isdir(folder):
                raise ShapesearchError(f"cannot open the job store {shown!r}: the folder {folder} does not exist; "
                                       "create it or give another path")
    elif backend == "postgresql" and "connect_timeout" not in parsed.query:
        connect_args = {"connect_timeout": CONNECT_TIMEOUT_S}
    try:
        engine = sa.create_engine(parsed, pool_pre_ping=True, connect_args=connect_args)
    except exc.NoSuchModuleError:
        raise ShapesearchError(f"unknown database kind in {shown!r}: use sqlite:///path/jobs.db or "
                               "postgresql+psycopg://user:password@host:5432/db") from None
    except ImportError as e:
        raise ShapesearchError(f"cannot use the database {shown!r}: its driver is not installed ({e}); install it "
                               "or use sqlite:///path/jobs.db or postgresql+psycopg://…") from None
    except (exc.ArgumentError, TypeError, ValueError) as e:
        raise ShapesearchError(f"cannot use the database URL {shown!r}: {e}") from None
    if backend == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    """Many readers and one writer at a time; a writer waits for another instead of failing."""
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_S * 1000}")
        cursor.execute("PRAGMA journal_mode = WAL")  # persistent; synchronous stays FULL: a commit survives power loss
    finally:
        cursor.close()


def _create_table(engine: Engine, shown: str) -> None:
    """Create the job table if missing (another process may create it at the same moment)."""
    try:
        with engine.connect():
            pass
    except exc.DBAPIError as e:
        raise ShapesearchError(f"cannot connect to the job store {shown!r}: {_driver_message(e)}; check that the "
                               "server is running and reachable and that the user, password and database are "
                               "right, or use sqlite:///path/jobs.db") from None
    for attempt in range(5):
        try:
            _metadata.create_all(engine, checkfirst=True)
            return
        except exc.DBAPIError as e:  # e.g. "already exists": another process won the race
            if sa.inspect(engine).has_table(jobs_table.name):
                return
            if attempt == 4:
                raise ShapesearchError(f"cannot create the job table in {shown!r}: {_driver_message(e)}") from None
            time.sleep(0.1 * (attempt + 1))


def _hide_password(url: str) -> str:
    """``url`` with any ``:password@`` replaced, for messages about URLs SQLAlchemy cannot parse."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    credentials, at, host = rest.rpartition("@")
    user = credentials.split(":", 1)[0]
    return f"{scheme}://{user}{':***' if ':' in credentials else ''}@{host}"
