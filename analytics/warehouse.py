"""The analytics warehouse: ClickHouse, through one small client with two backends.

- `CLICKHOUSE_URL` set (`clickhouse://user:password@host:9000/database`): a ClickHouse
  server over the native protocol, through clickhouse-driver (one client per thread).
- No URL: chDB, ClickHouse in-process, its files under `CHDB_PATH` (`var/chdb`). chDB is a
  library: one process owns its folder, so the process keeps one session and its threads
  take turns on it.

The same SQL runs on both (ClickHouse 18.16 as Debian packages it, and chDB's 26.x; see
CLICKHOUSE_COMPAT.md of the shared notes). Parameters are `%(name)s` placeholders rendered
on the client with clickhouse-driver's escaping, once, for both backends. Times go in and
come out as aware UTC datetimes (columns are `DateTime('UTC')`). Every read carries a time
limit (WAREHOUSE_QUERY_TIMEOUT_SECONDS)."""

import gc
import re
import threading
import uuid
from contextlib import contextmanager
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit

from django.conf import settings


class WarehouseError(Exception):
    """The warehouse refused a statement or could not be reached."""


@contextmanager
def gc_paused():
    """Python's cycle collector off while a result of a million rows becomes objects: it
    would walk the growing lists again and again (a third of the time), and these objects
    (UUIDs, decimals, tuples) make no cycles for it to find."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


class _UtcServerInfo:
    """What clickhouse-driver's escaping asks of a connection: the server's time zone.
    Datetimes are rendered in UTC, which is how the columns are typed."""

    @staticmethod
    def get_timezone():
        return "UTC"


class _EscapeContext:
    server_info = _UtcServerInfo()
    client_settings = {"server_side_params": False}


def _message(exc: Exception) -> str:
    """The first lines of a ClickHouse error, without the server's stack trace."""
    text = " ".join(str(exc).split("Stack trace:")[0].split())
    return text[:500]


def render(sql: str, params: dict | None = None) -> str:
    """The statement with its `%(name)s` parameters escaped into it."""
    if not params:
        return sql
    from clickhouse_driver.util.escape import escape_params

    # Sets as arrays; the rest as clickhouse-driver renders them (aware times in UTC, as
    # the context below tells it the server's zone is; decimals as bare literals).
    prepared = {
        key: sorted(value, key=str) if isinstance(value, set | frozenset) else value for key, value in params.items()
    }
    escaped = escape_params(prepared, _EscapeContext())
    for key, value in prepared.items():
        if isinstance(value, Decimal):
            # A bare 100.50 is a Float64 to ClickHouse 18.16, which will not compare it with a Decimal.
            escaped[key] = f"toDecimal64('{value}', {max(0, -value.as_tuple().exponent)})"
    return sql % escaped


class Warehouse:
    """execute() for statements and queries, insert() for rows in batches."""

    backend = ""

    def execute(self, sql: str, params: dict | None = None, *, timeout: float | None = None) -> list[tuple]:
        raise NotImplementedError

    def columns(self, sql: str, params: dict | None = None, *, timeout: float | None = None) -> list[list]:
        """A query's result as one list per column: for results of a million rows, which
        their callers turn into their own objects without a tuple per row in between."""
        raise NotImplementedError

    def insert(self, table: str, columns: list[str], rows: list, *, batch_size: int = 10_000) -> int:
        raise NotImplementedError

    def insert_tsv(self, table: str, columns: list[str], types: tuple[str, ...], lines: list[bytes]) -> int:
        """Rows already in TabSeparated text (PostgreSQL's COPY output); `types` name each
        column's type ("uuid", "uuid?", "str", "decimal", "datetime", "datetime?", "int") for a backend
        that takes typed values."""
        raise NotImplementedError

    def version(self) -> str:
        return self.execute("SELECT version()")[0][0]

    def close(self) -> None:
        pass


# --- The server backend ---------------------------------------------------------------------


