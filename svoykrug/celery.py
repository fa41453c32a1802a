"""The Celery app. Configured from Django settings (CELERY_ namespace); the broker is
REDIS_URL, and with no REDIS_URL tasks run eagerly in the calling process."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "svoykrug.settings")

app = Celery("svoykrug")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
