from django.apps import AppConfig


class EventsConfig(AppConfig):
    name = "events"
    verbose_name = "Events"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from django.db.models.signals import m2m_changed

        from events.models import Event, Registration, Vote
        from svoykrug import answers

        # Seats left, vote counts and registrations are on everyone's events list.
        for model in (Event, Registration, Vote):
            answers.track(model, lambda instance: ["events"])
        m2m_changed.connect(
            lambda **kwargs: answers.changed("events"),
            sender=Event.co_hosts.through,
            weak=False,
            dispatch_uid="answers:events:co_hosts",
        )
