"""A real Celery worker on Redis sends a queued notification and logs it (CI has both)."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection

from notifications import services
from notifications.models import NotificationLog
from svoykrug.celery import app
from tests.factories import UserFactory

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def worker():
    """`celery worker` in a subprocess, on the test database and the test's Redis."""
    db = connection.settings_dict
    env = {
        **os.environ,
        "DATABASE_URL": f"postgres://{db['USER']}:{db['PASSWORD'] or ''}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        "REDIS_URL": settings.REDIS_URL,
        "SMSRU_API_ID": "",
        "DJANGO_SECRET_KEY": settings.SECRET_KEY,
    }
    app.control.purge()  # messages other tests left without a worker
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "svoykrug",
            "worker",
            "-Q",
            "default,notifications",
            "--pool",
            "solo",
            "--loglevel",
            "WARNING",
            "--without-heartbeat",
            "--without-gossip",
            "--without-mingle",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    yield process
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()


@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.celery_worker
@pytest.mark.django_db(transaction=True)
def test_a_queued_notification_is_sent_by_a_real_worker(worker):
    assert app.conf.task_always_eager is False
    customer = UserFactory(phone="+79991112233", email="")

    (log,) = services.notify(
        customer, "bonus_expiring", {"days": 1, "batches": [{"amount": "10.00", "date": "27.11.2026"}]}, event_key="w1"
    )  # no transaction open: the delivery task is enqueued at once

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        log.refresh_from_db()
        if log.status != "queued" and log.status != "sending":
            break
        time.sleep(0.2)
    assert (log.status, log.channel, log.attempts) == ("sent", "sms", 1), (
        worker.stdout.read1().decode() if worker.poll() else ""
    )
    assert log.provider_message_id == "console"
    assert NotificationLog.objects.filter(kind="bonus_expiring").count() == 1
