"""Races on PostgreSQL with real connections: one per thread, released together."""

import threading
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
