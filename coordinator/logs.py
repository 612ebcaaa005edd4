"""Logging: readable text by default, one JSON object a line with ``--log-format json``.

Lines about a city carry ``city``, ``token`` and ``worker`` as fields (``CityLog``), so
``grep city=paris`` or a JSON query finds every line about one city's leadership.
Secrets never reach a log line: configuration is logged through ``EtcdConfig``'s repr,
which leaves the password out.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import MutableMapping
from typing import Any

__all__ = ["CityLog", "setup_logging"]

_FIELDS = ("worker", "city", "token")


class _TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(record.created))
        fields = " ".join(
            f"{name}={getattr(record, name)}" for name in _FIELDS
            if getattr(record, name, None) not in (None, "")
        )
        line = f"{stamp}.{int(record.msecs):03d} {record.levelname:<7} {record.getMessage()}"
        if fields:
            line += f"  [{fields}]"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in _FIELDS:
            value = getattr(record, name, None)
            if value not in (None, ""):
                out[name] = value
        if record.exc_info:
            out["traceback"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def setup_logging(fmt: str = "text", level: str = "INFO", worker: str | None = None) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_JsonFormatter() if fmt == "json" else _TextFormatter())
    if worker is not None:
        class _Worker(logging.Filter):
            def filter(self, record: logging.LogRecord) -> bool:
                if not getattr(record, "worker", None):
                    record.worker = worker
                return True
        handler.addFilter(_Worker())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("stevedore", "grpc"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


class CityLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """A logger whose lines carry a city and its fencing token."""

    def __init__(self, logger: logging.Logger, city: str, token: int | None) -> None:
        super().__init__(logger, {"city": city, "token": token})

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, Any]:
        extra = dict(self.extra or {})
        extra.update(kwargs.get("extra") or {})
        kwargs["extra"] = extra
        return msg, kwargs
