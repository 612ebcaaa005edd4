"""Cut etcd members apart while every one of them still answers its clients.

Each member advertises a peer URL that is a :class:`~devtools.proxy.Proxy` in front of
its real peer listener, so every raft message between two members passes through the
receiver's proxy. A connection is named by its sender from etcd's own request headers
(``X-PeerURLs``: the sending member's advertised peer URLs, on every stream, pipeline and
snapshot request of its peer transport), so the proxy in front of ``b`` can refuse ``a``
while ``c`` still gets through: a partition between members, not a member cut off.

A link is cut in both directions at once (``a``'s connections into ``b`` carry ``b``'s
stream messages to ``a`` too); client traffic never passes here, so an isolated member
still answers gRPC requests — with "no leader", or not at all, as etcd decides.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable

from devtools.proxy import Proxy

__all__ = ["PeerLinks"]

_PEER_URLS = re.compile(rb"^x-peerurls:[ \t]*([^\r\n]*)\r?$", re.IGNORECASE | re.MULTILINE)


class PeerLinks:
    """One proxy per member on its advertised peer URL; links between members cut and
    healed by name."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._proxies: dict[str, Proxy] = {}
        #: advertised peer URL -> member name
        self._names: dict[str, str] = {}
        self._cut: set[frozenset[str]] = set()

    def add(self, name: str, listen_port: int) -> Proxy:
        """A proxy for member ``name`` whose real peer listener is ``listen_port``; the
        member advertises ``proxy.url``. Adding a name again re-targets its proxy (the
        member was started again on a new port) and keeps its advertised URL."""
        with self._lock:
            proxy = self._proxies.get(name)
        if proxy is None:
            proxy = Proxy(f"127.0.0.1:{listen_port}", name=f"peer {name}",
                          sender=self._sender).start()
            with self._lock:
                self._proxies[name] = proxy
                self._names[proxy.url] = name
        else:
            proxy.target = ("127.0.0.1", listen_port)
        self._refresh()
        return proxy

    def _sender(self, head: bytes) -> str | None:
        """The member whose request is in ``head`` (the latest bytes of a connection that
        has named nobody yet): ``None`` until a request head is complete, ``""`` while
        its requests name no member of ours (``/raft/probing``, ``/version``,
        ``/members``), which no cut refuses; the proxy asks again as more requests come."""
        found = _PEER_URLS.search(head)
        if found is None:
            return "" if b"\r\n\r\n" in head else None
        with self._lock:
            for url in found.group(1).decode("latin-1").split(","):
                name = self._names.get(url.strip())
                if name is not None:
                    return name
        return ""

    # -- the faults ---------------------------------------------------------------------

    def cut(self, a: str, b: str) -> None:
        """Nothing passes between members ``a`` and ``b`` until healed."""
        with self._lock:
            self._cut.add(frozenset((a, b)))
        self._refresh()

    def isolate(self, name: str, others: Iterable[str] | None = None) -> None:
        """Cut ``name`` from every other member (or from ``others``)."""
        with self._lock:
            peers = [n for n in (others if others is not None else self._proxies) if n != name]
        for other in peers:
            self.cut(name, other)

    def heal(self) -> None:
        """Every link open again."""
        with self._lock:
            self._cut.clear()
        self._refresh()

    def links_cut(self) -> list[tuple[str, str]]:
        with self._lock:
            return sorted(tuple(sorted(pair)) for pair in self._cut)  # type: ignore[misc]

    def close(self) -> None:
        with self._lock:
            proxies, self._proxies = list(self._proxies.values()), {}
        for proxy in proxies:
            proxy.close()

    def _refresh(self) -> None:
        with self._lock:
            refused = {name: {peer for pair in self._cut if name in pair
                              for peer in pair if peer != name}
                       for name in self._proxies}
            proxies = dict(self._proxies)
        for name, proxy in proxies.items():
            proxy.refuse(refused[name])
