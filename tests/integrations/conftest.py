"""Integrations tests: provider calls go to local fakes, quickly. Timeouts are short and
retries have no backoff, so a test of a timeout or a 5xx takes a fraction of a second."""

import pytest


@pytest.fixture(autouse=True)
def _fast_provider_http(settings):
    settings.INTEGRATIONS_CONNECT_TIMEOUT_SECONDS = 1.0
    settings.INTEGRATIONS_READ_TIMEOUT_SECONDS = 0.5
    settings.INTEGRATIONS_HTTP_RETRIES = 2
    settings.INTEGRATIONS_HTTP_BACKOFF_SECONDS = 0
    settings.INTEGRATIONS_RATE_LIMITS = {}
