"""How psycopg's errors read in our messages: the sinks' connection (and archive) and the
postgres state source.

Each of those modules translates psycopg's exceptions into ours at its own boundary
(they raise different errors); what they share is how the server is named (never the
password), how an error becomes one line, and which errors mean "refused" (wrong
credentials, no such database) rather than "unreachable".
"""

from __future__ import annotations

from typing import Any

import psycopg

__all__ = ["describe", "first_line", "refused"]

_REFUSED = {"28000", "28P01", "3D000"}
_REFUSED_TEXT = ("does not exist", "password authentication failed", "no pg_hba.conf entry")


def describe(params: dict[str, Any]) -> str:
    """host:port/dbname, for messages (never the password)."""
    host = params.get("host") or params.get("hostaddr") or "localhost"
    return f"{host}:{params.get('port', 5432)}/{params.get('dbname') or params.get('user', '')}"


def first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def refused(exc: psycopg.Error) -> bool:
    """The server refused us: retrying with the same settings will not help."""
    return exc.sqlstate in _REFUSED or any(t in str(exc) for t in _REFUSED_TEXT)
