from django.apps import AppConfig


class KeysConfig(AppConfig):
    name = "keys"
    verbose_name = "Keys and devices"
    default_auto_field = "django.db.models.BigAutoField"
