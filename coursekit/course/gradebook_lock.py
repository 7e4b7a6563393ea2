"""One writer at a time on a gradebook that several processes, or machines, share.

nbgrader's Gradebook looks a row up, then adds it if it was missing, and commits after each call: two
shards recording at once into one PostgreSQL gradebook would both find a student (or the assignment,
or a fresh database's tables) missing and both add it, and one of them fail. Every coursekit process
that opens the gradebook therefore holds a PostgreSQL advisory lock while it is open, keyed on the
course. A SQLite gradebook is one file per machine (shards merge theirs with `merge-gradebooks`), so
within a process a lock between threads is enough."""
from __future__ import annotations

import threading
import zlib
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext

from sqlalchemy import create_engine, func, select
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

_THREAD_LOCKS: dict[str, threading.RLock] = {}
_DEPTH: Counter[str] = Counter()
_REGISTRY = threading.Lock()


def shared_by_processes(db_url: str) -> bool:
    """A database server that other processes and machines write to (advisory locks are PostgreSQL's)."""
    return make_url(db_url).get_backend_name() == "postgresql"


def lock_key(course_id: str) -> int:
    """The advisory lock's number: one per course, so that courses sharing a server do not wait on each other."""
    return zlib.crc32(f"coursekit gradebook {course_id}".encode())


@contextmanager
def exclusive(db_url: str, course_id: str) -> Iterator[None]:
    """Hold the course's gradebook: other threads of this process and, on a server, every other process
    wait until it is released. Re-entrant, so that a nested open in the same thread does not wait for itself."""
    name = f"{db_url}#{course_id}"
    with _REGISTRY:
        thread_lock = _THREAD_LOCKS.setdefault(name, threading.RLock())
    with thread_lock:
        first = _DEPTH[name] == 0
        _DEPTH[name] += 1
        try:
            with advisory_lock(db_url, course_id) if first and shared_by_processes(db_url) else nullcontext():
                yield
        finally:
            _DEPTH[name] -= 1


@contextmanager
def advisory_lock(db_url: str, course_id: str) -> Iterator[None]:
    """A session-level advisory lock on a connection of its own, so that it outlives the commits the
    gradebook makes on its connections. Closing the connection releases it, also when the process dies."""
    engine = create_engine(db_url, poolclass=NullPool)
    try:
        with engine.connect() as connection:
            connection.execute(select(func.pg_advisory_lock(lock_key(course_id))))
            connection.commit()
            yield
    finally:
        engine.dispose()
