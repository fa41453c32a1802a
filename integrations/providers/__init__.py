"""CRM providers: one module each, behind `integrations.providers.base.Provider`.

`get_provider(integration)` gives the provider object for an integration; a new CRM is a
new module here and one line in PROVIDERS."""

from importlib import import_module

from integrations.providers.base import Provider

PROVIDERS = {
    "yclients": "integrations.providers.yclients.YclientsProvider",
    "iiko": "integrations.providers.iiko.IikoProvider",
    "amocrm": "integrations.providers.amocrm.AmoCrmProvider",
    "onec": "integrations.providers.onec.OneCProvider",
    "renovatio": "integrations.providers.renovatio.RenovatioProvider",
}


def provider_class(code: str) -> type[Provider]:
    module, _dot, name = PROVIDERS[code].rpartition(".")
    return getattr(import_module(module), name)


def get_provider(integration) -> Provider:
    return provider_class(integration.provider)(integration)
