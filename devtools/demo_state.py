"""The demo's order service: one city's orders and couriers kept in PostgreSQL.

``make demo`` feeds ``copenhagen`` from the ``postgres`` state source. This producer plays
the dispatch team's own service: every second it writes the city's open orders and
available couriers into the source's default schema (the simulator's city, as such a
service would hold it) and its heartbeat, in one transaction. The demo pauses it for a
while, and the city, whose settings allow a state at most a few seconds old, refuses the
stale state on its status until the producer is back.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import psycopg

from coordinator.sources.postgres import SCHEMA
from solvers.generate import simulated_state

__all__ = ["StateProducer"]

_ORDERS = ("INSERT INTO dispatch_orders (city, id, pickup_x, pickup_y, dropoff_x, dropoff_y, "
           "ready_in_seconds, size) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)")
_COURIERS = ("INSERT INTO dispatch_couriers (city, id, x, y, speed, capacity, vehicle) "
             "VALUES (%s, %s, %s, %s, %s, %s, %s)")
_HEARTBEAT = ("INSERT INTO dispatch_state_observed (city, observed_at) VALUES (%s, now()) "
              "ON CONFLICT (city) DO UPDATE SET observed_at = now()")


class StateProducer:
    """Writes ``city``'s state into ``url`` every ``every`` seconds, on its own thread."""

    def __init__(self, url: str, city: str, *, orders: int, couriers: int,
                 every: float = 1.0) -> None:
        self.url = url
        self.city = city
        self.orders = orders
        self.couriers = couriers
        self.every = every
        self.writes = 0
        self.last_error = ""
        self._paused = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="demo state producer",
                                        daemon=True)

    def start(self) -> StateProducer:
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(SCHEMA)
        self._write_once()  # the city's first tick finds a state
        self._thread.start()
        return self

    def pause(self) -> None:
        """Stop writing (a producer that died); the heartbeat then ages."""
        self._paused.set()

    def resume(self) -> None:
        self._paused.clear()

    @property
    def paused(self) -> bool:
        return self._paused.is_set()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5.0)

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            if self._paused.is_set():
                continue
            try:
                self._write_once()
            except psycopg.Error as exc:  # the demo's view shows it; the next write retries
                self.last_error = str(exc).strip().splitlines()[0]

    def _write_once(self) -> None:
        now = time.time()
        state = simulated_state(self.city, int(now), n_orders=self.orders,
                                n_couriers=self.couriers, seed=7, taken_at=now)
        orders: list[tuple[Any, ...]] = [
            (self.city, str(state.order_ids[i]), *map(float, state.pickup[i]),
             *map(float, state.dropoff[i]), float(state.ready_in[i]), int(state.size[i]))
            for i in range(state.n_orders)]
        couriers: list[tuple[Any, ...]] = [
            (self.city, str(state.courier_ids[j]), *map(float, state.position[j]),
             float(state.speed[j]), int(state.capacity[j]), str(state.vehicle[j]))
            for j in range(state.n_couriers)]
        with psycopg.connect(self.url, autocommit=False, connect_timeout=2) as conn, \
                conn.cursor() as cur:
            cur.execute("DELETE FROM dispatch_orders WHERE city = %s", (self.city,))
            cur.execute("DELETE FROM dispatch_couriers WHERE city = %s", (self.city,))
            cur.executemany(_ORDERS, orders)
            cur.executemany(_COURIERS, couriers)
            cur.execute(_HEARTBEAT, (self.city,))
        self.writes += 1
        self.last_error = ""
