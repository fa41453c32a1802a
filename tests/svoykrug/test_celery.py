from svoykrug.celery import app


def test_tasks_are_discovered_from_the_apps():
    app.loader.import_default_modules()

    assert "accounts.tasks.flush_expired_tokens" in app.tasks


def test_beat_schedule_names_only_registered_tasks(settings):
    app.loader.import_default_modules()

    scheduled = {entry["task"] for entry in settings.CELERY_BEAT_SCHEDULE.values()}
    assert scheduled <= set(app.tasks)
