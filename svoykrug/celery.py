"""The Celery app. Configured from Django settings (CELERY_ namespace); the broker is
REDIS_URL, and with no REDIS_URL tasks run eagerly in the calling process.

Logging (svoykrug/logs.py): the worker keeps Django's LOGGING instead of Celery's own; a task's
log lines carry its id and name, and the id of the request that queued it (a message header);
a failed task logs an ERROR; its slow queries are logged."""

import os

from celery import Celery

from svoykrug.logs import connect_celery_signals

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "svoykrug.settings")

app = Celery("svoykrug")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
connect_celery_signals()
