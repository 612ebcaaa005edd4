"""A session: one etcd lease, kept alive by a background thread.

Everything a worker owns (membership key, election candidates) is attached to its
session's lease, so when the process dies or is cut off the ownership disappears by
itself once the TTL runs out.

The session also keeps a *local* estimate of the lease's expiry: the time a keep-alive
was sent plus the TTL etcd granted in answer. The estimate errs on the early side (the
server starts its clock when it receives the keep-alive), so ``expired()`` turns true
no later than etcd drops the lease. It is an early warning only; safety comes from the
fenced writes, which hold even if this process was paused and its clock stood still.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from coordinator.errors import EtcdError, LeaseLost
from coordinator.etcd import EtcdClient

__all__ = ["Session", "lease_alive"]

log = logging.getLogger(__name__)


class Session:
    """One lease and its keep-alive loop.

    ``lost`` is set once the lease is known to be gone: etcd answered a keep-alive with
    TTL 0, or the session was closed. ``expired()`` turns true earlier, at the local
    expiry estimate, while etcd cannot be asked. A lost session never comes back: the
    owner makes a new ``Session``.
    """

    def __init__(self, client: EtcdClient, ttl: int, *,
                 on_lost: Callable[[Session, str], None] | None = None,
                 on_keepalive_failure: Callable[[Exception], None] | None = None) -> None:
        if ttl < 1:
            raise ValueError("lease TTL must be at least 1 second")
        self._client = client
        self.ttl = ttl
        self._on_lost = on_lost
        self._on_keepalive_failure = on_keepalive_failure
        self.lost = threading.Event()
        self.lost_reason = ""
        self._stop = threading.Event()
        sent = time.monotonic()
        self.lease_id, granted = client.lease_grant(ttl)
        self._deadline = sent + granted
        self._thread = threading.Thread(
            target=self._keepalive_loop, name=f"session {self.lease_hex}", daemon=True
        )
        self._thread.start()

    @property
    def lease_hex(self) -> str:
        """The lease id as etcd's Go client writes it in election keys."""
        return f"{self.lease_id:x}"

    def expired(self) -> bool:
        return self.lost.is_set() or time.monotonic() >= self._deadline

    def time_left(self) -> float:
        return 0.0 if self.lost.is_set() else max(0.0, self._deadline - time.monotonic())

    def check(self) -> None:
        """Raise ``LeaseLost`` if this session can no longer be relied on."""
        if self.expired():
            raise LeaseLost(f"lease {self.lease_hex} lost: {self.lost_reason or 'expired'}")

    def _mark_lost(self, reason: str) -> None:
        if self.lost.is_set():
            return
        self.lost_reason = reason
        self.lost.set()
        log.warning("lease %s lost: %s", self.lease_hex, reason)
        if self._on_lost is not None:
            self._on_lost(self, reason)

    def _keepalive_loop(self) -> None:
        # Refresh at a third of the TTL, as etcd's own client does, leaving two more
        # attempts before the lease can expire.
        #
        # Only etcd can say the lease is gone (a keep-alive answered with TTL 0). Past
        # the local expiry estimate with etcd unreachable, the lease may well be alive:
        # etcd extends every lease when its raft leader changes, and keeps them while it
        # has no quorum. So the session goes on trying instead of giving up: if the lease
        # did expire, every write is fenced out meanwhile and the next answer says TTL 0;
        # if not, leadership survives an etcd election or quorum loss with no handover.
        interval = max(self.ttl / 3.0, 0.2)
        while not self._stop.wait(interval if self.time_left() > interval else 0.2):
            try:
                if not self._refresh():
                    return
            except Exception:
                # Not an etcd failure (those are handled in _refresh): a bug, or a
                # failing callback. A dead thread would let a healthy lease expire and
                # take every leadership of the session with it: log and keep going.
                log.exception("keep-alive of lease %s: unexpected error", self.lease_hex)

    def _refresh(self) -> bool:
        """Send one keep-alive; False once etcd says the lease is gone."""
        now = time.monotonic()
        past_deadline = now >= self._deadline
        try:
            granted = self._client.lease_keepalive(
                self.lease_id,
                timeout=max(0.5, self.ttl / 3.0) if past_deadline
                else max(0.2, min(self.ttl / 3.0, self._deadline - now)),
            )
        except EtcdError as exc:
            if self._on_keepalive_failure is not None:
                self._on_keepalive_failure(exc)
            if past_deadline:
                log.debug("keep-alive of lease %s failed past its local expiry: %s",
                          self.lease_hex, exc)
            else:
                log.warning("keep-alive of lease %s failed (%.1fs left): %s",
                            self.lease_hex, self.time_left(), exc)
            return True
        if granted <= 0:
            # etcd answers TTL 0, without an error, for a lease it no longer has.
            self._mark_lost("etcd no longer knows the lease (expired or revoked)")
            return False
        self._deadline = now + granted
        return True

    def orphan(self) -> None:
        """Stop refreshing without revoking: the lease lives out its TTL."""
        self._stop.set()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout=5)

    def close(self) -> None:
        """Stop refreshing and revoke the lease, deleting every key attached to it."""
        self.orphan()
        if not self.lost.is_set():
            self._client.lease_revoke(self.lease_id)
            self.lost_reason = "closed"
            self.lost.set()


def lease_alive(client: EtcdClient, lease_hex: str) -> bool:
    """Whether the lease ``lease_hex`` (as written in decisions and election keys) is
    still granted: etcd answers TTL -1 for one that expired or was revoked. Raises
    ``EtcdError`` when etcd cannot be asked, ``ValueError`` for a malformed id."""
    ttl, _granted = client.lease_time_to_live(int(lease_hex, 16))
    return ttl > 0
