"""PostgreSQL for local runs, tests, benchmarks and the fault harness: whether a server answers,
one database per purpose (created or recreated the same way everywhere), and the embedded
server from the pgserver wheel that `make run` uses when DATABASE_URL is not set."""

from __future__ import annotations

import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

DEFAULT_SERVER_URL = "postgres://postgres@127.0.0.1:5432/postgres"


def postgres_answers(url: str) -> str | None:
    """None if a PostgreSQL server accepts ``url``, else the error text."""
    import psycopg2

    try:
        conn = psycopg2.connect(**_connect_args(url), connect_timeout=3)
    except psycopg2.OperationalError as exc:
        return str(exc).strip()
    conn.close()
    return None


def with_database(url: str, name: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit(parts._replace(path=f"/{name}"))


def ensure_database(server_url: str, name: str, *, recreate: bool = False) -> str:
    """The URL of database ``name`` on ``server_url``'s server, created if missing (or dropped and
    created afresh with ``recreate``)."""
    from psycopg2 import sql

    with _maintenance(server_url) as cur:
        if recreate:
            cur.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name])
        if cur.fetchone() is None:
            cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return with_database(server_url, name)


def drop_database(server_url: str, name: str) -> None:
    """Drop database ``name`` on ``server_url``'s server, if it is there (its sessions ended)."""
    from psycopg2 import sql

    with _maintenance(server_url) as cur:
        cur.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@contextmanager
def _maintenance(server_url: str) -> Iterator[Any]:
    """A cursor on the server's ``postgres`` database, in autocommit (CREATE/DROP DATABASE)."""
    import psycopg2

    conn = psycopg2.connect(**_connect_args(with_database(server_url, "postgres")))
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            yield cur
    finally:
        conn.close()


def redact(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urllib.parse.urlunsplit(parts._replace(netloc=netloc))
    return url


def _connect_args(url: str) -> dict[str, object]:
    parts = urllib.parse.urlsplit(url)
    return {
        "host": urllib.parse.unquote(parts.hostname or "") or None,
        "port": parts.port or 5432,
        "user": parts.username or "postgres",
        "password": parts.password or None,
        "dbname": parts.path.lstrip("/") or "postgres",
    }


class EmbeddedPostgres:
    """A real PostgreSQL from the pgserver wheel, data kept in ``path``, on a Unix socket there."""

    def __init__(self, path: Path) -> None:
        import pgserver

        path.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.server = pgserver.get_server(str(path), cleanup_mode="stop")
        socket_dir = urllib.parse.quote(str(path), safe="")
        self.admin_url = f"postgres://postgres@{socket_dir}/postgres"

    def ensure_database(self, name: str) -> str:
        return ensure_database(self.admin_url, name)

    def postmaster_pid(self) -> int | None:
        pidfile = self.path / "postmaster.pid"
        try:
            return int(pidfile.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def stop(self) -> None:
        self.server.cleanup()
