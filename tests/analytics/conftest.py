"""The warehouse on both backends: chDB in a fresh folder, and the ClickHouse server named by
CLICKHOUSE_URL in the environment (CI starts Debian's 18.16) in a fresh database. A test
taking `warehouse` runs once on each; the server run skips where no server is configured,
and fails instead under REQUIRE_SERVICES=1."""

import os
from urllib.parse import urlsplit

import pytest

from analytics import schema
from analytics.warehouse import get_warehouse, reset_warehouse

SERVER_URL = os.environ.get("CLICKHOUSE_URL", "")
REQUIRE_SERVICES = os.environ.get("REQUIRE_SERVICES") == "1"


@pytest.fixture(params=["chdb", "server"])
def warehouse(request, settings, tmp_path):
    reset_warehouse()
    if request.param == "chdb":
        settings.CLICKHOUSE_URL = ""
        settings.CHDB_PATH = str(tmp_path / "chdb")
    else:
        if not SERVER_URL:
            message = "this test needs a ClickHouse server: set CLICKHOUSE_URL=clickhouse://…"
            if REQUIRE_SERVICES:
                pytest.fail(f"REQUIRE_SERVICES=1 but {message}", pytrace=False)
            pytest.skip(message)
        settings.CLICKHOUSE_URL = urlsplit(SERVER_URL)._replace(path="/svoykrug_test").geturl()
        from clickhouse_driver import Client

        admin = Client.from_url(urlsplit(SERVER_URL)._replace(path="/default").geturl())
        admin.execute("DROP DATABASE IF EXISTS svoykrug_test")
        admin.disconnect()
    current = get_warehouse()
    schema.migrate(current, reset_export=False)  # a new warehouse; the test's database starts empty anyway
    yield current
    reset_warehouse()
