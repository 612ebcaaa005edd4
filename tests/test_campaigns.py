"""The campaigns' view of every city's queue follows etcd, whatever order the watch
brings the changes in."""

from __future__ import annotations

import functools
import threading
import time
from typing import Any

from coordinator.etcd import EtcdClient, EtcdConfig, KeyValue
from coordinator.keys import Keys
from coordinator.recipes.campaigns import Campaigns
from coordinator.recipes.election import Election
from coordinator.recipes.session import Session
from coordinator.recipes.watch import REPLAY_LIMIT
from devtools.proxy import Proxy
from tests.conftest import wait_until
from tests.etcd_server import EtcdCluster


def test_a_candidacy_entered_again_survives_the_late_news_of_the_old_one(
        client: EtcdClient, keys: Keys) -> None:
    """Leaving a city and entering it again on one session re-creates the same key (a
    candidate key is named by its lease). A watch running behind (its thread held up, as
    under load) brings the old key's deletion after the new key is in the view: applied,
    it made the new candidacy look deleted, and the worker dropped it until its next
    control step (a standby stepping back lost its place in the queue meanwhile)."""
    leader, ours = Session(client, ttl=5), Session(client, ttl=5)
    Election(client, leader, keys.election("paris")).enter("w0")  # we stand as standby
    behind = threading.Event()

    def on_change(cities: set[str]) -> None:
        if behind.is_set():
            time.sleep(0.3)  # the watch thread busy: the next changes wait for it

    campaigns = Campaigns(client, keys, "w1", on_change=on_change,
                          on_lost=lambda city, key, reason: None)
    campaigns.bind(ours)
    campaigns.start()
    try:
        assert campaigns.wait_synced(10)
        campaigns.enter("paris")
        for step in range(3):
            behind.set()
            caught_up(client, keys, campaigns, f"hold-{step}")  # now held up in on_change
            campaigns.leave("paris")
            campaigns.enter("paris")
            behind.clear()
            caught_up(client, keys, campaigns, f"after-{step}")
            assert "paris" in campaigns.entered(), f"candidacy dropped at step {step}"
            standing = campaigns.standing("paris")
            assert standing is not None and standing[0] == 1
    finally:
        campaigns.stop()
        ours.close()
        leader.close()


def caught_up(client: EtcdClient, keys: Keys, campaigns: Campaigns, marker: str) -> None:
    """Put a marker candidate and wait until the view shows it: the watch has then
    brought every change before it."""
    client.put(f"{keys.election(marker)}/0", "")
    wait_until(functools.partial(campaigns.queue, marker), message="the watch to catch up")


def test_a_candidacy_entered_while_the_watch_re_reads_survives_the_read(
        etcd: EtcdCluster, keys: Keys) -> None:
    """After a stream error the watch re-reads the election prefix. A candidacy entered
    between that read and its arrival in the view is not in the read: taken at its
    word, the worker dropped a city it had just won (a spurious step-down)."""
    member = etcd.members[0].client_url
    proxy = Proxy(member).start()
    racing = threading.Event()

    class EnterDuringRead(EtcdClient):
        def get_prefix(self, prefix: str, **options: Any) -> tuple[list[KeyValue], int]:
            read = super().get_prefix(prefix, **options)
            if racing.is_set() and prefix == keys.elections and not options.get("count_only"):
                racing.clear()
                campaigns.enter("paris")  # after the read, before the view takes it
            return read

    client = EnterDuringRead(EtcdConfig(endpoints=(proxy.url,), timeout=5))
    direct = EtcdClient(EtcdConfig(endpoints=(member,)))
    session = Session(client, ttl=5)
    lost: list[str] = []
    campaigns = Campaigns(client, keys, "w1", on_change=lambda cities: None,
                          on_lost=lambda city, key, reason: lost.append(city))
    campaigns.bind(session)
    campaigns.start()
    try:
        assert campaigns.wait_synced(10)
        racing.set()
        proxy.cut()  # the watch stream breaks; too far behind to replay, it reads again
        for i in range(REPLAY_LIMIT + 1):
            direct.put(f"/elsewhere-{i % 10}", b"x")
        proxy.restore()
        wait_until(lambda: not racing.is_set(), timeout=10, message="the re-read")
        wait_until(lambda: campaigns.leader("paris") is not None, timeout=10,
                   message="paris won and kept (not dropped on a read older than it)")
        caught_up(direct, keys, campaigns, "marker")
        assert "paris" in campaigns.entered() and campaigns.leader("paris") is not None
        assert lost == [], f"dropped {lost} on a read older than the candidacy"
    finally:
        campaigns.stop()
        session.close()
        proxy.close()
        client.close()
        direct.delete("/elsewhere-", prefix=True)
        direct.close()
