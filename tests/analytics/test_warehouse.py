"""The warehouse client gives the same answers on chDB and on the ClickHouse server: schema
migrations applied once, values round-tripped with their Python types, parameters escaped,
errors and time limits as WarehouseError."""

import uuid
import zoneinfo
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from analytics import schema
from analytics.warehouse import WarehouseError, render

MOSCOW = zoneinfo.ZoneInfo("Europe/Moscow")


def test_migrations_are_applied_once_and_recorded_in_the_warehouse(warehouse):
    assert schema.migrate(warehouse) == []  # the fixture applied them
    names = [name for (name,) in warehouse.execute("SELECT name FROM schema_migrations ORDER BY name")]
    assert names == [path.stem for path in schema.migration_files()]
    tables = {name for (name,) in warehouse.execute("SHOW TABLES")}
    assert {"purchases", "ledger_entries", "businesses", "schema_migrations"} <= tables


def test_values_come_back_with_their_python_types(warehouse):
    row_id, business = uuid.uuid4(), uuid.uuid4()
    moment = datetime(2026, 3, 14, 12, 30, tzinfo=MOSCOW)
    warehouse.insert(
        "ledger_entries",
        ["id", "customer_id", "business_id", "issuer_id", "transaction_id", "kind", "amount", "created_at", "version"],
        [(7, row_id, business, None, None, "accrual", Decimal("12.34"), moment, 1)],
    )
    ((entry_id, customer, owner, issuer, kind, amount, created),) = warehouse.execute(
        "SELECT id, customer_id, business_id, issuer_id, kind, amount, created_at FROM ledger_entries"
    )
    assert (entry_id, customer, owner, issuer, kind, amount) == (7, row_id, business, None, "accrual", Decimal("12.34"))
    assert created == moment and created.utcoffset().total_seconds() == 0  # aware, in UTC


def test_columns_carry_the_same_values_nulls_included(warehouse):
    ids = [uuid.uuid4() for _ in range(3)]
    moment = datetime(2026, 3, 14, 9, 30, tzinfo=UTC)
    warehouse.insert(
        "ledger_entries",
        ["id", "customer_id", "business_id", "issuer_id", "transaction_id", "kind", "amount", "created_at", "version"],
        [
            (n, ids[n], ids[(n + 1) % 3] if n != 1 else None, None, None, "accrual", Decimal(f"{n}.50"), moment, 1)
            for n in range(3)
        ],
    )
    sql = (
        "SELECT id, customer_id, business_id, amount, if(id = 2, NULL, amount) AS maybe, created_at "
        "FROM ledger_entries ORDER BY id"
    )
    columns = warehouse.columns(sql)
    assert columns == [
        [0, 1, 2],
        ids,
        [ids[1], None, ids[0]],
        [Decimal("0.50"), Decimal("1.50"), Decimal("2.50")],
        [Decimal("0.50"), Decimal("1.50"), None],
        [moment] * 3,
    ]
    assert list(zip(*columns, strict=True)) == warehouse.execute(sql)
    assert warehouse.columns(sql + " LIMIT 0") == []


def test_parameters_are_escaped_once_for_both_backends(warehouse):
    tricky = "O'Reilly \\ «кавычки»"
    ((text, total, hit, listed),) = warehouse.execute(
        "SELECT %(text)s, toDecimal64('10.25', 2) + %(amount)s, %(at)s > toDateTime('2026-01-01 00:00:00', 'UTC'), "
        "has(%(ids)s, %(one)s)",
        {
            "text": tricky,
            "amount": Decimal("0.75"),
            "at": datetime(2026, 1, 1, 3, 0, 1, tzinfo=MOSCOW),  # 00:00:01 UTC
            "ids": [uuid.UUID(int=1), uuid.UUID(int=2)],
            "one": uuid.UUID(int=2),
        },
    )
    assert (text, total, hit, listed) == (tricky, Decimal("11.00"), 1, 1)
    assert "toDecimal64('0.75', 2)" in render("SELECT %(a)s", {"a": Decimal("0.75")})
    assert render("SELECT %(at)s", {"at": datetime(2026, 1, 1, 3, tzinfo=MOSCOW)}) == "SELECT '2026-01-01 00:00:00'"


def test_a_refused_statement_is_a_warehouse_error(warehouse):
    with pytest.raises(WarehouseError, match="nosuch"):
        warehouse.execute("SELECT nosuch_function()")


def test_a_read_stops_at_its_time_limit(warehouse):
    with pytest.raises(WarehouseError):
        warehouse.execute("SELECT count() FROM system.numbers", timeout=1)


def test_the_version_is_clickhouse(warehouse):
    major = int(warehouse.version().split(".")[0])
    assert major >= 18
    assert datetime.now(UTC).year >= 2026


def test_inserted_text_comes_back_exactly(warehouse):
    names = ["Кафе «Зерно»", "tab\there", "line\nbreak", "back\\slash 'quote'", ""]
    rows = [(uuid.UUID(int=index + 1), name, "cafe", 1) for index, name in enumerate(names)]
    assert warehouse.insert("businesses", ["id", "name", "category", "version"], rows, batch_size=2) == 5
    stored = warehouse.execute("SELECT name FROM businesses FINAL ORDER BY id")
    assert [name for (name,) in stored] == names


def test_the_server_connection_has_socket_timeouts_unless_the_url_names_its_own(settings):
    """A warehouse that hangs instead of refusing must not hang the page waiting on it."""
    from urllib.parse import parse_qs, urlsplit

    from analytics.warehouse import _with_timeouts

    settings.WAREHOUSE_CONNECT_TIMEOUT_SECONDS = 3
    settings.WAREHOUSE_QUERY_TIMEOUT_SECONDS = 30
    query = parse_qs(urlsplit(_with_timeouts("clickhouse://u:p@ch:9000/svoykrug")).query)
    assert query == {"connect_timeout": ["3"], "send_receive_timeout": ["60"]}
    own = _with_timeouts("clickhouse://ch:9000/svoykrug?connect_timeout=10&compression=lz4")
    parts = urlsplit(own)
    assert parts.path == "/svoykrug" and parts.netloc == "ch:9000"
    assert parse_qs(parts.query) == {"connect_timeout": ["10"], "compression": ["lz4"], "send_receive_timeout": ["60"]}
