from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "accounts"
    verbose_name = "Accounts"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from accounts.models import ApiKey, Business, User
        from svoykrug import answers

        # What JWTAuthentication keeps of a user (svoykrug.answers): renewed by every save.
        answers.track(User, lambda user: [f"user:{user.pk}"])
        # What the partner API's key check keeps (services.authenticate_api_key).
        answers.track(ApiKey, lambda api_key: [f"apikey:{api_key.prefix}"])
        answers.track(Business, lambda business: ["businesses"])
