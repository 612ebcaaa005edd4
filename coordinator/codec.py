"""Protobuf messages to and from the JSON stored in etcd.

Values use protobuf's canonical JSON mapping, so ``etcdctl get`` prints them readably
and any language can decode them. Decoding errors become one-line messages that name
the field, because they end up on a city's status for an operator to read.
"""

from __future__ import annotations

from typing import TypeVar

from google.protobuf import json_format
from google.protobuf.message import Message

__all__ = ["decode", "encode"]

M = TypeVar("M", bound=Message)


def encode(message: Message) -> bytes:
    text: str = json_format.MessageToJson(message, indent=None, sort_keys=False)
    return text.encode()


def decode(cls: type[M], data: bytes, *, what: str = "value") -> M:
    """Parse JSON into ``cls``; raise ``ValueError`` with a readable reason."""
    message = cls()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{what} is not UTF-8 text") from exc
    if not text.strip():
        raise ValueError(f"{what} is empty")
    try:
        json_format.Parse(text, message, ignore_unknown_fields=False)  # fills `message`
    except json_format.ParseError as exc:
        reason = str(exc).splitlines()[0] if str(exc) else "not valid JSON"
        raise ValueError(f"{what} is malformed: {reason}") from exc
    result: M = message
    return result
