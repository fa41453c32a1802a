"""A task queued while a request is handled carries the request's id in its message's headers,
and the worker's lines about it (and about the tasks it queues in turn) carry that id."""

import contextlib
import io
import json
import logging

import pytest
from celery import signals
from celery.worker.request import Request
from django.http import JsonResponse
from kombu import Queue
from kombu.simple import SimpleQueue

from svoykrug import logs
from svoykrug.celery import app
from svoykrug.middleware import RequestContextMiddleware

pytestmark = pytest.mark.django_db


@app.task(name="tests.svoykrug.follow_up")
def follow_up(queue_another: bool):
    logging.getLogger("tests.follow_up").info("following up")
    if queue_another:
        follow_up.delay(False)


@pytest.fixture
def log_lines():
    """What the configured handler (the one production writes with) prints, as parsed JSON lines."""
    handler = next(h for h in logging.getLogger().handlers if any(isinstance(f, logs.ContextFilter) for f in h.filters))
    stream = io.StringIO()
    previous = handler.setStream(stream)
    yield lambda: [json.loads(line) for line in stream.getvalue().splitlines()]
    handler.setStream(previous)


@pytest.fixture
def broker():
    """Tasks go through the in-memory broker instead of running eagerly; `.take()` runs the
    oldest queued message as a worker would (from its headers and body) and returns its headers."""
    app.conf.task_always_eager = False  # the autouse _celery_eager fixture puts it back
    connection = app.connection_for_read()
    queue = SimpleQueue(connection.default_channel, Queue(app.conf.task_default_queue))

    class Worker:
        def take(self) -> dict:
            message = queue.get(timeout=5)
            Request(message, app=app, task=app.tasks[message.headers["task"]]).execute()
            return message.headers

        def pending(self) -> int:
            try:
                return queue.qsize()
            except connection.channel_errors:  # Redis drops a queue once it is empty
                return 0

    yield Worker()
    with contextlib.suppress(connection.channel_errors):  # Redis drops a queue once it is empty
        queue.clear()
    connection.release()


def test_a_task_queued_during_a_request_carries_its_id_and_the_worker_logs_with_it(rf, broker, log_lines):
    def view(request):
        follow_up.delay(True)
        return JsonResponse({})

    RequestContextMiddleware(view)(rf.get("/api/v1/purchases/", HTTP_X_REQUEST_ID="req-queued"))
    assert logs.current() == {}  # the request is over; the worker below starts from nothing

    first = broker.take()
    second = broker.take()  # the follow-up the first one queued, from inside the worker

    assert (first["request_id"], second["request_id"]) == ("req-queued", "req-queued")
    lines = [line for line in log_lines() if line["logger"] == "tests.follow_up"]
    assert [(line["request_id"], line["task_id"]) for line in lines] == [
        ("req-queued", first["id"]),
        ("req-queued", second["id"]),
    ]
    assert logs.current() == {}  # nothing is left behind for the worker's next task
    assert broker.pending() == 0


def test_a_task_queued_outside_a_request_has_no_request_id(broker, log_lines):
    follow_up.delay(False)

    headers = broker.take()

    assert "request_id" not in headers
    [line] = [line for line in log_lines() if line["logger"] == "tests.follow_up"]
    assert (line["request_id"], line["task_id"]) == (None, headers["id"])


def test_the_signal_handlers_pass_the_id_from_the_publisher_to_the_task():
    headers = {"id": "task-1", "task": "tests.svoykrug.follow_up"}
    token = logs.bind(request_id="req-9")
    try:
        signals.before_task_publish.send(sender="tests.svoykrug.follow_up", headers=headers, body=())
    finally:
        logs.unbind(token)
    assert headers["request_id"] == "req-9"

    class Task:
        name = "tests.svoykrug.follow_up"
        request = type("Context", (), {"request_id": "req-9", "headers": None})()

    logs.task_started(task_id="task-1", task=Task())
    try:
        assert logs.current() == {"request_id": "req-9", "task_id": "task-1", "task_name": "tests.svoykrug.follow_up"}
    finally:
        logs.task_finished(task_id="task-1")
    assert logs.current() == {}


def test_an_id_the_caller_set_on_the_message_is_kept():
    headers = {"request_id": "req-explicit"}
    token = logs.bind(request_id="req-current")
    try:
        logs.task_queued(headers=headers)
    finally:
        logs.unbind(token)

    assert headers == {"request_id": "req-explicit"}