def _with_timeouts(url: str) -> str:
    """The server's URL with socket timeouts, unless it names its own: a warehouse that hangs
    (rather than refusing the connection) must not hang the page or the task waiting on it.
    A read waits for at most a query's own limit and then some."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    query.setdefault("connect_timeout", str(settings.WAREHOUSE_CONNECT_TIMEOUT_SECONDS))
    query.setdefault("send_receive_timeout", str(settings.WAREHOUSE_QUERY_TIMEOUT_SECONDS + 30))
    return parts._replace(query=urlencode(query)).geturl()


class ServerWarehouse(Warehouse):
    backend = "clickhouse-server"

    def __init__(self, url: str):
        self.url = url
        self.database = urlsplit(url).path.lstrip("/") or "default"
        self._local = threading.local()

    def _client(self):
        client = getattr(self._local, "client", None)
        if client is None:
            from clickhouse_driver import Client

            # The database may not exist yet (migrate_warehouse creates it): connect to default.
            parts = urlsplit(_with_timeouts(self.url))
            bootstrap = Client.from_url(parts._replace(path="/default").geturl())
            bootstrap.execute(f"CREATE DATABASE IF NOT EXISTS {self.database}")
            bootstrap.disconnect()
            client = Client.from_url(parts.geturl())
            self._local.client = client
        return client

    def _read(self, sql, params, timeout, *, columnar: bool):
        from clickhouse_driver import errors

        limit = timeout or settings.WAREHOUSE_QUERY_TIMEOUT_SECONDS
        try:
            return self._client().execute(
                render(sql, params),
                settings={"max_execution_time": int(max(1, limit))},
                with_column_types=True,
                columnar=columnar,
            )
        except (errors.Error, OSError, EOFError) as exc:
            self._local.client = None  # a broken connection is not reused
            raise WarehouseError(_message(exc)) from exc

    def execute(self, sql, params=None, *, timeout=None):
        rows, column_types = self._read(sql, params, timeout, columnar=False)
        if not any("DateTime" in kind for _name, kind in column_types):
            return rows  # nothing to convert: a million rows cost nothing more here
        return [tuple(_from_server(value) for value in row) for row in rows]

    def columns(self, sql, params=None, *, timeout=None):
        with gc_paused():
            data, column_types = self._read(sql, params, timeout, columnar=True)
        if not data or not data[0]:
            return []  # no rows: no columns, as from chDB
        return [
            [_from_server(value) for value in column] if "DateTime" in kind else list(column)
            for column, (_name, kind) in zip(data, column_types, strict=True)
        ]

    def _send(self, statement: str, data: list, *, columnar: bool = False) -> None:
        from clickhouse_driver import errors

        try:
            self._client().execute(statement, data, columnar=columnar)
        except (errors.Error, OSError, EOFError) as exc:
            self._local.client = None
            raise WarehouseError(_message(exc)) from exc

    def insert(self, table, columns, rows, *, batch_size=10_000):
        sent = 0
        statement = f"INSERT INTO {table} ({', '.join(columns)}) VALUES"
        for start in range(0, len(rows), batch_size):
            chunk = [tuple(_to_server(value) for value in row) for row in rows[start : start + batch_size]]
            self._send(statement, chunk)
            sent += len(chunk)
        return sent

    def insert_tsv(self, table, columns, types, lines):
        """Column by column, each cell in the cheapest form the driver takes: UUIDs and
        decimals as their text (the driver parses them itself), times as epoch seconds."""
        if not lines:
            return 0
        cells = [line.decode("utf-8").split("\t") for line in lines]
        data = [
            list(map(_SERVER_CELLS[kind], column)) for kind, column in zip(types, zip(*cells, strict=True), strict=True)
        ]
        self._send(f"INSERT INTO {table} ({', '.join(columns)}) VALUES", data, columnar=True)
        return len(lines)

    def close(self):
        client = getattr(self._local, "client", None)
        if client is not None:
            client.disconnect()
            self._local.client = None


def _to_server(value):
    if isinstance(value, datetime) and value.tzinfo is not None:
        return value.astimezone(UTC).replace(tzinfo=None)  # the driver sends naive times as the column's zone
    return value


def _from_server(value):
    if isinstance(value, datetime) and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


# --- The in-process backend -----------------------------------------------------------------


class ChdbWarehouse(Warehouse):
    backend = "chdb"
    DATABASE = "svoykrug"

    def __init__(self, path: str):
        from chdb import session

        Path(path).mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        self._session = session.Session(path)
        self._session.query(f"CREATE DATABASE IF NOT EXISTS {self.DATABASE}")
        self._session.query(f"USE {self.DATABASE}")

    def _query(self, sql: str, fmt: str = "CSV"):
        import chdb

        with self._lock:
            try:
                return self._session.query(sql, fmt)
            except (RuntimeError, chdb.ChdbError) as exc:  # chDB has two ChdbError classes
                raise WarehouseError(_message(exc)) from exc

    def columns(self, sql, params=None, *, timeout=None):
        limit = timeout or settings.WAREHOUSE_QUERY_TIMEOUT_SECONDS
        text = render(sql, params).strip().rstrip(";")
        if not _is_read(text):
            self._query(text)
            return []
        # Parquet, not a text format: typed columns (times as timestamps, decimals as
        # decimals) that pyarrow hands over a column at a time. A million RFM rows come
        # across in 1.6 s, against 4.9 s through JSONCompact.
        result = self._query(
            f"{text} SETTINGS max_execution_time={int(max(1, limit))}, output_format_parquet_compression_method='none'",
            "Parquet",
        )
        payload = result.bytes()
        if not payload:
            return []
        import pyarrow
        import pyarrow.parquet

        table = pyarrow.parquet.read_table(pyarrow.BufferReader(payload))
        if not table.num_rows:
            return []
        with gc_paused():
            return [_values(column) for column in table.columns]

    def execute(self, sql, params=None, *, timeout=None):
        return list(zip(*self.columns(sql, params, timeout=timeout), strict=True))

    def insert(self, table, columns, rows, *, batch_size=10_000):
        """Rows as TSV inside the INSERT: ten times faster than rendering VALUES literals."""
        sent = 0
        for start in range(0, len(rows), batch_size):
            chunk = rows[start : start + batch_size]
            body = "\n".join("\t".join(_tsv(value) for value in row) for row in chunk)
            # Table and columns are the code's own names; the values are TSV-escaped.
            self._query(f"INSERT INTO {table} ({', '.join(columns)}) FORMAT TabSeparated\n{body}\n")
            sent += len(chunk)
        return sent

    def insert_tsv(self, table, columns, types, lines):
        body = b"\n".join(lines).decode("utf-8")
        # Table and columns are the code's own names; the text is COPY's, TabSeparated already.
        self._query(f"INSERT INTO {table} ({', '.join(columns)}) FORMAT TabSeparated\n{body}\n")
        return len(lines)

    def close(self):
        with self._lock:
            self._session.close()


_TSV_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r", "\0": "\\0"})


_TSV_UNESCAPES = {"t": "\t", "n": "\n", "r": "\r", "0": "\0", "b": "\b", "f": "\f", "v": "\v"}
_TSV_ESCAPED = re.compile(r"\\(.)", re.DOTALL)


def _tsv_text(cell: str) -> str:
    """A TabSeparated string cell unescaped (\\t, \\n, \\\\ ...)."""
    if "\\" not in cell:
        return cell
    return _TSV_ESCAPED.sub(lambda match: _TSV_UNESCAPES.get(match.group(1), match.group(1)), cell)


def _epoch(cell: str) -> int:
    return int(datetime.fromisoformat(cell).replace(tzinfo=UTC).timestamp())


def _text_or_null(cell: str) -> str | None:
    return None if cell == "\\N" else cell


# How the server backend passes on each TabSeparated cell of insert_tsv().
_SERVER_CELLS = {
    "uuid": str,
    "uuid?": _text_or_null,
    "str": _tsv_text,
    "decimal": str,
    "datetime": _epoch,
    "datetime?": lambda cell: None if cell == "\\N" else _epoch(cell),
    "int": int,
}


def _tsv(value) -> str:
    """One value in ClickHouse's TabSeparated format."""
    if value is None:
        return "\\N"
    if isinstance(value, datetime):
        moment = value.astimezone(UTC) if value.tzinfo else value
        return moment.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, str):
        return value.translate(_TSV_ESCAPES)
    if isinstance(value, list | tuple):
        return "[" + ",".join(_array_item(item) for item in value) + "]"
    return str(value)


