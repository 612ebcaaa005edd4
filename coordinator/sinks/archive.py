"""The state archive: snapshots of the states cities with ``archiveState`` were decided
on, in the postgres sink's database (``dispatch_states``, created by ``dispatch-relay
--init``), never in etcd.

A worker writes a tick's snapshot *before* the tick's fenced commit, so no decision can
reference a state that is not stored (a snapshot whose commit then fails is an orphan,
harmless). Its ``archive_id`` is a hash of the city and the snapshot's JSON, so writing
the same state again (a retried tick) is a no-op. ``dispatchctl replay`` reads a
snapshot back by that id and turns it into the exact state again
(:mod:`coordinator.sources.snapshot`).

psycopg's errors are translated by :mod:`coordinator.sinks.pgconn`; for a worker a state
that cannot be archived is a :class:`~coordinator.errors.StateError` (the city asked for
replayability, so its tick fails and backs off, and its status says why).
"""

from __future__ import annotations

import hashlib
import threading
from datetime import UTC, datetime

from coordinator.codec import decode, encode
from coordinator.errors import SinkError, StateError, StateGone
from coordinator.sinks.pgconn import PgConnection
from coordinator.sources.snapshot import snapshot_from_state, state_from_snapshot
from protos import dispatch_pb2 as pb
from solvers.contract import CityState

__all__ = ["StateArchive", "archive_id"]

_INSERT = """
INSERT INTO dispatch_states (archive_id, city, taken_at, snapshot)
VALUES (%s, %s, %s, %s::jsonb)
ON CONFLICT (archive_id) DO NOTHING
"""

_SELECT = "SELECT city, snapshot::text FROM dispatch_states WHERE archive_id = %s"


def archive_id(city: str, snapshot_json: bytes) -> str:
    """The id of a city's snapshot: 32 hex digits of a SHA-256 of city and content."""
    digest = hashlib.sha256(city.encode() + b"\0" + snapshot_json)
    return digest.hexdigest()[:32]


class StateArchive:
    """Writes and reads ``dispatch_states`` over one connection (shared by a worker's
    tick threads, one statement at a time)."""

    def __init__(self, url: str, *, application_name: str = "dispatch-worker") -> None:
        self._pg = PgConnection(url, role="state archive", application_name=application_name,
                                option="--archive-url")
        self.where = self._pg.where
        self._lock = threading.Lock()

    def keep(self, city: str, state: CityState, *, wait: float = 5.0) -> str:
        """Store ``state`` (idempotent); its archive id. ``StateError`` if it cannot, or
        if another tick's write holds the connection for longer than ``wait`` seconds (a
        hung database then holds up one tick thread, not all of them)."""
        data = encode(snapshot_from_state(state))
        key = archive_id(city, data)
        taken_at = datetime.fromtimestamp(state.taken_at, UTC)
        failed = f"cannot archive the state of {city} (the city has archiveState on)"
        if not self._lock.acquire(timeout=wait):
            raise StateError(f"{failed}: the state archive at {self.where} is still busy "
                             f"with another write after {wait:.2f}s")
        try:
            with self._pg.boundary("archive a state") as conn:
                conn.execute(_INSERT, (key, city, taken_at, data.decode()))
        except SinkError as exc:
            raise StateError(f"{failed}: {exc}") from exc
        finally:
            self._lock.release()
        return key

    def fetch(self, city: str, key: str, taken_at: float | None = None) -> CityState:
        """The archived state ``key`` of ``city``; ``StateGone`` if there is none."""
        with self._lock, self._pg.boundary("read an archived state") as conn:
            row = conn.execute(_SELECT, (key,)).fetchone()
        if row is None or row[0] != city:
            raise StateGone(f"the state of {city} archived as {key} is not in the archive "
                            f"at {self.where}")
        try:
            snapshot = decode(pb.StateSnapshot, str(row[1]).encode(),
                              what=f"archived state {key}")
        except ValueError as exc:
            raise StateError(str(exc)) from exc
        at = snapshot.taken_at.ToNanoseconds() / 1e9 if taken_at is None else taken_at
        return state_from_snapshot(city, snapshot, at).freeze()

    def close(self) -> None:
        with self._lock:
            self._pg.close()
