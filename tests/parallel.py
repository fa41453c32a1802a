"""Races on PostgreSQL with real connections: one per thread, released together."""

import threading
import time
from concurrent.futures import ThreadPoolExecutor

from django.db import connection

# PostgreSQL's default max_connections is 100; the workers stay well below it.
WORKERS = 40


def run_parallel(count, action, *, workers: int = WORKERS):
    """Run action(i) for i in range(count) on `workers` threads, the first of them released
    together; each outcome is the action's result or the exception it raised."""
    start = threading.Barrier(min(count, workers))

    def run(index):
        if index < workers:
            start.wait()
        try:
            return action(index)
        except Exception as exc:  # each outcome is what the test counts
            return exc
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(run, range(count)))


def wait_for_a_lock_or(done: threading.Event | None = None, *, timeout: float = 30) -> bool:
    """Poll PostgreSQL, from inside this session's transaction, until another session of this
    database is blocked on a lock (True: the other path has reached a row this one holds) or
    `done` is set (False: it finished without waiting). Raises if neither happens in time."""
    deadline = time.monotonic() + timeout
    with connection.cursor() as cursor:
        while time.monotonic() < deadline:
            cursor.execute("SELECT pg_stat_clear_snapshot()")  # else a transaction sees one frozen snapshot
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE datname = current_database() AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
            )
            if cursor.fetchone()[0]:
                return True
            if done is not None and done.is_set():
                return False
            time.sleep(0.01)
    raise AssertionError("the other path never waited for a lock" + (" nor finished" if done is not None else ""))