def _array_item(value) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, int | float | Decimal) and not isinstance(value, bool):
        return str(value)
    return "'" + _tsv(value).replace("'", "\\'") + "'"


def _is_read(sql: str) -> bool:
    head = sql.lstrip("( \n\t").split(None, 1)[0].upper() if sql.strip() else ""
    return head in ("SELECT", "WITH", "SHOW", "DESCRIBE", "EXISTS")


def _values(column) -> list:
    """A pyarrow column as the Python values clickhouse-driver would have given, so callers
    see the same types from both backends: UUIDs, aware UTC datetimes, Decimals, tuples."""
    import pyarrow

    kind = column.type
    if isinstance(kind, pyarrow.UuidType):
        return _uuids(column.combine_chunks().storage)
    if pyarrow.types.is_decimal(kind):
        # Through text: Decimal("12.50") is twice as fast as pyarrow's own conversion.
        texts = column.cast(pyarrow.string()).to_pylist()
        if column.null_count:
            return [None if text is None else Decimal(text) for text in texts]
        return list(map(Decimal, texts))
    if pyarrow.types.is_timestamp(kind):
        return [None if value is None else value.replace(tzinfo=UTC) for value in column.to_pylist()]
    if pyarrow.types.is_struct(kind):
        return [None if value is None else tuple(value.values()) for value in column.to_pylist()]
    return column.to_pylist()


def _uuids(array) -> list:
    """A column of 16-byte UUIDs (big-endian halves) as UUID objects: from integers, twice
    as fast as from bytes, which is what pyarrow's own conversion does."""
    import numpy

    halves = numpy.frombuffer(array.buffers()[1], dtype=">u8", offset=array.offset * 16, count=len(array) * 2)
    high, low = halves[0::2].tolist(), halves[1::2].tolist()
    values = [uuid.UUID(int=(top << 64) | bottom) for top, bottom in zip(high, low, strict=True)]
    if not array.null_count:
        return values
    return [value if valid else None for value, valid in zip(values, array.is_valid().to_pylist(), strict=True)]


# --- The process's warehouse ------------------------------------------------------------------

_warehouse: Warehouse | None = None
_warehouse_lock = threading.Lock()


def get_warehouse() -> Warehouse:
    """This process's warehouse, made on first use from the settings."""
    global _warehouse
    with _warehouse_lock:
        if _warehouse is None:
            if settings.CLICKHOUSE_URL:
                _warehouse = ServerWarehouse(settings.CLICKHOUSE_URL)
            else:
                _warehouse = ChdbWarehouse(settings.CHDB_PATH)
        return _warehouse


def reset_warehouse() -> None:
    """Forget the process's warehouse (tests switching backends, settings changed)."""
    global _warehouse
    with _warehouse_lock:
        if _warehouse is not None:
            _warehouse.close()
        _warehouse = None
