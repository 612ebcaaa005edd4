"""The sink side of a chaos run: a PostgreSQL server and the relays that fill it.

:class:`SinkFleet` starts a throwaway PostgreSQL server (``devtools.localpg``), creates
its database and the postgres sink's tables (``dispatch-relay
--init``), then ``count`` ``dispatch-relay`` processes (:class:`RelaySlot`). Each relay
talks to etcd directly and to PostgreSQL through a proxy of its own
(``devtools.proxy.Proxy``), so that one relay's link can be cut alone. The harness reads
the sink's cursor here with psycopg, never through a relay.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import psycopg

from devtools.chaos.process import ProcessSlot
from devtools.localpg import LocalPostgres
from devtools.proxy import Proxy

__all__ = ["DATABASE", "SINK", "RelaySlot", "SinkFleet"]

SINK = "postgres"
DATABASE = "chaos"


@dataclass
class RelaySlot(ProcessSlot):
    """One ``dispatch-relay`` process slot: restarted under the same relay id, always
    through the same proxy to PostgreSQL."""

    relay_id: str
    link: Proxy
    etcd: str
    namespace: str
    #: the database's URL through ``link``
    sink_url: str
    ttl: int

    @property
    def name(self) -> str:
        return self.relay_id

    def argv(self) -> list[str]:
        return [sys.executable, "-m", "coordinator.cli.relay", "--etcd", self.etcd,
                "--namespace", self.namespace, "--sink", SINK, "--sink-url", self.sink_url,
                "--relay-id", self.relay_id, "--lease-ttl", str(self.ttl)]


class SinkFleet:
    """PostgreSQL and ``count`` relays; ``start()`` returns it running."""

    def __init__(self, base: Path, etcd: str, namespace: str, count: int, ttl: int) -> None:
        self.base = base
        self.etcd = etcd
        self.namespace = namespace
        self.count = count
        self.ttl = ttl
        self.postgres: LocalPostgres | None = None
        #: the database's own URL (no proxy): for ``--init``, the cursor and the check
        self.url = ""
        self.relays: list[RelaySlot] = []

    def start(self) -> SinkFleet:
        # a temporary directory of its own, not the run's: as root the server runs as
        # ``postgres``, which may not enter the run's directory (or the ones above it)
        self.postgres = LocalPostgres().start()
        self.url = self.postgres.create_database(DATABASE)
        init = subprocess.run(
            [sys.executable, "-m", "coordinator.cli.relay", "--etcd", self.etcd,
             "--namespace", self.namespace, "--sink", SINK, "--sink-url", self.url, "--init"],
            capture_output=True, text=True, timeout=120, check=False)
        if init.returncode != 0:
            raise RuntimeError(f"dispatch-relay --init failed: {init.stderr.strip()[-500:]}")
        for i in range(self.count):
            relay_id = f"r{i}"
            link = Proxy(f"127.0.0.1:{self.postgres.port}", name=f"{relay_id} -> postgres")
            link.start()
            url = f"postgresql://{self.postgres.user}@{link.address}/{DATABASE}"
            self.relays.append(RelaySlot(
                relay_id, link, self.etcd, self.namespace, url, self.ttl,
                log_path=self.base / f"{relay_id}.log"))
        for slot in self.relays:
            slot.start()
        return self

    def cursor(self) -> int | None:
        """The sink's cursor for the namespace (0: none yet; None: unreadable now)."""
        try:
            with psycopg.connect(self.url, connect_timeout=2) as conn:
                row = conn.execute("SELECT revision FROM dispatch_sink_cursor "
                                   "WHERE namespace = %s", (self.namespace,)).fetchone()
        except psycopg.Error:
            return None
        return int(row[0]) if row else 0

    def relay(self, relay_id: str) -> RelaySlot | None:
        return next((slot for slot in self.relays if slot.relay_id == relay_id), None)

    def heal(self) -> None:
        """PostgreSQL up, every link restored, every relay running and continued."""
        if self.postgres is not None and not self.postgres.running():
            self.postgres.restart()
        for slot in self.relays:
            slot.link.restore()
            slot.resume()
            if not slot.alive():
                slot.start()
            slot.expected_down = False

    def close(self, *, keep: bool) -> None:
        """Stop the relays and PostgreSQL and delete its directory; with ``keep`` its log
        is copied into the run's directory first."""
        for slot in self.relays:
            with contextlib.suppress(Exception):
                slot.close()
            slot.link.close()
        if self.postgres is not None:
            self.postgres.kill()
            if keep:
                with contextlib.suppress(OSError):
                    shutil.copyfile(self.postgres.log_path, self.base / "postgres.log")
            self.postgres.close()
