"""etcd's history of ``<ns>/decisions/``, read with ``etcdctl -w json``: a watch from
revision 1, or, when etcd answers that it compacted, the decisions live at the compaction
point and a watch from there."""

from __future__ import annotations

import base64
import binascii
import json
import os
import queue
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from typing import Any

from devtools.pgcheck.model import Accepted, CheckError, History, decision_of

#: seconds of silence that end the replay once it has passed the newest live decision:
#: what can still come is a decision key put and deleted since, which etcd sends along
QUIET = 0.5


class _Compacted(Exception):
    """etcd compacted past the revision being read (up to ``revision``, 0: unknown)."""

    def __init__(self, message: str, revision: int = 0) -> None:
        super().__init__(message)
        self.revision = revision


# ---------------------------------------------------------------------- etcd, by etcdctl


class _Etcdctl:
    """``etcdctl -w json`` against ``endpoints``."""

    def __init__(self, binary: str, endpoints: str, timeout: float) -> None:
        self.binary = binary
        self.endpoints = endpoints
        self.timeout = timeout
        self.env = {**os.environ, "ETCDCTL_API": "3"}

    def argv(self, *args: str) -> list[str]:
        return [self.binary, f"--endpoints={self.endpoints}",
                f"--command-timeout={max(1, round(self.timeout))}s", *args, "-w", "json"]

    def get(self, *args: str) -> dict[str, Any]:
        try:
            done = subprocess.run(self.argv("get", *args), capture_output=True, text=True,
                                  env=self.env, timeout=self.timeout + 5, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise CheckError(f"etcdctl get {' '.join(args)}: {exc}") from exc
        if done.returncode != 0:
            message = (done.stderr.strip().splitlines() or ["no message"])[-1]
            if "compacted" in message:
                raise _Compacted(message)
            raise CheckError(f"etcdctl get {' '.join(args)} at {self.endpoints}: {message}")
        try:
            answer: dict[str, Any] = json.loads(done.stdout)
        except ValueError as exc:
            raise CheckError(f"etcdctl printed no JSON: {done.stdout[:200]!r}") from exc
        return answer

    def watch(self, prefix: str, start: int, until: int, must_reach: int,
              deadline: float) -> Iterator[dict[str, Any]]:
        """The events under ``prefix`` from ``start`` through ``until``; once past
        ``must_reach`` (the newest live key), :data:`QUIET` seconds of silence end it."""
        stderr = tempfile.TemporaryFile()  # noqa: SIM115 (closed below)
        proc = subprocess.Popen(self.argv("watch", prefix, "--prefix", f"--rev={start}"),
                                stdout=subprocess.PIPE, stderr=stderr, text=True,
                                env=self.env)
        lines: queue.Queue[str | None] = queue.Queue()

        def read() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                lines.put(line)
            lines.put(None)

        reader = threading.Thread(target=read, name="pgcheck etcdctl watch", daemon=True)
        reader.start()
        last = start - 1
        try:
            while last < until:
                reached = last >= must_reach
                wait = QUIET if reached else deadline - time.monotonic()
                try:
                    line = lines.get(timeout=max(wait, 0.0))
                except queue.Empty:
                    if reached:
                        return
                    raise CheckError(f"the watch of {prefix} from revision {start} reached "
                                     f"only {last} of {must_reach} in time") from None
                if line is None:
                    stderr.seek(0)
                    message = stderr.read().decode(errors="replace").strip()
                    if "compacted" in message:
                        raise _Compacted(message)
                    raise CheckError(f"etcdctl watch ended at revision {last}: "
                                     f"{message or 'no message'}")
                try:
                    response = json.loads(line)
                except ValueError:
                    continue  # e.g. a progress notice
                if response.get("CompactRevision"):
                    compacted = int(response["CompactRevision"])
                    raise _Compacted(f"compacted up to {compacted}", compacted)
                for event in response.get("Events") or []:
                    revision = int(event["kv"].get("mod_revision", 0))
                    if revision > until:
                        return
                    last = revision
                    yield event
        finally:
            proc.kill()
            proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()
            reader.join(5)
            stderr.close()


def normal_namespace(namespace: str) -> str:
    return "/" + namespace.strip("/")


def _key(kv: dict[str, Any]) -> tuple[str, bytes]:
    return base64.b64decode(kv["key"]).decode(errors="replace"), \
        base64.b64decode(kv.get("value", ""))


def read_history(etcd: str, namespace: str, *, etcdctl: str | None = None,
                 timeout: float = 60.0) -> History:
    """Every decision etcd still holds for ``namespace``: its values at the compaction
    point, then every put since, up to etcd's revision when this began."""
    prefix = normal_namespace(namespace) + "/decisions/"
    ctl = _Etcdctl(etcdctl or shutil.which("etcdctl") or "etcdctl", etcd, timeout)
    deadline = time.monotonic() + timeout
    for _ in range(3):
        try:
            return _replay(ctl, prefix, deadline)
        except _Compacted:
            continue  # compacted while being read: from the new compaction point
    raise CheckError(f"etcd compacted {prefix} three times while it was being read")


def _replay(ctl: _Etcdctl, prefix: str, deadline: float) -> History:
    newest = ctl.get(prefix, "--prefix", "--keys-only", "--sort-by=MODIFY",
                     "--order=DESCEND", "--limit=1")
    until = int(newest["header"]["revision"])
    kvs = newest.get("kvs") or []
    must_reach = int(kvs[0].get("mod_revision", 0)) if kvs else 0
    compacted, snapshot = 1, list[dict[str, Any]]()
    try:
        events = list(ctl.watch(prefix, 1, until, must_reach, deadline))
    except _Compacted as exc:  # etcd's answer says where its history begins
        if not exc.revision:
            raise
        compacted = exc.revision
        snapshot = ctl.get(prefix, "--prefix", f"--rev={compacted}").get("kvs") or []
        events = list(ctl.watch(prefix, compacted, until, must_reach, deadline))
    decisions: dict[tuple[int, str], Accepted] = {}
    floors: dict[str, int] = {}
    malformed = 0

    def take(kv: dict[str, Any]) -> str | None:
        nonlocal malformed
        key, value = _key(kv)
        city, revision = key[len(prefix):], int(kv.get("mod_revision", 0))
        accepted = decision_of(city, revision, value) if city and "/" not in city else None
        if accepted is None:
            malformed += 1
            return None
        decisions[(revision, city)] = accepted
        return city

    try:
        for kv in snapshot:  # each city's value at the compaction point
            city = take(kv)
            if city is not None:
                floors[city] = int(kv.get("mod_revision", 0))
        for event in events:
            if event.get("type", 0) == 0:  # a put (deletes say type 1)
                take(event["kv"])
    except (KeyError, ValueError, binascii.Error) as exc:
        raise CheckError(f"etcdctl printed something unexpected: {exc!r}") from exc
    return History(until, compacted, decisions, floors, malformed)
