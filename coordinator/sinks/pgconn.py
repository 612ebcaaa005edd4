"""One PostgreSQL connection with psycopg's errors translated: the boundary to psycopg
that the postgres sink and the state archive share.

The connection is opened on first use and dropped after a failure, so the next call
opens a new one. Connection trouble becomes :class:`~coordinator.errors.SinkUnavailable`
(retry later), a server that will not let us in or any other failure
:class:`~coordinator.errors.SinkError`, with psycopg's exception as ``__cause__``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

import psycopg
import psycopg.errors
from psycopg.conninfo import conninfo_to_dict

from coordinator.errors import ConfigError, SinkError, SinkUnavailable
from coordinator.pgtext import describe, first_line, refused

__all__ = ["PgConnection"]


class PgConnection:
    """A lazily opened connection to ``url`` (autocommit), for ``role`` (``"postgres
    sink"``, ``"state archive"``: how messages name it) as ``application_name``; each new
    connection first runs the ``setup`` statements."""

    def __init__(self, url: str, *, role: str, application_name: str,
                 option: str = "--sink-url", setup: tuple[str, ...] = ()) -> None:
        self.role = role
        self._url = url
        self._params = _parse(url, role, option)
        self._application_name = application_name
        #: statements every new connection runs first (session settings)
        self._setup = setup
        self.where = describe(self._params)
        self._conn: psycopg.Connection[Any] | None = None

    @contextmanager
    def boundary(self, doing: str) -> Iterator[psycopg.Connection[Any]]:
        """The connection (opened if needed), with psycopg's errors translated."""
        try:
            yield self._connection()
        except psycopg.errors.UndefinedTable as exc:
            raise SinkError(f"{self.role} at {self.where} cannot {doing}: {first_line(exc)}; "
                            "create the tables with `dispatch-relay --init`") from exc
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
            self._forget()
            if refused(exc):
                raise SinkError(f"postgres at {self.where} refused us ({doing}): "
                                f"{first_line(exc)}") from exc
            raise SinkUnavailable(f"postgres at {self.where} is unavailable ({doing}): "
                                  f"{first_line(exc)}") from exc
        except psycopg.Error as exc:
            if self._conn is not None and self._conn.broken:
                self._forget()
            raise SinkError(f"{self.role} at {self.where} cannot {doing}: "
                            f"{first_line(exc)}") from exc

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            extra: dict[str, Any] = {"connect_timeout": 5,
                                     "application_name": self._application_name}
            for given in self._params.keys() & extra.keys():  # the URL's own win
                del extra[given]
            conn = psycopg.connect(self._url, autocommit=True, **extra)
            for statement in self._setup:
                conn.execute(statement)
            self._conn = conn
        return self._conn

    def _forget(self) -> None:
        """Drop a connection that failed: the next call opens a new one."""
        conn, self._conn = self._conn, None
        if conn is not None:
            with suppress(psycopg.Error):  # closing a dead connection may complain
                conn.close()


def _parse(url: str, role: str, option: str) -> dict[str, Any]:
    if not url.strip():
        raise ConfigError(f"{role}: {option} is empty (want postgresql://user@host"
                          ":port/dbname)")
    try:
        params = conninfo_to_dict(url)
    except psycopg.ProgrammingError as exc:
        raise ConfigError(f"{role}: bad {option}: {first_line(exc)} (want "
                          "postgresql://user@host:port/dbname)") from exc
    port = str(params.get("port", "5432"))
    if not all(p.isdigit() for p in port.split(",")):
        raise ConfigError(f"{role}: bad {option}: port {port!r} is not a number")
    return params

