"""A throwaway PostgreSQL server on loopback, for the test suite, the demo and chaos runs.

Like :mod:`devtools.localetcd` for etcd: the server runs Debian's ``postgresql`` binaries
(``pg_config --bindir``, else the newest ``/usr/lib/postgresql/*/bin``) on a free
loopback port, with its data directory and unix socket in a temporary directory, trust
authentication for one user (``dispatch``) and ``fsync`` off (a killed server loses no
committed transaction: its WAL is with the kernel; only a machine crash would). It can
be stopped (fast shutdown: sessions are terminated), killed with SIGKILL (its whole
process group, as a crash would) and restarted on the same port, so URLs stay valid.

PostgreSQL refuses to run as root: as root the server runs as the ``postgres`` system
user, which owns the temporary directory.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg
from psycopg import sql

from devtools.localetcd import free_port

__all__ = ["LocalPostgres", "PostgresMissing", "postgres_bindir"]

_INSTALL_HINT = ("install Debian's PostgreSQL server (`make test` does it, or "
                 "`apt-get install postgresql`)")


class PostgresMissing(RuntimeError):
    """The PostgreSQL server binaries are not installed."""


def postgres_bindir() -> Path:
    """The directory holding ``initdb`` and ``postgres``; ``PostgresMissing`` if none."""
    candidates: list[Path] = []
    if shutil.which("pg_config"):
        out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True,
                             check=False).stdout.strip()
        if out:
            candidates.append(Path(out))

    def version(path: str) -> tuple[int, ...]:
        name = Path(path).parent.name
        return tuple(int(p) for p in name.split(".") if p.isdigit())

    candidates += [Path(p) for p in sorted(glob.glob("/usr/lib/postgresql/*/bin"),
                                           key=version, reverse=True)]
    for bindir in candidates:
        if (bindir / "initdb").is_file() and (bindir / "postgres").is_file():
            return bindir
    raise PostgresMissing(f"PostgreSQL server binaries (initdb, postgres) not found: "
                          f"{_INSTALL_HINT}")


class LocalPostgres:
    """One PostgreSQL server in a temporary directory. ``start()`` returns it ready."""

    def __init__(self, *, user: str = "dispatch", base: Path | None = None,
                 settings: dict[str, str] | None = None) -> None:
        self.bindir = postgres_bindir()
        self.user = user
        self.base = Path(tempfile.mkdtemp(prefix="pg-test-", dir=base))
        self.data_dir = self.base / "data"
        self.log_path = self.base / "postgres.log"
        self.port = free_port()
        # no fsync, but commits still write their WAL to the kernel (synchronous_commit
        # stays on): a SIGKILL loses no committed transaction, only a machine crash would
        self.settings = {"fsync": "off", "full_page_writes": "off", **(settings or {})}
        self.process: subprocess.Popen[bytes] | None = None
        # PostgreSQL will not run as root: then the server (and initdb) run as `postgres`.
        account = pwd.getpwnam("postgres") if os.geteuid() == 0 else None
        self._uid = account.pw_uid if account else None
        self._gid = account.pw_gid if account else None
        self._groups: list[int] | None = [] if account else None
        if account is not None:
            os.chown(self.base, account.pw_uid, account.pw_gid)
        self._initialised = False

    # ------------------------------------------------------------------ lifecycle

    def start(self, timeout: float = 30.0, *, attempts: int = 3) -> LocalPostgres:
        """Create the cluster on first use, start the server, wait until it accepts
        connections. A server that exits while starting has almost always lost its
        port to another process: it is tried again on a new port."""
        if not self._initialised:
            self._initdb()
        for attempt in range(1, attempts + 1):
            self._spawn()
            try:
                self.wait_ready(timeout)
                return self
            except _ServerExited as exc:
                if attempt == attempts:
                    raise RuntimeError(f"{exc}; log in {self.log_path}") from exc
                self.port = free_port()
        raise AssertionError("unreachable")

    def stop(self, timeout: float = 10.0) -> None:
        """Fast shutdown (SIGINT): open sessions are terminated with an admin shutdown."""
        if self.running():
            assert self.process is not None
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()

    def kill(self) -> None:
        """SIGKILL the server and its backends (its process group), like a crash; the
        next start runs crash recovery."""
        if self.process is None or self.process.returncode is not None:
            return  # never started, or reaped already (its group id may be reused)
        # the whole group: orphaned backends would keep the next start from running
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def restart(self, timeout: float = 30.0) -> None:
        """Stop (fast) and start again on the same port."""
        self.stop()
        self._spawn()
        self.wait_ready(timeout)

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def close(self) -> None:
        """Kill the server and delete its directory."""
        self.kill()
        shutil.rmtree(self.base, ignore_errors=True)

    def __enter__(self) -> LocalPostgres:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ use

    def url(self, dbname: str = "postgres") -> str:
        """A libpq URL of ``dbname`` on this server, as ``--sink-url`` takes it."""
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{dbname}"

    def create_database(self, name: str) -> str:
        """Create an empty database; returns its URL."""
        with psycopg.connect(self.url(), autocommit=True, connect_timeout=5) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url(name)

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Wait until the server accepts connections (``_ServerExited`` if it died)."""
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            if not self.running():
                raise _ServerExited(f"postgres exited while starting on port {self.port} "
                                    "(the port taken?)")
            try:
                with psycopg.connect(self.url(), connect_timeout=2):
                    return
            except psycopg.OperationalError as exc:
                last = exc
            time.sleep(0.1)
        raise RuntimeError(f"postgres did not accept connections within {timeout:g}s "
                           f"({last}); log in {self.log_path}")

    # ------------------------------------------------------------------ internals

    def _initdb(self) -> None:
        done = subprocess.run(
            [str(self.bindir / "initdb"), "-D", str(self.data_dir), "-U", self.user,
             "--auth=trust", "--encoding=UTF8", "--no-locale", "--no-sync"],
            capture_output=True, text=True, check=False,
            user=self._uid, group=self._gid, extra_groups=self._groups,
        )
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
            raise RuntimeError(f"initdb failed in {self.data_dir}: {' / '.join(tail)}")
        self._initialised = True

    def _spawn(self) -> None:
        options = [arg for key, value in self.settings.items()
                   for arg in ("-c", f"{key}={value}")]
        with open(self.log_path, "ab") as log:
            # a session of its own: kill() takes the backends down with the postmaster
            self.process = subprocess.Popen(
                [str(self.bindir / "postgres"), "-D", str(self.data_dir),
                 "-p", str(self.port), "-k", str(self.base),
                 "-c", "listen_addresses=127.0.0.1", *options],
                stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True,
                user=self._uid, group=self._gid, extra_groups=self._groups,
            )


class _ServerExited(RuntimeError):
    pass
