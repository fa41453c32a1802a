from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "accounts"
    verbose_name = "Accounts"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from accounts.models import User
        from svoykrug import answers

        # What JWTAuthentication keeps of a user (svoykrug.answers): renewed by every save.
        answers.track(User, lambda user: [f"user:{user.pk}"])
